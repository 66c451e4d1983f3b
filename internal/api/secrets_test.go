package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/throttle"
)

// logBuffer is a log destination safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// guessFixture is an API whose guessing throttle has small limits and a
// clock the test moves.
type guessFixture struct {
	f   *apitest.Fakes
	h   http.Handler
	reg *prometheus.Registry
	log *logBuffer
	now time.Time
	mu  sync.Mutex
}

func newGuessFixture(t *testing.T) *guessFixture {
	t.Helper()
	g := &guessFixture{f: apitest.New(), reg: prometheus.NewRegistry(), log: &logBuffer{}, now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	clock := func() time.Time {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.now
	}
	a := api.New(g.f.Deps(), api.Options{
		Guessing:   throttle.Options{SourceLimit: 3, TargetLimit: 2, Window: time.Minute, Now: clock},
		Registerer: g.reg,
	}, slog.New(slog.NewTextHandler(g.log, nil)))
	t.Cleanup(a.Shutdown)
	g.h = a.Handler()
	return g
}

func (g *guessFixture) advance(d time.Duration) {
	g.mu.Lock()
	g.now = g.now.Add(d)
	g.mu.Unlock()
}

// call sends a request from source with a bearer ("" for none).
func (g *guessFixture) call(method, path, source, bearer, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.RemoteAddr = source
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	g.h.ServeHTTP(rec, req)
	return rec
}

func (g *guessFixture) counter(t *testing.T, name, label, value string) float64 {
	t.Helper()
	mfs, err := g.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// Finding 8 of issue 9: wrong operator tokens are throttled per source
// address: once it failed SourceLimit times within the window, its next
// attempts are refused unchecked (even with a good token) until the
// window ends; other sources are not affected; failures and refusals are
// counted and logged without the guess; no audit row is written.
func TestGuessingOperatorTokens(t *testing.T) {
	g := newGuessFixture(t)
	const guess = "guessed-token-0123456789"
	for i := range 3 {
		if rec := g.call("DELETE", "/api/v1/tokens/t2", "203.0.113.5:4000", guess, ""); rec.Code != 401 {
			t.Fatalf("guess %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	// Also from another port of the same address: the source is the host.
	rec := g.call("GET", "/api/v1/devices", "203.0.113.5:4001", apitest.AdminToken, "")
	if rec.Code != 429 || !strings.Contains(rec.Body.String(), `"code":"throttled"`) || rec.Header().Get("Retry-After") != "60" {
		t.Fatalf("after 3 failures: %d %q Retry-After %q", rec.Code, rec.Body, rec.Header().Get("Retry-After"))
	}
	if rec := g.call("GET", "/api/v1/devices", "198.51.100.7:1", apitest.AdminToken, ""); rec.Code != 200 {
		t.Fatalf("another source: %d %s", rec.Code, rec.Body)
	}
	g.advance(time.Minute)
	if rec := g.call("GET", "/api/v1/devices", "203.0.113.5:4000", apitest.AdminToken, ""); rec.Code != 200 {
		t.Fatalf("after the window: %d %s", rec.Code, rec.Body)
	}
	if n := g.counter(t, "devicehub_auth_failures_total", "kind", "api_token"); n != 3 {
		t.Errorf("failures counted %v, want 3", n)
	}
	if n := g.counter(t, "devicehub_auth_throttled_total", "kind", "api_token"); n != 1 {
		t.Errorf("refusals counted %v, want 1", n)
	}
	logs := g.log.String()
	if strings.Contains(logs, guess) {
		t.Errorf("the guess is in the log:\n%s", logs)
	}
	if !strings.Contains(logs, "failed attempt") || !strings.Contains(logs, "source=203.0.113.5") {
		t.Errorf("failures not logged with their source:\n%s", logs)
	}
	if e := g.f.Audit.Entries(); len(e) != 0 {
		t.Errorf("audit entries for guesses: %+v", e)
	}
}

// Requests without credentials are refused, counted per operation and
// logged at most once a second; they are not guesses and never throttled,
// and they write no audit row (finding 6).
func TestRefusedUnknownCallers(t *testing.T) {
	g := newGuessFixture(t)
	for i := range 200 {
		if rec := g.call("POST", "/api/v1/devices/ws-1/disable", "203.0.113.9:1", "", `{}`); rec.Code != 401 {
			t.Fatalf("request %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if n := g.counter(t, "devicehub_api_unauthenticated_total", "operation", "disableDevice"); n != 200 {
		t.Errorf("counted %v, want 200", n)
	}
	if n := strings.Count(g.log.String(), "request without credentials refused"); n != 1 {
		t.Errorf("%d log lines for 200 refusals within a second, want 1", n)
	}
	g.advance(time.Second)
	g.call("POST", "/api/v1/devices/ws-1/disable", "203.0.113.9:1", "", `{}`)
	if logs := g.log.String(); strings.Count(logs, "request without credentials refused") != 2 || !strings.Contains(logs, "lines=200") {
		t.Errorf("the next second's line does not sum up the ones not logged:\n%s", logs)
	}
	if e := g.f.Audit.Entries(); len(e) != 0 {
		t.Errorf("audit entries: %d", len(e))
	}
}

// A provisioning operation's secret is throttled per operation as well:
// guesses spread over many addresses stop at TargetLimit.
func TestGuessingOperationSecret(t *testing.T) {
	g := newGuessFixture(t)
	res, err := g.f.Provisioning.CreateToken(context.Background(), provisioning.CreateTokenRequest{DeviceType: "WeatherStation"})
	if err != nil {
		t.Fatal(err)
	}
	rec := g.call("POST", "/api/v1/provisioning/operations", "192.0.2.1:1", "", `{"token":"`+res.Secret+`"}`)
	if rec.Code != 201 {
		t.Fatalf("create operation: %d %s", rec.Code, rec.Body)
	}
	var op struct{ ID, Secret string }
	if err := json.Unmarshal(rec.Body.Bytes(), &op); err != nil || op.ID == "" {
		t.Fatalf("operation %s: %v", rec.Body, err)
	}
	path := "/api/v1/provisioning/operations/" + op.ID
	for i, src := range []string{"203.0.113.1:1", "203.0.113.2:1"} {
		if rec := g.call("GET", path, src, "wrong-secret", ""); rec.Code != 401 {
			t.Fatalf("guess %d: %d %s", i, rec.Code, rec.Body)
		}
	}
	if rec := g.call("GET", path, "203.0.113.3:1", op.Secret, ""); rec.Code != 429 {
		t.Fatalf("third source after two failures at the operation: %d %s", rec.Code, rec.Body)
	}
	g.advance(time.Minute)
	if rec := g.call("GET", path, "203.0.113.3:1", op.Secret, ""); rec.Code != 200 {
		t.Fatalf("the device after the window: %d %s", rec.Code, rec.Body)
	}
}

// Wrong shared secrets and provisioning tokens are throttled per source.
func TestGuessingDeviceSecrets(t *testing.T) {
	tests := []struct {
		name, path, bad, good string
	}{
		{"shared secret", "/api/v1/device/register",
			`{"shared_secret":"wrong-secret-0123","key":"k1","type":"WeatherStation"}`,
			`{"shared_secret":"` + apitest.SharedSecret + `","key":"k1","type":"WeatherStation"}`},
		{"provisioning token", "/api/v1/provisioning/operations", `{"token":"dhp_wrong"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGuessFixture(t)
			for i := range 3 {
				if rec := g.call("POST", tt.path, "203.0.113.5:1", "", tt.bad); rec.Code != 401 {
					t.Fatalf("guess %d: %d %s", i, rec.Code, rec.Body)
				}
			}
			if rec := g.call("POST", tt.path, "203.0.113.5:1", "", tt.bad); rec.Code != 429 {
				t.Fatalf("4th guess: %d %s", rec.Code, rec.Body)
			}
			if tt.good != "" {
				if rec := g.call("POST", tt.path, "198.51.100.1:1", "", tt.good); rec.Code >= 300 {
					t.Fatalf("another source: %d %s", rec.Code, rec.Body)
				}
			}
			if n := g.counter(t, "devicehub_auth_failures_total", "kind", "provisioning_secret"); n != 3 {
				t.Errorf("failures %v, want 3", n)
			}
			if strings.Contains(g.log.String(), "wrong") {
				t.Errorf("a guess is in the log:\n%s", g.log.String())
			}
		})
	}
}
