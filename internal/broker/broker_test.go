package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	paholog "github.com/eclipse/paho.golang/paho/log"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// --- fakes of the broker's collaborators ---

type fakeDevice struct {
	password string
	typ      string
	disabled bool
}

type fakeAuth map[string]fakeDevice

func (a fakeAuth) Authenticate(clientID, username string, password []byte) (string, error) {
	d, ok := a[clientID]
	if !ok {
		return "", registry.ErrNotFound
	}
	if username != clientID || string(password) != d.password {
		return "", registry.ErrUnauthorized
	}
	if d.disabled {
		return "", registry.ErrDisabled
	}
	return d.typ, nil
}

type rejectErr struct{ code string }

func (e *rejectErr) Error() string      { return "rejected: " + e.code }
func (e *rejectErr) RejectCode() string { return e.code }

type fakeHandler struct {
	mu   sync.Mutex
	got  []Publish
	errs map[string]error // by topic
}

func (h *fakeHandler) HandlePublish(_ context.Context, p *Publish) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, *p)
	return h.errs[p.Topic]
}

func (h *fakeHandler) setErr(topic string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.errs[topic] = err
}

func (h *fakeHandler) published() []Publish {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Publish(nil), h.got...)
}

type presenceCall struct {
	kind     string // "connected" or "disconnected"
	deviceID string
	gen      uint64
	reason   string
	cause    error
}

type fakePresence struct {
	mu       sync.Mutex
	calls    []presenceCall
	activity atomic.Int64
}

func (p *fakePresence) Connected(_ context.Context, id, _ string, gen uint64, _ string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, presenceCall{kind: "connected", deviceID: id, gen: gen})
}

func (p *fakePresence) Disconnected(_ context.Context, id string, gen uint64, reason string, cause error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, presenceCall{kind: "disconnected", deviceID: id, gen: gen, reason: reason, cause: cause})
}

func (p *fakePresence) Activity(string) { p.activity.Add(1) }

func (p *fakePresence) all() []presenceCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]presenceCall(nil), p.calls...)
}

func (p *fakePresence) find(kind, id string) []presenceCall {
	var out []presenceCall
	for _, c := range p.all() {
		if c.kind == kind && c.deviceID == id {
			out = append(out, c)
		}
	}
	return out
}

// --- harness ---

type harness struct {
	b        *Broker
	handler  *fakeHandler
	presence *fakePresence
	gone     goneCounter // Deps.DeviceGone calls by device
	reg      *prometheus.Registry
	stop     func() // stops the broker and waits for Run (also at the end of the test)
}

// goneCounter counts the DeviceGone calls of each device.
type goneCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (g *goneCounter) add(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n == nil {
		g.n = map[string]int{}
	}
	g.n[id]++
}

func (g *goneCounter) count(id string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n[id]
}

func start(t *testing.T) *harness {
	t.Helper()
	fh := &fakeHandler{errs: map[string]error{}}
	h := startWith(t, fh)
	h.handler = fh
	return h
}

// startWith runs a broker whose PublishHandler is ph.
func startWith(t testing.TB, ph PublishHandler) *harness {
	t.Helper()
	return startOpts(t, Options{}, ph)
}

// startOpts runs a broker with opts (its Addr set here) whose
// PublishHandler is ph.
func startOpts(t testing.TB, opts Options, ph PublishHandler) *harness {
	t.Helper()
	opts.Addr = "127.0.0.1:0"
	h := &harness{presence: &fakePresence{}}
	auth := fakeAuth{
		"dev1": {password: "pw1", typ: "sensor"},
		"dev2": {password: "pw2", typ: "sensor"},
		"off1": {password: "pw", typ: "sensor", disabled: true},
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	h.reg = prometheus.NewRegistry()
	b, err := New(opts, Deps{Authenticator: auth, PublishHandler: ph, Presence: h.presence, DeviceGone: h.gone.add}, log, h.reg)
	if err != nil {
		t.Fatal(err)
	}
	h.b = b
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	select {
	case <-b.Ready():
	case err := <-done:
		t.Fatalf("run: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("broker not ready")
	}
	var stop sync.Once
	h.stop = func() {
		stop.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		})
	}
	t.Cleanup(h.stop)
	return h
}

