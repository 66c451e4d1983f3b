package sim_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/hub"
	"github.com/devicehub/devicehub/internal/sim"
	"github.com/devicehub/devicehub/sdk"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Only the test client's idle keep-alive connections may remain
		// (see internal/hub's TestMain).
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
	)
}

func f64(v float64) *float64 { return &v }

// TestFleetWithFaults runs a small fleet against a real hub with every
// fault, then checks that what the devices enqueued reached the hub.
func TestFleetWithFaults(t *testing.T) {
	dir := t.TempDir()
	yaml := fmt.Sprintf(`data_dir: %s
mqtt: {addr: "127.0.0.1:0"}
http: {addr: "127.0.0.1:0"}
ingest: {rate_limit: {rate: 0, burst: 0}}
device_types:
  Thermo:
    fields:
      temperature: {type: float, min: -20, max: 50}
      count: {type: int, min: 0, max: 10}
      ok: {type: bool}
`, dir)
	path := filepath.Join(dir, "devicehub.yaml")
	os.WriteFile(path, []byte(yaml), 0o600)
	cfg, err := config.Load(path, func(string) (string, bool) { return "", false }, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := hub.New(ctx, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	<-h.Ready()
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	api := client.New("http://"+h.HTTPAddr(), strings.TrimSpace(string(tok)), nil)

	opts := sim.Options{
		Devices: 4, Rate: 50, Type: "Thermo",
		Fields: []sim.Field{
			{Name: "temperature", Type: "float", Min: f64(-20), Max: f64(50)},
			{Name: "count", Type: "int", Min: f64(0), Max: f64(10)},
			{Name: "ok", Type: "bool"},
		},
		MQTTServer: "mqtt://" + h.MQTTAddr(),
		StateDir:   t.TempDir(),
		Provision: func(ctx context.Context, id, typ string) (*sdk.Credentials, error) {
			p, err := api.ProvisionDevice(ctx, client.ProvisionRequest{ID: id, Type: typ})
			if err != nil {
				return nil, err
			}
			c := p.Credentials
			return &sdk.Credentials{DeviceID: c.DeviceID, MQTTUsername: c.MQTTUsername, MQTTPassword: c.MQTTPassword}, nil
		},
		Faults: sim.Faults{DropEvery: 300 * time.Millisecond, PauseEvery: 700 * time.Millisecond, PauseFor: 200 * time.Millisecond, RestartEvery: time.Second},
		Logger: log,
	}
	s, err := sim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	// Run for at least 3s, and until readings were acknowledged and every
	// fault happened: on a loaded machine that takes longer.
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	first := make(chan error, 1)
	go func() { first <- s.Run(rctx) }()
	minEnd, deadline := time.Now().Add(3*time.Second), time.Now().Add(60*time.Second)
	for {
		sum := s.Summary()
		if now := time.Now(); (now.After(minEnd) && sum.Acked > 0 && sum.Drops > 0 && sum.Restarts > 0) || now.After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
	rcancel()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	sum := s.Summary()
	t.Logf("summary %+v", sum)
	if sum.Enqueued == 0 || sum.Acked == 0 || sum.Drops == 0 || sum.Restarts == 0 || sum.Rejected != 0 {
		t.Fatalf("summary %+v", sum)
	}
	// A second run without faults drains what the first left behind.
	opts.Faults, opts.Rate = sim.Faults{}, 0.001
	s2, _ := sim.New(opts)
	rctx, rcancel = context.WithCancel(ctx)
	defer rcancel()
	ran := make(chan error, 1)
	go func() { ran <- s2.Run(rctx) }()
	count := func() int64 {
		var stored int64
		for i := range 4 {
			n, err := h.Store().CountReadings(ctx, fmt.Sprintf("sim-%d", i))
			if err != nil {
				t.Fatal(err)
			}
			stored += n
		}
		return stored
	}
	deadline = time.Now().Add(20 * time.Second)
	for count() != sum.Enqueued+s2.Summary().Enqueued {
		if time.Now().After(deadline) {
			t.Fatalf("%d readings stored, %d enqueued", count(), sum.Enqueued+s2.Summary().Enqueued)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	rcancel()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}

// TestFleetGoesOnWhenOneIsRejected runs three devices that join with a
// provisioning token: the simulator reports each verification code, the
// operator rejects one operation and approves the others, and the
// rejected device is reported while the other two send readings.
func TestFleetGoesOnWhenOneIsRejected(t *testing.T) {
	dir := t.TempDir()
	yaml := fmt.Sprintf(`data_dir: %s
mqtt: {addr: "127.0.0.1:0"}
http: {addr: "127.0.0.1:0"}
device_types:
  Thermo:
    fields:
      temperature: {type: float, min: -20, max: 50}
`, dir)
	path := filepath.Join(dir, "devicehub.yaml")
	os.WriteFile(path, []byte(yaml), 0o600)
	cfg, err := config.Load(path, func(string) (string, bool) { return "", false }, config.Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	h, err := hub.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	<-h.Ready()
	tok, _ := os.ReadFile(filepath.Join(dir, "admin.token"))
	api := client.New("http://"+h.HTTPAddr(), strings.TrimSpace(string(tok)), nil)
	pt, err := api.CreateProvisioningToken(ctx, client.ProvisioningTokenRequest{DeviceType: "Thermo", MaxUses: 3})
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	codes := map[string]string{} // device id → verification code reported
	failed := map[string]error{} // device id → why it stopped
	s, err := sim.New(sim.Options{
		Devices: 3, Rate: 20, Type: "Thermo",
		Fields:            []sim.Field{{Name: "temperature", Type: "float", Min: f64(-20), Max: f64(50)}},
		MQTTServer:        "mqtt://" + h.MQTTAddr(),
		Server:            "http://" + h.HTTPAddr(),
		ProvisioningToken: pt.Secret,
		StateDir:          t.TempDir(),
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnProvisioning: func(id string, op sdk.ProvisioningOperation) {
			mu.Lock()
			codes[id] = op.VerificationCode
			mu.Unlock()
		},
		OnFailed: func(id string, err error) {
			mu.Lock()
			failed[id] = err
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	ran := make(chan error, 1)
	go func() { ran <- s.Run(rctx) }()

	poll := func(what string, cond func() bool) {
		t.Helper()
		eventually.True(t, 20*time.Second, what, cond)
	}
	var ops []client.Operation
	poll("three pending operations, their codes reported", func() bool {
		ops, err = api.ListOperations(ctx, "pending")
		mu.Lock()
		defer mu.Unlock()
		return err == nil && len(ops) == 3 && len(codes) == 3
	})
	rejected := ""
	for _, op := range ops {
		mu.Lock()
		code := codes[op.RequestedDeviceID]
		mu.Unlock()
		if code == "" || code != op.VerificationCode {
			t.Errorf("%s: the simulator reported code %q, the hub shows %q", op.RequestedDeviceID, code, op.VerificationCode)
		}
		if rejected == "" {
			rejected = op.RequestedDeviceID
			if _, err := api.RejectOperation(ctx, op.ID, "not ours"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := api.ApproveOperation(ctx, op.ID, ""); err != nil {
			t.Fatal(err)
		}
	}
	poll("the rejected device reported", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return failed[rejected] != nil
	})
	poll("readings from the two approved devices", func() bool {
		for _, op := range ops {
			if op.RequestedDeviceID == rejected {
				continue
			}
			if n, _ := h.Store().CountReadings(ctx, op.RequestedDeviceID); n == 0 {
				return false
			}
		}
		return true
	})
	rcancel()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	sum := s.Summary()
	mu.Lock()
	defer mu.Unlock()
	if sum.Failed != 1 || len(failed) != 1 || sdk.KindOf(failed[rejected]) != sdk.KindProvisioningRejected {
		t.Errorf("summary %+v, failed %v", sum, failed)
	}
}
