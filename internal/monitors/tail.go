package monitors

import (
	"context"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/eventlog"
)

// tail is the recent end of the event log, in memory, shared by every
// monitor: one event bus subscription (whose callback only appends, so it
// keeps up) fills a ring of the last Options.TailSize events, and of fewer
// when their estimated size (retainedSize) would exceed
// Options.TailBytes: the oldest are dropped until the newest fits (the
// newest is always kept, however large). Each
// monitor's feeder reads the events after its position from the ring, and
// from the durable log only when it is further behind than the ring
// reaches. So the events are held once, not once per monitor, and a
// monitor that falls behind by less than the ring (a slow receiver, a
// burst of commits) reads nothing back from the store, where decoding
// every event again, once per monitor, cost more CPU than ingest itself.
//
// The ring holds pointers: every monitor shares the one copy of an event
// (its feeder, queue and batches pass the pointer on; nobody modifies an
// event once it is in the tail), and an empty slot costs 8 bytes.
type tail struct {
	mu      sync.Mutex
	ring    []*events.Event // the events, in Seq order, from ring[start] (a circular buffer)
	sizes   []uint32        // retainedSize of ring[i], at i
	start   int
	n       int
	bytes   int64         // the sum of sizes of the events held
	budget  int64         // the bound of bytes
	covered int64         // every event with a Seq above this is in the ring (or not committed yet)
	wake    chan struct{} // closed and replaced when events are appended while a reader waits
	armed   bool          // a reader found nothing new and waits on wake
	closed  bool
}

// noneCovered is the tail's covered while it does not follow the bus.
const noneCovered = math.MaxInt64

// newTail returns a tail of at most size events and budget bytes (of
// their retainedSize).
func newTail(size int, budget int64) *tail {
	// Nothing is covered until run knows where the log ends.
	return &tail{ring: make([]*events.Event, size), sizes: make([]uint32, size), budget: budget,
		wake: make(chan struct{}), covered: noneCovered}
}

// stats returns the events and the bytes (of their retainedSize) the
// tail holds.
func (t *tail) stats() (n int, bytes int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n, t.bytes
}

// run fills the ring while monitors run, until ctx is done: while want
// reports true it follows the bus from the end of the log (follow); when
// want turns false (the last monitor stopped) it lets the subscription
// go and empties the ring, so that a hub with no monitor running keeps no
// events in memory and spends nothing on them; and it waits for want to
// turn true again. kick is signalled whenever want may have changed;
// started is called each time the tail starts following (what was
// learnt from events while it did not, such as the devices' groups,
// must be forgotten then).
func (t *tail) run(ctx context.Context, evs Events, prepare func(*events.Event), retry time.Duration,
	want func() bool, kick <-chan struct{}, started func()) error {
	defer func() {
		t.mu.Lock()
		t.closed = true
		close(t.wake)
		t.wake = make(chan struct{})
		t.mu.Unlock()
	}()
	for {
		for !want() {
			select {
			case <-ctx.Done():
				return nil
			case <-kick:
			}
		}
		started()
		if err := t.follow(ctx, evs, prepare, retry, want, kick); err != nil || ctx.Err() != nil {
			return err
		}
	}
}

// follow subscribes to the bus from the end of the log and appends every
// event, until ctx is done or want reports false; then it empties the
// ring. It retries (every retry) while the log cannot be read: the
// monitors wait meanwhile.
func (t *tail) follow(ctx context.Context, evs Events, prepare func(*events.Event), retry time.Duration,
	want func() bool, kick <-chan struct{}) error {
	var head int64
	for {
		var err error
		if head, err = evs.LastSeq(ctx); err == nil {
			break
		}
		if !wait(ctx, retry) {
			return err
		}
	}
	t.mu.Lock()
	t.covered = head
	close(t.wake)
	t.wake = make(chan struct{})
	t.mu.Unlock()
	// From head: the events committed after LastSeq answered, without a
	// gap (From 0 would start at the bus's own position, which may be
	// behind a store that others wrote).
	from := head
	if from == 0 {
		from = -1
	}
	sub, err := evs.Subscribe(eventlog.SubscribeOptions{From: from, Buffer: 1 << 16}, func(e events.Event) {
		prepare(&e)
		t.append(&e)
	})
	if err != nil {
		return err // the bus stopped: so does the hub
	}
	for want() {
		select {
		case <-ctx.Done():
			sub.Close()
			return nil
		case <-kick:
		}
	}
	sub.Close() // no append after it returns
	t.empty()
	return nil
}

// empty drops every event of the ring: nothing is covered until the tail
// follows the bus again. A reader waiting is woken (to read the store).
func (t *tail) empty() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.ring)
	t.start, t.n, t.bytes = 0, 0, 0
	t.covered = noneCovered
	close(t.wake)
	t.wake = make(chan struct{})
	t.armed = false
}