type client struct {
	*paho.Client
	disconnects chan *paho.Disconnect
	received    chan *paho.Publish
}

type connectOpt func(*paho.Connect)

func withWill(topic, payload string) connectOpt {
	return func(c *paho.Connect) {
		c.WillMessage = &paho.WillMessage{Topic: topic, Payload: []byte(payload), QoS: 1}
	}
}

// clientOpt changes the paho client's configuration before it connects.
type clientOpt func(*paho.ClientConfig)

// withoutPings gives the client a pinger that never sends a PINGREQ
// (paho's own may send one as soon as it connects, whatever the keep
// alive, and the hub clamps a keep alive of 0 to its maximum).
func withoutPings(cc *paho.ClientConfig) { cc.PingHandler = silentPinger{} }

// silentPinger is a paho.Pinger that sends nothing.
type silentPinger struct{}

func (silentPinger) Run(ctx context.Context, _ net.Conn, _ uint16) error {
	<-ctx.Done()
	return nil
}
func (silentPinger) PacketSent()             {}
func (silentPinger) PacketReceived()         {}
func (silentPinger) PingResp()               {}
func (silentPinger) SetDebug(paholog.Logger) {}

// dial connects an MQTT v5 client; the returned client is closed at the
// end of the test.
func dial(t testing.TB, addr, clientID, user, pass string, opts ...connectOpt) (*client, *paho.Connack, error) {
	t.Helper()
	return dialWith(t, addr, clientID, user, pass, nil, opts...)
}

// dialWith is dial with the client's configuration changed by cc (if not
// nil).
func dialWith(t testing.TB, addr, clientID, user, pass string, cc clientOpt, opts ...connectOpt) (*client, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{disconnects: make(chan *paho.Disconnect, 1), received: make(chan *paho.Publish, 256)}
	cfg := paho.ClientConfig{
		Conn:               conn,
		OnServerDisconnect: func(d *paho.Disconnect) { c.disconnects <- d },
		OnClientError:      func(error) {},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.received <- pr.Packet:
			default:
			}
			return true, nil
		}},
	}
	if cc != nil {
		cc(&cfg)
	}
	c.Client = paho.NewClient(cfg)
	cp := &paho.Connect{
		ClientID: clientID, Username: user, UsernameFlag: true,
		Password: []byte(pass), PasswordFlag: true, KeepAlive: 30, CleanStart: true,
	}
	for _, o := range opts {
		o(cp)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	if err == nil {
		t.Cleanup(func() {
			_ = c.Disconnect(&paho.Disconnect{})
			<-c.Done()
		})
	}
	return c, ca, err
}

func mustDial(t testing.TB, h *harness, id string, opts ...connectOpt) *client {
	t.Helper()
	return mustDialWith(t, h, id, nil, opts...)
}

