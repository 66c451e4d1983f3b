package commit

import (
	"sync/atomic"
	"time"
)

// IDs hands out message ids: increasing, unique within the process, and
// above every id stored before (Seed). They are assigned before commit so
// that the events of a message can name it without a round trip.
type IDs struct{ last atomic.Int64 }

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
	for {
		cur := g.last.Load()
		next := max(now, cur+1)
		if g.last.CompareAndSwap(cur, next) {
			return next
		}
	}
}