// append adds e (which nobody modifies afterwards). Only a reader that
// found nothing to read is woken, and once per wait: a busy feeder reads
// what a whole commit appended in one pass instead of being signalled per
// event (a channel closed and made per event, and every feeder woken, cost
// more than the rest of the tail).
//
// The size is estimated before the lock is taken: the walk of a reading's
// values is the only part of append that grows with the payload.
func (t *tail) append(e *events.Event) {
	size := uint32(min(retainedSize(e), math.MaxUint32))
	t.mu.Lock()
	for t.n == len(t.ring) || (t.n > 0 && t.bytes+int64(size) > t.budget) {
		t.covered = t.ring[t.start].Seq
		t.ring[t.start] = nil
		t.bytes -= int64(t.sizes[t.start])
		t.start = (t.start + 1) % len(t.ring)
		t.n--
	}
	i := (t.start + t.n) % len(t.ring)
	t.ring[i], t.sizes[i] = e, size
	t.n++
	t.bytes += int64(size)
	if t.armed {
		t.armed = false
		close(t.wake)
		t.wake = make(chan struct{})
	}
	t.mu.Unlock()
}

// read appends to buf up to max events with a Seq above after, and their
// retainedSize to sizes, and returns them. ok is false when the ring no
// longer holds every event after after (read those from the store first).
// wake is closed when more events are appended (or the tail stops); a
// reader that found nothing waits on it.
func (t *tail) read(after int64, max int, buf []*events.Event, sizes []uint32) (out []*events.Event, outSizes []uint32, ok bool, wake <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if after < t.covered {
		t.armed = true // the reader may wait for the store to catch up
		return buf, sizes, false, t.wake
	}
	at := func(i int) int { return (t.start + i) % len(t.ring) }
	i := sort.Search(t.n, func(i int) bool { return t.ring[at(i)].Seq > after })
	n := len(buf)
	for ; i < t.n && len(buf) < max; i++ {
		buf = append(buf, t.ring[at(i)])
		sizes = append(sizes, t.sizes[at(i)])
	}
	if len(buf) == n {
		t.armed = true // the reader waits: the next append wakes it
	}
	return buf, sizes, true, t.wake
}

// feeder moves the events after a sender's position into its queue: from
// the ring, or from the store while the ring does not reach back that far.
// It stops when its queue is closed.
type feeder struct {
	done chan struct{}
	stop chan struct{}
	once sync.Once
}

// Close stops the feeder and waits for it.
func (f *feeder) Close() {
	f.once.Do(func() { close(f.stop) })
	<-f.done
}

// feed starts the feeder of q from position from, handing each event and
// its retainedSize to handle (which queues it, waiting for room) until it
// returns false.
//
// What the feeder holds besides the queue (the events read and not handed
// yet, while it waits for room) is kept within the queue's byte bound too:
// it reads at most as many events as the last ones read, at their average
// size, would fit in it (and at most 1024). The events read from the store
// are each moved to their own allocation: a queued event pointing into the
// array of a read would keep the whole read, and every payload in it,
// alive.
func (s *Service) feed(from int64, q *queue, handle func(e *events.Event, size int64) bool) *feeder {
	f := &feeder{done: make(chan struct{}), stop: make(chan struct{})}
	go func() {
		defer close(f.done)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() {
			select {
			case <-f.stop:
				q.close()
				cancel()
			case <-ctx.Done():
			}
		}()
		pos := from
		// First from the store, up to its end: the log may hold events this
		// hub's bus never carried (written by another hub on the same
		// database while this one was down); then from the tail, or from
		// the store again whenever the tail has moved past pos.
		catchingUp := true
		const most = 1024
		limit := most
		buf := make([]*events.Event, 0, most)
		sizes := make([]uint32, 0, most)
		for ctx.Err() == nil {
			evs, szs, ok, wake := s.tail.read(pos, limit, buf[:0], sizes[:0])
			if catchingUp || !ok {
				stored, err := s.deps.Events.ReadEvents(ctx, pos, limit)
				if err != nil {
					if ctx.Err() == nil {
						s.log.Warn("monitor: read the event log", "after", pos, "err", err)
						wait(ctx, s.opts.MinBackoff)
					}
					continue
				}
				if len(stored) == 0 {
					if catchingUp {
						catchingUp = false
						continue
					}
					// The tail moved past pos but the store has nothing
					// after it yet: wait for more.
					select {
					case <-wake:
					case <-ctx.Done():
					}
					continue
				}
				evs, szs = buf[:0], sizes[:0]
				for i := range stored {
					e := new(events.Event)
					*e = stored[i]
					evs = append(evs, e)
					szs = append(szs, uint32(min(retainedSize(e), math.MaxUint32)))
				}
				clear(stored)
			} else if len(evs) == 0 {
				select {
				case <-wake:
				case <-ctx.Done():
				}
				continue
			}
			var total int64
			for i, e := range evs {
				total += int64(szs[i])
				evs[i] = nil // hold no event longer than needed
				if e.Seq <= pos {
					continue
				}
				if !handle(e, int64(szs[i])) {
					return
				}
				pos = e.Seq
			}
			limit = readLimit(q.budget, total/int64(len(evs)), most)
		}
	}()
	return f
}

// readLimit is how many events of avg bytes a feeder reads at once: as
// many as fit in budget, at least 1 and at most most.
func readLimit(budget, avg int64, most int) int {
	if avg <= 0 {
		return most
	}
	return int(max(1, min(int64(most), budget/avg)))
}
