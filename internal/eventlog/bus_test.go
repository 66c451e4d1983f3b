package eventlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventually"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var _ commit.Publisher = (*Bus)(nil)

// memStore is the durable log: it holds every event published through it,
// as the committer's store would before Publish.
type memStore struct {
	mu    sync.Mutex
	evs   []events.Event
	reads atomic.Int64
	fail  atomic.Bool
}

func (s *memStore) ReadEvents(_ context.Context, after int64, limit int) ([]events.Event, error) {
	s.reads.Add(1)
	if s.fail.Load() {
		return nil, errors.New("store down")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.evs, after+1, func(e events.Event, seq int64) int { return int(e.Seq - seq) })
	j := min(len(s.evs), i+limit)
	return slices.Clone(s.evs[i:j]), nil
}

func (s *memStore) LastSeq(context.Context) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.evs) == 0 {
		return 0, nil
	}
	return s.evs[len(s.evs)-1].Seq, nil
}

// world is a bus over a memStore, with a "committer" that stores events
// and then publishes them.
type world struct {
	t     *testing.T
	store *memStore
	bus   *Bus
	reg   *prometheus.Registry
	seq   int64
	mu    sync.Mutex
}

func newWorld(t *testing.T, opts BusOptions) *world {
	t.Helper()
	w := &world{t: t, store: &memStore{}, reg: prometheus.NewRegistry()}
	w.bus = NewBus(w.store, opts, slog.New(slog.NewTextHandler(io.Discard, nil)), w.reg)
	return w
}

// run runs the bus until the test ends.
func (w *world) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.bus.Run(ctx) }()
	w.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			w.t.Errorf("Run: %v", err)
		}
	})
}

var devTypes = []string{"thermo", "meter"}

// commit stores and publishes n events, as one batch.
func (w *world) commit(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	evs := make([]events.Event, n)
	for i := range evs {
		w.seq++
		typ := events.DeviceDataReceived
		if w.seq%3 == 0 {
			typ = events.DeviceStatusChanged
		}
		evs[i] = events.Event{
			Seq: w.seq, Type: typ, Time: time.Unix(w.seq, 0),
			DeviceID: fmt.Sprintf("dev%d", w.seq%5), DeviceType: devTypes[w.seq%2],
		}
	}
	w.store.mu.Lock()
	w.store.evs = append(w.store.evs, evs...)
	w.store.mu.Unlock()
	w.bus.Publish(evs)
}

// collector records what a subscriber received.
type collector struct {
	mu   sync.Mutex
	seqs []int64
	evs  []events.Event
}

func (c *collector) fn(e events.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seqs = append(c.seqs, e.Seq)
	c.evs = append(c.evs, e)
}

func (c *collector) got() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seqs)
}

// metricValue returns the value of an unlabelled counter or gauge.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

