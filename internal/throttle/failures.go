// Package throttle slows down guessing: it counts failed attempts per
// key (a source address, a target such as a device or user name) and
// refuses further attempts of a key for a while once it failed too often
// (Failures), counts and logs the failures and refusals without the guess
// (Guard), and bounds how often a repeated event is logged (Sampler).
package throttle

import (
	"sync"
	"time"
)

// Failures counts failed attempts per key (a user name, a remote address)
// and refuses further attempts for a key once it failed limit times within
// window, until window has passed since its first failure. Memory is
// bounded: when the table is full, the entries whose window ended are
// dropped, and if none did, the new key is not tracked (the other key of
// the attempt usually is).
type Failures struct {
	limit  int
	window time.Duration
	max    int

	mu      sync.Mutex
	entries map[string]*failures
}

type failures struct {
	n     int
	first time.Time
}

// NewFailures returns a table of at most max keys.
func NewFailures(limit int, window time.Duration, max int) *Failures {
	return &Failures{limit: limit, window: window, max: max, entries: map[string]*failures{}}
}

// Blocked reports whether key may not try now, and until when.
func (t *Failures) Blocked(key string, now time.Time) (bool, time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.entries[key]
	if f == nil {
		return false, time.Time{}
	}
	until := f.first.Add(t.window)
	if !now.Before(until) {
		delete(t.entries, key)
		return false, time.Time{}
	}
	return f.n >= t.limit, until
}

// Fail counts one failure of key.
func (t *Failures) Fail(key string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.entries[key]
	if f != nil && !now.Before(f.first.Add(t.window)) {
		f = nil
	}
	if f == nil {
		if len(t.entries) >= t.max {
			for k, e := range t.entries {
				if !now.Before(e.first.Add(t.window)) {
					delete(t.entries, k)
				}
			}
			if len(t.entries) >= t.max {
				return
			}
		}
		f = &failures{first: now}
		t.entries[key] = f
	}
	f.n++
}

// Reset forgets key's failures.
func (t *Failures) Reset(key string) {
	t.mu.Lock()
	delete(t.entries, key)
	t.mu.Unlock()
}
