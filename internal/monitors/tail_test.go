package monitors

import (
	"context"
	"fmt"
	"runtime"
	"strings"
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
	tl := newTail(8, 1<<20)
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
	got, _, ok, _ := tl.read(10, 100, nil, nil)
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
	if _, _, ok, _ := tl.read(13, 100, nil, nil); ok {
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
	if got, _, ok, _ := tl.read(20, 100, nil, nil); !ok || len(got) != 1 || got[0].Seq != 21 {
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

// dataEvent is a device_data_received event of seq with one reading of
// fields numbers and a string value of pad bytes, as ingest makes it.
func dataEvent(seq int64, fields, pad int) *events.Event {
	vals := make(map[string]any, fields+1)
	for i := range fields {
		vals[fmt.Sprintf("field%d", i)] = float64(seq) + float64(i)/10
	}
	if pad > 0 {
		vals["note"] = strings.Repeat("x", pad)
	}
	return &events.Event{Seq: seq, Type: events.DeviceDataReceived, DeviceID: fmt.Sprintf("dev-%06d", seq%1000), DeviceType: "sensor",
		Time: time.Unix(seq, 0).UTC(), Args: &events.DataReceived{MessageID: seq, Topic: "devices/dev/data", Transport: "mqtt",
			Readings: []events.Reading{{Time: time.Unix(seq, 0).UTC(), Values: vals}}}}
}

// TestTailByteBound: the tail holds the latest events whose sizes fit in
// its budget (and at least the newest), up to its count; what it dropped
// is no longer covered (a reader behind it reads the store), what it holds
// is read in order, and its bytes are the sum of the held events' sizes.
func TestTailByteBound(t *testing.T) {
	small, big := retainedSize(dataEvent(1, 4, 0)), retainedSize(dataEvent(1, 4, 4000))
	tests := []struct {
		name   string
		count  int
		budget int64
		pads   []int // the string padding of events 1, 2, ...
		held   int   // how many of the latest events the tail holds
	}{
		{"fits both bounds", 8, 10 * small, []int{0, 0, 0}, 3},
		{"count bound", 3, 100 * small, []int{0, 0, 0, 0, 0}, 3},
		{"byte bound, small events", 100, 3 * small, []int{0, 0, 0, 0, 0}, 3},
		{"a big event drops several small ones", 100, 3 * small, []int{0, 0, 0, 0, 4000}, 1},
		{"an event over the budget is still held alone", 100, small, []int{0, 0, 4000}, 1},
		{"a big event leaves in its turn", 100, big + 2*small, []int{0, 4000, 0, 0, 0}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTail(tt.count, tt.budget)
			tl.covered = 0 // following from the start of the log
			var evs []*events.Event
			for i, pad := range tt.pads {
				e := dataEvent(int64(i+1), 4, pad)
				evs = append(evs, e)
				tl.append(e)
			}
			n, bytes := tl.stats()
			if n != tt.held {
				t.Fatalf("holds %d events, want %d", n, tt.held)
			}
			var want int64
			for _, e := range evs[len(evs)-n:] {
				want += retainedSize(e)
			}
			if bytes != want {
				t.Fatalf("bytes %d, want %d (the held events' sizes)", bytes, want)
			}
			if bytes > tt.budget && n > 1 {
				t.Fatalf("bytes %d over the budget %d with %d events", bytes, tt.budget, n)
			}
			first := int64(len(evs) - n + 1) // the oldest held
			if _, _, ok, _ := tl.read(first-2, 100, nil, nil); ok && first > 1 {
				t.Fatalf("read after %d: covered, though event %d was dropped", first-2, first-1)
			}
			got, _, ok, _ := tl.read(first-1, 100, nil, nil)
			if !ok || len(got) != n {
				t.Fatalf("read after %d: ok %v, %d events, want %d", first-1, ok, len(got), n)
			}
			for i, e := range got {
				if e != evs[int(first)-1+i] {
					t.Fatalf("event %d: seq %d, want %d", i, e.Seq, evs[int(first)-1+i].Seq)
				}
			}
			tl.empty()
			if n, bytes := tl.stats(); n != 0 || bytes != 0 {
				t.Fatalf("after empty: %d events, %d bytes", n, bytes)
			}
		})
	}
}

// TestRetainedSize: the estimate of an event's memory against the heap
// that events of typical shapes really keep alive (measured: many of
// them built as ingest builds them, after a collection). It must not
// count much less (the bound would not hold) nor far more (the tail
// would hold fewer events than the budget allows).
func TestRetainedSize(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("measures the heap (which the race detector changes)")
	}
	tests := []struct {
		name        string
		fields, pad int
	}{
		{"4 numbers", 4, 0},
		{"16 numbers", 16, 0},
		{"4 numbers and 1 KiB of text", 4, 1024},
		{"64 numbers", 64, 0},
		{"9 numbers", 9, 0},
		{"200 numbers", 200, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const n = 20000
			keep := make([]*events.Event, n)
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			before := ms.HeapAlloc
			for i := range keep {
				keep[i] = dataEvent(int64(i+1), tt.fields, tt.pad)
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			measured := float64(ms.HeapAlloc-before)/n - 8 // less keep's own slot
			est := float64(retainedSize(keep[n/2])) - 12   // less the tail's slot
			runtime.KeepAlive(keep)
			t.Logf("estimate %.0f bytes an event, measured %.0f (%.2f)", est, measured, est/measured)
			if est < 0.9*measured || est > 1.6*measured {
				t.Fatalf("estimate %.0f bytes an event, measured %.0f", est, measured)
			}
		})
	}
}
