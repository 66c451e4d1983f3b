package alerts_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/alerts"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

// clock is the tests' time: it moves only when told.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }
func newClock(t time.Time) *clock    { c := &clock{}; c.ns.Store(t.UnixNano()); return c }

// harness is a real SQLite store, committer and event bus with the alert
// service on them; only the clock is the test's.
type harness struct {
	t     *testing.T
	st    *sqlite.Store
	c     *commit.Committer
	bus   *eventlog.Bus
	clk   *clock
	start time.Time
	reg   *prometheus.Registry
	opts  alerts.Options

	svc  *alerts.Service
	stop func()

	mu       sync.Mutex
	evs      []events.Event
	lastData atomic.Int64 // Seq of the last data event committed
}

func newHarness(t *testing.T, opts alerts.Options) *harness {
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "db"), Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, st: st, start: time.Date(2026, 1, 1, 0, 0, 30, 0, time.UTC)}
	h.clk = newClock(h.start)
	h.bus = eventlog.NewBus(st, eventlog.BusOptions{}, log, nil)
	h.c = commit.New(st, h.bus, commit.Options{}, log, nil)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); h.bus.Run(ctx) }()
	go func() { defer wg.Done(); h.c.Run(ctx) }()
	sub, err := h.bus.Subscribe(eventlog.SubscribeOptions{Filter: events.Filter{Types: []events.Type{events.AlertRaised,
		events.AlertUpdated, events.AlertAcknowledged, events.AlertCleared, events.AlertFlood}}}, func(e events.Event) {
		h.mu.Lock()
		h.evs = append(h.evs, e)
		h.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	opts.Now, opts.Tick = h.clk.now, 5*time.Millisecond
	h.opts = opts
	h.startService()
	t.Cleanup(func() {
		h.stop()
		sub.Close()
		cancel()
		wg.Wait()
		st.Close()
	})
	return h
}

// startService builds and runs a service on the harness's store (again
// after stopService: a restart).
func (h *harness) startService() {
	h.reg = prometheus.NewRegistry()
	svc := alerts.New(alerts.Deps{Store: h.st, Committer: h.c, Events: h.bus, Log: h.st, Devices: h.st, Readings: h.st},
		h.opts, slog.New(slog.NewTextHandler(io.Discard, nil)), h.reg)
	if err := svc.Load(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	h.svc = svc
	h.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				h.t.Errorf("run: %v", err)
			}
		})
	}
}

// data commits a device_data_received event of device (type T) with one
// reading at the clock's time.
func (h *harness) data(device string, values map[string]any) {
	h.t.Helper()
	ev, err := commit.NewEvent(events.Event{Type: events.DeviceDataReceived, Time: h.clk.now(), DeviceID: device, DeviceType: "T",
		Args: &events.DataReceived{Readings: []events.Reading{{Time: h.clk.now(), Values: values}}}})
	if err != nil {
		h.t.Fatal(err)
	}
	ch := &commit.Change{DeviceID: device, Events: []commit.Event{ev}}
	if err := h.c.Submit(context.Background(), ch); err != nil {
		h.t.Fatal(err)
	}
	h.lastData.Store(ch.Events[0].Seq)
}

func (h *harness) alerts(q alerts.Query) []alerts.Alert {
	h.t.Helper()
	as, err := h.st.ListAlerts(context.Background(), q)
	if err != nil {
		h.t.Fatal(err)
	}
	return as
}

func (h *harness) count(typ events.Type) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, e := range h.evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}

func (h *harness) last(typ events.Type) events.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := len(h.evs) - 1; i >= 0; i-- {
		if h.evs[i].Type == typ {
			return h.evs[i]
		}
	}
	return events.Event{}
}

// waitIdle waits until the evaluator has handled the last data event (and
// written what it decided: Cursor waits for the evaluator's lock).
func (h *harness) waitIdle() {
	h.t.Helper()
	last := h.lastData.Load()
	eventually.True(h.t, 10*time.Second, "the evaluator to catch up", func() bool { return h.svc.Cursor() >= last })
}

func rules(specs ...alerts.RuleSpec) []alerts.RuleSpec {
	for i := range specs {
		specs[i].DeviceType = "T"
	}
	return specs
}

