package accounts

import (
	"sync"
	"time"
)

// throttle counts failed sign-ins per key (a user name, a remote address)
// and refuses further attempts for a key once it failed Limit times within
// Window, until Window has passed since its first failure. A success
// clears the user-name key. Memory is bounded: when the table is full,
// the entries whose window ended are dropped, and if none did, the new key
// is not tracked (the other key of the attempt usually is).
type throttle struct {
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

func newThrottle(limit int, window time.Duration, max int) *throttle {
	return &throttle{limit: limit, window: window, max: max, entries: map[string]*failures{}}
}

// blocked reports whether key may not try now, and until when.
func (t *throttle) blocked(key string, now time.Time) (bool, time.Time) {
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

// fail counts one failure of key.
func (t *throttle) fail(key string, now time.Time) {
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

// reset forgets key's failures.
func (t *throttle) reset(key string) {
	t.mu.Lock()
	delete(t.entries, key)
	t.mu.Unlock()
}
