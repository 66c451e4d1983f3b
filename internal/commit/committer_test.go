package commit_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeStore records batches. Each Commit first reports the batch size on
// entered, then waits for a token on gate (if gate is set), so that a test
// can hold the committer inside a commit while it queues more changes.
type fakeStore struct {
	entered chan int
	gate    chan struct{}
	fail    error                // returned by every Commit
	outcome func(*commit.Change) // sets Err or Duplicate

	mu      sync.Mutex
	batches [][]string // device ids of each batch
	seq     int64
}

func newFakeStore() *fakeStore { return &fakeStore{entered: make(chan int, 1000)} }

func (s *fakeStore) Commit(ctx context.Context, batch []*commit.Change) error {
	ids := make([]string, len(batch))
	for i, ch := range batch {
		ids[i] = ch.DeviceID
	}
	s.mu.Lock()
	s.batches = append(s.batches, ids)
	s.mu.Unlock()
	s.entered <- len(batch)
	if s.gate != nil {
		<-s.gate
	}
	if s.fail != nil {
		return s.fail
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range batch {
		if s.outcome != nil {
			s.outcome(ch)
		}
		if ch.Err != nil || ch.Duplicate {
			continue
		}
		for i := range ch.Events {
			s.seq++
			ch.Events[i].Seq = s.seq
		}
	}
	return nil
}

func (s *fakeStore) MaxMessageID(context.Context) (int64, error) { return 0, nil }

func (s *fakeStore) committed() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.batches)
}

type fakePub struct {
	mu  sync.Mutex
	evs []events.Event
}

func (p *fakePub) Publish(evs []events.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evs = append(p.evs, evs...)
}

func (p *fakePub) devices() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, e := range p.evs {
		out = append(out, e.DeviceID)
	}
	return out
}

// run starts c and returns a function that stops it and returns Run's
// error; the test's cleanup stops it too.
func run(t *testing.T, c *commit.Committer) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func newCommitter(st commit.Store, pub commit.Publisher, opts commit.Options) *commit.Committer {
	return commit.New(st, pub, opts, slog.New(slog.DiscardHandler), nil)
}

// change is a change of device id with one event.
func change(id string) *commit.Change {
	return &commit.Change{DeviceID: id, Events: []commit.Event{{Event: events.Event{Type: events.DeviceDataReceived, DeviceID: id}}}}
}

func enqueue(t *testing.T, c *commit.Committer, ids ...string) []*commit.Ticket {
	t.Helper()
	var ts []*commit.Ticket
	for _, id := range ids {
		tk, err := c.Enqueue(context.Background(), change(id))
		if err != nil {
			t.Fatalf("enqueue %s: %v", id, err)
		}
		ts = append(ts, tk)
	}
	return ts
}

func waitAll(t *testing.T, ts []*commit.Ticket) []error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errs := make([]error, len(ts))
	for i, tk := range ts {
		errs[i] = tk.Wait(ctx)
		if errors.Is(errs[i], context.DeadlineExceeded) {
			t.Fatalf("ticket %d not finished after 10s", i)
		}
	}
	return errs
}

// entered waits until the store entered a Commit and returns its batch size.
func entered(t *testing.T, s *fakeStore) int {
	t.Helper()
	select {
	case n := <-s.entered:
		return n
	case <-time.After(10 * time.Second):
		t.Fatal("no commit after 10s")
		return 0
	}
}

