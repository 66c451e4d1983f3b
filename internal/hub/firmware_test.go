package hub_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
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