// mustDialWith is mustDial with the client's configuration changed by cc.
func mustDialWith(t testing.TB, h *harness, id string, cc clientOpt, opts ...connectOpt) *client {
	t.Helper()
	pw := map[string]string{"dev1": "pw1", "dev2": "pw2"}[id]
	c, _, err := dialWith(t, h.b.Addr(), id, id, pw, cc, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	return c
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// --- tests ---

func TestConnect(t *testing.T) {
	h := start(t)
	tests := []struct {
		name               string
		clientID, user, pw string
		want               byte
		will               string
	}{
		{"good login", "dev1", "dev1", "pw1", 0x00, ""},
		{"wrong password", "dev1", "dev1", "nope", 0x86, ""},
		{"unknown device", "ghost", "ghost", "pw", 0x86, ""},
		{"client id is not the username", "dev1", "dev2", "pw2", 0x85, ""},
		{"empty client id", "", "dev1", "pw1", 0x85, ""},
		{"disabled device", "off1", "off1", "pw", 0x87, ""},
		{"will outside the prefix", "dev1", "dev1", "pw1", 0x87, "devices/dev2/status"},
		// Finding 12: a will is a publish; a wildcard is no topic.
		{"will with a multi-level wildcard", "dev1", "dev1", "pw1", 0x87, "devices/dev1/#"},
		{"will with a single-level wildcard", "dev1", "dev1", "pw1", 0x87, "devices/dev1/+/status"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var opts []connectOpt
			if tt.will != "" {
				opts = append(opts, withWill(tt.will, "x"))
			}
			_, ca, err := dial(t, h.b.Addr(), tt.clientID, tt.user, tt.pw, opts...)
			if ca == nil {
				t.Fatalf("no CONNACK: %v", err)
			}
			if ca.ReasonCode != tt.want {
				t.Fatalf("CONNACK reason = %#x, want %#x (err %v)", ca.ReasonCode, tt.want, err)
			}
			if tt.want == 0 {
				if got := h.b.ClientCount(); got != 1 {
					t.Fatalf("ClientCount = %d, want 1", got)
				}
			}
		})
	}
	calls := h.presence.find("connected", "dev1")
	if len(calls) != 1 || calls[0].gen == 0 {
		t.Fatalf("Connected calls for dev1 = %+v, want one with a generation", calls)
	}
}

func TestACL(t *testing.T) {
	h := start(t)
	c := mustDial(t, h, "dev1")
	ctx := ctx5(t)

	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "devices/dev1/#", QoS: 1},
		{Topic: "devices/dev1/errors", QoS: 1},
		{Topic: "devices/dev2/#", QoS: 1},
		{Topic: "devices/+/data", QoS: 1},
		{Topic: "#", QoS: 1},
		{Topic: "devices/dev10/x", QoS: 1},
		{Topic: "$share/g/devices/dev1/x", QoS: 1},
	}})
	if sa == nil {
		t.Fatal(err)
	}
	want := []byte{0x01, 0x01, 0x87, 0x87, 0x87, 0x87, 0x87}
	if string(sa.Reasons) != string(want) {
		t.Fatalf("SUBACK reasons = %x, want %x", sa.Reasons, want)
	}

	pr, err := c.Publish(ctx, &paho.Publish{Topic: "devices/dev2/data", QoS: 1, Payload: []byte(`{"t":1}`)})
	if pr == nil || pr.ReasonCode != 0x87 {
		t.Fatalf("PUBACK for another device's topic = %+v (%v), want 0x87", pr, err)
	}
	select {
	case m := <-c.received:
		if m.Topic != "devices/dev1/errors" || !strings.Contains(string(m.Payload), `"not_authorized"`) {
			t.Fatalf("got %s %s, want a not_authorized reason on devices/dev1/errors", m.Topic, m.Payload)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no message on devices/dev1/errors")
	}
	for _, p := range h.handler.published() {
		if p.Topic == "devices/dev2/data" {
			t.Fatal("a refused publish reached the handler")
		}
	}
}

