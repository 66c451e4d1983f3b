package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// journal records, in order, what the fakes saw, so that tests can check
// that a device is told about a rejection only after it was committed.
type journal struct {
	mu      sync.Mutex
	entries []string
}

func (j *journal) add(s string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.entries = append(j.entries, s)
}

func (j *journal) index(s string) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i, e := range j.entries {
		if e == s {
			return i
		}
	}
	return -1
}

// fakeStore is an in-memory commit.Store: it assigns Seq and honours
// msg_id duplicates.
type fakeStore struct {
	j       *journal
	mu      sync.Mutex
	seq     int64
	changes []*commit.Change
	msgIDs  map[string]bool
	fail    error
}

func (s *fakeStore) Commit(_ context.Context, batch []*commit.Change) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	for _, ch := range batch {
		if m := msgOf(ch); m != nil && m.MsgID != "" {
			key := ch.DeviceID + "\x00" + m.MsgID
			if s.msgIDs[key] {
				ch.Duplicate = true
				continue
			}
			s.msgIDs[key] = true
		}
		for i := range ch.Events {
			s.seq++
			ch.Events[i].Seq = s.seq
		}
		s.changes = append(s.changes, ch)
		if msgOf(ch) != nil {
			s.j.add(fmt.Sprintf("commit %d", msgOf(ch).ID))
		}
	}
	return nil
}

func (s *fakeStore) MaxMessageID(context.Context) (int64, error) { return 0, nil }

func (s *fakeStore) all() []*commit.Change {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*commit.Change(nil), s.changes...)
}

// eventSink records the events the committer publishes.
type eventSink struct {
	mu  sync.Mutex
	evs []events.Event
}

func (e *eventSink) Publish(evs []events.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, evs...)
}

func (e *eventSink) all() []events.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]events.Event(nil), e.evs...)
}

type published struct {
	topic   string
	payload []byte
}

// fakePublisher records what is sent to devices.
type fakePublisher struct {
	j    *journal
	mu   sync.Mutex
	msgs []published
}

func (p *fakePublisher) Publish(topic string, payload []byte, _ bool, _ byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.msgs = append(p.msgs, published{topic, payload})
	var r errorReport
	_ = json.Unmarshal(payload, &r)
	p.j.add("publish " + topic + " " + r.Code)
	return nil
}

func (p *fakePublisher) all() []published {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]published(nil), p.msgs...)
}

// fakePresence records activity and stores statuses through the committer.
type fakePresence struct {
	c        *commit.Committer
	mu       sync.Mutex
	activity []string
	statuses []string
}

func (f *fakePresence) Activity(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.activity = append(f.activity, id)
}

func (f *fakePresence) RecordStatus(ctx context.Context, id, typ, status string, msg *readings.Message, will bool) (*commit.Ticket, error) {
	f.mu.Lock()
	f.statuses = append(f.statuses, fmt.Sprintf("%s %s will=%v", id, status, will))
	f.mu.Unlock()
	return f.c.Enqueue(ctx, &commit.Change{DeviceID: id, Ops: []commit.Op{msg, &registry.DevicePatch{Status: &status}}})
}

type harness struct {
	p     *Pipeline
	store *fakeStore
	sink  *eventSink
	pub   *fakePublisher
	pres  *fakePresence
	types *devicetype.Registry
	reg   *prometheus.Registry
	j     *journal
}

func f64(v float64) *float64 { return &v }

