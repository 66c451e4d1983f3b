package presence

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// --- fakes ---

// memStore is an in-memory commit.Store: it assigns event sequence numbers
// and keeps the changes.
type memStore struct {
	mu      sync.Mutex
	seq     int64
	changes []*commit.Change
}

func (s *memStore) Commit(_ context.Context, batch []*commit.Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range batch {
		for i := range ch.Events {
			s.seq++
			ch.Events[i].Seq = s.seq
		}
		s.changes = append(s.changes, ch)
	}
	return nil
}

func (s *memStore) MaxMessageID(context.Context) (int64, error) { return 0, nil }

func (s *memStore) all() []*commit.Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*commit.Change(nil), s.changes...)
}

type memPub struct {
	mu  sync.Mutex
	evs []events.Event
}

func (p *memPub) Publish(evs []events.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.evs = append(p.evs, evs...)
}

// lines renders the published events as short lines, in commit order.
func (p *memPub) lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, e := range p.evs {
		out = append(out, describe(e))
	}
	return out
}

func describe(e events.Event) string {
	switch a := e.Args.(type) {
	case *events.Connected:
		return fmt.Sprintf("%s connected g%d %s", e.DeviceID, a.Generation, a.Transport)
	case *events.Disconnected:
		return fmt.Sprintf("%s disconnected g%d %s", e.DeviceID, a.Generation, a.Reason)
	case *events.StatusChanged:
		return fmt.Sprintf("%s status %s>%s", e.DeviceID, a.OldStatus, a.NewStatus)
	}
	return fmt.Sprintf("%s %s", e.DeviceID, e.Type)
}

type types map[string]*devicetype.Type

func (ts types) Get(name string) (*devicetype.Type, error) {
	if t, ok := ts[name]; ok {
		return t, nil
	}
	return nil, devicetype.ErrUnknownType
}

type kicker struct {
	mu    sync.Mutex
	kicks []string
}

func (k *kicker) Kick(id, _ string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.kicks = append(k.kicks, id)
}

func (k *kicker) all() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.kicks...)
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// --- harness ---

type harness struct {
	tr    *Tracker
	store *memStore
	pub   *memPub
	kick  *kicker
	clock *clock
}

var testTypes = types{
	"sensor": {Name: "sensor", HeartbeatTimeout: 10 * time.Second},
	"slow":   {Name: "slow", HeartbeatTimeout: time.Hour},
	"quiet":  {Name: "quiet"}, // no heartbeat check
}

