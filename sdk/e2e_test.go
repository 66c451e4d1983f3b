package sdk_test

// End-to-end tests of the SDK against the real hub (started in this
// process on random ports, as internal/hub's tests do): provisioning with
// an operator's approval, rejection and expiry; revocation; commands sent
// through the REST API; desired and reported properties.

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/sdk"
)

// startResult is what sdk.Start returned in a goroutine.
type startResult struct {
	c   *sdk.Client
	err error
}

func TestE2EProvisioning(t *testing.T) {
	tests := []struct {
		name   string
		decide func(ctx context.Context, api *client.Client, op sdk.ProvisioningOperation) error
		ttl    time.Duration // provisioning.operation_ttl; 0: the default
		kind   sdk.Kind      // -1: approved
	}{
		{"approved", func(ctx context.Context, api *client.Client, op sdk.ProvisioningOperation) error {
			_, err := api.ApproveOperation(ctx, op.ID, "")
			return err
		}, 0, -1},
		{"rejected", func(ctx context.Context, api *client.Client, op sdk.ProvisioningOperation) error {
			_, err := api.RejectOperation(ctx, op.ID, "not ours")
			return err
		}, 0, sdk.KindProvisioningRejected},
		{"expired", nil, time.Second, sdk.KindProvisioningExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			th := startHubWith(t, "", "", func(cfg *config.Config) {
				if tt.ttl > 0 {
					cfg.Provisioning.OperationTTL = tt.ttl
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			tok, err := th.api.CreateProvisioningToken(ctx, client.ProvisioningTokenRequest{Name: "e2e", DeviceType: "Meter"})
			if err != nil {
				t.Fatal(err)
			}
			shown := make(chan sdk.ProvisioningOperation, 4)
			started := make(chan startResult, 1)
			go func() {
				c, err := sdk.Start(ctx, sdk.Options{
					DeviceID: "prov-1", ProvisioningToken: tok.Secret, DB: filepath.Join(t.TempDir(), "device.db"),
					Server: "http://" + th.HTTPAddr(), MQTTServer: "mqtt://" + th.MQTTAddr(),
					Logger: testLogger(), ProvisioningPoll: 20 * time.Millisecond,
					MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
					OnProvisioning: func(op sdk.ProvisioningOperation) { shown <- op },
				})
				started <- startResult{c, err}
			}()
			var op sdk.ProvisioningOperation
			select {
			case op = <-shown:
			case r := <-started:
				t.Fatalf("Start returned before showing the operation: %v", r.err)
			case <-ctx.Done():
				t.Fatal("no provisioning operation shown")
			}
			// The operator sees the same verification code.
			got, err := th.api.GetOperation(ctx, op.ID)
			if err != nil || got.VerificationCode != op.VerificationCode || got.RequestedDeviceID != "prov-1" {
				t.Fatalf("operation %+v %v, device showed %+v", got, err, op)
			}
			if tt.decide != nil {
				if err := tt.decide(ctx, th.api, op); err != nil {
					t.Fatal(err)
				}
			}
			var r startResult
			select {
			case r = <-started:
			case <-ctx.Done():
				t.Fatal("Start did not return")
			}
			if tt.kind >= 0 {
				if sdk.KindOf(r.err) != tt.kind {
					t.Fatalf("Start: %v, want kind %s", r.err, tt.kind)
				}
				return
			}
			if r.err != nil {
				t.Fatal(r.err)
			}
			defer r.c.Close()
			if r.c.DeviceID() != "prov-1" {
				t.Errorf("device id %q", r.c.DeviceID())
			}
			if _, err := r.c.StreamSender("").Send(ctx, []byte(`{"seq": 1}`)); err != nil {
				t.Fatal(err)
			}
			dev, err := th.api.GetDevice(ctx, "prov-1")
			if err != nil || dev.Type != "Meter" {
				t.Fatalf("device %+v %v", dev, err)
			}
		})
	}
}

// TestE2ERevoked: a device revoked through the registry (REST) is
// disconnected, and its client stops sending and says why.
func TestE2ERevoked(t *testing.T) {
	th := startHub(t, "", "")
	creds := provision(t, th.api, "rev-e2e")
	var mu sync.Mutex
	var bg []error
	c := startClient(t, sdk.Options{DB: filepath.Join(t.TempDir(), "device.db"), MQTTServer: "mqtt://" + th.MQTTAddr(), Credentials: creds,
		OnError: func(err error) {
			mu.Lock()
			bg = append(bg, err)
			mu.Unlock()
		}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.StreamSender("").Send(ctx, []byte(`{"seq": 1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := th.api.RevokeDevice(ctx, "rev-e2e", "stolen"); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the client to stop", func() bool { return c.Err() != nil })
	if k := sdk.KindOf(c.Err()); k != sdk.KindCredentialsRevoked {
		t.Fatalf("Err() = %v, want credentials_revoked", c.Err())
	}
	if _, err := c.StreamSender("").Enqueue([]byte(`{"seq": 2}`)); sdk.KindOf(err) != sdk.KindCredentialsRevoked {
		t.Fatalf("enqueue after revocation: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bg) == 0 || sdk.KindOf(bg[0]) != sdk.KindCredentialsRevoked {
		t.Errorf("OnError got %v", bg)
	}
}

// eventRecorder collects the hub's events of some types.
type eventRecorder struct {
	mu  sync.Mutex
	evs []events.Event
}

func recordEvents(t *testing.T, th *testHub, types ...events.Type) *eventRecorder {
	t.Helper()
	r := &eventRecorder{}
	sub, err := th.Subscribe(events.Filter{Types: types}, 0, func(e events.Event) {
		r.mu.Lock()
		r.evs = append(r.evs, e)
		r.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	return r
}

func (r *eventRecorder) find(typ events.Type, match func(events.Event) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.evs {
		if e.Type == typ && match(e) {
			return true
		}
	}
	return false
}

// TestE2ECommandsAndTwin: commands sent through the REST API reach
// OnCommand and their results are stored; a command sent while the device
// was offline is sent when it connects; desired properties set through the
// REST API reach OnDesiredProperties; reported properties reach the hub's
// twin.
func TestE2ECommandsAndTwin(t *testing.T) {
	th := startHub(t, "", "")
	rec := recordEvents(t, th, events.DeviceCommandSent, events.DeviceCommandResult, events.TwinDesiredChanged, events.TwinReportedChanged)
	creds := provision(t, th.api, "cmd-e2e")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Before the device ever connected: a command (queued) and desired
	// properties (retained).
	early, err := th.api.SendCommand(ctx, "cmd-e2e", client.SendCommandRequest{Command: "set_interval", Payload: json.RawMessage(`{"seconds": 30}`)})
	if err != nil {
		t.Fatal(err)
	}
	if early.Status != "queued" {
		t.Fatalf("command to an offline device: %+v", early)
	}
	tw, err := th.api.SetDesired(ctx, "cmd-e2e", map[string]any{"interval": 10})
	if err != nil || tw.Desired.Version != 1 {
		t.Fatalf("set desired: %+v %v", tw, err)
	}
	if _, err := th.api.SendCommand(ctx, "cmd-e2e", client.SendCommandRequest{Command: "self_destruct"}); err == nil {
		t.Fatal("a command the type does not declare was accepted")
	}

	desired := make(chan sdk.DesiredProperties, 10)
	cmds := make(chan sdk.Command, 10)
	c := startClient(t, sdk.Options{
		DB: filepath.Join(t.TempDir(), "device.db"), MQTTServer: "mqtt://" + th.MQTTAddr(), Credentials: creds,
		OnDesiredProperties: func(d sdk.DesiredProperties) { desired <- d },
		OnCommand: func(cmd sdk.Command) sdk.Result {
			cmds <- cmd
			if cmd.Name == "reboot" {
				return sdk.Result{Status: "failed", Result: map[string]any{"error": "busy"}}
			}
			return sdk.Result{Status: "succeeded", Result: map[string]any{"applied": true}}
		},
	})
	nextCommand := func() sdk.Command {
		t.Helper()
		select {
		case cmd := <-cmds:
			return cmd
		case <-ctx.Done():
			t.Fatal("no command reached OnCommand")
			return sdk.Command{}
		}
	}
	nextDesired := func() sdk.DesiredProperties {
		t.Helper()
		select {
		case d := <-desired:
			return d
		case <-ctx.Done():
			t.Fatal("no desired properties reached OnDesiredProperties")
			return sdk.DesiredProperties{}
		}
	}
	if d := nextDesired(); d.Version != 1 || d.Values["interval"] != 10.0 {
		t.Fatalf("retained desired = %+v", d)
	}
	// The queued command is sent once the device connected.
	if cmd := nextCommand(); cmd.ID != early.ID || cmd.Name != "set_interval" || string(cmd.Payload) != `{"seconds":30}` || cmd.ExpiresAt.IsZero() {
		t.Fatalf("command = %+v, want %s", cmd, early.ID)
	}
	done, err := th.api.WaitCommand(ctx, early.ID, 20*time.Millisecond)
	if err != nil || done.Status != "succeeded" || string(done.Result) != `{"applied":true}` || done.Sends < 1 {
		t.Fatalf("command after the result: %+v %v", done, err)
	}

	// Desired properties while connected.
	if _, err := th.api.SetDesired(ctx, "cmd-e2e", map[string]any{"interval": 20, "mode": "eco"}); err != nil {
		t.Fatal(err)
	}
	if d := nextDesired(); d.Version != 2 || d.Values["mode"] != "eco" {
		t.Fatalf("desired = %+v", d)
	}

	// A command while connected, answered failed.
	now, err := th.api.SendCommand(ctx, "cmd-e2e", client.SendCommandRequest{Command: "reboot", Payload: json.RawMessage(`{"delay": 1}`), ExpiresIn: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if cmd := nextCommand(); cmd.ID != now.ID || cmd.Name != "reboot" {
		t.Fatalf("command = %+v, want %s", cmd, now.ID)
	}
	done, err = th.api.WaitCommand(ctx, now.ID, 20*time.Millisecond)
	if err != nil || done.Status != "failed" || string(done.Result) != `{"error":"busy"}` {
		t.Fatalf("command after the result: %+v %v", done, err)
	}
	list, err := th.api.ListCommands(ctx, "cmd-e2e", "", 0)
	if err != nil || len(list) != 2 || list[0].ID != now.ID || list[1].ID != early.ID {
		t.Fatalf("commands %+v %v", list, err)
	}

	// Reported properties reach the twin, merged.
	if err := c.UpdateReportedProperties(map[string]any{"interval": 20, "fw": "1.2.0"}); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateReportedProperties(map[string]any{"fw": "1.2.1"}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitSent(ctx); err != nil {
		t.Fatal(err)
	}
	tw, err = th.api.GetTwin(ctx, "cmd-e2e")
	if err != nil || tw.Reported.Values["fw"] != "1.2.1" || tw.Reported.Values["interval"] != 20.0 || tw.Reported.Version != 2 ||
		tw.Desired.Version != 2 {
		t.Fatalf("twin %+v %v", tw, err)
	}
	if _, dup := tw.Reported.Values["msg_id"]; dup {
		t.Errorf("msg_id stored as a reported property: %+v", tw.Reported.Values)
	}

	// Every step has its event.
	for _, w := range []struct {
		typ   events.Type
		match func(events.Event) bool
	}{
		{events.DeviceCommandSent, func(e events.Event) bool {
			a, ok := e.Args.(*events.CommandSent)
			return ok && a.CommandID == early.ID && a.Command == "set_interval" && string(a.Payload) == `{"seconds":30}`
		}},
		{events.DeviceCommandResult, func(e events.Event) bool {
			a, ok := e.Args.(*events.CommandResult)
			return ok && a.CommandID == now.ID && a.Status == "failed"
		}},
		{events.TwinDesiredChanged, func(e events.Event) bool {
			a, ok := e.Args.(*events.TwinDesired)
			return ok && a.Version == 2
		}},
		{events.TwinReportedChanged, func(e events.Event) bool {
			a, ok := e.Args.(*events.TwinReported)
			return ok && a.Patch["fw"] == "1.2.1" && e.DeviceType == "Meter"
		}},
	} {
		eventually.True(t, 10*time.Second, string(w.typ), func() bool { return rec.find(w.typ, w.match) })
	}
	if errs := c.Err(); errs != nil && !errors.Is(errs, context.Canceled) {
		t.Errorf("client error: %v", errs)
	}
}

// TestE2EDesiredAfterHubRestart: the broker keeps retained messages in
// memory only; a restarted hub publishes the stored desired properties
// again, so a device connecting later still gets them.
func TestE2EDesiredAfterHubRestart(t *testing.T) {
	dir := t.TempDir()
	th := startHub(t, dir, "")
	creds := provision(t, th.api, "restart-1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := th.api.SetDesired(ctx, "restart-1", map[string]any{"mode": "night"}); err != nil {
		t.Fatal(err)
	}
	th.stop()

	th = startHub(t, dir, "")
	desired := make(chan sdk.DesiredProperties, 4)
	startClient(t, sdk.Options{DB: filepath.Join(t.TempDir(), "device.db"), MQTTServer: "mqtt://" + th.MQTTAddr(), Credentials: creds,
		OnDesiredProperties: func(d sdk.DesiredProperties) { desired <- d }})
	select {
	case d := <-desired:
		if d.Version != 1 || d.Values["mode"] != "night" {
			t.Fatalf("desired = %+v", d)
		}
	case <-ctx.Done():
		t.Fatal("no desired properties after the restart")
	}
}
