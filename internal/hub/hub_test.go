package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/hub"
	"github.com/devicehub/devicehub/internal/monitors/monitorstest"
)

func TestMain(m *testing.M) {
	if creds := os.Getenv(fleetChildEnv); creds != "" {
		// The device process of the command benchmarks.
		os.Exit(runFleetChild(creds, os.Getenv(fleetAddrEnv)))
	}
	monitorstest.ReceiverMain() // when run as a benchmark's receiver process
	goleak.VerifyTestMain(m,
		// Only the test client's idle keep-alive connections may remain:
		// they are the tests' own, and end when their server's do. A
		// connection the hub leaks (an MQTT session, an HTTP server
		// conn, a store) still fails the run.
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	)
}

const testTypes = `
device_types:
  WeatherStation:
    heartbeat_interval: 60s
    fields:
      temperature: {type: float, unit: celsius, min: -60, max: 70}
      humidity:    {type: float, unit: percent, min: 0, max: 100}
    commands: [reboot, set_interval]
  Beacon:
    heartbeat_interval: 200ms
    heartbeat_timeout: 400ms
`

type testHub struct {
	*hub.Hub
	token string
	base  string
	stop  func() // stops the hub (once; the test's end does it too)
}

// startHub runs a hub with embedded defaults on random ports in a temporary
// data directory, and stops it when the test ends.
func startHub(t testing.TB, extra string) *testHub {
	t.Helper()
	return startHubHTTP(t, "", extra)
}

// startHubHTTP is startHub with more keys of the http section (indented).
func startHubHTTP(t testing.TB, httpKeys, extra string) *testHub {
	t.Helper()
	return startHubIn(t, t.TempDir(), httpKeys, extra)
}

// startHubIn is startHubHTTP on the data directory dir (a hub started
// again on it finds what the last one stored).
func startHubIn(t testing.TB, dir, httpKeys, extra string) *testHub {
	t.Helper()
	return startHubYAML(t, dir, fmt.Sprintf("data_dir: %s\nmqtt:\n  addr: 127.0.0.1:0\nhttp:\n  addr: 127.0.0.1:0\n%s%s%s", dir, httpKeys, testTypes, extra))
}

// startHubYAML runs a hub on the data directory dir with the configuration
// yaml until the test ends, and returns it once it is ready.
func startHubYAML(t testing.TB, dir, yaml string) *testHub {
	t.Helper()
	return startHubBefore(t, dir, yaml, nil)
}