func newHarness(t testing.TB, fake bool) *harness {
	t.Helper()
	h := &harness{store: &memStore{}, pub: &memPub{}, kick: &kicker{}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	c := commit.New(h.store, h.pub, commit.Options{}, log, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var opts Options
	if fake {
		h.clock = &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
		opts.Now = h.clock.Now
	}
	h.tr = New(c, testTypes, h.kick, opts, log, nil)
	return h
}

func (h *harness) status(t *testing.T, id, typ, status string, will bool) {
	t.Helper()
	ctx := context.Background()
	msg := &readings.Message{Topic: "devices/" + id + "/status", Transport: "mqtt", Accepted: true}
	tk, err := h.tr.RecordStatus(ctx, id, typ, status, msg, will)
	if err != nil {
		t.Fatal(err)
	}
	if err := tk.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// --- tests ---

func TestTransitions(t *testing.T) {
	ctx := context.Background()
	connect := func(gen uint64) func(*testing.T, *harness) {
		return func(_ *testing.T, h *harness) { h.tr.Connected(ctx, "d1", "sensor", gen, "10.0.0.1:5000") }
	}
	disconnect := func(gen uint64, reason string) func(*testing.T, *harness) {
		return func(_ *testing.T, h *harness) { h.tr.Disconnected(ctx, "d1", gen, reason, nil) }
	}
	status := func(s string, will bool) func(*testing.T, *harness) {
		return func(t *testing.T, h *harness) { h.status(t, "d1", "sensor", s, will) }
	}
	tests := []struct {
		name  string
		steps []func(*testing.T, *harness)
		want  []string
	}{
		{
			name:  "connect and disconnect",
			steps: []func(*testing.T, *harness){connect(1), disconnect(1, events.ReasonClientDisconnect)},
			want:  []string{"d1 connected g1 mqtt", "d1 status offline>online", "d1 disconnected g1 client_disconnect", "d1 status online>offline"},
		},
		{
			name:  "stale generation ignored",
			steps: []func(*testing.T, *harness){connect(2), disconnect(1, events.ReasonConnectionLost)},
			want:  []string{"d1 connected g2 mqtt", "d1 status offline>online"},
		},
		{
			name:  "takeover: the old session's disconnect keeps the device online",
			steps: []func(*testing.T, *harness){connect(1), connect(2), disconnect(1, events.ReasonConnectionLost)},
			want:  []string{"d1 connected g1 mqtt", "d1 status offline>online", "d1 connected g2 mqtt"},
		},
		{
			name:  "same status twice fires once",
			steps: []func(*testing.T, *harness){connect(1), status("maintenance", false), status("maintenance", false)},
			want:  []string{"d1 connected g1 mqtt", "d1 status offline>online", "d1 status online>maintenance"},
		},
		{
			name:  "will first, then the disconnect fires nothing",
			steps: []func(*testing.T, *harness){connect(1), status("offline", true), disconnect(1, events.ReasonConnectionLost)},
			want:  []string{"d1 connected g1 mqtt", "d1 status offline>online", "d1 disconnected g1 last_will", "d1 status online>offline"},
		},
		{
			name:  "will after disconnect fires nothing",
			steps: []func(*testing.T, *harness){connect(1), disconnect(1, events.ReasonConnectionLost), status("offline", true)},
			want:  []string{"d1 connected g1 mqtt", "d1 status offline>online", "d1 disconnected g1 connection_lost", "d1 status online>offline"},
		},
		{
			name:  "status offline disconnects, the connection's end fires nothing",
			steps: []func(*testing.T, *harness){connect(3), status("offline", false), disconnect(3, events.ReasonClientDisconnect)},
			want:  []string{"d1 connected g3 mqtt", "d1 status offline>online", "d1 disconnected g3 status_message", "d1 status online>offline"},
		},
		{
			name:  "reconnect after disconnect",
			steps: []func(*testing.T, *harness){connect(1), disconnect(1, events.ReasonConnectionLost), connect(2)},
			want: []string{"d1 connected g1 mqtt", "d1 status offline>online", "d1 disconnected g1 connection_lost",
				"d1 status online>offline", "d1 connected g2 mqtt", "d1 status offline>online"},
		},
		{
			name: "restore after a crash",
			steps: []func(*testing.T, *harness){func(t *testing.T, h *harness) {
				if err := h.tr.Restore(ctx, []string{"d1"}, map[string]string{"d1": "sensor"}); err != nil {
					t.Fatal(err)
				}
			}},
			want: []string{"d1 disconnected g0 hub_restart", "d1 status online>offline"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, true)
			for _, step := range tt.steps {
				step(t, h)
			}
			if got := h.pub.lines(); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestStatusChangeIsOneChangeWithTheMessage(t *testing.T) {
	h := newHarness(t, true)
	h.tr.Connected(context.Background(), "d1", "sensor", 1, "")
	before := len(h.store.all())
	h.status(t, "d1", "sensor", "offline", true)
	chs := h.store.all()[before:]
	if len(chs) != 1 {
		t.Fatalf("%d changes, want 1", len(chs))
	}
	ch := chs[0]
	if msgOf(ch) == nil || patchOf(ch) == nil || patchOf(ch).Status == nil || *patchOf(ch).Status != "offline" ||
		patchOf(ch).Connected == nil || *patchOf(ch).Connected || len(ch.Events) != 2 {
		t.Fatalf("change = %+v", ch)
	}
	// The will of a device already offline is only recorded.
	h.status(t, "d1", "sensor", "offline", true)
	last := h.store.all()[len(h.store.all())-1]
	if msgOf(last) == nil || patchOf(last) != nil || len(last.Events) != 0 {
		t.Fatalf("second will: change = %+v", last)
	}
}

func TestHTTPActivity(t *testing.T) {
	h := newHarness(t, true)
	h.tr.HTTPActivity("h1", "sensor")
	eventually.True(t, 5*time.Second, "device_connected", func() bool { return len(h.pub.lines()) == 2 })
	h.tr.Activity("h1")
	h.tr.HTTPActivity("h1", "sensor")
	// A timeout of an HTTP device kicks nothing.
	h.tr.expire(h.clock.advance(11 * time.Second))
	want := []string{"h1 connected g0 http", "h1 status offline>online", "h1 disconnected g0 heartbeat_timeout", "h1 status online>offline"}
	eventually.True(t, 5*time.Second, "timeout", func() bool { return len(h.pub.lines()) == 4 })
	if got := h.pub.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(h.kick.all()) != 0 {
		t.Fatal("an HTTP device was kicked")
	}
	// A device the tracker does not know is ignored, unless its type can
	// be found.
	h.tr.Activity("ghost")
	h.tr.typeOf = func(id string) (string, bool) { return "sensor", id == "h2" }
	h.tr.Activity("ghost")
	h.tr.Activity("h2")
	eventually.True(t, 5*time.Second, "h2 online", func() bool { return len(h.pub.lines()) == 6 })
	if got := h.pub.lines()[4]; got != "h2 connected g0 http" {
		t.Fatalf("got %s", got)
	}
}

func TestHeartbeatTimeoutFakeClock(t *testing.T) {
	h := newHarness(t, true)
	ctx := context.Background()
	h.tr.Connected(ctx, "d1", "sensor", 7, "")

	h.tr.expire(h.clock.advance(5 * time.Second))
	if n := h.tr.pops.Load(); n != 0 {
		t.Fatalf("%d pops before the deadline", n)
	}
	h.tr.Activity("d1") // at 5s: the deadline moves to 15s
	h.tr.expire(h.clock.advance(6 * time.Second))
	if n := h.tr.pops.Load(); n != 1 {
		t.Fatalf("pops = %d, want 1 (popped early and re-armed)", n)
	}
	if len(h.kick.all()) != 0 || len(h.pub.lines()) != 2 {
		t.Fatalf("timed out despite activity: %v", h.pub.lines())
	}

	h.tr.expire(h.clock.advance(5 * time.Second)) // 16s
	eventually.True(t, 5*time.Second, "timeout events", func() bool { return len(h.pub.lines()) == 4 })
	if k := h.kick.all(); len(k) != 1 || k[0] != "d1" {
		t.Fatalf("kicks = %v", k)
	}
	// The kicked connection's disconnect, later checks and a late will fire nothing.
	h.tr.expire(h.clock.advance(time.Hour))
	h.tr.Disconnected(ctx, "d1", 7, events.ReasonKicked, nil)
	h.status(t, "d1", "sensor", "offline", true)
	want := []string{"d1 connected g7 mqtt", "d1 status offline>online", "d1 disconnected g7 heartbeat_timeout", "d1 status online>offline"}
	if got := h.pub.lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(h.kick.all()) != 1 {
		t.Fatal("kicked twice")
	}
	// Reconnecting re-arms the check.
	h.tr.Connected(ctx, "d1", "sensor", 8, "")
	h.tr.expire(h.clock.advance(11 * time.Second))
	eventually.True(t, 5*time.Second, "second timeout", func() bool { return len(h.kick.all()) == 2 })
}

func TestHeartbeatTimeoutRun(t *testing.T) {
	h := newHarness(t, false)
	h.tr.types = types{"fast": {Name: "fast", HeartbeatTimeout: 50 * time.Millisecond}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.tr.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	h.tr.Connected(context.Background(), "d1", "fast", 1, "")
	eventually.True(t, 5*time.Second, "kick", func() bool { return len(h.kick.all()) == 1 })
	eventually.True(t, 5*time.Second, "events", func() bool { return len(h.pub.lines()) == 4 })
	var timeouts int
	for _, l := range h.pub.lines() {
		if strings.HasSuffix(l, "heartbeat_timeout") {
			timeouts++
		}
	}
	if timeouts != 1 {
		t.Fatalf("%d heartbeat timeouts: %v", timeouts, h.pub.lines())
	}
	if _, armed := h.tr.next(); armed {
		t.Fatal("an offline device is still armed")
	}
}

func TestOnlyExpiringDevicesAreTouched(t *testing.T) {
	h := newHarness(t, true)
	ctx := context.Background()
	const n = 500
	for i := range n {
		h.tr.Connected(ctx, fmt.Sprintf("s%03d", i), "slow", uint64(i+1), "")
	}
	h.tr.Connected(ctx, "fast", "sensor", 1000, "")
	before := len(h.pub.lines())
	for range 3 {
		h.tr.expire(h.clock.advance(4 * time.Second))
	}
	if p := h.tr.pops.Load(); p != 1 {
		t.Fatalf("pops = %d, want 1", p)
	}
	eventually.True(t, 5*time.Second, "timeout", func() bool { return len(h.pub.lines()) == before+2 })
	for _, l := range h.pub.lines()[before:] {
		if !strings.HasPrefix(l, "fast ") {
			t.Fatalf("touched another device: %s", l)
		}
	}
	if k := h.kick.all(); len(k) != 1 || k[0] != "fast" {
		t.Fatalf("kicks = %v", k)
	}
}

func TestNoHeartbeatCheckWithoutTimeout(t *testing.T) {
	h := newHarness(t, true)
	h.tr.Connected(context.Background(), "q1", "quiet", 1, "")
	h.tr.Connected(context.Background(), "u1", "undeclared", 2, "")
	h.tr.expire(h.clock.advance(24 * time.Hour))
	if _, armed := h.tr.next(); armed || h.tr.pops.Load() != 0 {
		t.Fatal("a device without timeout was armed")
	}
}

type failingCommitter struct{}

func (failingCommitter) Enqueue(context.Context, *commit.Change) (*commit.Ticket, error) {
	return nil, commit.ErrClosed
}

func TestEnqueueFailureKeepsState(t *testing.T) {
	tr := New(failingCommitter{}, testTypes, nil, Options{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	tr.Connected(context.Background(), "d1", "sensor", 1, "")
	if d := tr.lookup("d1"); d.st.connected || d.st.gen != 0 {
		t.Fatalf("state changed although nothing was stored: %+v", d.st)
	}
	if _, err := tr.RecordStatus(context.Background(), "d1", "sensor", "error", nil, false); !errors.Is(err, commit.ErrClosed) {
		t.Fatalf("RecordStatus err = %v", err)
	}
}

func TestActivityAllocatesNothing(t *testing.T) {
	h := newHarness(t, true)
	h.tr.Connected(context.Background(), "d1", "sensor", 1, "")
	if n := testing.AllocsPerRun(1000, func() { h.tr.Activity("d1") }); n != 0 {
		t.Fatalf("Activity allocates %v times", n)
	}
}

func BenchmarkActivity(b *testing.B) {
	h := newHarness(b, false)
	ctx := context.Background()
	ids := make([]string, 10000)
	for i := range ids {
		ids[i] = fmt.Sprintf("dev-%05d", i)
		h.tr.Connected(ctx, ids[i], "slow", uint64(i+1), "")
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			h.tr.Activity(ids[i%len(ids)])
			i++
		}
	})
}

// msgOf and patchOf are the message and the device patch of a change,
// nil when it has none.
func msgOf(ch *commit.Change) *readings.Message {
	m, _ := commit.Find[*readings.Message](ch)
	return m
}

func patchOf(ch *commit.Change) *registry.DevicePatch {
	p, _ := commit.Find[*registry.DevicePatch](ch)
	return p
}
