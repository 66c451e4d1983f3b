package brokerauth_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/broker"
	"github.com/devicehub/devicehub/internal/brokerauth"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nopPublisher struct{}

func (nopPublisher) Publish([]events.Event) {}

// presence counts connections (for brokerauth and the embedded broker).
type presence struct {
	mu        sync.Mutex
	connected []string
}

func (p *presence) Connected(_ context.Context, id, _ string, _ uint64, _ string) {
	p.mu.Lock()
	p.connected = append(p.connected, id)
	p.mu.Unlock()
}
func (p *presence) Disconnected(context.Context, string, uint64, string, error) {}
func (p *presence) Activity(string)                                             {}

func (p *presence) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.connected)
}

type nopHandler struct{}

func (nopHandler) HandlePublish(context.Context, *broker.Publish) error { return nil }

// newRegistry returns a registry over real SQLite and the real committer.
func newRegistry(tb testing.TB) *registry.Service {
	tb.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(tb.TempDir(), "hub.db"), Synchronous: "normal"})
	if err != nil {
		tb.Fatal(err)
	}
	c := commit.New(st, nopPublisher{}, commit.Options{}, slog.New(slog.DiscardHandler), nil)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	tb.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
	types := devicetype.NewRegistry()
	if err := types.Register(devicetype.Type{Name: "sensor"}); err != nil {
		tb.Fatal(err)
	}
	reg := registry.NewService(st, c, types, nil, slog.New(slog.DiscardHandler))
	if err := reg.Load(ctx); err != nil {
		tb.Fatal(err)
	}
	return reg
}

// startHandler serves a brokerauth handler and runs it.
func startHandler(tb testing.TB, reg *registry.Service, p *presence) *httptest.Server {
	tb.Helper()
	h := brokerauth.New(reg, p, brokerauth.Options{}, slog.New(slog.DiscardHandler), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	mux := http.NewServeMux()
	mux.Handle("/broker/", h)
	srv := httptest.NewServer(mux)
	tb.Cleanup(func() {
		srv.Close()
		cancel()
		<-done
	})
	return srv
}

// startBroker runs the embedded broker with the registry.
func startBroker(tb testing.TB, reg *registry.Service, p *presence) *broker.Broker {
	tb.Helper()
	b, err := broker.New(broker.Options{Addr: "127.0.0.1:0"}, broker.Deps{Authenticator: reg, PublishHandler: nopHandler{}, Presence: p},
		slog.New(slog.DiscardHandler), nil)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	select {
	case <-b.Ready():
	case err := <-done:
		tb.Fatalf("broker: %v", err)
	}
	tb.Cleanup(func() {
		cancel()
		<-done
	})
	return b
}

// mqttConnect connects with MQTT 3.1.1 and reports whether the CONNACK
// accepted the connection. It sends DISCONNECT before closing.
func mqttConnect(addr, clientID, username, password string) (bool, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	pk := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName: []byte("MQTT"), Clean: true, Keepalive: 30, ClientIdentifier: clientID,
			UsernameFlag: true, Username: []byte(username), PasswordFlag: true, Password: []byte(password),
		},
	}
	var buf bytes.Buffer
	if err := pk.ConnectEncode(&buf); err != nil {
		return false, err
	}
	if _, err := c.Write(buf.Bytes()); err != nil {
		return false, err
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(bufio.NewReader(c), ack); err != nil {
		return false, err
	}
	if ack[0] != 0x20 {
		return false, fmt.Errorf("not a CONNACK: %x", ack)
	}
	ok := ack[3] == 0
	if ok {
		_, _ = c.Write([]byte{0xe0, 0x00})
	}
	return ok, nil
}

// call asks brokerauth in one of the formats.
func call(t testing.TB, client *http.Client, base, path, format string, fields map[string]string) (allow bool, status int) {
	t.Helper()
	var body io.Reader
	ct := "application/json"
	u := base + path
	switch format {
	case "mosquitto-form":
		v := url.Values{}
		for k, f := range fields {
			v.Set(k, f)
		}
		body, ct = strings.NewReader(v.Encode()), "application/x-www-form-urlencoded"
	default:
		m := map[string]any{}
		for k, f := range fields {
			m[k] = f
		}
		if a, ok := fields["acc"]; ok {
			var n int
			fmt.Sscan(a, &n)
			m["acc"] = n
		}
		b, _ := json.Marshal(m)
		body = bytes.NewReader(b)
		if format == "emqx" {
			u += "?format=emqx"
		}
	}
	resp, err := client.Post(u, ct, body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Result string `json:"result"`
		OK     bool   `json:"ok"`
	}
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	switch format {
	case "emqx":
		if resp.StatusCode != 200 {
			t.Fatalf("EMQX answer status %d", resp.StatusCode)
		}
		return out.Result == "allow", resp.StatusCode
	default:
		// mosquitto-go-auth: 2xx allows, anything else denies; its json
		// mode also reads "ok".
		allow := resp.StatusCode == 200
		if allow != out.OK || allow != (out.Result == "allow") {
			t.Fatalf("inconsistent answer: status %d, body %s", resp.StatusCode, b)
		}
		return allow, resp.StatusCode
	}
}

