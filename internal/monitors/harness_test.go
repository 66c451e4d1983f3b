package monitors_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/monitors"
	"github.com/devicehub/devicehub/internal/monitors/monitorstest"
	"github.com/devicehub/devicehub/internal/store/sqlite"
	"github.com/devicehub/devicehub/monitorclient"
)

func TestMain(m *testing.M) {
	monitorstest.ReceiverMain() // when run as a benchmark's receiver process
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"))
}

// hub is the part of a hub the monitors need, for real: a SQLite store in
// a directory, the group committer writing events to it, the event bus
// fanning them out, and the monitor service.
type hub struct {
	t      testing.TB
	dir    string
	st     *sqlite.Store
	bus    *eventlog.Bus
	com    *commit.Committer
	svc    *monitors.Service
	cancel func()
	wg     sync.WaitGroup
	groups map[string]string
}

type busEvents struct {
	bus *eventlog.Bus
	st  eventlog.Store
}

func (b busEvents) Subscribe(opts eventlog.SubscribeOptions, fn func(events.Event)) (monitors.Subscription, error) {
	s, err := b.bus.Subscribe(opts, fn)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (b busEvents) LastSeq(ctx context.Context) (int64, error) { return b.st.LastSeq(ctx) }

func (b busEvents) ReadEvents(ctx context.Context, after int64, limit int) ([]events.Event, error) {
	return b.st.ReadEvents(ctx, after, limit)
}

type mapGroups map[string]string

func (m mapGroups) DeviceGroup(_ context.Context, id string) (string, error) { return m[id], nil }

func testOptions() monitors.Options {
	return monitors.Options{
		AllowPrivateTargets: true,
		MinBackoff:          5 * time.Millisecond,
		MaxBackoff:          40 * time.Millisecond,
		AckTimeout:          5 * time.Second,
		IdleCursorSave:      50 * time.Millisecond,
	}
}

// startHub starts a hub on the database in dir ("" for a new one).
func startHub(t testing.TB, dir string, opts monitors.Options) *hub {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("MONITORS_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(dir, "hub.db"), Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	h := &hub{t: t, dir: dir, st: st, groups: mapGroups{}}
	h.bus = eventlog.NewBus(st, eventlog.BusOptions{}, log, nil)
	h.com = commit.New(st, h.bus, commit.Options{}, log, nil)
	h.svc = monitors.New(monitors.Deps{
		Store: st, Events: busEvents{h.bus, st}, Groups: mapGroups(h.groups), Committer: h.com,
	}, opts, log, nil)
	if err := h.svc.Load(ctx); err != nil {
		t.Fatal(err)
	}
	busCtx, stopBus := context.WithCancel(ctx)
	comCtx, stopCom := context.WithCancel(ctx)
	svcCtx, stopSvc := context.WithCancel(ctx)
	svcDone := make(chan struct{})
	h.wg.Add(2)
	go func() { defer h.wg.Done(); h.bus.Run(busCtx) }()
	go func() { defer h.wg.Done(); h.com.Run(comCtx) }()
	go func() { defer close(svcDone); h.svc.Run(svcCtx) }()
	var once sync.Once
	h.cancel = func() {
		once.Do(func() {
			// The hub's order: monitors, then the committer, then the bus.
			stopSvc()
			<-svcDone
			stopCom()
			stopBus()
			h.wg.Wait()
			st.Close()
		})
	}
	t.Cleanup(h.cancel)
	return h
}

func (h *hub) stop() { h.cancel() }

// publish commits n events of type typ for device dev and returns their
// Seqs.
func (h *hub) publish(n int, typ events.Type, dev string) []int64 {
	h.t.Helper()
	ctx := context.Background()
	ts := make([]*commit.Ticket, 0, n)
	for i := range n {
		ev, err := commit.NewEvent(events.Event{Type: typ, Time: time.Now().UTC(), DeviceID: dev, DeviceType: "sensor",
			Args: &events.StatusChanged{OldStatus: "online", NewStatus: fmt.Sprint("s", i)}})
		if err != nil {
			h.t.Fatal(err)
		}
		t, err := h.com.Enqueue(ctx, &commit.Change{DeviceID: dev, Events: []commit.Event{ev}})
		if err != nil {
			h.t.Fatal(err)
		}
		ts = append(ts, t)
	}
	seqs := make([]int64, 0, n)
	for _, t := range ts {
		if err := t.Wait(ctx); err != nil {
			h.t.Fatal(err)
		}
		seqs = append(seqs, t.Change.Events[0].Seq)
	}
	return seqs
}

func (h *hub) create(spec monitors.Spec) *monitors.CreateResult {
	h.t.Helper()
	res, err := h.svc.Create(context.Background(), spec)
	if err != nil {
		h.t.Fatalf("Create: %v", err)
	}
	return res
}

// tailFollows waits until the monitors' tail follows the bus (it starts
// when a send loop starts, in its own goroutine): a test that counts on
// the tail holding the events it publishes next waits for it first.
func (h *hub) tailFollows() {
	h.t.Helper()
	eventually.True(h.t, 10*time.Second, "the tail follows the bus", func() bool {
		_, _, covered := monitors.TailStats(h.svc)
		return covered != math.MaxInt64
	})
}

func (h *hub) status(id string) monitors.Status {
	m, err := h.svc.Get(context.Background(), id)
	if err != nil {
		h.t.Fatal(err)
	}
	return m.Status
}

// statusEvents reads the monitor_status_changed events of a monitor from
// the durable log.
func (h *hub) statusEvents(id string) []events.MonitorStatus {
	evs, err := h.st.ReadEvents(context.Background(), 0, 1<<20)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []events.MonitorStatus
	for _, e := range evs {
		if e.Type == events.MonitorStatusChanged {
			if a := e.Args.(*events.MonitorStatus); a.MonitorID == id {
				out = append(out, *a)
			}
		}
	}
	return out
}

// receiver is a real HTTP server that records the batches it acknowledges.
type receiver struct {
	srv     *httptest.Server
	mu      sync.Mutex
	batches []*monitorclient.Batch
	headers []http.Header
	// status answers every request with this status instead (0: accept).
	status int
	retry  string // Retry-After of a failure answer
	hits   int
}

func newReceiver(t testing.TB, secret func() []string) *receiver {
	r := &receiver{}
	var h http.Handler
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.hits++
		st, retry := r.status, r.retry
		r.mu.Unlock()
		if st != 0 {
			io.Copy(io.Discard, req.Body)
			if retry != "" {
				w.Header().Set("Retry-After", retry)
			}
			w.WriteHeader(st)
			return
		}
		h = monitorclient.NewHandler(monitorclient.HandlerOptions{Secrets: secret()}, func(_ context.Context, b *monitorclient.Batch) error {
			r.mu.Lock()
			r.batches = append(r.batches, b)
			r.headers = append(r.headers, req.Header.Clone())
			r.mu.Unlock()
			return nil
		})
		h.ServeHTTP(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setStatus(st int) {
	r.mu.Lock()
	r.status = st
	r.mu.Unlock()
}

func (r *receiver) seqs() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for _, b := range r.batches {
		for _, e := range b.Events {
			out = append(out, e.Seq)
		}
	}
	return out
}

func (r *receiver) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, b := range r.batches {
		out = append(out, len(b.Events))
	}
	return out
}

func (r *receiver) hitCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.hits
}

func fptr(f float64) *float64 { return &f }

// assertOnceInOrder checks that got is exactly want.
func assertOnceInOrder(t testing.TB, got, want []int64) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("delivered seqs (%d):\n%v\nwant (%d):\n%v", len(got), got, len(want), want)
	}
}
