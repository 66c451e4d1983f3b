package monitors

import (
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
)

// queue is a monitor's bounded in-memory queue between its feeder (see
// tail) and its send loop. The feeder pushes every event after the
// monitor's position, selected or not: a selected event is queued, an
// unselected one only moves seen. So seen tells how far the log was looked
// at, and once the queue is empty and nothing is in flight the monitor's
// cursor may move there.
//
// The queue is bounded by its count of events (Options.QueueSize) and by
// their estimated memory (Options.QueueBytes, of retainedSize): a push
// that would exceed either waits for room, and so does the monitor's
// feeder, which holds back only this monitor; once the tail has moved past
// it, it reads the durable log from where it stopped, so a monitor whose
// queue is full, by count or by bytes, neither loses nor repeats an event.
// An event larger than the byte bound is queued alone, into an empty
// queue, so that it is still delivered.
//
// The send loop is woken only when it has something new to do: the first
// event of an empty queue (it starts the batch's time bound), a full batch
// (batch events queued), and a full queue (a push waits: the batch is due
// at once, since no event can join it before it is taken); a wake per
// event cost a goroutine switch and a timer per event and monitor.
type queue struct {
	mu      sync.Mutex
	items   []queued
	arr     []queued  // the array items started in, reused when the queue empties
	bytes   int64     // the sum of the items' sizes
	firstAt time.Time // when items[0] was queued
	seen    int64     // Seq of the last event pushed, selected or not
	cap     int
	budget  int64 // the bound of bytes
	batch   int   // the send loop's batch size
	blocked bool  // a push waits for room
	closed  bool

	wake   chan struct{} // one slot: the first event, a full batch, or a full queue
	space  chan struct{} // one slot: items were taken
	closeC chan struct{} // closed by close
}

// queued is an event in a queue and its retainedSize.
type queued struct {
	e    *events.Event
	size int64
}

func newQueue(capacity int, budget int64, batch int, seen int64) *queue {
	return &queue{
		cap: capacity, budget: budget, batch: max(1, batch), seen: seen,
		wake: make(chan struct{}, 1), space: make(chan struct{}, 1), closeC: make(chan struct{}),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// full reports whether an event of size bytes must wait for room.
func (q *queue) full(size int64) bool {
	return len(q.items) >= q.cap || (len(q.items) > 0 && q.bytes+size > q.budget)
}

// push queues e, of size bytes (its retainedSize), if selected, waiting for
// room; it returns false once the queue is closed.
func (q *queue) push(e *events.Event, size int64, selected bool, now func() time.Time) bool {
	q.mu.Lock()
	for selected && q.full(size) && !q.closed {
		first := !q.blocked
		q.blocked = true
		q.mu.Unlock()
		if first {
			signal(q.wake) // the batch is due: nothing joins it until it is taken
		}
		select {
		case <-q.space:
		case <-q.closeC:
		}
		q.mu.Lock()
	}
	if q.closed {
		q.mu.Unlock()
		return false
	}
	if e.Seq <= q.seen {
		q.mu.Unlock() // a repeat (the feeder never sends one; cheap to be sure)
		return true
	}
	wake := false
	if selected {
		if len(q.items) == 0 {
			q.firstAt = now()
			q.items = q.arr[:0]
		}
		c := cap(q.items)
		q.items = append(q.items, queued{e, size})
		if cap(q.items) != c {
			q.arr = q.items[:0] // append moved the items to a new array
		}
		q.bytes += size
		wake = len(q.items) == 1 || len(q.items) == q.batch
	}
	q.seen = e.Seq
	q.mu.Unlock()
	if wake {
		signal(q.wake)
	}
	return true
}

// poll returns the batch due now, appended to buf[:0]: up to the batch
// size once that many are queued, the first has waited wait, or a push
// waits for room. upto is the Seq the cursor may move to once the batch is
// acknowledged: its last event's, or seen if the batch empties the queue.
// With no batch due, due says when one will be (0: the queue is empty, and
// upto is seen).
func (q *queue) poll(buf []*events.Event, wait time.Duration, now time.Time) (batch []*events.Event, upto int64, due time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, q.seen, 0
	}
	if len(q.items) < q.batch && !q.blocked {
		if d := q.firstAt.Add(wait).Sub(now); d > 0 {
			return nil, 0, d
		}
	}
	n := min(q.batch, len(q.items))
	batch = buf[:0]
	for _, it := range q.items[:n] {
		batch = append(batch, it.e)
		q.bytes -= it.size
	}
	// Taken from the front without moving the rest (append reallocates
	// the live part when the array runs out).
	clear(q.items[:n])
	q.items = q.items[n:]
	rest := len(q.items)
	upto = batch[n-1].Seq
	if rest == 0 {
		upto = q.seen
		q.bytes = 0
	} else {
		// The rest waited as long as the batch's events; no better time is
		// known without a time per event.
		q.firstAt = now
	}
	q.blocked = false // the push that waits sets it again if still short of room
	signal(q.space)
	return batch, upto, 0
}

// drop empties the queue and returns how many events it dropped and the Seq
// the cursor may move to.
func (q *queue) drop() (int, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.items)
	clear(q.items)
	q.items = q.items[:0]
	q.bytes = 0
	q.blocked = false
	signal(q.space)
	return n, q.seen
}

// oldest returns the time of the oldest queued event (zero if none).
func (q *queue) oldest() time.Time {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return time.Time{}
	}
	return q.items[0].e.Time
}

// stats returns the events queued and their estimated bytes.
func (q *queue) stats() (int, int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items), q.bytes
}

// close makes pushes return at once (so that closing the subscription,
// which waits for a callback in progress, cannot wait for room).
func (q *queue) close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.closeC)
	}
	q.mu.Unlock()
}
