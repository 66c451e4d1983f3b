package hub_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/monitorclient"
)

// The whole path through the real hub: monitors managed with the client
// over the REST API, events of a real MQTT device delivered to a real HTTP
// receiver and a real stream receiver on the monitor port.
func TestMonitorsEndToEnd(t *testing.T) {
	th := startHub(t, "monitors:\n  allow_private_targets: true\n  addr: 127.0.0.1:0\n  min_backoff: 10ms\n  max_backoff: 50ms\n")
	ctx := context.Background()
	c := client.New(th.base, th.token, nil)

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
	hm, err := c.CreateHTTPMonitor(ctx, []string{"device_*"}, rcv.URL, client.MonitorSpec{Method: "POST", BatchDuration: &d, Compression: "gzip", Format: "xml"})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	secret = hm.Secret
	mu.Unlock()
	if !strings.HasPrefix(hm.Secret, "whsec_") || hm.Monitor.Status != "CONNECTING" || hm.Monitor.Compression != "zlib" {
		t.Fatalf("created %+v", hm)
	}
	tm, err := c.CreateTCPMonitor(ctx, []string{"device_data_received", "device_connected"}, client.MonitorSpec{Ack: "explicit", BatchDuration: &d, AutoReplayOnConnect: true})
	if err != nil {
		t.Fatal(err)
	}

	var smu sync.Mutex
	var streamed []events.Event
	sctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- monitorclient.NewStream(monitorclient.StreamOptions{Addr: th.MonitorAddr(), MonitorID: tm.Monitor.ID, Token: tm.Token,
			Callback: func(b *monitorclient.Batch) bool {
				smu.Lock()
				streamed = append(streamed, b.Events...)
				smu.Unlock()
				return true
			}}).Run(sctx)
	}()
	defer func() { stop(); <-done }()

	cr := th.provision(t, "ws-1", "WeatherStation")
	mc, _, err := dial(t, th.MQTTAddr(), "ws-1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := publish(t, mc, "devices/ws-1/data", `{"temperature": 21.5}`); err != nil {
		t.Fatal(err)
	}
	has := func(evs []events.Event, typ events.Type) bool {
		for _, e := range evs {
			if e.Type == typ && e.DeviceID == "ws-1" {
				return true
			}
		}
		return false
	}
	eventually.True(t, 10*time.Second, "webhook deliveries", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return has(hooked, events.DeviceProvisioned) && has(hooked, events.DeviceConnected) && has(hooked, events.DeviceDataReceived)
	})
	eventually.True(t, 10*time.Second, "stream deliveries", func() bool {
		smu.Lock()
		defer smu.Unlock()
		return has(streamed, events.DeviceConnected) && has(streamed, events.DeviceDataReceived) && !has(streamed, events.DeviceProvisioned)
	})
	mu.Lock()
	for _, e := range hooked {
		if p, ok := e.Args.(*events.Provisioned); ok && p.Credentials != nil {
			t.Fatal("credentials delivered")
		}
		if dr, ok := e.Args.(*events.DataReceived); ok && dr.Readings[0].Values["temperature"] != 21.5 {
			t.Fatalf("reading %+v", dr.Readings)
		}
	}
	mu.Unlock()

	// Listing by condition, finding by topics, metadata, roles.
	eventually.True(t, 10*time.Second, "both ACTIVE", func() bool {
		ms, err := c.Monitors(ctx, `status = "ACTIVE"`)
		return err == nil && len(ms) == 2
	})
	ms, err := c.Monitors(ctx, `transport = "http" and status != "DISABLED"`)
	if err != nil || len(ms) != 1 || ms[0].ID != hm.Monitor.ID || ms[0].LastSent == nil {
		t.Fatalf("list by condition: %+v %v", ms, err)
	}
	if _, err := c.Monitors(ctx, `status = `); client.StatusOf(err) != 400 {
		t.Fatalf("bad condition: %v", err)
	}
	found, err := c.MonitorByTopics(ctx, []string{"device_connected", "device_data_received"})
	if err != nil || found == nil || found.ID != tm.Monitor.ID {
		t.Fatalf("find by topics: %+v %v", found, err)
	}
	if _, err := c.CreateHTTPMonitor(ctx, []string{"Bad Topic"}, rcv.URL, client.MonitorSpec{}); client.StatusOf(err) != 400 {
		t.Fatalf("bad topic: %v", err)
	} else if e := err.(*client.Error); e.Field != "topics[0]" {
		t.Fatalf("bad topic field %q", e.Field)
	}
	vt, err := c.CreateToken(ctx, "watcher", "viewer")
	if err != nil {
		t.Fatal(err)
	}
	vc := client.New(th.base, vt.Secret, nil)
	if _, err := vc.Monitors(ctx, ""); err != nil {
		t.Fatalf("viewer list: %v", err)
	}
	if _, err := vc.CreateTCPMonitor(ctx, []string{"*"}, client.MonitorSpec{}); client.StatusOf(err) != 403 {
		t.Fatalf("viewer create: %v, want 403", err)
	}
	if err := vc.DeleteMonitor(ctx, hm.Monitor.ID); client.StatusOf(err) != 403 {
		t.Fatalf("viewer delete: %v, want 403", err)
	}
	// The status changes are events in the durable log.
	statusEvents := func() []string {
		evs, err := th.Store().ReadEvents(ctx, 0, 100000)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs {
			if a, ok := e.Args.(*events.MonitorStatus); ok {
				out = append(out, a.MonitorID+":"+a.OldStatus+">"+a.NewStatus)
			}
		}
		return out
	}
	eventually.True(t, 20*time.Second, "monitor_status_changed events", func() bool { return len(statusEvents()) >= 2 })
	for _, s := range statusEvents() {
		if !strings.HasSuffix(s, ">ACTIVE") {
			t.Errorf("status event %s", s)
		}
	}
	if err := c.DeleteMonitor(ctx, hm.Monitor.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Monitor(ctx, hm.Monitor.ID); client.StatusOf(err) != 404 {
		t.Fatalf("deleted monitor: %v", err)
	}
}

func TestMonitorPrivateTargetRefused(t *testing.T) {
	th := startHub(t, "")
	c := client.New(th.base, th.token, nil)
	_, err := c.CreateHTTPMonitor(context.Background(), []string{"*"}, "http://127.0.0.1:8080/admin", client.MonitorSpec{})
	var e *client.Error
	if client.StatusOf(err) != 400 || !errors.As(err, &e) || e.Code != "private_target" || e.Field != "url" {
		t.Fatalf("private target: %v", err)
	}
}
