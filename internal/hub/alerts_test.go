package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/cli"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/monitorclient"
)

const alertRules = `
monitors:
  allow_private_targets: true
alerts:
  rules:
    WeatherStation:
      - name: too_hot
        when: temperature > 30
        clear: temperature < 25
        severity: major
        repeat: 0s
        message: "{{.Device.ID}} ({{.Device.Type}}) is at {{.Value}} C"
        labels: {team: roof}
    Beacon:
      - name: beacon_offline
        when: offline > 1s
        severity: critical
`

func alertsOf(t *testing.T, c *client.Client, q client.AlertQuery) []client.Alert {
	t.Helper()
	as, err := c.Alerts(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return as
}

// TestAlertsEndToEnd: a real MQTT device crosses a threshold and raises one
// alert, staying above updates it, dropping below the clear bound clears
// it; the alert_* events reach a push monitor; operators acknowledge and
// clear over REST and the CLI; on SQLite and PostgreSQL.
func TestAlertsEndToEnd(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			extra := alertRules
			if backend == "postgres" {
				extra += postgresStorage(t)
			}
			testAlertsEndToEnd(t, startHub(t, extra))
		})
	}
}

func testAlertsEndToEnd(t *testing.T, th *testHub) {
	ctx := context.Background()
	c := client.New(th.base, th.token, nil)

	// A push monitor of the alert events: they need nothing of their own.
	var mu sync.Mutex
	var hooked []events.Event
	var secret string
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		s := secret
		mu.Unlock()
		monitorclient.NewHandler(monitorclient.HandlerOptions{Secrets: []string{s}}, func(_ context.Context, b *monitorclient.Batch) error {
			mu.Lock()
			hooked = append(hooked, b.Events...)
			mu.Unlock()
			return nil
		}).ServeHTTP(w, r)
	}))
	defer rcv.Close()
	d := 0.01
	hm, err := c.CreateHTTPMonitor(ctx, []string{"alert_*"}, rcv.URL, client.MonitorSpec{Method: "POST", BatchDuration: &d})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	secret = hm.Secret
	mu.Unlock()

	cr := th.provision(t, "ws-1", "WeatherStation")
	mc, _, err := dial(t, th.MQTTAddr(), "ws-1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	send := func(v float64) {
		t.Helper()
		if _, err := publish(t, mc, "devices/ws-1/data", fmt.Sprintf(`{"temperature": %g}`, v)); err != nil {
			t.Fatal(err)
		}
	}
	send(20)
	send(35)
	var alert client.Alert
	eventually.True(t, 10*time.Second, "the alert raised", func() bool {
		as := alertsOf(t, c, client.AlertQuery{DeviceID: "ws-1"})
		if len(as) == 1 {
			alert = as[0]
		}
		return len(as) == 1 && as[0].State == "active"
	})
	if alert.Rule != "too_hot" || alert.Severity != "major" || alert.Value != 35.0 || alert.Count != 1 ||
		alert.Message != "ws-1 (WeatherStation) is at 35 C" || alert.Labels["team"] != "roof" {
		t.Fatalf("alert %+v", alert)
	}
	// Staying above: the same alert, counted.
	send(36)
	send(28) // between the bounds: still open, not counted
	eventually.True(t, 10*time.Second, "the alert updated", func() bool {
		as := alertsOf(t, c, client.AlertQuery{DeviceID: "ws-1"})
		return len(as) == 1 && as[0].Count == 2 && as[0].Value == 36.0
	})
	// Acknowledged over REST, with a note.
	a, err := c.AcknowledgeAlert(ctx, alert.ID, "looking")
	if err != nil || a.State != "acknowledged" || a.AckNote != "looking" || a.AckBy == "" {
		t.Fatalf("acknowledge: %+v %v", a, err)
	}
	if _, err := c.AcknowledgeAlert(ctx, alert.ID, ""); client.StatusOf(err) != 409 {
		t.Fatalf("acknowledge twice: %v, want 409", err)
	}
	// Below the clear bound: cleared by the rule.
	send(24)
	eventually.True(t, 10*time.Second, "the alert cleared", func() bool {
		as := alertsOf(t, c, client.AlertQuery{DeviceID: "ws-1"})
		return len(as) == 1 && as[0].State == "cleared" && as[0].ClearedBy == "rule"
	})
	// Above again: a second alert; cleared by hand with the CLI.
	send(40)
	var second client.Alert
	eventually.True(t, 10*time.Second, "a second alert", func() bool {
		as := alertsOf(t, c, client.AlertQuery{States: []string{"open"}})
		if len(as) == 1 {
			second = as[0]
		}
		return len(as) == 1 && as[0].ID != alert.ID
	})
	var out, errb bytes.Buffer
	cliArgs := func(args ...string) []string {
		return append(args, "--server", th.base, "--token", th.token)
	}
	if code := cli.Run(ctx, nil, cliArgs("alerts", "clear", second.ID, "--note", "fan replaced"), &out, &errb); code != 0 {
		t.Fatalf("alerts clear: %d %s", code, errb.String())
	}
	out.Reset()
	if code := cli.Run(ctx, nil, cliArgs("alerts", "list", "--device", "ws-1", "-o", "json"), &out, &errb); code != 0 {
		t.Fatalf("alerts list: %d %s", code, errb.String())
	}
	var listed []client.Alert
	if err := json.Unmarshal(out.Bytes(), &listed); err != nil || len(listed) != 2 || listed[0].State != "cleared" || listed[0].ClearNote != "fan replaced" {
		t.Fatalf("CLI list %s: %v", out.String(), err)
	}
	// The monitor got every alert event, in order.
	eventually.True(t, 10*time.Second, "alert events at the monitor", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(hooked) >= 6
	})
	mu.Lock()
	var types []string
	for _, e := range hooked {
		types = append(types, string(e.Type))
		if e.DeviceID != "ws-1" || e.DeviceType != "WeatherStation" {
			t.Errorf("event %+v", e)
		}
	}
	mu.Unlock()
	want := "alert_raised alert_updated alert_acknowledged alert_cleared alert_raised alert_cleared"
	if strings.Join(types, " ") != want {
		t.Fatalf("monitor got %v, want %s", types, want)
	}
}