// startHubBefore is startHubYAML that calls before (if not nil) on the
// hub before it runs.
func startHubBefore(t testing.TB, dir, yaml string, before func(*hub.Hub)) *testHub {
	t.Helper()
	cfg := loadTestConfig(t, dir, yaml)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	h, err := hub.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if before != nil {
		before(h)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("hub run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return readyHub(t, h, dir, done, stop)
}

// loadTestConfig writes yaml as dir's configuration file and loads it,
// with no environment.
func loadTestConfig(t testing.TB, dir, yaml string) *config.Config {
	t.Helper()
	path := filepath.Join(dir, "devicehub.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path, func(string) (string, bool) { return "", false }, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// readyHub waits until h, whose Run reports on done, serves, and returns
// it with the admin token of its data directory dir; stop stops it.
func readyHub(t testing.TB, h *hub.Hub, dir string, done <-chan error, stop func()) *testHub {
	t.Helper()
	select {
	case <-h.Ready():
	case err := <-done:
		t.Fatalf("hub stopped before ready: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("hub not ready after 20s")
	}
	tok, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil {
		t.Fatal(err)
	}
	return &testHub{Hub: h, token: strings.TrimSpace(string(tok)), base: "http://" + h.HTTPAddr(), stop: stop}
}

func (th *testHub) do(t *testing.T, method, path string, body any, out any) int {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, th.base+path, r)
	req.Header.Set("Authorization", "Bearer "+th.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, b, err)
		}
	}
	return resp.StatusCode
}

type creds struct {
	DeviceID     string `json:"device_id"`
	MQTTUsername string `json:"mqtt_username"`
	MQTTPassword string `json:"mqtt_password"`
	APIKey       string `json:"api_key"`
}

func (th *testHub) provision(t *testing.T, id, typ string) creds {
	t.Helper()
	var out struct {
		Credentials creds `json:"credentials"`
	}
	if code := th.do(t, "POST", "/api/v1/devices", map[string]any{"id": id, "type": typ}, &out); code != 201 {
		t.Fatalf("provision %s: status %d", id, code)
	}
	if out.Credentials.MQTTPassword == "" {
		t.Fatalf("provision %s: no password in %+v", id, out)
	}
	return out.Credentials
}

type deviceState struct {
	Status    string `json:"status"`
	Connected bool   `json:"connected"`
}

func (th *testHub) device(t *testing.T, id string) deviceState {
	t.Helper()
	var out struct {
		Device deviceState `json:"device"`
	}
	if code := th.do(t, "GET", "/api/v1/devices/"+id, nil, &out); code != 200 {
		t.Fatalf("get device %s: status %d", id, code)
	}
	return out.Device
}

type mqttClient struct {
	*paho.Client
	mu   sync.Mutex
	msgs []*paho.Publish
	got  chan struct{}
}

// dial connects a real MQTT v5 client.
func dial(t testing.TB, addr, clientID, user, pass string) (*mqttClient, *paho.Connack, error) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	mc := &mqttClient{got: make(chan struct{}, 100)}
	mc.Client = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			mc.mu.Lock()
			mc.msgs = append(mc.msgs, pr.Packet)
			mc.mu.Unlock()
			select {
			case mc.got <- struct{}{}:
			default:
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := mc.Connect(ctx, &paho.Connect{
		ClientID: clientID, KeepAlive: 30, CleanStart: true,
		Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true,
	})
	if err != nil {
		conn.Close()
		return nil, ca, err
	}
	t.Cleanup(func() { mc.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return mc, ca, nil
}

func (mc *mqttClient) received() []*paho.Publish {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return append([]*paho.Publish(nil), mc.msgs...)
}

type eventRecorder struct {
	mu  sync.Mutex
	evs []events.Event
}

func (r *eventRecorder) add(e events.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
}

func (r *eventRecorder) all() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Event(nil), r.evs...)
}

func (r *eventRecorder) of(typ events.Type, device string) []events.Event {
	var out []events.Event
	for _, e := range r.all() {
		if e.Type == typ && (device == "" || e.DeviceID == device) {
			out = append(out, e)
		}
	}
	return out
}

func publish(t *testing.T, c *mqttClient, topic, payload string) (*paho.PublishResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
}

func TestEndToEndReadings(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			extra := ""
			if backend == "postgres" {
				extra = postgresStorage(t)
			}
			testEndToEndReadings(t, startHub(t, extra))
		})
	}
}