func TestBatching(t *testing.T) {
	tests := []struct {
		name     string
		maxBatch int
		queued   []string   // enqueued while the first commit is held
		want     [][]string // batches after the first one ("a")
	}{
		{"queued changes form the next batch", 0, []string{"b", "c", "d"}, [][]string{{"b", "c", "d"}}},
		{"max batch splits in order", 2, []string{"b", "c", "d", "e", "f"}, [][]string{{"b", "c"}, {"d", "e"}, {"f"}}},
		{"max batch one", 1, []string{"b", "c"}, [][]string{{"b"}, {"c"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newFakeStore()
			st.gate = make(chan struct{})
			pub := &fakePub{}
			c := newCommitter(st, pub, commit.Options{MaxBatch: tt.maxBatch})
			run(t, c)

			first := enqueue(t, c, "a")
			if n := entered(t, st); n != 1 {
				t.Fatalf("first batch has %d changes, want 1", n)
			}
			rest := enqueue(t, c, tt.queued...)
			close(st.gate)
			for i, err := range waitAll(t, append(first, rest...)) {
				if err != nil {
					t.Errorf("ticket %d: %v", i, err)
				}
			}
			want := append([][]string{{"a"}}, tt.want...)
			if got := st.committed(); !slices.EqualFunc(got, want, slices.Equal) {
				t.Errorf("batches %v, want %v", got, want)
			}
			wantEvents := append([]string{"a"}, tt.queued...)
			if got := pub.devices(); !slices.Equal(got, wantEvents) {
				t.Errorf("published %v, want %v", got, wantEvents)
			}
			if got, want := c.LastSeq(), int64(len(wantEvents)); got != want {
				t.Errorf("LastSeq %d, want %d", got, want)
			}
		})
	}
}

func TestChangeOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		outcome   func(*commit.Change)
		wantErr   error
		published bool
	}{
		{"committed", nil, nil, true},
		{"device exists", func(ch *commit.Change) { ch.Err = commit.ErrDeviceExists }, commit.ErrDeviceExists, false},
		{"device not found", func(ch *commit.Change) { ch.Err = commit.ErrDeviceNotFound }, commit.ErrDeviceNotFound, false},
		{"duplicate", func(ch *commit.Change) { ch.Duplicate = true }, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newFakeStore()
			st.gate = make(chan struct{})
			st.outcome = func(ch *commit.Change) {
				if ch.DeviceID == "x" && tt.outcome != nil {
					tt.outcome(ch)
				}
			}
			pub := &fakePub{}
			c := newCommitter(st, pub, commit.Options{})
			run(t, c)

			// Hold the first commit so that the three changes share a batch.
			first := enqueue(t, c, "first")
			entered(t, st)
			ts := enqueue(t, c, "before", "x", "after")
			close(st.gate)
			errs := waitAll(t, append(first, ts...))
			for i, want := range []error{nil, nil, tt.wantErr, nil} {
				if !errors.Is(errs[i], want) || (want == nil && errs[i] != nil) {
					t.Errorf("ticket %d: error %v, want %v", i, errs[i], want)
				}
			}
			want := []string{"first", "before", "after"}
			if tt.published {
				want = []string{"first", "before", "x", "after"}
			}
			if got := pub.devices(); !slices.Equal(got, want) {
				t.Errorf("published %v, want %v", got, want)
			}
		})
	}
}

func TestBatchFailure(t *testing.T) {
	boom := errors.New("disk on fire")
	st := newFakeStore()
	st.gate = make(chan struct{})
	pub := &fakePub{}
	c := newCommitter(st, pub, commit.Options{})
	run(t, c)

	ts := enqueue(t, c, "a")
	entered(t, st)
	ts = append(ts, enqueue(t, c, "b", "c")...)
	st.fail = boom // read by the next Commits, after the gate
	close(st.gate)
	for i, err := range waitAll(t, ts) {
		if !errors.Is(err, boom) {
			t.Errorf("ticket %d: error %v, want %v", i, err, boom)
		}
	}
	if got := pub.devices(); len(got) != 0 {
		t.Errorf("published %v after a failed commit", got)
	}
	if c.LastSeq() != 0 {
		t.Errorf("LastSeq %d after a failed commit", c.LastSeq())
	}
}

