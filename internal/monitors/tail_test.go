package monitors

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/eventlog"
)

// fakeLog is an event log whose subscriptions the test drives: subscribed
// receives each subscription as it is made.
type fakeLog struct {
	last       atomic.Int64
	subscribed chan *fakeSub
}

type fakeSub struct {
	from   int64
	fn     func(events.Event)
	closed chan struct{}
	once   sync.Once
}

func (s *fakeSub) Close() { s.once.Do(func() { close(s.closed) }) }

func (l *fakeLog) Subscribe(opts eventlog.SubscribeOptions, fn func(events.Event)) (Subscription, error) {
	s := &fakeSub{from: opts.From, fn: fn, closed: make(chan struct{})}
	l.subscribed <- s
	return s, nil
}

func (l *fakeLog) LastSeq(context.Context) (int64, error) { return l.last.Load(), nil }

func (l *fakeLog) ReadEvents(context.Context, int64, int) ([]events.Event, error) { return nil, nil }

// TestTailFollowsOnlyWhileWanted: the tail subscribes to the bus only
// while a monitor runs (want), from the end of the log; when the last one
// stops it lets the subscription go and holds no event; it follows again,
// from the new end, when a monitor starts again.
func TestTailFollowsOnlyWhileWanted(t *testing.T) {
	log := &fakeLog{subscribed: make(chan *fakeSub, 1)}
	log.last.Store(10)
	tl := newTail(8)
	var want atomic.Bool
	kick := make(chan struct{}, 1)
	set := func(v bool) {
		want.Store(v)
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	var starts atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tl.run(ctx, log, func(*events.Event) {}, time.Millisecond, want.Load, kick, func() { starts.Add(1) })
	}()

	select {
	case s := <-log.subscribed:
		t.Fatalf("subscribed from %d with no monitor running", s.from)
	default:
	}
	set(true)
	s1 := <-log.subscribed
	if s1.from != 10 {
		t.Fatalf("subscribed from %d, want the end of the log (10)", s1.from)
	}
	for i := int64(11); i <= 13; i++ {
		s1.fn(events.Event{Seq: i})
	}
	got, ok, _ := tl.read(10, 100, nil)
	if !ok || len(got) != 3 || got[0].Seq != 11 || got[2].Seq != 13 {
		t.Fatalf("read after 10: ok %v, %d events", ok, len(got))
	}

	set(false)
	<-s1.closed
	// The subscription is closed before the ring is emptied: wait for the
	// empty ring (it happens right after, in the tail's goroutine).
	for {
		tl.mu.Lock()
		w, c := tl.wake, tl.covered
		tl.mu.Unlock()
		if c == noneCovered {
			break
		}
		<-w // closed by the emptying
	}
	if _, ok, _ := tl.read(13, 100, nil); ok {
		t.Fatal("the tail still covers events with no monitor running")
	}
	tl.mu.Lock()
	n := tl.n
	tl.mu.Unlock()
	if n != 0 {
		t.Fatalf("the tail holds %d events with no monitor running", n)
	}

	log.last.Store(20)
	set(true)
	s2 := <-log.subscribed
	if s2.from != 20 {
		t.Fatalf("subscribed again from %d, want the new end of the log (20)", s2.from)
	}
	s2.fn(events.Event{Seq: 21})
	if got, ok, _ := tl.read(20, 100, nil); !ok || len(got) != 1 || got[0].Seq != 21 {
		t.Fatalf("read after 20: ok %v, %d events", ok, len(got))
	}
	if n := starts.Load(); n != 2 {
		t.Fatalf("started %d times, want 2", n)
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-s2.closed
}
