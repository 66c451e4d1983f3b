package hub_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/firmware"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

// fwSetup uploads an artifact for WeatherStation and starts a rollout of
// it to the devices, with the request's other settings.
func fwSetup(t *testing.T, th *testHub, req client.RolloutRequest) (*client.Client, *client.Rollout) {
	t.Helper()
	api := client.New(th.base, th.token, nil)
	ctx := context.Background()
	art, err := api.UploadArtifact(ctx, strings.NewReader("firmware image 2.0.0"), client.UploadArtifact{Version: "2.0.0", Type: "WeatherStation"})
	if err != nil {
		t.Fatal(err)
	}
	req.ArtifactID = art.ID
	r, err := api.StartRollout(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return api, r
}

// updateOf returns a device's update in a rollout.
func updateOf(t *testing.T, api *client.Client, rollout, device string) client.DeviceUpdate {
	t.Helper()
	us, err := api.RolloutDevices(context.Background(), rollout)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range us {
		if u.DeviceID == device {
			return u
		}
	}
	t.Fatalf("rollout %s has no update of %s", rollout, device)
	return client.DeviceUpdate{}
}

// TestFirmwareStaleAttempt: after a retry started, a late report of the
// earlier attempt changes nothing (it is in the message log as
// stale_attempt); a report of the current attempt, or one that names no
// attempt, moves the update.
func TestFirmwareStaleAttempt(t *testing.T) {
	th := startHub(t, "firmware: {tick: 20ms, connect_delay: 50ms, notice_resend: 1s}\n")
	cr := th.provision(t, "fw-stale", "WeatherStation")
	mc, _, err := dial(t, th.MQTTAddr(), "fw-stale", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/fw-stale/firmware", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	api, r := fwSetup(t, th, client.RolloutRequest{DeviceIDs: []string{"fw-stale"}, Retries: 1, RetryOn: []string{"failed"}, StepTimeout: "10m"})
	report := func(payload string) {
		t.Helper()
		if _, err := publish(t, mc, "devices/fw-stale/firmware/status", payload); err != nil {
			t.Fatal(err)
		}
	}
	at := func(state string, attempt int) func() error {
		return func() error {
			u := updateOf(t, api, r.ID, "fw-stale")
			if u.State != state || u.Attempt != attempt {
				return fmt.Errorf("update %s attempt %d (%s), want %s attempt %d", u.State, u.Attempt, u.Message, state, attempt)
			}
			return nil
		}
	}
	eventually.CheckFor(t, 30*time.Second, 10*time.Millisecond, at("notified", 0))
	report(`{"rollout_id":"` + r.ID + `","attempt":0,"status":"downloading"}`)
	report(`{"rollout_id":"` + r.ID + `","attempt":0,"status":"failed","message":"flash full"}`)
	// Failed, retried: attempt 1 is notified.
	eventually.CheckFor(t, 30*time.Second, 10*time.Millisecond, at("notified", 1))

	// A late report of attempt 0 (the PUBACK means it is stored): nothing
	// moves.
	report(`{"rollout_id":"` + r.ID + `","attempt":0,"status":"installing"}`)
	if err := at("notified", 1)(); err != nil {
		t.Fatalf("after a stale report: %v", err)
	}
	var msgs struct {
		Messages []struct {
			Payload string `json:"payload"`
			Code    string `json:"code"`
			Reason  string `json:"reason"`
		} `json:"messages"`
	}
	th.do(t, "GET", "/api/v1/devices/fw-stale/messages", nil, &msgs)
	if len(msgs.Messages) == 0 || msgs.Messages[0].Code != "stale_attempt" || !strings.Contains(msgs.Messages[0].Payload, `"installing"`) ||
		!strings.Contains(msgs.Messages[0].Reason, "current attempt is 1") {
		t.Fatalf("message log: %+v", msgs.Messages)
	}

	// The current attempt moves it; so does a report without an attempt
	// (a device that does not name one).
	report(`{"rollout_id":"` + r.ID + `","attempt":1,"status":"downloading","progress":10}`)
	if err := at("downloading", 1)(); err != nil {
		t.Fatal(err)
	}
	report(`{"rollout_id":"` + r.ID + `","status":"downloaded"}`)
	if err := at("downloaded", 1)(); err != nil {
		t.Fatal(err)
	}

	// The notice names its attempt, 0 included.
	eventually.True(t, 30*time.Second, "two notices", func() bool { return len(mc.received()) >= 2 })
	var notices []string
	for _, p := range mc.received() {
		if p.Topic == "devices/fw-stale/firmware" {
			notices = append(notices, string(p.Payload))
		}
	}
	if len(notices) < 2 || !strings.Contains(notices[0], `"attempt":0`) || !strings.Contains(notices[len(notices)-1], `"attempt":1`) {
		t.Fatalf("notices %q", notices)
	}
}

// timeTravel rewrites a stopped hub's rollout as if the hub had stopped
// `down` ago: the scheduler's last note (alive_at) and every change are
// moved back by down; each device's update of states is then moved back
// by the extra time of before[device] (how long it had been in its step
// when the hub stopped).
func timeTravel(t *testing.T, dir, rollout string, down time.Duration, before map[string]time.Duration) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(dir, "devicehub.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	r, err := st.GetRollout(ctx, rollout)
	if err != nil {
		t.Fatal(err)
	}
	us, err := st.ListDeviceUpdates(ctx, rollout)
	if err != nil {
		t.Fatal(err)
	}
	stopped := time.Now().UTC().Add(-down)
	r.AliveAt, r.UpdatedAt = stopped, stopped.Add(-time.Hour)
	var changed []firmware.DeviceUpdate
	for _, u := range us {
		b, ok := before[u.DeviceID]
		if !ok {
			continue
		}
		since := stopped.Add(-b)
		u.StateSince, u.StartedAt, u.UpdatedAt = since, &since, since
		changed = append(changed, u)
	}
	if err := st.Commit(ctx, []*commit.Change{{Ops: []commit.Op{&firmware.Op{Rollout: r, Updates: changed}}}}); err != nil {
		t.Fatal(err)
	}
}

// TestFirmwareTimeoutsSkipDowntime: the time a hub was down does not
// count toward the devices' timeouts. A device one minute into a
// ten-minute step when the hub stopped for twenty minutes is not timed
// out at start (its clocks move by the downtime, and stay moved after the
// next restart); one eleven minutes into it is.
func TestFirmwareTimeoutsSkipDowntime(t *testing.T) {
	dir := t.TempDir()
	const extra = "firmware: {tick: 20ms}\n"
	th := startHubIn(t, dir, "", extra)
	devs := []string{"fw-early", "fw-late", "fw-marker"}
	for _, id := range devs {
		th.provision(t, id, "WeatherStation")
	}
	api, r := fwSetup(t, th, client.RolloutRequest{DeviceIDs: devs, StepTimeout: "10m", TotalTimeout: "1h"})
	eventually.True(t, 30*time.Second, "all notified", func() bool {
		ro, err := api.GetRollout(context.Background(), r.ID)
		return err == nil && ro.Counts["notified"] == len(devs)
	})
	th.stop()

	// Down for twenty minutes: fw-early and fw-marker had been notified
	// a minute before, fw-late eleven.
	timeTravel(t, dir, r.ID, 20*time.Minute, map[string]time.Duration{"fw-early": time.Minute, "fw-late": 11 * time.Minute, "fw-marker": time.Minute})
	th = startHubIn(t, dir, "", extra)
	api = client.New(th.base, th.token, nil)
	// fw-late's step ran out before the hub stopped: a pass ran once it
	// is timed out.
	eventually.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if u := updateOf(t, api, r.ID, "fw-late"); u.State != "timed_out" || !strings.Contains(u.Message, "step timeout") {
			return fmt.Errorf("fw-late %s %q", u.State, u.Message)
		}
		return nil
	})
	u := updateOf(t, api, r.ID, "fw-early")
	if u.State != "notified" {
		t.Fatalf("fw-early after twenty minutes down: %s %q", u.State, u.Message)
	}
	// Its minute in the step is kept: the step began about a minute
	// before the restart, not twenty-one.
	if age := time.Since(u.StateSince); age < time.Minute-5*time.Second || age > 2*time.Minute {
		t.Fatalf("fw-early's step began %s ago, want about 1m", age)
	}
	th.stop()

	// The moved clocks were stored: another start (no downtime to speak
	// of) keeps fw-early in its step. fw-marker is moved to eleven minutes
	// into its step, to show when a pass ran.
	timeTravel(t, dir, r.ID, 0, map[string]time.Duration{"fw-marker": 11 * time.Minute})
	th = startHubIn(t, dir, "", extra)
	api = client.New(th.base, th.token, nil)
	eventually.CheckFor(t, 30*time.Second, 10*time.Millisecond, func() error {
		if u := updateOf(t, api, r.ID, "fw-marker"); u.State != "timed_out" {
			return fmt.Errorf("fw-marker %s %q", u.State, u.Message)
		}
		return nil
	})
	if u := updateOf(t, api, r.ID, "fw-early"); u.State != "notified" || time.Since(u.StateSince) > 3*time.Minute {
		t.Fatalf("fw-early after a second start: %s since %s", u.State, u.StateSince)
	}
}
