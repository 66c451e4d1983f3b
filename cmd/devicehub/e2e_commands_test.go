package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
)

// answeringValve connects id as a paho device that subscribes to its
// commands at QoS 1 and answers each one succeeded.
func answeringValve(t *testing.T, h *e2eHub, id, password string) {
	t.Helper()
	conn, err := net.Dial("tcp", h.mqtt)
	if err != nil {
		t.Fatal(err)
	}
	var cl *paho.Client
	cl = paho.NewClient(paho.ClientConfig{Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			topic := pr.Packet.Topic
			go func() { // not in the read loop: the answer waits for its PUBACK
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, _ = cl.Publish(ctx, &paho.Publish{Topic: topic + "/result", QoS: 1, Payload: []byte(`{"status":"succeeded","result":{"open":true}}`)})
			}()
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cl.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
		Username: id, UsernameFlag: true, Password: []byte(password), PasswordFlag: true}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Disconnect(&paho.Disconnect{}) })
	if _, err := cl.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + id + "/commands/+", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
}

// TestE2ECommandsBinary runs commands with the real binary and real paho
// devices: send --wait returns the device's answer; a connected device
// that never subscribed leaves its command sent (never delivered), and
// --wait runs out with exit 1; cancel ends it; a fleet command to the
// type reaches the answering device, and its job counts both.
func TestE2ECommandsBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	h := startE2E(t, "  Valve:\n    commands: [open]\n")
	var on, deaf client.Credentials
	h.cliJSON(t, &on, "provision", "valve-on", "--type", "Valve")
	h.cliJSON(t, &deaf, "provision", "valve-deaf", "--type", "Valve")
	answeringValve(t, h, "valve-on", on.MQTTPassword)
	if r := h.connect(t, "valve-deaf", deaf.MQTTPassword); r.code != 0 {
		t.Fatalf("connect valve-deaf: 0x%02x", r.code)
	}

	var c client.Command
	h.cliJSON(t, &c, "send", "valve-on", "open", "--wait", "--timeout", "30s")
	var res struct{ Open bool }
	if c.Status != "succeeded" || json.Unmarshal(c.Result, &res) != nil || !res.Open || c.DeliveredAt == nil || c.FinishedAt == nil {
		t.Fatalf("send --wait to an answering device: %+v", c)
	}

	out, _, code := h.cli(t, "", "send", "valve-deaf", "open", "--wait", "--timeout", "1s", "--output", "json")
	if code == 0 || !strings.Contains(out, `"status": "sent"`) && !strings.Contains(out, `"status":"sent"`) {
		t.Fatalf("send --wait to a device that never subscribed: exit %d\n%s", code, out)
	}
	var deafCmds []client.Command
	h.cliJSON(t, &deafCmds, "command", "list", "valve-deaf")
	if len(deafCmds) != 1 || deafCmds[0].Status != "sent" || deafCmds[0].DeliveredAt != nil {
		t.Fatalf("the deaf device's command: %+v", deafCmds)
	}
	h.cliJSON(t, &c, "command", "cancel", deafCmds[0].ID)
	if c.Status != "canceled" || c.FinishedAt == nil {
		t.Fatalf("cancel: %+v", c)
	}

	var job client.FleetJobAnswer
	h.cliJSON(t, &job, "send", "--type", "Valve", "open")
	eventually.CheckFor(t, 60*time.Second, 50*time.Millisecond, func() error {
		var got client.FleetJobAnswer
		h.cliJSON(t, &got, "command", "job", job.Job.ID)
		if got.Summary == nil || got.Job.Status != "done" || got.Job.Targets != 2 || got.Summary.Succeeded != 1 || got.Summary.Sent != 1 {
			return fmt.Errorf("job %+v %+v", got.Job, got.Summary)
		}
		return nil
	})
}