func seqRange(from, to int64) []int64 {
	var s []int64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

// waitSeqs waits until c received exactly want.
func waitSeqs(t *testing.T, c *collector, want []int64) {
	t.Helper()
	eventually.True(t, 10*time.Second, fmt.Sprintf("%d events", len(want)), func() bool { return len(c.got()) >= len(want) })
	if got := c.got(); !slices.Equal(got, want) {
		t.Fatalf("got seqs %v,\nwant %v", abbrev(got), abbrev(want))
	}
}

func abbrev(s []int64) string {
	if len(s) <= 20 {
		return fmt.Sprint(s)
	}
	return fmt.Sprintf("%v ... %v (%d)", s[:10], s[len(s)-10:], len(s))
}

func TestOrder(t *testing.T) {
	w := newWorld(t, BusOptions{})
	w.run()
	c := &collector{}
	sub, err := w.bus.Subscribe(SubscribeOptions{}, c.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	for i := 0; i < 200; i++ {
		w.commit(1 + i%7)
	}
	waitSeqs(t, c, seqRange(1, w.seq))
}

func TestFilter(t *testing.T) {
	tests := []struct {
		name   string
		filter events.Filter
		want   func(e events.Event) bool
	}{
		{"all", events.Filter{}, func(events.Event) bool { return true }},
		{"type", events.Filter{Types: []events.Type{events.DeviceStatusChanged}}, func(e events.Event) bool { return e.Type == events.DeviceStatusChanged }},
		{"device type", events.Filter{DeviceTypes: []string{"meter"}}, func(e events.Event) bool { return e.DeviceType == "meter" }},
		{"device", events.Filter{DeviceIDs: []string{"dev1", "dev2"}}, func(e events.Event) bool { return e.DeviceID == "dev1" || e.DeviceID == "dev2" }},
		{"type and device type", events.Filter{Types: []events.Type{events.DeviceDataReceived}, DeviceTypes: []string{"thermo"}}, func(e events.Event) bool {
			return e.Type == events.DeviceDataReceived && e.DeviceType == "thermo"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, from := range []int64{0, 10} {
				t.Run(fmt.Sprintf("from %d", from), func(t *testing.T) {
					w := newWorld(t, BusOptions{})
					w.run()
					w.commit(20) // before the subscription: only From sees them
					c := &collector{}
					sub, err := w.bus.Subscribe(SubscribeOptions{Filter: tt.filter, From: from}, c.fn)
					if err != nil {
						t.Fatal(err)
					}
					defer sub.Close()
					w.commit(80)
					start := int64(21)
					if from > 0 {
						start = from + 1
					}
					var want []int64
					for _, e := range w.store.evs {
						if e.Seq >= start && tt.want(e) {
							want = append(want, e.Seq)
						}
					}
					waitSeqs(t, c, want)
					for _, e := range c.evs {
						if !tt.filter.Match(&e) {
							t.Errorf("event %d does not pass the filter", e.Seq)
						}
					}
				})
			}
		})
	}
}

func TestFromReplayThenLive(t *testing.T) {
	w := newWorld(t, BusOptions{CatchUpBatch: 7})
	w.run()
	w.commit(100)
	// Events keep coming while the subscriber replays.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			w.commit(1 + i%3)
		}
		close(stop)
	}()
	c := &collector{}
	sub, err := w.bus.Subscribe(SubscribeOptions{From: 50}, c.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	<-stop
	wg.Wait()
	waitSeqs(t, c, seqRange(51, w.seq))
}

func TestFromBeyondStore(t *testing.T) {
	w := newWorld(t, BusOptions{})
	w.run()
	w.commit(5)
	c := &collector{}
	sub, err := w.bus.Subscribe(SubscribeOptions{From: 8}, c.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	w.commit(5) // 6..10: only 9 and 10 are after From
	waitSeqs(t, c, []int64{9, 10})
}

func TestSlowSubscriberCatchesUp(t *testing.T) {
	w := newWorld(t, BusOptions{Buffer: 4, CatchUpBatch: 16})
	w.run()

	release := make(chan struct{})
	slow := &collector{}
	var blocked atomic.Bool
	subSlow, err := w.bus.Subscribe(SubscribeOptions{}, func(e events.Event) {
		if e.Seq == 1 {
			blocked.Store(true)
			<-release
		}
		slow.fn(e)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer subSlow.Close()
	fast := &collector{}
	subFast, err := w.bus.Subscribe(SubscribeOptions{Buffer: 100000}, fast.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer subFast.Close()

	w.commit(1)
	eventually.True(t, 10*time.Second, "the slow subscriber to block", blocked.Load)
	// Publish must not wait for the blocked subscriber.
	published := make(chan struct{})
	go func() {
		for i := 0; i < 500; i++ {
			w.commit(1 + i%4)
		}
		close(published)
	}()
	select {
	case <-published:
	case <-time.After(10 * time.Second):
		t.Fatal("Publish blocked behind a slow subscriber")
	}
	waitSeqs(t, fast, seqRange(1, w.seq))
	if n := metricValue(t, w.reg, "devicehub_eventlog_subscriber_catchups_total"); n == 0 {
		t.Error("the slow subscriber never switched to catch-up")
	}
	if lag := w.bus.maxLag(); lag <= 0 {
		t.Errorf("max lag = %v while a subscriber is blocked", lag)
	}
	close(release)
	w.commit(10) // and live again afterwards
	waitSeqs(t, slow, seqRange(1, w.seq))
	if w.store.reads.Load() == 0 {
		t.Error("catch-up did not read the store")
	}
}

func TestCatchUpRetriesStoreErrors(t *testing.T) {
	w := newWorld(t, BusOptions{RetryInterval: time.Millisecond})
	w.run()
	w.commit(10)
	w.store.fail.Store(true)
	c := &collector{}
	sub, err := w.bus.Subscribe(SubscribeOptions{From: 1}, c.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	eventually.True(t, 10*time.Second, "a failed read", func() bool { return w.store.reads.Load() >= 3 })
	w.store.fail.Store(false)
	w.commit(5)
	waitSeqs(t, c, seqRange(2, 15))
}

// TestRandomSlowness publishes while subscribers of random speed and
// buffer sizes come and go; each must see exactly the events after its
// start, in order.
func TestRandomSlowness(t *testing.T) {
	w := newWorld(t, BusOptions{CatchUpBatch: 5})
	w.run()
	type subscriber struct {
		c     *collector
		sub   *Subscription
		start int64
	}
	var subs []subscriber
	for i := 0; i < 6; i++ {
		w.commit(3)
		c := &collector{}
		r := rand.New(rand.NewPCG(uint64(i), 1))
		var mu sync.Mutex
		from := int64(0)
		if i%2 == 1 {
			from = int64(i)
		}
		w.mu.Lock() // no commit between reading the position and subscribing
		start := w.seq + 1
		if from > 0 {
			start = from + 1
		}
		sub, err := w.bus.Subscribe(SubscribeOptions{From: from, Buffer: 1 + i*3}, func(e events.Event) {
			mu.Lock()
			n := r.IntN(100)
			mu.Unlock()
			if n < 3 {
				time.Sleep(time.Duration(n) * time.Millisecond) // be slow now and then
			}
			c.fn(e)
		})
		w.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, subscriber{c, sub, start})
	}
	for i := 0; i < 300; i++ {
		w.commit(1 + i%5)
	}
	for _, s := range subs {
		waitSeqs(t, s.c, seqRange(s.start, w.seq))
		s.sub.Close()
	}
}

func TestCloseWhileBlocked(t *testing.T) {
	w := newWorld(t, BusOptions{})
	w.run()
	entered := make(chan struct{})
	release := make(chan struct{})
	var calls atomic.Int64
	sub, err := w.bus.Subscribe(SubscribeOptions{}, func(events.Event) {
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	w.commit(5)
	<-entered
	closed := make(chan struct{})
	go func() {
		sub.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while the callback was still running")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	<-closed
	n := calls.Load()
	w.commit(5)
	sub.Close() // idempotent
	if got := calls.Load(); got != n || n != 1 {
		t.Errorf("callback called %d times, %d after Close; want 1 and no more", n, got-n)
	}
}

func TestSubscribeAroundRun(t *testing.T) {
	w := newWorld(t, BusOptions{})
	before := &collector{}
	subBefore, err := w.bus.Subscribe(SubscribeOptions{}, before.fn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.bus.Run(ctx) }()
	w.commit(3)
	after := &collector{}
	subAfter, err := w.bus.Subscribe(SubscribeOptions{}, after.fn)
	if err != nil {
		t.Fatal(err)
	}
	w.commit(3)
	waitSeqs(t, before, seqRange(1, 6))
	waitSeqs(t, after, seqRange(4, 6))
	if err := w.bus.Run(ctx); !errors.Is(err, ErrRunning) {
		t.Errorf("second Run: %v, want ErrRunning", err)
	}

	// A subscription closed before its goroutine runs.
	closedEarly, err := w.bus.Subscribe(SubscribeOptions{}, func(events.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	closedEarly.Close()

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := w.bus.Subscribe(SubscribeOptions{}, func(events.Event) {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Subscribe after Run: %v, want ErrClosed", err)
	}
	if err := w.bus.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Run: %v, want ErrClosed", err)
	}
	w.commit(2) // Publish after Run must not block
	subBefore.Close()
	subAfter.Close()
	if _, err := w.bus.Subscribe(SubscribeOptions{}, nil); !errors.Is(err, ErrNoCallback) {
		t.Errorf("nil callback: %v", err)
	}
}

func TestRunStopsBlockedSubscriber(t *testing.T) {
	w := newWorld(t, BusOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.bus.Run(ctx) }()
	release := make(chan struct{})
	entered := make(chan struct{}, 10)
	sub, err := w.bus.Subscribe(SubscribeOptions{}, func(events.Event) {
		entered <- struct{}{}
		<-release
	})
	if err != nil {
		t.Fatal(err)
	}
	w.commit(10)
	<-entered
	cancel()
	select {
	case <-done:
		t.Fatal("Run returned while a callback was running")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sub.Close()
}

func BenchmarkPublish(b *testing.B) {
	store := &memStore{}
	bus := NewBus(store, BusOptions{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bus.Run(ctx) }()
	var n atomic.Int64
	for i := 0; i < 4; i++ {
		sub, err := bus.Subscribe(SubscribeOptions{Buffer: 1 << 16}, func(events.Event) { n.Add(1) })
		if err != nil {
			b.Fatal(err)
		}
		defer sub.Close()
	}
	batch := make([]events.Event, 100)
	seq := int64(0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range batch {
			seq++
			batch[j] = events.Event{Seq: seq, Type: events.DeviceDataReceived, DeviceID: "d", DeviceType: "t"}
		}
		store.mu.Lock()
		store.evs = append(store.evs, batch...)
		store.mu.Unlock()
		bus.Publish(batch)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(store.reads.Load()), "store-reads")
	cancel()
	<-done
}