func testEndToEndReadings(t *testing.T, th *testHub) {
	rec := &eventRecorder{}
	sub, err := th.Subscribe(events.Filter{DeviceTypes: []string{"WeatherStation"}}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	cr := th.provision(t, "dev1", "WeatherStation")
	c, _, err := dial(t, th.MQTTAddr(), "dev1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publish(t, c, "devices/dev1/data", `{"temperature": 21.5, "humidity": 40}`); err != nil {
		t.Fatal(err)
	}
	// Ack means stored: the reading is readable as soon as PUBACK arrived.
	// Each check reads a fresh page and requires a 200, so that an error
	// reply cannot pass on what an earlier page held.
	type reading struct {
		Values map[string]any `json:"values"`
	}
	readings := func(query string) []reading {
		t.Helper()
		var page struct {
			Readings []reading `json:"readings"`
		}
		if code := th.do(t, "GET", "/api/v1/devices/dev1/readings"+query, nil, &page); code != 200 {
			t.Fatalf("readings%s: status %d", query, code)
		}
		return page.Readings
	}
	if got := readings(""); len(got) != 1 || got[0].Values["temperature"] != 21.5 || got[0].Values["humidity"] != 40.0 {
		t.Fatalf("readings = %+v", got)
	}
	// The latest values of the fleet, and one field in buckets, from the same commit.
	var latest struct {
		Devices []struct {
			DeviceID string `json:"device_id"`
			Values   []struct {
				Field string  `json:"field"`
				Value float64 `json:"value"`
			} `json:"values"`
		} `json:"devices"`
	}
	if code := th.do(t, "GET", "/api/v1/readings/latest", nil, &latest); code != 200 || len(latest.Devices) != 1 ||
		len(latest.Devices[0].Values) != 2 || latest.Devices[0].Values[1].Field != "temperature" || latest.Devices[0].Values[1].Value != 21.5 {
		t.Fatalf("latest values: status %d, %+v", code, latest)
	}
	var agg struct {
		Buckets []struct {
			Count int     `json:"count"`
			Last  float64 `json:"last"`
		} `json:"buckets"`
	}
	aggURL := "/api/v1/devices/dev1/readings/aggregate?field=temperature&buckets=10&from=" +
		strconv.FormatInt(time.Now().Add(-time.Hour).UnixMilli(), 10) + "&to=" + strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
	if code := th.do(t, "GET", aggURL, nil, &agg); code != 200 || len(agg.Buckets) != 1 || agg.Buckets[0].Count != 1 || agg.Buckets[0].Last != 21.5 {
		t.Fatalf("aggregate: status %d, %+v", code, agg)
	}

	eventually.True(t, 5*time.Second, "device_data_received", func() bool { return len(rec.of(events.DeviceDataReceived, "dev1")) == 1 })
	ev := rec.of(events.DeviceDataReceived, "dev1")[0]
	d, ok := ev.Args.(*events.DataReceived)
	if !ok {
		t.Fatalf("args %T", ev.Args)
	}
	if ev.DeviceType != "WeatherStation" || len(d.Readings) != 1 || d.Readings[0].Values["temperature"] != 21.5 || d.MessageID == 0 {
		t.Fatalf("event = %+v args %+v", ev, d)
	}
	eventually.True(t, 5*time.Second, "device_connected", func() bool { return len(rec.of(events.DeviceConnected, "dev1")) == 1 })

	// Idempotent ingest: the same msg_id twice is acknowledged and stored once.
	for range 2 {
		if _, err := publish(t, c, "devices/dev1/data/outdoor", `{"temperature": 5, "msg_id": "m-1"}`); err != nil {
			t.Fatal(err)
		}
	}
	if got := readings("?stream=outdoor"); len(got) != 1 || got[0].Values["temperature"] != 5.0 {
		t.Fatalf("readings with msg_id m-1 = %+v, want one of 5", got)
	}

	// The same readings over HTTP with the device's api key.
	req, _ := http.NewRequest("POST", th.base+"/api/v1/device/data", strings.NewReader(`[{"temperature": 1},{"temperature": 2}]`))
	req.Header.Set("Authorization", "Bearer "+cr.APIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("http data: status %d", resp.StatusCode)
	}
	if got := readings(""); len(got) != 4 {
		t.Fatalf("readings = %d, want 4", len(got))
	}
}

func TestRefusals(t *testing.T) {
	th := startHub(t, "")
	cr := th.provision(t, "dev1", "WeatherStation")
	th.provision(t, "dev2", "WeatherStation")

	tests := []struct {
		name, id, user, pass string
		code                 byte
	}{
		{"wrong password", "dev1", "dev1", "nope", 0x86},
		{"unknown device", "ghost", "ghost", "x", 0x86},
		{"client id is not the username", "dev2", "dev1", cr.MQTTPassword, 0x85},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ca, err := dial(t, th.MQTTAddr(), tt.id, tt.user, tt.pass)
			if err == nil {
				t.Fatal("connected")
			}
			if ca == nil || ca.ReasonCode != tt.code {
				t.Fatalf("connack = %+v, want reason %#x (err %v)", ca, tt.code, err)
			}
		})
	}

	c, _, err := dial(t, th.MQTTAddr(), "dev1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("publish to another device", func(t *testing.T) {
		pr, err := publish(t, c, "devices/dev2/data", `{"temperature": 1}`)
		if err == nil || pr == nil || pr.ReasonCode != 0x87 {
			t.Fatalf("puback = %+v err %v, want 0x87", pr, err)
		}
	})
	t.Run("subscribe to another device", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev2/#", QoS: 1}, {Topic: "devices/+/data", QoS: 1}}})
		if sa == nil {
			t.Fatalf("suback nil: %v", err)
		}
		for i, rc := range sa.Reasons {
			if rc != 0x87 {
				t.Errorf("suback reason %d = %#x, want 0x87", i, rc)
			}
		}
	})
	t.Run("bad payload answered on the errors topic", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/dev1/errors", QoS: 1}}}); err != nil {
			t.Fatal(err)
		}
		pr, err := publish(t, c, "devices/dev1/data", `{"temperature": 500}`)
		if err == nil || pr == nil || pr.ReasonCode != 0x99 {
			t.Fatalf("puback = %+v err %v, want 0x99", pr, err)
		}
		eventually.True(t, 5*time.Second, "a message on devices/dev1/errors", func() bool {
			for _, m := range c.received() {
				if m.Topic == "devices/dev1/errors" {
					return true
				}
			}
			return false
		})
		var body map[string]any
		for _, m := range c.received() {
			if m.Topic == "devices/dev1/errors" {
				json.Unmarshal(m.Payload, &body)
			}
		}
		if body["field"] != "temperature" || body["code"] != "validation_failed" {
			t.Fatalf("error body = %v", body)
		}
		// The connection still works for good messages.
		if _, err := publish(t, c, "devices/dev1/data", `{"temperature": 20}`); err != nil {
			t.Fatal(err)
		}
	})
}