// TestAlertsOffline: a device that goes silent raises the offline alert
// (a timer, not an event), and reconnecting clears it.
func TestAlertsOffline(t *testing.T) {
	th := startHub(t, alertRules)
	c := client.New(th.base, th.token, nil)
	cr := th.provision(t, "b-1", "Beacon")
	// The device connects and then says nothing: its type's heartbeat
	// timeout (400ms) ends its session, and a second later the rule fires.
	if _, _, err := dial(t, th.MQTTAddr(), "b-1", cr.MQTTUsername, cr.MQTTPassword); err != nil {
		t.Fatal(err)
	}
	var first client.Alert
	eventually.True(t, 15*time.Second, "the offline alert", func() bool {
		as := alertsOf(t, c, client.AlertQuery{Rule: "beacon_offline"})
		if len(as) == 1 {
			first = as[0]
		}
		return len(as) == 1 && as[0].State == "active" && as[0].Severity == "critical"
	})
	if _, _, err := dial(t, th.MQTTAddr(), "b-1", cr.MQTTUsername, cr.MQTTPassword); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the offline alert cleared", func() bool {
		a, err := c.Alert(context.Background(), first.ID)
		return err == nil && a.State == "cleared" && a.ClearedBy == "rule"
	})
}

// TestAlertsSurviveRestart: the hub stops between raise and clear; after
// the restart the open alert is the same one (the evaluator restarts from
// its cursor, stored with the alert), it counts a re-fire instead of
// raising a second alert, and clears it.
func TestAlertsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	th := startHubIn(t, dir, "", alertRules)
	c := client.New(th.base, th.token, nil)
	cr := th.provision(t, "ws-1", "WeatherStation")
	mc, _, err := dial(t, th.MQTTAddr(), "ws-1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publish(t, mc, "devices/ws-1/data", `{"temperature": 35}`); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the alert raised", func() bool {
		return len(alertsOf(t, c, client.AlertQuery{States: []string{"active"}})) == 1
	})
	mc.Disconnect(&paho.Disconnect{ReasonCode: 0})
	th.stop()

	th = startHubIn(t, dir, "", alertRules)
	c = client.New(th.base, th.token, nil)
	mc, _, err = dial(t, th.MQTTAddr(), "ws-1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"37", "20"} {
		if _, err := publish(t, mc, "devices/ws-1/data", `{"temperature": `+v+`}`); err != nil {
			t.Fatal(err)
		}
	}
	eventually.True(t, 10*time.Second, "the alert cleared", func() bool {
		as := alertsOf(t, c, client.AlertQuery{})
		return len(as) == 1 && as[0].State == "cleared"
	})
	as := alertsOf(t, c, client.AlertQuery{})
	if len(as) != 1 || as[0].Count != 2 || as[0].Value != 20.0 {
		t.Fatalf("after the restart: %+v", as)
	}
	evs, err := th.Store().ReadEvents(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	n := map[events.Type]int{}
	for _, e := range evs {
		n[e.Type]++
	}
	if n[events.AlertRaised] != 1 || n[events.AlertCleared] != 1 || n[events.AlertUpdated] != 1 {
		t.Fatalf("alert events %v", n)
	}
}