func TestPublishOutcomes(t *testing.T) {
	h := start(t)
	h.handler.setErr("devices/dev1/bad", fmt.Errorf("check reading: %w", &rejectErr{code: "validation_failed"}))
	h.handler.setErr("devices/dev1/limited", &rejectErr{code: "rate_limited"})
	h.handler.setErr("devices/dev1/what", &rejectErr{code: "unknown_topic"})
	c := mustDial(t, h, "dev1")
	ctx := ctx5(t)

	tests := []struct {
		name  string
		topic string
		want  byte
	}{
		{"stored", "devices/dev1/data", 0x00},
		{"validation rejection", "devices/dev1/bad", 0x99},
		{"rate limited", "devices/dev1/limited", 0x96},
		{"unknown topic", "devices/dev1/what", 0x90},
		{"still fine afterwards", "devices/dev1/data", 0x00},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, err := c.Publish(ctx, &paho.Publish{Topic: tt.topic, QoS: 1, Payload: []byte(`{"t":1}`)})
			if pr == nil || pr.ReasonCode != tt.want {
				t.Fatalf("PUBACK = %+v (%v), want %#x", pr, err, tt.want)
			}
		})
	}
	got := h.handler.published()
	if len(got) != len(tests) {
		t.Fatalf("handler saw %d messages, want %d", len(got), len(tests))
	}
	if p := got[0]; p.DeviceID != "dev1" || p.DeviceType != "sensor" || p.QoS != 1 || p.Will {
		t.Fatalf("handler got %+v", p)
	}
	if len(h.presence.find("disconnected", "dev1")) != 0 {
		t.Fatal("a rejection disconnected the device")
	}
	if h.presence.activity.Load() == 0 {
		t.Fatal("no activity reported")
	}
}