func TestTakeoverIsNeverFollowedByStaleOffline(t *testing.T) {
	th := startHub(t, "")
	rec := &eventRecorder{}
	sub, err := th.Subscribe(events.Filter{DeviceIDs: []string{"dev1"}}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	cr := th.provision(t, "dev1", "WeatherStation")
	c1, _, err := dial(t, th.MQTTAddr(), "dev1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	c2, _, err := dial(t, th.MQTTAddr(), "dev1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c1.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("first session not closed by takeover")
	}
	// A message through the new session, committed after every presence
	// change of the takeover, is the barrier for the check.
	if _, err := publish(t, c2, "devices/dev1/data", `{"temperature": 20}`); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "data event", func() bool { return len(rec.of(events.DeviceDataReceived, "dev1")) == 1 })
	if n := len(rec.of(events.DeviceDisconnected, "dev1")); n != 0 {
		t.Fatalf("device_disconnected fired %d times after a takeover: %+v", n, rec.all())
	}
	dev := th.device(t, "dev1")
	if dev.Status != "online" || !dev.Connected {
		t.Fatalf("device = %+v, want online and connected", dev)
	}
}

func TestHeartbeatTimeoutSetsOffline(t *testing.T) {
	th := startHub(t, "")
	rec := &eventRecorder{}
	sub, err := th.Subscribe(events.Filter{Types: []events.Type{events.DeviceDisconnected, events.DeviceStatusChanged}}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	cr := th.provision(t, "b1", "Beacon")
	// Keepalive 30 s: only the type's 400 ms heartbeat timeout can fire.
	if _, _, err := dial(t, th.MQTTAddr(), "b1", cr.MQTTUsername, cr.MQTTPassword); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "device_disconnected by heartbeat timeout", func() bool {
		return len(rec.of(events.DeviceDisconnected, "b1")) > 0
	})
	d := rec.of(events.DeviceDisconnected, "b1")[0].Args.(*events.Disconnected)
	if d.Reason != events.ReasonHeartbeatTimeout {
		t.Fatalf("reason = %q, want %q", d.Reason, events.ReasonHeartbeatTimeout)
	}
	eventually.True(t, 5*time.Second, "status offline", func() bool {
		for _, e := range rec.of(events.DeviceStatusChanged, "b1") {
			if e.Args.(*events.StatusChanged).NewStatus == "offline" {
				return true
			}
		}
		return false
	})
	dev := th.device(t, "b1")
	if dev.Status != "offline" || dev.Connected {
		t.Fatalf("device = %+v, want offline", dev)
	}
}

func TestStatusChangesFireOnce(t *testing.T) {
	th := startHub(t, "")
	rec := &eventRecorder{}
	sub, err := th.Subscribe(events.Filter{Types: []events.Type{events.DeviceStatusChanged, events.DeviceDataReceived}}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	cr := th.provision(t, "dev1", "WeatherStation")
	c, _, err := dial(t, th.MQTTAddr(), "dev1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := publish(t, c, "devices/dev1/status", `{"status": "maintenance"}`); err != nil {
			t.Fatal(err)
		}
	}
	// Events arrive in order: once the later data event is here, every
	// status event before it is too.
	if _, err := publish(t, c, "devices/dev1/data", `{"temperature": 20}`); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "data event", func() bool { return len(rec.of(events.DeviceDataReceived, "dev1")) == 1 })
	var got []string
	for _, e := range rec.of(events.DeviceStatusChanged, "dev1") {
		a := e.Args.(*events.StatusChanged)
		got = append(got, a.OldStatus+"->"+a.NewStatus)
	}
	want := "offline->online,online->maintenance"
	if strings.Join(got, ",") != want {
		t.Fatalf("status changes = %v, want %s", got, want)
	}
}