// TestAlertRulesOverAPI: rules created and deleted over REST, checked by
// the configuration file's parser; a rule tested against the device's
// stored readings; silences from the CLI.
func TestAlertRulesOverAPI(t *testing.T) {
	th := startHub(t, alertRules)
	ctx := context.Background()
	c := client.New(th.base, th.token, nil)

	_, err := c.CreateAlertRule(ctx, client.AlertRule{Name: "bad", DeviceType: "WeatherStation", When: "humidity >> 90"})
	var e *client.Error
	if client.StatusOf(err) != 400 || !errors.As(err, &e) || e.Field != "when" || !strings.Contains(e.Message, "at column 11") {
		t.Fatalf("bad rule: %v", err)
	}
	if _, err := c.CreateAlertRule(ctx, client.AlertRule{Name: "x", DeviceType: "Nope", When: "t > 1"}); client.StatusOf(err) != 400 {
		t.Fatalf("rule of an unknown type: %v", err)
	}
	r, err := c.CreateAlertRule(ctx, client.AlertRule{Name: "humid", DeviceType: "WeatherStation", When: "humidity > 90", Severity: "minor"})
	if err != nil || r.Kind != "reading" || r.Source != "api" {
		t.Fatalf("create: %+v %v", r, err)
	}
	if _, err := c.CreateAlertRule(ctx, client.AlertRule{Name: "humid", DeviceType: "WeatherStation", When: "humidity > 1"}); client.StatusOf(err) != 409 {
		t.Fatalf("duplicate rule: %v", err)
	}
	rs, err := c.AlertRules(ctx)
	if err != nil || len(rs) != 3 {
		t.Fatalf("rules %+v %v", rs, err)
	}
	if err := c.DeleteAlertRule(ctx, "too_hot"); client.StatusOf(err) != 409 {
		t.Fatalf("delete a configuration rule: %v", err)
	}

	cr := th.provision(t, "ws-1", "WeatherStation")
	mc, _, err := dial(t, th.MQTTAddr(), "ws-1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	// Readings with their own times over the last hours: hot twice.
	now := time.Now().UTC()
	for i, v := range []float64{20, 33, 34, 20, 31, 24, 22} {
		ts := now.Add(time.Duration(i-7) * time.Hour).UnixMilli()
		if _, err := publish(t, mc, "devices/ws-1/data", fmt.Sprintf(`{"temperature": %g, "humidity": 95, "ts": %d}`, v, ts)); err != nil {
			t.Fatal(err)
		}
	}
	eventually.True(t, 10*time.Second, "the humid alert", func() bool {
		return len(alertsOf(t, c, client.AlertQuery{Rule: "humid", States: []string{"active"}})) == 1
	})
	res, err := c.TestAlertRule(ctx, "too_hot", nil, "ws-1", 0)
	if err != nil || res.Readings != 7 || res.Fired != 2 || res.Cleared != 2 || res.Refired != 1 || res.OpenAtEnd || len(res.Firings) != 2 {
		t.Fatalf("test too_hot: %+v %v", res, err)
	}
	res, err = c.TestAlertRule(ctx, "", &client.AlertRule{Name: "try", When: "temperature > 21", For: "90m"}, "ws-1", 3.5)
	if err != nil || res.Readings != 3 || res.Fired != 1 {
		t.Fatalf("test an inline rule over 3.5 hours: %+v %v", res, err)
	}
	if _, err := c.TestAlertRule(ctx, "beacon_offline", nil, "ws-1", 0); client.StatusOf(err) != 400 {
		t.Fatalf("test a presence rule: %v", err)
	}
	// Deleting the rule clears its open alert.
	if err := c.DeleteAlertRule(ctx, "humid"); err != nil {
		t.Fatal(err)
	}
	if as := alertsOf(t, c, client.AlertQuery{Rule: "humid"}); len(as) != 1 || as[0].State != "cleared" {
		t.Fatalf("alerts of the deleted rule %+v", as)
	}

	// Silence the device from the CLI: crossing the threshold raises nothing.
	var out, errb bytes.Buffer
	if code := cli.Run(ctx, nil, []string{"alerts", "silence", "--device", "ws-1", "--for", "1h", "--note", "maintenance",
		"--server", th.base, "--token", th.token, "-o", "json"}, &out, &errb); code != 0 {
		t.Fatalf("alerts silence: %d %s", code, errb.String())
	}
	ss, err := c.Silences(ctx)
	if err != nil || len(ss) != 1 || ss[0].DeviceID != "ws-1" || ss[0].Note != "maintenance" {
		t.Fatalf("silences %+v %v", ss, err)
	}
	rec := &eventRecorder{}
	sub, err := th.Subscribe(events.Filter{Types: []events.Type{events.DeviceDataReceived}}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if _, err := publish(t, mc, "devices/ws-1/data", `{"temperature": 50}`); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the reading", func() bool { return len(rec.of(events.DeviceDataReceived, "ws-1")) == 1 })
	// The evaluator handled it once its cursor passed it.
	seq := rec.of(events.DeviceDataReceived, "ws-1")[0].Seq
	eventually.True(t, 10*time.Second, "the evaluator past the reading", func() bool { return th.AlertCursor() >= seq })
	if as := alertsOf(t, c, client.AlertQuery{Rule: "too_hot", States: []string{"open"}}); len(as) != 0 {
		t.Fatalf("silenced device raised %+v", as)
	}
	if err := c.Unsilence(ctx, ss[0].ID); err != nil {
		t.Fatal(err)
	}

	// A status rule: the device reports an error status, then recovers.
	if _, err := c.CreateAlertRule(ctx, client.AlertRule{Name: "st_err", DeviceType: "WeatherStation", When: "status == error", Severity: "critical"}); err != nil {
		t.Fatal(err)
	}
	if _, err := publish(t, mc, "devices/ws-1/status", `{"status": "error"}`); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the status alert", func() bool {
		as := alertsOf(t, c, client.AlertQuery{Rule: "st_err"})
		return len(as) == 1 && as[0].State == "active" && as[0].Value == "error"
	})
	if _, err := publish(t, mc, "devices/ws-1/status", `{"status": "online"}`); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the status alert cleared", func() bool {
		as := alertsOf(t, c, client.AlertQuery{Rule: "st_err"})
		return len(as) == 1 && as[0].State == "cleared"
	})
}
