package monitors

import (
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
)

// queue is a monitor's bounded in-memory queue between its event
// subscription and its send loop. The subscription's callback pushes every
// event it is handed, selected or not: a selected event is queued
// (waiting while the queue is full, which holds back only this
// subscription: the event bus then drops its own queue and later reads
// the events again from the durable log), an unselected one only moves
// seen. So seen tells how far the log was looked at, and once the queue is
// empty and nothing is in flight the monitor's cursor may move there.
//
// The send loop is woken only when it has something new to do: the first
// event of an empty queue (it starts the batch's time bound) and a full
// batch (batch events queued); a wake per event cost a goroutine switch
// and a timer per event and monitor.
type queue struct {
	mu      sync.Mutex
	items   []*events.Event
	arr     []*events.Event // the array items started in, reused when the queue empties
	firstAt time.Time       // when items[0] was queued
	seen    int64           // Seq of the last event pushed, selected or not
	cap     int
	batch   int // the send loop's batch size
	closed  bool

	wake   chan struct{} // one slot: the first event, or a full batch, was queued
	space  chan struct{} // one slot: items were taken
	closeC chan struct{} // closed by close
}

func newQueue(capacity, batch int, seen int64) *queue {
	return &queue{
		cap: capacity, batch: max(1, batch), seen: seen,
		wake: make(chan struct{}, 1), space: make(chan struct{}, 1), closeC: make(chan struct{}),
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// push queues e if selected, waiting for room; it returns false once the
// queue is closed.
func (q *queue) push(e *events.Event, selected bool, now func() time.Time) bool {
	q.mu.Lock()
	for selected && len(q.items) >= q.cap && !q.closed {
		q.mu.Unlock()
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
		q.mu.Unlock() // a repeat (the bus never sends one; cheap to be sure)
		return true
	}
	wake := false
	if selected {
		if len(q.items) == 0 {
			q.firstAt = now()
		}
		if len(q.items) == 0 {
			q.items = q.arr[:0]
		}
		c := cap(q.items)
		q.items = append(q.items, e)
		if cap(q.items) != c {
			q.arr = q.items[:0] // append moved the items to a new array
		}
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
// size once that many are queued or the first has waited wait. upto is
// the Seq the cursor may move to once the batch is acknowledged: its last
// event's, or seen if the batch empties the queue. With no batch due, due
// says when one will be (0: the queue is empty, and upto is seen).
func (q *queue) poll(buf []*events.Event, wait time.Duration, now time.Time) (batch []*events.Event, upto int64, due time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil, q.seen, 0
	}
	if len(q.items) < q.batch {
		if d := q.firstAt.Add(wait).Sub(now); d > 0 {
			return nil, 0, d
		}
	}
	n := min(q.batch, len(q.items))
	batch = append(buf[:0], q.items[:n]...)
	// Taken from the front without moving the rest (append reallocates
	// the live part when the array runs out).
	clear(q.items[:n])
	q.items = q.items[n:]
	rest := len(q.items)
	upto = batch[n-1].Seq
	if rest == 0 {
		upto = q.seen
	} else {
		// The rest waited as long as the batch's events; no better time is
		// known without a time per event.
		q.firstAt = now
	}
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
	return q.items[0].Time
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
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