// TestFloodControl: per-device and global caps on new alerts per minute;
// the excess is counted in the metrics and summed up in one alert_flood
// event when the minute ends.
func TestFloodControl(t *testing.T) {
	h := newHarness(t, alerts.Options{DevicePerMinute: 2, GlobalPerMinute: 3, Rules: rules(
		alerts.RuleSpec{Name: "a", When: "a > 1"}, alerts.RuleSpec{Name: "b", When: "b > 1"}, alerts.RuleSpec{Name: "c", When: "c > 1"})})
	h.data("d1", map[string]any{"a": 2.0, "b": 2.0, "c": 2.0}) // the third is over the device's cap
	h.data("d2", map[string]any{"a": 2.0})                     // the third of the minute
	h.data("d3", map[string]any{"a": 2.0, "b": 2.0})           // over the global cap
	h.waitIdle()
	if n := len(h.alerts(alerts.Query{})); n != 3 {
		t.Fatalf("%d alerts, want 3", n)
	}
	sup := func(reason string) float64 {
		c, err := h.reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range c {
			if mf.GetName() == "devicehub_alerts_suppressed_total" {
				for _, m := range mf.GetMetric() {
					if m.GetLabel()[0].GetValue() == reason {
						return m.GetCounter().GetValue()
					}
				}
			}
		}
		return 0
	}
	if sup("device_cap") != 1 || sup("global_cap") != 2 {
		t.Fatalf("suppressed: device_cap %v global_cap %v", sup("device_cap"), sup("global_cap"))
	}
	if n := h.count(events.AlertFlood); n != 0 {
		t.Fatalf("alert_flood before the minute ended: %d", n)
	}
	h.clk.add(time.Minute)
	eventually.True(t, 10*time.Second, "one alert_flood event", func() bool { return h.count(events.AlertFlood) == 1 })
	f := h.last(events.AlertFlood).Args.(*events.AlertFloodSummary)
	if f.Suppressed != 3 || f.ByReason["device_cap"] != 1 || f.ByReason["global_cap"] != 2 || f.ByRule["a"] != 1 ||
		f.ByRule["b"] != 1 || f.ByRule["c"] != 1 || f.DeviceCount != 2 || !f.WindowStart.Equal(h.start.Truncate(time.Minute)) {
		t.Fatalf("alert_flood %+v", f)
	}
	// A new minute: the suppressed conditions still hold and raise now.
	h.data("d3", map[string]any{"a": 3.0, "b": 3.0})
	h.waitIdle()
	if n := len(h.alerts(alerts.Query{DeviceID: "d3"})); n != 2 {
		t.Fatalf("d3 has %d alerts in the new minute, want 2", n)
	}
	if h.count(events.AlertFlood) != 1 {
		t.Fatal("a second alert_flood")
	}
}