// TestNilLogger: a committer made without a logger logs nothing, and
// neither a slow batch (every batch, here) nor a failed one makes it fail.
func TestNilLogger(t *testing.T) {
	st := newFakeStore()
	pub := &fakePub{}
	c := commit.New(st, pub, commit.Options{}, nil, nil)
	commit.SetSlowBatch(c, 0)
	run(t, c)
	if err := waitAll(t, enqueue(t, c, "a", "b"))[0]; err != nil {
		t.Fatalf("commit: %v", err)
	}
	boom := errors.New("disk on fire")
	st.mu.Lock()
	st.fail = boom
	st.mu.Unlock()
	if err := waitAll(t, enqueue(t, c, "c"))[0]; !errors.Is(err, boom) {
		t.Fatalf("failed commit: %v, want %v", err, boom)
	}
}

func TestClosed(t *testing.T) {
	st := newFakeStore()
	c := newCommitter(st, &fakePub{}, commit.Options{})
	stop := run(t, c)
	if err := stop(); err != nil {
		t.Fatalf("run: %v", err)
	}
	if _, err := c.Enqueue(context.Background(), change("a")); !errors.Is(err, commit.ErrClosed) {
		t.Errorf("Enqueue after stop: %v, want ErrClosed", err)
	}
	if err := c.Submit(context.Background(), change("a")); !errors.Is(err, commit.ErrClosed) {
		t.Errorf("Submit after stop: %v, want ErrClosed", err)
	}
}

func TestEnqueueFullQueue(t *testing.T) {
	st := newFakeStore()
	st.gate = make(chan struct{})
	c := newCommitter(st, &fakePub{}, commit.Options{QueueSize: 1})
	run(t, c)
	ts := enqueue(t, c, "a")
	entered(t, st)
	ts = append(ts, enqueue(t, c, "b")...) // fills the queue
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Enqueue(ctx, change("c")); !errors.Is(err, context.Canceled) {
		t.Errorf("Enqueue on a full queue with a cancelled context: %v", err)
	}
	close(st.gate)
	for i, err := range waitAll(t, ts) {
		if err != nil {
			t.Errorf("ticket %d: %v", i, err)
		}
	}
}

func TestWaitCancelled(t *testing.T) {
	st := newFakeStore()
	st.gate = make(chan struct{})
	c := newCommitter(st, &fakePub{}, commit.Options{})
	run(t, c)
	tk := enqueue(t, c, "a")[0]
	entered(t, st)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tk.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with a cancelled context: %v", err)
	}
	// The change is committed all the same.
	close(st.gate)
	if err := waitAll(t, []*commit.Ticket{tk})[0]; err != nil {
		t.Errorf("Wait after commit: %v", err)
	}
}

func TestDrainOnShutdown(t *testing.T) {
	st := newFakeStore()
	st.gate = make(chan struct{})
	pub := &fakePub{}
	c := newCommitter(st, pub, commit.Options{MaxBatch: 2})
	stop := run(t, c)
	ts := enqueue(t, c, "a")
	entered(t, st)
	ts = append(ts, enqueue(t, c, "b", "c", "d", "e")...)
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	close(st.gate)
	if err := <-stopped; err != nil {
		t.Fatalf("run: %v", err)
	}
	for i, err := range waitAll(t, ts) {
		if err != nil {
			t.Errorf("ticket %d: %v", i, err)
		}
	}
	want := []string{"a", "b", "c", "d", "e"}
	if got := slices.Concat(st.committed()...); !slices.Equal(got, want) {
		t.Errorf("committed %v, want %v", got, want)
	}
	if got := pub.devices(); !slices.Equal(got, want) {
		t.Errorf("published %v, want %v", got, want)
	}
}

func TestLinger(t *testing.T) {
	tests := []struct {
		name     string
		maxBatch int
		enqueue  int
		stop     bool // stop the committer while it lingers
		want     []int
	}{
		// With a linger far longer than the test, only MaxBatch or the
		// end of the committer can end a batch.
		{"waits until max batch", 3, 6, false, []int{3, 3}},
		{"shutdown ends the linger", 100, 2, true, []int{2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newFakeStore()
			c := newCommitter(st, &fakePub{}, commit.Options{MaxBatch: tt.maxBatch, Linger: time.Hour})
			stop := run(t, c)
			ts := make([]*commit.Ticket, 0, tt.enqueue)
			for i := range tt.enqueue {
				ts = append(ts, enqueue(t, c, fmt.Sprint(i))...)
			}
			if tt.stop {
				if err := stop(); err != nil {
					t.Fatalf("run: %v", err)
				}
			}
			for i, err := range waitAll(t, ts) {
				if err != nil {
					t.Errorf("ticket %d: %v", i, err)
				}
			}
			var got []int
			for _, b := range st.committed() {
				got = append(got, len(b))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("batch sizes %v, want %v", got, tt.want)
			}
		})
	}
}