func TestStoreFailureDisconnectsWithoutAck(t *testing.T) {
	h := start(t)
	h.handler.setErr("devices/dev1/data", errors.New("database is down"))
	c := mustDial(t, h, "dev1")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()

	pr, err := c.Publish(ctx, &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{}`)})
	if err == nil || (pr != nil && pr.ReasonCode < 0x80) {
		t.Fatalf("publish = %+v, %v; want no PUBACK", pr, err)
	}
	select {
	case d := <-c.disconnects:
		if d.ReasonCode != 0x83 {
			t.Fatalf("DISCONNECT reason = %#x, want 0x83", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("client not disconnected")
	}
	eventually.True(t, 5*time.Second, "Disconnected", func() bool { return len(h.presence.find("disconnected", "dev1")) == 1 })
	d := h.presence.find("disconnected", "dev1")[0]
	if d.reason != events.ReasonConnectionLost || d.cause == nil {
		t.Fatalf("Disconnected = %+v, want connection_lost with a cause", d)
	}
}

func TestTakeover(t *testing.T) {
	h := start(t)
	first := mustDial(t, h, "dev1", withWill("devices/dev1/status", `{"status":"offline"}`))
	second := mustDial(t, h, "dev1")
	_ = second

	select {
	case d := <-first.disconnects:
		if d.ReasonCode != 0x8E {
			t.Fatalf("first session DISCONNECT = %#x, want 0x8E session taken over", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first session not disconnected")
	}
	eventually.True(t, 5*time.Second, "old session's Disconnected", func() bool { return len(h.presence.find("disconnected", "dev1")) == 1 })
	conns := h.presence.find("connected", "dev1")
	if len(conns) != 2 {
		t.Fatalf("Connected calls = %+v, want 2", conns)
	}
	old := h.presence.find("disconnected", "dev1")[0]
	if old.gen != conns[0].gen {
		t.Fatalf("old session's Disconnected gen = %d, want %d", old.gen, conns[0].gen)
	}
	if conns[1].gen <= conns[0].gen {
		t.Fatalf("newest generation %d is not above the old %d", conns[1].gen, conns[0].gen)
	}
	// Presence must have heard of the new generation before the old one
	// ended, so that it can tell the disconnect is stale.
	var order []string
	for _, c := range h.presence.all() {
		order = append(order, fmt.Sprintf("%s/%d", c.kind, c.gen))
	}
	want := []string{
		fmt.Sprintf("connected/%d", conns[0].gen),
		fmt.Sprintf("connected/%d", conns[1].gen),
		fmt.Sprintf("disconnected/%d", conns[0].gen),
	}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Fatalf("presence calls %v, want %v", order, want)
	}
	for _, p := range h.handler.published() {
		if p.Will {
			t.Fatal("the will of the taken-over session reached the handler")
		}
	}
	if h.b.ClientCount() != 1 {
		t.Fatalf("ClientCount = %d, want 1", h.b.ClientCount())
	}
}

func TestWillOnConnectionLoss(t *testing.T) {
	h := start(t)
	c := mustDial(t, h, "dev1", withWill("devices/dev1/status", `{"status":"offline"}`))
	c.TerminateConnectionForTest()

	eventually.True(t, 5*time.Second, "Disconnected", func() bool { return len(h.presence.find("disconnected", "dev1")) == 1 })
	var wills []Publish
	for _, p := range h.handler.published() {
		if p.Will {
			wills = append(wills, p)
		}
	}
	if len(wills) != 1 || wills[0].Topic != "devices/dev1/status" || string(wills[0].Payload) != `{"status":"offline"}` || wills[0].DeviceID != "dev1" {
		t.Fatalf("wills handed on = %+v, want the device's status will", wills)
	}
	d := h.presence.find("disconnected", "dev1")[0]
	if d.reason != events.ReasonConnectionLost || d.gen != h.presence.find("connected", "dev1")[0].gen {
		t.Fatalf("Disconnected = %+v", d)
	}
}

func TestDisconnectReasons(t *testing.T) {
	tests := []struct {
		name string
		end  func(h *harness, c *client)
		want string
	}{
		{"clean disconnect", func(_ *harness, c *client) { _ = c.Disconnect(&paho.Disconnect{}) }, events.ReasonClientDisconnect},
		{"kick", func(h *harness, _ *client) { h.b.Kick("dev1", "disabled") }, events.ReasonKicked},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := start(t)
			c := mustDial(t, h, "dev1", withWill("devices/dev1/status", `{"status":"offline"}`))
			tt.end(h, c)
			eventually.True(t, 5*time.Second, "Disconnected", func() bool { return len(h.presence.find("disconnected", "dev1")) == 1 })
			if d := h.presence.find("disconnected", "dev1")[0]; d.reason != tt.want {
				t.Fatalf("reason = %q (%v), want %q", d.reason, d.cause, tt.want)
			}
			for _, p := range h.handler.published() {
				if p.Will {
					t.Fatal("will handed on")
				}
			}
			if h.b.ClientCount() != 0 {
				t.Fatalf("ClientCount = %d", h.b.ClientCount())
			}
		})
	}
}

func TestKickSendsAdministrativeAction(t *testing.T) {
	h := start(t)
	c := mustDial(t, h, "dev1")
	// The client may read its CONNACK before the broker's hook has noted it
	// sent; a kick in that instant closes without a DISCONNECT (the case the
	// established flag exists for). This test is about an established one.
	eventually.True(t, 5*time.Second, "session established", func() bool { return h.b.establishedSessions("dev1") == 1 })
	h.b.Kick("dev1", "test")
	select {
	case d := <-c.disconnects:
		if d.ReasonCode != 0x98 {
			t.Fatalf("DISCONNECT = %#x, want 0x98", d.ReasonCode)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not kicked")
	}
	h.b.Kick("nobody", "test") // no effect, no panic
}

func TestShutdownDisconnectsDevices(t *testing.T) {
	h := &harness{handler: &fakeHandler{errs: map[string]error{}}, presence: &fakePresence{}}
	b, err := New(Options{Addr: "127.0.0.1:0"}, Deps{Authenticator: fakeAuth{"dev1": {password: "pw1", typ: "t"}}, PublishHandler: h.handler, Presence: h.presence},
		slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	h.b = b
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	<-b.Ready()
	c := mustDial(t, h, "dev1")
	// A connection that never sends CONNECT must not hold shutdown up.
	idle, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-c.Done()
	d := h.presence.find("disconnected", "dev1")
	if len(d) != 1 || d[0].reason != events.ReasonShutdown {
		t.Fatalf("Disconnected = %+v, want shutdown", d)
	}
}

func TestPublishToDevice(t *testing.T) {
	h := start(t)
	c := mustDial(t, h, "dev1")
	if _, err := c.Subscribe(ctx5(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev1/commands/+", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	if err := h.b.Publish("devices/dev1/commands/42", []byte(`{"command":"reboot"}`), false, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-c.received:
		if m.Topic != "devices/dev1/commands/42" {
			t.Fatalf("got %s", m.Topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("command not delivered")
	}
	if len(h.handler.published()) != 0 {
		t.Fatal("a hub message reached the PublishHandler")
	}
}

// --- MQTT 3.1.1 over raw TCP ---

func connect311(clientID, user, pass string) []byte {
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	var body []byte
	body = append(body, str("MQTT")...)
	body = append(body, 4, 0xC2, 0, 30) // level 4, username+password+clean, keepalive 30
	body = append(body, str(clientID)...)
	body = append(body, str(user)...)
	body = append(body, str(pass)...)
	return append([]byte{0x10, byte(len(body))}, body...)
}

func publish311(topic, payload string, id uint16) []byte {
	body := append([]byte{byte(len(topic) >> 8), byte(len(topic))}, topic...)
	body = append(body, byte(id>>8), byte(id))
	body = append(body, payload...)
	return append([]byte{0x32, byte(len(body))}, body...) // QoS 1
}

func dial311(t *testing.T, addr string, clientID, user, pass string) (net.Conn, *bufio.Reader, byte) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write(connect311(clientID, user, pass)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	ack := make([]byte, 4)
	if _, err := io.ReadFull(r, ack); err != nil {
		t.Fatalf("read CONNACK: %v", err)
	}
	if ack[0] != 0x20 {
		t.Fatalf("got packet %#x, want CONNACK", ack[0])
	}
	return conn, r, ack[3]
}

func TestMQTT311(t *testing.T) {
	h := start(t)
	t.Run("refusals", func(t *testing.T) {
		tests := []struct {
			name               string
			clientID, user, pw string
			want               byte
		}{
			{"wrong password", "dev1", "dev1", "nope", 0x04},
			{"unknown device", "ghost", "ghost", "x", 0x04},
			{"client id is not the username", "dev1", "dev2", "pw2", 0x02},
			{"disabled", "off1", "off1", "pw", 0x05},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				_, _, code := dial311(t, h.b.Addr(), tt.clientID, tt.user, tt.pw)
				if code != tt.want {
					t.Fatalf("return code = %#x, want %#x", code, tt.want)
				}
			})
		}
	})
	t.Run("rejection is acked", func(t *testing.T) {
		h.handler.setErr("devices/dev2/bad", &rejectErr{code: "invalid_json"})
		conn, r, code := dial311(t, h.b.Addr(), "dev2", "dev2", "pw2")
		if code != 0 {
			t.Fatalf("return code = %#x", code)
		}
		if _, err := conn.Write(publish311("devices/dev2/bad", "{", 7)); err != nil {
			t.Fatal(err)
		}
		ack := make([]byte, 4)
		if _, err := io.ReadFull(r, ack); err != nil {
			t.Fatalf("read PUBACK: %v", err)
		}
		if ack[0] != 0x40 || ack[3] != 7 {
			t.Fatalf("got %x, want PUBACK for packet 7", ack)
		}
	})
	t.Run("store failure closes without ack", func(t *testing.T) {
		h.handler.setErr("devices/dev2/data", errors.New("disk full"))
		conn, r, _ := dial311(t, h.b.Addr(), "dev2", "dev2", "pw2")
		if _, err := conn.Write(publish311("devices/dev2/data", "{}", 8)); err != nil {
			t.Fatal(err)
		}
		b, err := r.ReadByte()
		if err == nil {
			t.Fatalf("got packet %#x, want the connection closed", b)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("connection not closed")
		}
	})
}

// establishedSessions counts the device's sessions whose CONNACK was sent.
func (b *Broker) establishedSessions(deviceID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	if d := b.devs[deviceID]; d != nil {
		for _, s := range d.sessions {
			if s.established.Load() {
				n++
			}
		}
	}
	return n
}