// TestSilenceAndRepeat: a silenced rule raises nothing for the device it
// covers; a re-firing alert is written and announced at most once per
// repeat interval, and its count is right when it clears; the evaluator
// restarts from its stored cursor without raising twice.
func TestSilenceAndRepeat(t *testing.T) {
	h := newHarness(t, alerts.Options{Rules: rules(
		alerts.RuleSpec{Name: "hot", When: "t > 80", Clear: "t < 75", Repeat: "10m"},
		alerts.RuleSpec{Name: "wet", When: "h > 90"})})
	ctx := context.Background()
	if _, err := h.svc.Silence(ctx, alerts.SilenceSpec{Rule: "hot", DeviceID: "d2", For: time.Hour, By: "op"}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Silence(ctx, alerts.SilenceSpec{Rule: "nope", For: time.Hour}); err == nil {
		t.Fatal("silence of an unknown rule: no error")
	}
	h.data("d2", map[string]any{"t": 90.0, "h": 95.0})
	h.data("d1", map[string]any{"t": 90.0})
	h.waitIdle()
	if as := h.alerts(alerts.Query{DeviceID: "d2"}); len(as) != 1 || as[0].Rule != "wet" {
		t.Fatalf("d2 (hot silenced): %+v", as)
	}
	for i := range 3 {
		h.clk.add(time.Minute)
		h.data("d1", map[string]any{"t": 91.0 + float64(i)})
	}
	h.waitIdle()
	if as := h.alerts(alerts.Query{DeviceID: "d1"}); len(as) != 1 || as[0].Count != 1 || h.count(events.AlertUpdated) != 0 {
		t.Fatalf("re-fires within the repeat interval were written: %+v, %d updates", as, h.count(events.AlertUpdated))
	}
	h.clk.add(8 * time.Minute)
	h.data("d1", map[string]any{"t": 95.0})
	h.waitIdle()
	if as := h.alerts(alerts.Query{DeviceID: "d1"}); len(as) != 1 || as[0].Count != 5 || as[0].Value != 95.0 || h.count(events.AlertUpdated) != 1 {
		t.Fatalf("after the repeat interval: %+v, %d updates", as, h.count(events.AlertUpdated))
	}

	// Restart between raise and clear: the same alert is counted again.
	h.stop()
	h.startService()
	h.data("d1", map[string]any{"t": 96.0})
	h.data("d1", map[string]any{"t": 70.0})
	h.waitIdle()
	as := h.alerts(alerts.Query{DeviceID: "d1"})
	if len(as) != 1 || as[0].State != alerts.StateCleared || as[0].Count != 6 || h.count(events.AlertRaised) != 2 {
		t.Fatalf("after the restart: %+v, %d raised", as, h.count(events.AlertRaised))
	}
	if a := h.last(events.AlertCleared).Args.(*events.Alert); a.Count != 6 || a.By != "rule" {
		t.Fatalf("alert_cleared %+v", a)
	}
}

// TestRulesOverAPI: rules created at run time are evaluated from the next
// event; deleting one clears its open alerts; a configuration rule cannot
// be deleted; an operator's clear holds until the condition ends.
func TestRulesOverAPI(t *testing.T) {
	h := newHarness(t, alerts.Options{Rules: rules(alerts.RuleSpec{Name: "hot", When: "t > 80"})})
	ctx := context.Background()
	if _, err := h.svc.CreateRule(ctx, alerts.RuleSpec{Name: "hot", DeviceType: "T", When: "t > 1"}, "op"); err == nil {
		t.Fatal("a second rule named hot")
	}
	if _, err := h.svc.CreateRule(ctx, alerts.RuleSpec{Name: "cold", DeviceType: "T", When: "t <"}, "op"); err == nil {
		t.Fatal("a bad rule was created")
	}
	info, err := h.svc.CreateRule(ctx, alerts.RuleSpec{Name: "cold", DeviceType: "T", When: "t < 0"}, "op")
	if err != nil || info.Kind != "reading" || info.Source != "api" {
		t.Fatalf("create: %+v %v", info, err)
	}
	h.data("d1", map[string]any{"t": -5.0})
	h.waitIdle()
	if as := h.alerts(alerts.Query{Rule: "cold", States: []string{alerts.StateActive}}); len(as) != 1 {
		t.Fatalf("cold alerts %+v", as)
	}
	if err := h.svc.DeleteRule(ctx, "hot"); err == nil {
		t.Fatal("deleted a rule of the configuration file")
	}
	if err := h.svc.DeleteRule(ctx, "cold"); err != nil {
		t.Fatal(err)
	}
	if as := h.alerts(alerts.Query{Rule: "cold"}); len(as) != 1 || as[0].State != alerts.StateCleared {
		t.Fatalf("alerts of the deleted rule: %+v", as)
	}

	h.data("d1", map[string]any{"t": 90.0})
	h.waitIdle()
	open := h.alerts(alerts.Query{Rule: "hot"})
	if _, err := h.svc.Clear(ctx, open[0].ID, "op", "handled"); err != nil {
		t.Fatal(err)
	}
	h.data("d1", map[string]any{"t": 91.0}) // still hot: held
	h.waitIdle()
	if n := len(h.alerts(alerts.Query{Rule: "hot"})); n != 1 {
		t.Fatalf("re-raised while held: %d alerts", n)
	}
	h.data("d1", map[string]any{"t": 20.0})
	h.data("d1", map[string]any{"t": 92.0})
	h.waitIdle()
	if n := len(h.alerts(alerts.Query{Rule: "hot"})); n != 2 {
		t.Fatalf("after the condition ended and came back: %d alerts, want 2", n)
	}
}

// TestCrashReplaysWithoutDoubleAlerts: the evaluator stops without saving
// its cursor (a crash) after re-fires that were not written; the next one
// starts from the cursor stored with the alert, replays those events from
// the durable log, and counts them on the same alert: one alert, one
// alert_raised.
func TestCrashReplaysWithoutDoubleAlerts(t *testing.T) {
	opts := alerts.Options{Rules: rules(alerts.RuleSpec{Name: "hot", When: "t > 80"})}
	alerts.Crash(&opts)
	h := newHarness(t, opts)
	h.data("d1", map[string]any{"t": 90.0})
	h.waitIdle()
	stored, _, _ := h.st.AlertCursor(context.Background())
	h.data("d1", map[string]any{"t": 91.0})
	h.data("d1", map[string]any{"t": 92.0})
	h.waitIdle()
	if seq, _, _ := h.st.AlertCursor(context.Background()); seq != stored {
		t.Fatalf("cursor moved from %d to %d without an alert change", stored, seq)
	}
	h.stop() // crash: nothing more is written
	h.startService()
	h.data("d1", map[string]any{"t": 70.0})
	h.waitIdle()
	as := h.alerts(alerts.Query{})
	if len(as) != 1 || as[0].State != alerts.StateCleared || as[0].Count != 3 || h.count(events.AlertRaised) != 1 {
		t.Fatalf("after the crash: %+v, %d alert_raised", as, h.count(events.AlertRaised))
	}
}
