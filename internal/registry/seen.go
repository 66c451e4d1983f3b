package registry

import (
	"sync"
	"time"
)

// SeenResolution is the resolution of a device's stored last_seen: a
// patch that only moves last_seen, by less than this past the value last
// written for the device, is not written (see SeenCache). A device that
// publishes many times a second would otherwise rewrite its devices row
// on every message, a WAL page per device per group commit for a value
// that is read in seconds (the dashboard, GET /api/v1/devices). Presence
// keeps the exact time of the last activity in memory for its heartbeat
// deadlines; the stored value lags it by less than SeenResolution.
const SeenResolution = time.Second

// SeenCache is what a store remembers of the last_seen it wrote per
// device, so that PatchDevices can leave out the patches that would only
// move last_seen by less than the resolution. A store holds one and, in
// each transaction, calls Filter before writing the patches and Committed
// with what Filter returned once the transaction committed; after a
// failed commit it calls nothing, so a value that was not stored is never
// remembered and no later patch is skipped because of it. A value
// remembered is one the store wrote, so with one writer at a time
// (SQLite) the stored last_seen is never more than the resolution behind
// the newest patch it was given; with concurrent transactions
// (PostgreSQL) the value remembered last can be one a concurrent commit
// overwrote, and the lag up to about twice the resolution.
//
// Patches that carry anything but LastSeen (status, connected, metrics,
// a session or node) are always written, with their LastSeen.
type SeenCache struct {
	res     time.Duration
	mu      sync.Mutex // the written map; uncontended under a store's writer lock
	written map[string]time.Time
}

// NewSeenCache returns a cache with resolution res (SeenResolution in the
// stores; 0 writes every patch).
func NewSeenCache(res time.Duration) *SeenCache {
	return &SeenCache{res: res, written: map[string]time.Time{}}
}

// SeenWrite is a last_seen a transaction writes, remembered by Committed.
type SeenWrite struct {
	ID string
	At time.Time
}

// Filter leaves out of ids and patches (same length; compacted in place)
// the patches that only move last_seen by less than the resolution past
// the value last written for their device, and returns what is left with
// the last_seen values to hand to Committed. A nil cache filters nothing.
func (c *SeenCache) Filter(ids []string, patches []DevicePatch, writes []SeenWrite) ([]string, []DevicePatch, []SeenWrite) {
	if c == nil {
		return ids, patches, writes
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for i := range ids {
		p := &patches[i]
		if p.LastSeen != nil {
			if p.onlySeen() {
				if w, ok := c.written[ids[i]]; ok && p.LastSeen.Before(w.Add(c.res)) {
					continue
				}
			}
			// A patch about a session may not apply (an older session's
			// is left out by the store): not remembered, so it never
			// causes a skip.
			if p.Session == 0 {
				writes = append(writes, SeenWrite{ID: ids[i], At: *p.LastSeen})
			}
		}
		ids[n], patches[n] = ids[i], *p
		n++
	}
	return ids[:n], patches[:n], writes
}

// Committed remembers the last_seen values of a transaction that
// committed.
func (c *SeenCache) Committed(writes []SeenWrite) {
	if c == nil || len(writes) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, w := range writes {
		c.written[w.ID] = w.At
	}
}

// onlySeen reports whether p changes nothing but last_seen.
func (p *DevicePatch) onlySeen() bool {
	return p.Status == nil && p.Connected == nil && p.Metrics == nil && p.Session == 0 && p.Node == nil
}