func testTypes(t testing.TB) *devicetype.Registry {
	reg := devicetype.NewRegistry()
	for _, typ := range []devicetype.Type{
		{Name: "thermo", Fields: map[string]devicetype.Field{
			"temp":  {Type: devicetype.Float, Min: f64(-40), Max: f64(125), Required: true},
			"hum":   {Type: devicetype.Float},
			"count": {Type: devicetype.Int},
			"ok":    {Type: devicetype.Bool},
			"label": {Type: devicetype.String},
			"meta":  {Type: devicetype.JSON},
		}},
		{Name: "open"},
		{Name: "slow", RateLimit: &devicetype.RateLimit{Rate: 1e-9, Burst: 2}},
		{Name: "free", RateLimit: &devicetype.RateLimit{Rate: 0}},
		{Name: "tiny", MaxPayloadBytes: 16},
	} {
		if err := reg.Register(typ); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	h := &harness{j: &journal{}, sink: &eventSink{}, types: testTypes(t), reg: prometheus.NewRegistry()}
	h.store = &fakeStore{j: h.j, msgIDs: map[string]bool{}}
	h.pub = &fakePublisher{j: h.j}
	c := commit.New(h.store, h.sink, commit.Options{}, discard(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	h.pres = &fakePresence{c: c}
	h.p = New(Deps{Committer: c, Types: h.types, Publisher: h.pub, Presence: h.pres}, opts, discard(), h.reg)
	return h
}

func (h *harness) counter(result, reason string) float64 {
	mfs, _ := h.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "devicehub_messages_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["result"] == result && labels["reason"] == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func req(topic, payload string) *Request {
	return &Request{
		DeviceID: "dev1", DeviceType: "thermo", Topic: topic, Payload: []byte(payload),
		QoS: 1, Transport: "mqtt", Received: time.Now(),
	}
}

func TestDataAccepted(t *testing.T) {
	h := newHarness(t, Options{})
	r := req("devices/dev1/data/env", `[{"temp": 21.5, "hum": 40, "ts": 1748772000000, "msg_id": "m1"}, {"temp": 22, "meta": {"fw": "1.2"}}]`)
	res, err := h.p.Handle(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if res.MessageID == 0 || res.Readings != 2 || res.Duplicate {
		t.Errorf("result %+v", res)
	}
	changes := h.store.all()
	if len(changes) != 1 {
		t.Fatalf("%d changes, want 1", len(changes))
	}
	ch := changes[0]
	if ch.DeviceID != "dev1" || msgOf(ch) == nil || !msgOf(ch).Accepted || msgOf(ch).MsgID != "m1" || msgOf(ch).ID != res.MessageID {
		t.Errorf("message %+v", msgOf(ch))
	}
	if patchOf(ch) == nil || patchOf(ch).LastSeen == nil || !patchOf(ch).LastSeen.Equal(r.Received) {
		t.Errorf("device patch %+v", patchOf(ch))
	}
	if len(rowsOf(ch)) != 2 || string(rowsOf(ch)[0].Values) != `{"hum":40,"temp":21.5}` || rowsOf(ch)[0].Stream != "env" ||
		!rowsOf(ch)[0].Time.Equal(time.UnixMilli(1748772000000)) || !rowsOf(ch)[1].Time.Equal(r.Received) {
		t.Errorf("readings %+v", rowsOf(ch))
	}
	evs := h.sink.all()
	if len(evs) != 1 || evs[0].Type != events.DeviceDataReceived || evs[0].Seq != 1 || evs[0].DeviceType != "thermo" {
		t.Fatalf("events %+v", evs)
	}
	args, ok := evs[0].Args.(*events.DataReceived)
	if !ok {
		t.Fatalf("args %T", evs[0].Args)
	}
	if args.MessageID != res.MessageID || args.MsgID != "m1" || args.Stream != "env" || args.Topic != r.Topic || args.Transport != "mqtt" ||
		len(args.Readings) != 2 || args.Readings[1].Values["meta"].(map[string]any)["fw"] != "1.2" {
		t.Errorf("args %+v", args)
	}
	// The stored arguments decode to the same thing.
	back, err := events.DecodeArgs(events.DeviceDataReceived, ch.Events[0].Args)
	if err != nil || back.(*events.DataReceived).Readings[0].Values["temp"] != 21.5 {
		t.Errorf("stored args %s: %v", ch.Events[0].Args, err)
	}
	if len(h.pub.all()) != 0 {
		t.Error("accepted data answered on the errors topic")
	}
	if got := h.counter("accepted", ""); got != 1 {
		t.Errorf("accepted counter %v", got)
	}
	if len(h.pres.activity) != 1 {
		t.Errorf("activity %v", h.pres.activity)
	}
}

func TestDataQoS0DoesNotWait(t *testing.T) {
	h := newHarness(t, Options{})
	r := req("devices/dev1/data", `{"temp": 1, "msg_id": "x"}`)
	r.QoS = 0
	for i := 0; i < 2; i++ {
		res, err := h.p.Handle(context.Background(), r)
		if err != nil || res.Duplicate {
			t.Fatalf("%+v %v", res, err)
		}
	}
	// The second is a duplicate the store drops; QoS 0 does not wait to
	// find out.
	eventually.True(t, 10*time.Second, "the change committed", func() bool { return len(h.sink.all()) == 1 && len(h.store.all()) == 1 })
}

func TestDuplicateMsgID(t *testing.T) {
	for _, transport := range []string{"mqtt", "http"} {
		t.Run(transport, func(t *testing.T) {
			h := newHarness(t, Options{})
			r := req("devices/dev1/data", `{"temp": 1, "msg_id": "abc"}`)
			r.Transport = transport
			if transport == "http" {
				r.QoS = 0
			}
			first, err := h.p.Handle(context.Background(), r)
			if err != nil || first.Duplicate {
				t.Fatalf("first: %+v %v", first, err)
			}
			second, err := h.p.Handle(context.Background(), r)
			if err != nil || !second.Duplicate || second.Readings != 0 {
				t.Fatalf("second: %+v %v", second, err)
			}
			if n := len(h.store.all()); n != 1 {
				t.Errorf("%d changes stored, want 1", n)
			}
			if n := len(h.sink.all()); n != 1 {
				t.Errorf("%d events, want 1", n)
			}
			if got := h.counter("duplicate", ""); got != 1 {
				t.Errorf("duplicate counter %v", got)
			}
			// Another device may use the same msg_id.
			r2 := req("devices/dev2/data", `{"temp": 1, "msg_id": "abc"}`)
			r2.DeviceID = "dev2"
			if res, err := h.p.Handle(context.Background(), r2); err != nil || res.Duplicate {
				t.Errorf("other device: %+v %v", res, err)
			}
		})
	}
}

// TestRejections checks each refusal: its code and field, the order of the
// middleware (the first check that fails wins), the message log record, the
// event, and the answer on the errors topic after the commit.
func TestRejections(t *testing.T) {
	big := `{"temp": 1, "label": "` + strings.Repeat("x", 70<<10) + `"}`
	tests := []struct {
		name  string
		edit  func(r *Request)
		code  string
		field string
	}{
		{"identity", func(r *Request) { r.Topic = "devices/dev2/data" }, CodeIdentityMismatch, ""},
		{"identity before type", func(r *Request) { r.Topic = "devices/dev2/data"; r.DeviceType = "nope" }, CodeIdentityMismatch, ""},
		{"identity before size", func(r *Request) { r.Topic = "devices/dev2/data"; r.Payload = []byte(big) }, CodeIdentityMismatch, ""},
		{"unknown type", func(r *Request) { r.DeviceType = "nope" }, CodeUnknownDeviceType, ""},
		{"type before size", func(r *Request) { r.DeviceType = "nope"; r.Payload = []byte(big) }, CodeUnknownDeviceType, ""},
		{"too large", func(r *Request) { r.Payload = []byte(big) }, CodePayloadTooLarge, ""},
		{"too large for the type", func(r *Request) { r.DeviceType = "tiny"; r.Payload = []byte(`{"temperature": 21.5}`) }, CodePayloadTooLarge, ""},
		{"size before topic", func(r *Request) { r.Topic = "devices/dev1/nope"; r.Payload = []byte(big) }, CodePayloadTooLarge, ""},
		{"size before json", func(r *Request) { r.Payload = []byte(big[:len(big)-2]) }, CodePayloadTooLarge, ""},
		{"unknown topic", func(r *Request) { r.Topic = "devices/dev1/foo" }, CodeUnknownTopic, ""},
		{"topic outside devices", func(r *Request) { r.Topic = "foo/bar" }, CodeUnknownTopic, ""},
		{"too deep", func(r *Request) { r.Topic = "devices/dev1/data/a/b" }, CodeUnknownTopic, ""},
		{"bad stream", func(r *Request) { r.Topic = "devices/dev1/data/a$b" }, CodeUnknownTopic, ""},
		{"invalid json", func(r *Request) { r.Payload = []byte(`{"temp": `) }, CodeInvalidJSON, ""},
		{"not an object", func(r *Request) { r.Payload = []byte(`[1]`) }, CodeInvalidPayload, ""},
		{"content type", func(r *Request) { r.ContentType = "application/gzip" }, CodeInvalidPayload, ""},
		{"msg_id", func(r *Request) { r.Payload = []byte(`{"temp": 1, "msg_id": 5}`) }, CodeInvalidPayload, "msg_id"},
		{"above max", func(r *Request) { r.Payload = []byte(`{"temp": 126}`) }, CodeValidationFailed, "temp"},
		{"required", func(r *Request) { r.Payload = []byte(`{"hum": 1}`) }, CodeValidationFailed, "temp"},
		{"wrong type", func(r *Request) { r.Payload = []byte(`{"temp": 1, "ok": "yes"}`) }, CodeValidationFailed, "ok"},
		{"not an int", func(r *Request) { r.Payload = []byte(`{"temp": 1, "count": 1.5}`) }, CodeValidationFailed, "count"},
		{"unknown field", func(r *Request) { r.Payload = []byte(`{"temp": 1, "volts": 3}`) }, CodeValidationFailed, "volts"},
		{"second reading", func(r *Request) { r.Payload = []byte(`[{"temp": 1}, {"temp": "hot"}]`) }, CodeValidationFailed, "temp"},
		{"bad ts", func(r *Request) { r.Payload = []byte(`{"temp": 1, "ts": "noon"}`) }, CodeInvalidTimestamp, "ts"},
		{"future ts", func(r *Request) {
			r.Payload = []byte(fmt.Sprintf(`{"temp": 1, "ts": %d}`, time.Now().Add(25*time.Hour).UnixMilli()))
		}, CodeInvalidTimestamp, "ts"},
		{"status missing", func(r *Request) { r.Topic = "devices/dev1/status"; r.Payload = []byte(`{"state": "on"}`) }, CodeValidationFailed, "status"},
		{"status not a string", func(r *Request) { r.Topic = "devices/dev1/status"; r.Payload = []byte(`{"status": 1}`) }, CodeValidationFailed, "status"},
		{"status too long", func(r *Request) {
			r.Topic = "devices/dev1/status"
			r.Payload = []byte(`{"status": "` + strings.Repeat("s", 65) + `"}`)
		}, CodeValidationFailed, "status"},
		{"status not json", func(r *Request) { r.Topic = "devices/dev1/status"; r.Payload = []byte(`online`) }, CodeInvalidJSON, ""},
		{"status empty", func(r *Request) { r.Topic = "devices/dev1/status"; r.Payload = nil }, CodeInvalidJSON, ""},
		{"heartbeat array", func(r *Request) { r.Topic = "devices/dev1/heartbeat"; r.Payload = []byte(`[1]`) }, CodeInvalidPayload, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			r := req("devices/dev1/data", `{"temp": 21.5}`)
			tt.edit(r)
			res, err := h.p.Handle(context.Background(), r)
			var rej *Rejection
			if !errors.As(err, &rej) {
				t.Fatalf("Handle: %v, want a rejection", err)
			}
			if rej.Code != tt.code || rej.Field != tt.field || rej.RejectCode() != tt.code || rej.Reason == "" {
				t.Fatalf("rejection %+v, want %s field %q", rej, tt.code, tt.field)
			}
			changes := h.store.all()
			if len(changes) != 1 {
				t.Fatalf("%d changes, want the message log record only", len(changes))
			}
			ch := changes[0]
			m := msgOf(ch)
			if m == nil || m.Accepted || m.Code != tt.code || m.Reason != rej.Reason || m.ID != res.MessageID || m.ID == 0 ||
				ch.DeviceID != "dev1" || len(rowsOf(ch)) != 0 || m.MsgID != "" {
				t.Errorf("audit record %+v (result %+v)", m, res)
			}
			if tt.code == CodePayloadTooLarge && len(m.Payload) > keepRejected || tt.code != CodePayloadTooLarge && string(m.Payload) != string(r.Payload) {
				t.Errorf("audit payload of %d bytes", len(m.Payload))
			}
			evs := h.sink.all()
			if len(evs) != 1 || evs[0].Type != events.MessageRejected {
				t.Fatalf("events %+v", evs)
			}
			args := evs[0].Args.(*events.Rejected)
			if args.Code != tt.code || args.Field != tt.field || args.MessageID != m.ID || args.Topic != r.Topic {
				t.Errorf("event args %+v", args)
			}
			pubs := h.pub.all()
			if len(pubs) != 1 || pubs[0].topic != "devices/dev1/errors" {
				t.Fatalf("published %+v", pubs)
			}
			var report map[string]any
			if err := json.Unmarshal(pubs[0].payload, &report); err != nil {
				t.Fatal(err)
			}
			if report["code"] != tt.code || report["topic"] != r.Topic || report["reason"] != rej.Reason || (tt.field != "" && report["field"] != tt.field) {
				t.Errorf("error report %s", pubs[0].payload)
			}
			committed, told := h.j.index(fmt.Sprintf("commit %d", m.ID)), h.j.index("publish devices/dev1/errors "+tt.code)
			if committed < 0 || told < committed {
				t.Errorf("told the device (%d) before the commit (%d)", told, committed)
			}
			if got := h.counter("rejected", tt.code); got != 1 {
				t.Errorf("rejected counter %v", got)
			}
		})
	}
}

func TestErrorReportCarriesMsgID(t *testing.T) {
	h := newHarness(t, Options{})
	_, err := h.p.Handle(context.Background(), req("devices/dev1/data", `{"temp": 500, "msg_id": "m7"}`))
	var rej *Rejection
	if !errors.As(err, &rej) {
		t.Fatal(err)
	}
	var report errorReport
	_ = json.Unmarshal(h.pub.all()[0].payload, &report)
	if report.MsgID != "m7" || report.Field != "temp" {
		t.Errorf("report %+v", report)
	}
	// A corrected retry with the same msg_id is not a duplicate.
	if res, err := h.p.Handle(context.Background(), req("devices/dev1/data", `{"temp": 50, "msg_id": "m7"}`)); err != nil || res.Duplicate {
		t.Errorf("retry: %+v %v", res, err)
	}
}

func TestRateLimit(t *testing.T) {
	tests := []struct {
		name    string
		typ     string
		opts    Options
		allowed int // of 10 messages in a row
	}{
		{"type limit", "slow", Options{}, 2},
		{"default limit", "thermo", Options{DefaultRateLimit: devicetype.RateLimit{Rate: 1e-9, Burst: 5}}, 5},
		{"default default", "thermo", Options{}, 10},
		{"type unlimited", "free", Options{DefaultRateLimit: devicetype.RateLimit{Rate: 1e-9, Burst: 1}}, 10},
		{"default unlimited", "thermo", Options{DefaultRateLimit: devicetype.RateLimit{Rate: -1}}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.opts)
			accepted, limited := 0, 0
			for i := 0; i < 10; i++ {
				r := req("devices/dev1/data", `{"temp": 1}`)
				r.DeviceType = tt.typ
				_, err := h.p.Handle(context.Background(), r)
				var rej *Rejection
				switch {
				case err == nil:
					accepted++
				case errors.As(err, &rej) && rej.Code == CodeRateLimited:
					limited++
				default:
					t.Fatalf("message %d: %v", i, err)
				}
			}
			if accepted != tt.allowed || limited != 10-tt.allowed {
				t.Fatalf("%d accepted, %d limited; want %d accepted", accepted, limited, tt.allowed)
			}
			if got := h.counter("rejected", CodeRateLimited); got != float64(limited) {
				t.Errorf("rate_limited counter %v, want %d", got, limited)
			}
			if limited == 0 {
				return
			}
			// A flood is recorded and answered once a second, not per message
			// (the test sends its ten messages well within a second).
			var rejected int
			for _, ch := range h.store.all() {
				if !msgOf(ch).Accepted {
					rejected++
				}
			}
			if rejected != 1 || len(h.pub.all()) != 1 {
				t.Errorf("%d rejections stored, %d answers; want 1 each", rejected, len(h.pub.all()))
			}
			// Other devices have their own buckets.
			r := req("devices/dev2/data", `{"temp": 1}`)
			r.DeviceID, r.DeviceType = "dev2", tt.typ
			if _, err := h.p.Handle(context.Background(), r); err != nil {
				t.Errorf("other device: %v", err)
			}
		})
	}
}

func TestLimiterFollowsType(t *testing.T) {
	l := newLimiters()
	a := &typeInfo{rate: 1, burst: 1}
	b := &typeInfo{rate: 5, burst: 7}
	e := l.get("d", a)
	if e.lim.Limit() != 1 || e.lim.Burst() != 1 {
		t.Fatalf("limit %v burst %d", e.lim.Limit(), e.lim.Burst())
	}
	if l.get("d", b) != e || e.lim.Limit() != 5 || e.lim.Burst() != 7 {
		t.Fatalf("after the type changed: limit %v burst %d", e.lim.Limit(), e.lim.Burst())
	}
	if !e.claimReport(time.Unix(100, 0), a) || e.claimReport(time.Unix(100, 5e8), a) || !e.claimReport(time.Unix(101, 1), a) {
		t.Error("claimReport does not allow one report a second")
	}
}

func TestTypeReplacedTakesEffect(t *testing.T) {
	h := newHarness(t, Options{})
	send := func() error {
		r := req("devices/dev1/data", `{"temp": 1}`)
		r.DeviceType = "slow"
		_, err := h.p.Handle(context.Background(), r)
		return err
	}
	for i := 0; i < 2; i++ {
		if err := send(); err != nil {
			t.Fatal(err)
		}
	}
	if err := send(); err == nil {
		t.Fatal("third message not limited")
	}
	if err := h.types.Register(devicetype.Type{Name: "slow", RateLimit: &devicetype.RateLimit{Rate: 0}}); err != nil {
		t.Fatal(err)
	}
	if err := send(); err != nil {
		t.Fatalf("after the type lost its limit: %v", err)
	}
}

func TestStatus(t *testing.T) {
	h := newHarness(t, Options{})
	r := req("devices/dev1/status", `{"status": "maintenance", "note": "x"}`)
	r.Will = true
	res, err := h.p.Handle(context.Background(), r)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.pres.statuses) != 1 || h.pres.statuses[0] != "dev1 maintenance will=true" {
		t.Errorf("statuses %v", h.pres.statuses)
	}
	changes := h.store.all()
	if len(changes) != 1 || msgOf(changes[0]).ID != res.MessageID || !msgOf(changes[0]).Accepted || msgOf(changes[0]).Topic != r.Topic {
		t.Errorf("changes %+v", changes)
	}
}

