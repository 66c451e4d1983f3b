package brokerauth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/brokerauth"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/throttle"
)

// Finding 8 of issue 9: /broker/auth answers an unknown device, a wrong
// password and revoked credentials alike, so that its answers do not tell
// which devices exist; failed passwords are throttled per device (also
// across addresses), counted and logged without the password.
func TestAuthGuessing(t *testing.T) {
	ctx := context.Background()
	reg := newRegistry(t)
	good, err := reg.Provision(ctx, registry.ProvisionRequest{ID: "d1", Type: "sensor"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Provision(ctx, registry.ProvisionRequest{ID: "gone", Type: "sensor"}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Revoke(ctx, "gone", "test"); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	metrics := prometheus.NewRegistry()
	h := brokerauth.New(reg, &presence{}, brokerauth.Options{Guessing: throttle.Options{TargetLimit: 3}},
		slog.New(slog.NewTextHandler(&logs, nil)), metrics)
	auth := func(peer, id, pw string) (int, string) {
		b, _ := json.Marshal(map[string]string{"clientid": id, "username": id, "password": pw, "peerhost": peer})
		req := httptest.NewRequest("POST", "/broker/auth", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body, _ := io.ReadAll(rec.Body)
		return rec.Code, string(body)
	}

	// Alike: the same status and body for each kind of failure.
	type answer struct {
		code int
		body string
	}
	var answers []answer
	for _, c := range []struct{ id, pw string }{{"nobody", "guess-pw-1"}, {"d1", "guess-pw-2"}, {"gone", "guess-pw-3"}} {
		code, body := auth("203.0.113.1", c.id, c.pw)
		answers = append(answers, answer{code, body})
	}
	for _, a := range answers[1:] {
		if a != answers[0] {
			t.Errorf("answers differ: %+v vs %+v", a, answers[0])
		}
	}
	if answers[0].code != http.StatusForbidden || !strings.Contains(answers[0].body, "bad credentials") {
		t.Errorf("answer %+v", answers[0])
	}

	// d1 failed once; two more from other addresses reach its limit, and
	// then even its password is refused unchecked.
	auth("203.0.113.2", "d1", "guess-pw-4")
	auth("203.0.113.3", "d1", "guess-pw-5")
	if code, body := auth("198.51.100.9", "d1", good.MQTTPassword); code != http.StatusForbidden || !strings.Contains(body, "too many failed attempts") {
		t.Fatalf("after 3 failures: %d %s", code, body)
	}
	// Other devices are not affected.
	if code, body := auth("198.51.100.9", "nobody-else", "x"); !strings.Contains(body, "bad credentials") {
		t.Fatalf("another device: %d %s", code, body)
	}
	if n := counter(t, metrics, "devicehub_auth_failures_total"); n != 6 {
		t.Errorf("failures counted %v, want 6", n)
	}
	if n := counter(t, metrics, "devicehub_auth_throttled_total"); n != 1 {
		t.Errorf("refusals counted %v, want 1", n)
	}
	if strings.Contains(logs.String(), "guess-pw") || strings.Contains(logs.String(), good.MQTTPassword) {
		t.Errorf("a password is in the log:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "why=\"unknown device\"") {
		t.Errorf("the hub's log does not say which failure it was:\n%s", logs.String())
	}
}

// counter is the value of a counter's broker_auth child.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "broker_auth" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no %s{kind=broker_auth}", name)
	return 0
}