// TestMetrics: the batch histograms are observed once per batch, the
// wait once per change (a slow batch of many changes must weigh by its
// changes there).
func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := newFakeStore()
	st.gate = make(chan struct{})
	c := commit.New(st, &fakePub{}, commit.Options{}, slog.New(slog.DiscardHandler), reg)
	run(t, c)
	first := enqueue(t, c, "a")
	entered(t, st)
	rest := enqueue(t, c, "b", "c", "d") // the second batch
	close(st.gate)
	for i, err := range waitAll(t, append(first, rest...)) {
		if err != nil {
			t.Fatalf("ticket %d: %v", i, err)
		}
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if h := m.GetHistogram(); h != nil {
				got[mf.GetName()] = h.GetSampleCount()
			}
		}
	}
	for name, want := range map[string]uint64{
		"devicehub_commit_batch_size":       2,
		"devicehub_commit_duration_seconds": 2,
		"devicehub_commit_wait_seconds":     4,
	} {
		if got[name] != want {
			t.Errorf("%s has %d samples, want %d", name, got[name], want)
		}
	}
}

// records is a slog handler keeping the records it is given.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, rec.Clone())
	return nil
}
func (r *records) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *records) WithGroup(string) slog.Handler      { return r }

// suppressed returns the suppressed attribute of each record msg.
func (r *records) suppressed(msg string) []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, rec := range r.recs {
		if rec.Message != msg {
			continue
		}
		n := int64(-1)
		rec.Attrs(func(a slog.Attr) bool {
			if a.Key == "suppressed" {
				n = a.Value.Int64()
			}
			return true
		})
		out = append(out, n)
	}
	return out
}

// TestSlowBatchLogLimited: under sustained overload (every batch slow,
// here) the "slow group commit" line is logged at most once per 10 s of
// the committer's clock, and each line counts the slow batches not logged
// since the last one.
func TestSlowBatchLogLimited(t *testing.T) {
	tests := []struct {
		name    string
		batches []time.Duration // the clock at each batch, after the first
		want    []int64         // the suppressed count of each line logged
	}{
		{"one", []time.Duration{0}, []int64{0}},
		{"ten a second for 25s", func() []time.Duration {
			var at []time.Duration
			for i := range 250 {
				at = append(at, time.Duration(i)*100*time.Millisecond)
			}
			return at
		}(), []int64{0, 99, 99}},
		{"a burst, then quiet, then one", []time.Duration{0, time.Second, 2 * time.Second, time.Hour}, []int64{0, 2}},
		{"just before 10s", []time.Duration{0, 10*time.Second - 1, 10 * time.Second}, []int64{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
			var now atomic.Int64
			rec := &records{}
			c := commit.New(newFakeStore(), &fakePub{}, commit.Options{}, slog.New(rec), nil)
			commit.SetSlowBatch(c, 0)
			commit.SetClock(c, func() time.Time { return t0.Add(time.Duration(now.Load())) })
			stop := run(t, c)
			for i, at := range tt.batches {
				now.Store(int64(at))
				if err := waitAll(t, enqueue(t, c, fmt.Sprint("d", i)))[0]; err != nil {
					t.Fatalf("batch %d: %v", i, err)
				}
			}
			if err := stop(); err != nil { // the last line is logged before Run returns
				t.Fatal(err)
			}
			if got := rec.suppressed("slow group commit"); !slices.Equal(got, tt.want) {
				t.Fatalf("lines with suppressed counts %v, want %v", got, tt.want)
			}
		})
	}
}