func TestHeartbeat(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		metrics string
	}{
		{"metrics", `{"battery": 87, "signal": -70.5}`, `{"battery":87,"signal":-70.5}`},
		{"empty", ``, ``},
		{"blank", " \n", ``},
		{"empty object", `{}`, `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, Options{})
			r := req("devices/dev1/heartbeat", tt.payload)
			if _, err := h.p.Handle(context.Background(), r); err != nil {
				t.Fatal(err)
			}
			changes := h.store.all()
			if len(changes) != 1 {
				t.Fatalf("%d changes", len(changes))
			}
			ch := changes[0]
			if patchOf(ch) == nil || patchOf(ch).LastSeen == nil || string(patchOf(ch).Metrics) != tt.metrics || len(ch.Events) != 0 || !msgOf(ch).Accepted {
				t.Errorf("change %+v patch %+v", ch, patchOf(ch))
			}
		})
	}
}

func TestStoreFailureIsNotARejection(t *testing.T) {
	h := newHarness(t, Options{})
	h.store.fail = errors.New("disk full")
	for _, r := range []*Request{
		req("devices/dev1/data", `{"temp": 1}`),
		req("devices/dev1/data", `{"temp": 1000}`), // its rejection cannot be stored either
		req("devices/dev1/heartbeat", ``),
		req("devices/dev1/status", `{"status": "online"}`),
	} {
		_, err := h.p.Handle(context.Background(), r)
		var rej *Rejection
		if err == nil || errors.As(err, &rej) {
			t.Errorf("%s: %v, want a plain error", r.Topic, err)
		}
	}
	if len(h.pub.all()) != 0 {
		t.Error("told the device about a rejection that was not stored")
	}
}

func TestCommitterClosed(t *testing.T) {
	c := commit.New(&fakeStore{j: &journal{}, msgIDs: map[string]bool{}}, &eventSink{}, commit.Options{}, discard(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.Run(ctx); err != nil {
		t.Fatal(err)
	}
	p := New(Deps{Committer: c, Types: testTypes(t), Publisher: &fakePublisher{j: &journal{}}, Presence: &fakePresence{c: c}}, Options{}, discard(), nil)
	_, err := p.Handle(context.Background(), req("devices/dev1/data", `{"temp": 1}`))
	if !errors.Is(err, commit.ErrClosed) {
		t.Errorf("Handle after the committer stopped: %v, want ErrClosed", err)
	}
}

// instantCommitter completes every change at once without storing it.
type instantCommitter struct{}

func (instantCommitter) Enqueue(_ context.Context, ch *commit.Change) (*commit.Ticket, error) {
	return &commit.Ticket{Change: ch}, nil
}

type nopPresence struct{}

func (nopPresence) Activity(string) {}
func (nopPresence) RecordStatus(context.Context, string, string, string, *readings.Message, bool) (*commit.Ticket, error) {
	return nil, nil
}

type nopPublisher struct{}

func (nopPublisher) Publish(string, []byte, bool, byte) error { return nil }

func benchPipeline(b *testing.B, c Committer) *Pipeline {
	types := testTypes(b)
	if err := types.Register(devicetype.Type{Name: "bench", RateLimit: &devicetype.RateLimit{}, Fields: map[string]devicetype.Field{
		"temp": {Type: devicetype.Float, Min: f64(-40), Max: f64(125), Required: true},
		"hum":  {Type: devicetype.Float, Min: f64(0), Max: f64(100)},
		"ok":   {Type: devicetype.Bool},
	}}); err != nil {
		b.Fatal(err)
	}
	return New(Deps{Committer: c, Types: types, Publisher: nopPublisher{}, Presence: nopPresence{}}, Options{}, discard(), prometheus.NewRegistry())
}

func benchRequests(payload string) []*Request {
	reqs := make([]*Request, 128)
	for i := range reqs {
		id := fmt.Sprintf("dev%d", i)
		reqs[i] = &Request{DeviceID: id, DeviceType: "bench", Topic: "devices/" + id + "/data", Payload: []byte(payload), Transport: "mqtt", Received: time.Now()}
	}
	return reqs
}

// BenchmarkHandleData measures the hot path: route, middleware, decode,
// validate, encode, build the change (QoS 0, a committer that takes the
// change at once).
func BenchmarkHandleData(b *testing.B) {
	for _, bc := range []struct{ name, payload string }{
		{"object", `{"temp": 21.5, "hum": 40.25, "ok": true, "ts": 1748772000000, "msg_id": "m-000001"}`},
		{"array10", `[` + strings.TrimSuffix(strings.Repeat(`{"temp": 21.5, "hum": 40.25, "ok": true, "ts": 1748772000000},`, 10), ",") + `]`},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := benchPipeline(b, instantCommitter{})
			reqs := benchRequests(bc.payload)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.payload)))
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					if _, err := p.Handle(ctx, reqs[i%len(reqs)]); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
		})
	}
}

type nopEvents struct{}

func (nopEvents) Publish([]events.Event) {}

type nopStore struct{}

func (nopStore) Commit(context.Context, []*commit.Change) error { return nil }
func (nopStore) MaxMessageID(context.Context) (int64, error)    { return 0, nil }

// BenchmarkHandleDataQoS1 adds the real committer (over a store that
// writes nothing) and the wait for each message's commit.
func BenchmarkHandleDataQoS1(b *testing.B) {
	c := commit.New(nopStore{}, nopEvents{}, commit.Options{}, discard(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	p := benchPipeline(b, c)
	reqs := benchRequests(`{"temp": 21.5, "hum": 40.25, "ok": true}`)
	for _, r := range reqs {
		r.QoS = 1
	}
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := p.Handle(context.Background(), reqs[i%len(reqs)]); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}

// msgOf, patchOf and rowsOf are the message, the device patch and the
// readings of a change, nil when it has none.
func msgOf(ch *commit.Change) *readings.Message {
	m, _ := commit.Find[*readings.Message](ch)
	return m
}

func patchOf(ch *commit.Change) *registry.DevicePatch {
	p, _ := commit.Find[*registry.DevicePatch](ch)
	return p
}

func rowsOf(ch *commit.Change) []readings.Reading {
	r, _ := commit.Find[*readings.Readings](ch)
	if r == nil {
		return nil
	}
	return r.Rows
}