// TestSameRulesAsEmbeddedBroker runs one table against the embedded
// broker (a real CONNECT and its check functions) and against brokerauth
// in each format.
func TestSameRulesAsEmbeddedBroker(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry(t)
	good, err := reg.Provision(ctx, registry.ProvisionRequest{ID: "d1", Type: "sensor"})
	if err != nil {
		t.Fatal(err)
	}
	off, err := reg.Provision(ctx, registry.ProvisionRequest{ID: "d2", Type: "sensor"})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Disable(ctx, "d2", "test"); err != nil {
		t.Fatal(err)
	}
	bp, hp := &presence{}, &presence{}
	brk := startBroker(t, reg, bp)
	srv := startHandler(t, reg, hp)

	auth := []struct {
		name, client, user, pw string
		want                   bool
	}{
		{"good", "d1", "d1", good.MQTTPassword, true},
		{"bad password", "d1", "d1", "nope", false},
		{"username differs", "d1", "d2", good.MQTTPassword, false},
		{"unknown device", "zz", "zz", "x", false},
		{"disabled", "d2", "d2", off.MQTTPassword, false},
		{"empty client id", "", "", good.MQTTPassword, false},
	}
	for _, tt := range auth {
		t.Run("auth/"+tt.name, func(t *testing.T) {
			embedded := registry.ConnectIdentityOK(tt.client, tt.user)
			if embedded {
				_, err := reg.Authenticate(tt.client, tt.user, []byte(tt.pw))
				embedded = err == nil
			}
			if embedded != tt.want {
				t.Fatalf("embedded check functions: %v, want %v", embedded, tt.want)
			}
			if tt.client != "" {
				got, err := mqttConnect(brk.Addr(), tt.client, tt.user, tt.pw)
				if err != nil {
					t.Fatal(err)
				}
				if got != tt.want {
					t.Fatalf("embedded broker CONNECT: %v, want %v", got, tt.want)
				}
			}
			for _, f := range []string{"emqx", "mosquitto-json", "mosquitto-form"} {
				got, _ := call(t, srv.Client(), srv.URL, "/broker/auth", f,
					map[string]string{"clientid": tt.client, "username": tt.user, "password": tt.pw})
				if got != tt.want {
					t.Fatalf("brokerauth %s: %v, want %v", f, got, tt.want)
				}
			}
		})
	}

	acl := []struct {
		name, client, topic string
		write, want         bool
	}{
		{"publish own", "d1", "devices/d1/data", true, true},
		{"subscribe own filter", "d1", "devices/d1/commands/#", false, true},
		{"publish other", "d1", "devices/d3/data", true, false},
		{"subscribe all devices", "d1", "devices/+/data", false, false},
		{"subscribe everything", "d1", "#", false, false},
		{"id prefix", "d1", "devices/d10/data", true, false},
		{"sys", "d1", "$SYS/broker/load", false, false},
	}
	for _, tt := range acl {
		t.Run("acl/"+tt.name, func(t *testing.T) {
			if got := registry.TopicAllowed(tt.client, tt.topic, tt.write); got != tt.want {
				t.Fatalf("embedded check function: %v, want %v", got, tt.want)
			}
			action, acc := "subscribe", "4"
			if tt.write {
				action, acc = "publish", "2"
			}
			for _, f := range []string{"emqx", "mosquitto-json", "mosquitto-form"} {
				fields := map[string]string{"clientid": tt.client, "username": tt.client, "topic": tt.topic}
				if f == "emqx" {
					fields["action"] = action
				} else {
					fields["acc"] = acc
				}
				if got, _ := call(t, srv.Client(), srv.URL, "/broker/acl", f, fields); got != tt.want {
					t.Fatalf("brokerauth %s: %v, want %v", f, got, tt.want)
				}
			}
		})
	}
	t.Run("acl/disabled device", func(t *testing.T) {
		got, _ := call(t, srv.Client(), srv.URL, "/broker/acl", "emqx",
			map[string]string{"clientid": "d2", "username": "d2", "topic": "devices/d2/data", "action": "publish"})
		if got {
			t.Fatal("disabled device may publish")
		}
	})
	t.Run("superuser", func(t *testing.T) {
		if got, st := call(t, srv.Client(), srv.URL, "/broker/superuser", "mosquitto-json", map[string]string{"username": "d1"}); got || st != 403 {
			t.Fatalf("superuser: %v, %d", got, st)
		}
	})
	t.Run("device_connected", func(t *testing.T) {
		eventually.True(t, 5*time.Second, "d1 online in the hub presence", func() bool { return slices.Contains(hp.list(), "d1") })
		eventually.True(t, 5*time.Second, "d1 online in the broker presence", func() bool { return slices.Contains(bp.list(), "d1") })
		for _, id := range hp.list() {
			if id != "d1" {
				t.Fatalf("device_connected for %s", id)
			}
		}
	})
	t.Run("text response mode", func(t *testing.T) {
		resp, err := srv.Client().Post(srv.URL+"/broker/auth?format=mosquitto-text", "application/x-www-form-urlencoded",
			strings.NewReader(url.Values{"clientid": {"d1"}, "username": {"d1"}, "password": {good.MQTTPassword}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("text mode: %d %q", resp.StatusCode, b)
		}
	})
	t.Run("method and path", func(t *testing.T) {
		resp, err := srv.Client().Get(srv.URL + "/broker/auth")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
	})
}

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name, ct, body string
		want           brokerauth.Request
		err            bool
	}{
		{"emqx json", "application/json", `{"clientid":"a","username":"a","password":"p"}`,
			brokerauth.Request{ClientID: "a", Username: "a", Password: "p"}, false},
		{"acc as string", "application/json", `{"clientid":"a","topic":"t","acc":"2"}`,
			brokerauth.Request{ClientID: "a", Topic: "t", Acc: 2}, false},
		{"client_id alias", "application/json", `{"client_id":"a"}`, brokerauth.Request{ClientID: "a"}, false},
		{"form", "application/x-www-form-urlencoded; charset=utf-8", "clientid=a&acc=4&topic=x",
			brokerauth.Request{ClientID: "a", Acc: 4, Topic: "x", Form: true}, false},
		{"bad acc", "application/json", `{"acc":"x"}`, brokerauth.Request{}, true},
		{"negative acc", "application/x-www-form-urlencoded", "acc=-1", brokerauth.Request{}, true},
		{"not json", "application/json", `{`, brokerauth.Request{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := brokerauth.DecodeRequest(tt.ct, []byte(tt.body))
			if (err != nil) != tt.err {
				t.Fatalf("err = %v", err)
			}
			if err == nil && got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add("application/json", []byte(`{"clientid":"a","username":"a","password":"p","topic":"devices/a/x","action":"publish","acc":3}`))
	f.Add("application/x-www-form-urlencoded", []byte("clientid=a&username=a&acc=1"))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		r, err := brokerauth.DecodeRequest(ct, body)
		if err == nil && r.Acc < 0 {
			t.Fatalf("negative acc %d", r.Acc)
		}
	})
}

// FuzzHandler checks that no body makes the handler allow a stranger.
func FuzzHandler(f *testing.F) {
	reg := newRegistry(f)
	h := brokerauth.New(reg, &presence{}, brokerauth.Options{QueueSize: 1}, slog.New(slog.DiscardHandler), nil)
	f.Add("/broker/auth", []byte(`{"clientid":"x","username":"x","password":"p"}`))
	f.Add("/broker/acl", []byte(`{"clientid":"x","topic":"devices/x/a","action":"publish"}`))
	f.Fuzz(func(t *testing.T, path string, body []byte) {
		if !strings.HasPrefix(path, "/") {
			return
		}
		req := httptest.NewRequest(http.MethodPost, "http://hub/", bytes.NewReader(body))
		req.URL.Path = path
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code == 200 && strings.Contains(w.Body.String(), `"allow"`) {
			t.Fatalf("a body allowed access with no device registered: %s", body)
		}
	})
}

// storm runs n operations from workers goroutines and returns the rate and
// the 99th percentile latency.
func storm(b *testing.B, n, workers int, op func(i int) error) (rate float64, p99 time.Duration) {
	b.Helper()
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t0 := time.Now()
				if err := op(i); err != nil {
					failed.Store(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return float64(n) / elapsed.Seconds(), lat[n*99/100]
}

const (
	stormDevices = 1000
	stormAuths   = 10000
)

// stormWorkers are the concurrent clients: EMQX's HTTP authenticator
// keeps a pool of 8 connections per node by default, so 16 is two EMQX
// nodes; 64 is a crowd.
var stormWorkers = []int{16, 64}

func stormRegistry(b *testing.B) (*registry.Service, []events.Credentials) {
	reg := newRegistry(b)
	creds := make([]events.Credentials, stormDevices)
	for i := range creds {
		c, err := reg.Provision(context.Background(), registry.ProvisionRequest{ID: fmt.Sprintf("s%04d", i), Type: "sensor"})
		if err != nil {
			b.Fatal(err)
		}
		creds[i] = c
	}
	return reg, creds
}

// BenchmarkBrokerAuthStorm is a reconnect storm against POST /broker/auth:
// 10,000 authentications of 1,000 devices from 16 and 64 concurrent clients over
// real HTTP (keep-alive, as EMQX's connection pool does).
func BenchmarkBrokerAuthStorm(b *testing.B) {
	reg, creds := stormRegistry(b)
	srv := startHandler(b, reg, &presence{})
	bodies := make([][]byte, len(creds))
	for i, c := range creds {
		bodies[i], _ = json.Marshal(map[string]string{"clientid": c.MQTTUsername, "username": c.MQTTUsername, "password": c.MQTTPassword})
	}
	for _, workers := range stormWorkers {
		b.Run(fmt.Sprintf("clients=%d", workers), func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: workers}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			authStorm(b, srv.URL, client, bodies, workers)
		})
	}
}

func authStorm(b *testing.B, base string, client *http.Client, bodies [][]byte, workers int) {
	var rate float64
	var p99 time.Duration
	for range b.N {
		rate, p99 = storm(b, stormAuths, workers, func(i int) error {
			resp, err := client.Post(base+"/broker/auth?format=emqx", "application/json", bytes.NewReader(bodies[i%len(bodies)]))
			if err != nil {
				return err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if !bytes.Contains(body, []byte(`"allow"`)) {
				return fmt.Errorf("refused: %s", body)
			}
			return nil
		})
	}
	b.ReportMetric(rate, "auths/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}

// BenchmarkEmbeddedConnectStorm is the same storm against the embedded
// broker's CONNECT handling: TCP connect, CONNECT, CONNACK, DISCONNECT.
func BenchmarkEmbeddedConnectStorm(b *testing.B) {
	reg, creds := stormRegistry(b)
	brk := startBroker(b, reg, &presence{})
	for _, workers := range stormWorkers {
		b.Run(fmt.Sprintf("clients=%d", workers), func(b *testing.B) {
			connectStorm(b, brk.Addr(), creds, workers)
		})
	}
}

func connectStorm(b *testing.B, addr string, creds []events.Credentials, workers int) {
	var rate float64
	var p99 time.Duration
	for range b.N {
		rate, p99 = storm(b, stormAuths, workers, func(i int) error {
			c := creds[i%len(creds)]
			ok, err := mqttConnect(addr, c.MQTTUsername, c.MQTTUsername, c.MQTTPassword)
			if err != nil {
				return err
			}
			if !ok {
				return errors.New("refused")
			}
			return nil
		})
	}
	b.ReportMetric(rate, "connects/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
}

// BenchmarkHandlerAuth is the handler's own cost of one authentication,
// without the network: the part of a storm's latency that is the hub's.
func BenchmarkHandlerAuth(b *testing.B) {
	reg, creds := stormRegistry(b)
	h := brokerauth.New(reg, &presence{}, brokerauth.Options{QueueSize: 1}, slog.New(slog.DiscardHandler), nil)
	bodies := make([][]byte, len(creds))
	for i, c := range creds {
		bodies[i], _ = json.Marshal(map[string]string{"clientid": c.MQTTUsername, "username": c.MQTTUsername, "password": c.MQTTPassword})
	}
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "http://hub/broker/auth", bytes.NewReader(bodies[int(n.Add(1))%len(bodies)]))
			req.Header.Set("Content-Type", "application/json")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != 200 {
				b.Fatalf("status %d", w.Code)
			}
		}
	})
}
