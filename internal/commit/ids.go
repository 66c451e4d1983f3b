package commit

import (
	"sync/atomic"
	"time"
)

// IDs hands out message ids: increasing, unique within the process, and
// above every id stored before (Seed). They are assigned before commit so
// that the events of a message can name it without a round trip.
//
// In a cluster every node has a slot (Slots): its ids are the time in
// microseconds times n plus the slot, so two nodes never hand out the
// same id.
type IDs struct {
	last    atomic.Int64
	slot, n int64 // n = 0: no slots
}

// Slots makes every later id equal to slot modulo n (0 <= slot < n).
// Call it before the first Next.
func (g *IDs) Slots(slot, n int64) { g.slot, g.n = slot, n }

// Seed makes every later id greater than max.
func (g *IDs) Seed(max int64) {
	for {
		cur := g.last.Load()
		if max <= cur || g.last.CompareAndSwap(cur, max) {
			return
		}
	}
}

// Next returns a new id: the time in microseconds, or one more than the
// last id if the clock has not moved on.
func (g *IDs) Next() int64 {
	now := time.Now().UnixMicro()
	if g.n > 0 {
		now *= g.n
	}
	for {
		cur := g.last.Load()
		next := max(now, cur+1)
		if g.n > 0 {
			next += ((g.slot-next%g.n)%g.n + g.n) % g.n
		}
		if g.last.CompareAndSwap(cur, next) {
			return next
		}
	}
}
