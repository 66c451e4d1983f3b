package hub_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/cluster/natstest"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/lease"
	"github.com/devicehub/devicehub/monitorclient"
)

// startCluster starts n hub nodes in this process on one PostgreSQL
// schema and a NATS JetStream server; the nodes share the first node's
// data directory files (admin token, key secrets), as a deployment copies
// them.
func startCluster(t *testing.T, n int, extra string) []*testHub {
	t.Helper()
	hubs, _ := startClusterNATS(t, n, extra)
	return hubs
}

// startClusterNATS is startCluster that also returns the NATS servers
// (a test may shut them down).
func startClusterNATS(t *testing.T, n int, extra string) ([]*testHub, *natstest.Cluster) {
	t.Helper()
	storage := postgresStorage(t)
	nc := natstest.Start(t, 1)
	name := fmt.Sprintf("hub%d", time.Now().UnixNano()%1e9)
	var hubs []*testHub
	var first string
	for i := range n {
		dir := t.TempDir()
		if i > 0 {
			copyDir(t, first, dir)
		} else {
			first = dir
		}
		cl := fmt.Sprintf("cluster:\n  node_id: node-%d\n  nats: [%q]\n  name: %s\n  lease_ttl: 3s\n  renew: 500ms\n", i, nc.URLs()[0], name)
		hubs = append(hubs, startHubIn(t, dir, "", storage+cl+extra))
	}
	return hubs, nc
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || e.Name() == "devicehub.yaml" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestClusterNodesSeeEveryEvent: each node holds its node lease, and an
// event committed through one node reaches the other node's subscribers.
func TestClusterNodesSeeEveryEvent(t *testing.T) {
	hubs := startCluster(t, 2, "")
	a, b := hubs[0], hubs[1]
	ls, ok := b.Store().(lease.Store)
	if !ok {
		t.Fatal("the PostgreSQL store keeps no leases")
	}
	eventually.True(t, 20*time.Second, "both nodes hold their node lease", func() bool {
		infos, err := ls.Leases(context.Background(), "node/")
		return err == nil && len(infos) == 2 && infos[0].Live && infos[1].Live
	})
	rec := &eventRecorder{}
	sub, err := b.Subscribe(events.Filter{DeviceIDs: []string{"dev1"}}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	cr := a.provision(t, "dev1", "WeatherStation")
	eventually.True(t, 20*time.Second, "node b saw the device provisioned through node a", func() bool {
		return len(rec.of(events.DeviceProvisioned, "dev1")) == 1
	})
	if code := b.do(t, "GET", "/api/v1/devices/dev1", nil, nil); code != 200 {
		t.Fatalf("node b: GET the device: %d", code)
	}
	// Node b learnt the credentials node a created: the device connects
	// to it, and what it sends is seen on node a.
	recA := &eventRecorder{}
	subA, err := a.Subscribe(events.Filter{DeviceIDs: []string{"dev1"}}, 0, recA.add)
	if err != nil {
		t.Fatal(err)
	}
	defer subA.Close()
	var c *mqttClient
	eventually.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var err error
		c, _, err = dial(t, b.MQTTAddr(), "dev1", cr.MQTTUsername, cr.MQTTPassword)
		return err
	})
	if _, err := publish(t, c, "devices/dev1/data", `{"temperature": 21}`); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, "node a saw the reading sent to node b", func() bool {
		return len(recA.of(events.DeviceDataReceived, "dev1")) == 1
	})
	// A revocation through node a closes the device's session on node b.
	if code := a.do(t, "POST", "/api/v1/devices/dev1/revoke", map[string]any{"reason": "test"}, nil); code != 200 && code != 204 {
		t.Fatalf("revoke through node a: %d", code)
	}
	select {
	case <-c.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("node b kept the revoked device's session")
	}
}

// TestClusterTakeoverAcrossNodes: a device that reconnects to another
// node takes over; the old node closes its session and no stale
// disconnect is reported anywhere; the database shows it connected.
func TestClusterTakeoverAcrossNodes(t *testing.T) {
	hubs := startCluster(t, 2, "")
	a, b := hubs[0], hubs[1]
	rec := &eventRecorder{}
	sub, err := b.Subscribe(events.Filter{DeviceIDs: []string{"dev1"}}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	cr := a.provision(t, "dev1", "WeatherStation")
	c1, _, err := dial(t, a.MQTTAddr(), "dev1", cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, "node b saw the connection to node a", func() bool {
		return len(rec.of(events.DeviceConnected, "dev1")) == 1
	})
	var c2 *mqttClient
	eventually.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var err error
		c2, _, err = dial(t, b.MQTTAddr(), "dev1", cr.MQTTUsername, cr.MQTTPassword)
		return err
	})
	select {
	case <-c1.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("node a kept the taken-over session")
	}
	// A reading through the new session, committed after the takeover,
	// then a reading through node a's bus: every node has seen the
	// takeover's events by then.
	if _, err := publish(t, c2, "devices/dev1/data", `{"temperature": 20}`); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 20*time.Second, "data event", func() bool { return len(rec.of(events.DeviceDataReceived, "dev1")) == 1 })
	if n := len(rec.of(events.DeviceDisconnected, "dev1")); n != 0 {
		t.Fatalf("device_disconnected fired %d times after a takeover: %+v", n, rec.all())
	}
	for _, h := range hubs {
		if dev := h.device(t, "dev1"); dev.Status != "online" || !dev.Connected {
			t.Fatalf("device = %+v, want online and connected", dev)
		}
	}
}

// TestClusterCommandAcrossNodes: a command sent through node a to a device
// connected to node b is delivered, and its result is visible on node c.
func TestClusterCommandAcrossNodes(t *testing.T) {
	hubs := startCluster(t, 3, fastResend)
	a, b, c := hubs[0], hubs[1], hubs[2]
	cr := a.provision(t, "ws-x", "WeatherStation")
	var dev *commandDevice
	eventually.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		if _, ok := b.Registry().DeviceType("ws-x"); !ok {
			return fmt.Errorf("node b does not know ws-x yet")
		}
		return nil
	})
	dev = dialCommandDevice(t, b, "ws-x", cr, false)
	dev.subscribe(t, "devices/ws-x/commands/+")
	eventually.True(t, 20*time.Second, "node a saw the connection", func() bool { return a.device(t, "ws-x").Connected })
	code, cmd := a.sendCommand(t, "ws-x", "", map[string]any{"command": "reboot"})
	if code != 201 && code != 200 && code != 202 {
		t.Fatalf("send through node a: %d", code)
	}
	eventually.True(t, 20*time.Second, "the device got the command through node b", func() bool { return len(dev.received()) == 1 })
	if !dev.answer(t, cmd.ID, "succeeded") {
		t.Fatal("the result was not acknowledged")
	}
	eventually.True(t, 20*time.Second, "node c shows the result", func() bool { return c.command(t, cmd.ID).Status == "succeeded" })
	// Queued while the device is away, delivered when it connects to c.
	dev.Disconnect(&paho.Disconnect{ReasonCode: 0})
	eventually.True(t, 20*time.Second, "node a saw the disconnect", func() bool { return !a.device(t, "ws-x").Connected })
	_, cmd2 := a.sendCommand(t, "ws-x", "", map[string]any{"command": "reboot"})
	dev2 := dialCommandDevice(t, c, "ws-x", cr, false)
	dev2.subscribe(t, "devices/ws-x/commands/+")
	eventually.True(t, 20*time.Second, "the queued command reached the device on node c", func() bool {
		for _, p := range dev2.received() {
			if strings.HasSuffix(p.Topic, "/"+cmd2.ID) {
				return true
			}
		}
		return false
	})
}

// TestClusterMonitorFailover: a push monitor runs on the node holding the
// monitors lease; when that node stops, a survivor takes the lease and
// resumes from the stored cursor: every event delivered once, none lost,
// none repeated.
func TestClusterMonitorFailover(t *testing.T) {
	hubs := startCluster(t, 2, "monitors:\n  allow_private_targets: true\n  min_backoff: 10ms\n  max_backoff: 50ms\n")
	a, b := hubs[0], hubs[1]
	ls := b.Store().(lease.Store)
	holder := func() string {
		infos, err := ls.Leases(context.Background(), "job/monitors")
		if err != nil || len(infos) != 1 || !infos[0].Live {
			return ""
		}
		return infos[0].Holder
	}
	eventually.True(t, 20*time.Second, "node 0 holds the monitors lease", func() bool { return holder() == "node-0" })

	var mu sync.Mutex
	got := map[int64]int{}
	var secret string
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		s := secret
		mu.Unlock()
		monitorclient.NewHandler(monitorclient.HandlerOptions{Secrets: []string{s}}, func(_ context.Context, bt *monitorclient.Batch) error {
			mu.Lock()
			for _, e := range bt.Events {
				got[e.Seq]++
			}
			mu.Unlock()
			return nil
		}).ServeHTTP(w, r)
	}))
	defer rcv.Close()
	d := 0.01
	hm, err := client.New(a.base, a.token, nil).CreateHTTPMonitor(context.Background(), []string{"device_data_received"}, rcv.URL, client.MonitorSpec{Method: "POST", BatchDuration: &d})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	secret = hm.Secret
	mu.Unlock()

	cr := a.provision(t, "mon-1", "WeatherStation")
	var mc *mqttClient
	eventually.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var err error
		mc, _, err = dial(t, b.MQTTAddr(), "mon-1", cr.MQTTUsername, cr.MQTTPassword)
		return err
	})
	send := func(n int) {
		for i := range n {
			if _, err := publish(t, mc, "devices/mon-1/data", fmt.Sprintf(`{"temperature": %d}`, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	delivered := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	send(10)
	eventually.True(t, 20*time.Second, "node 0 delivered the first 10 events", func() bool { return delivered() == 10 })

	a.stop()
	eventually.True(t, 20*time.Second, "node 1 took the monitors lease", func() bool { return holder() == "node-1" })
	send(10)
	eventually.True(t, 30*time.Second, "node 1 delivered the next 10 events", func() bool { return delivered() == 20 })

	stored, err := b.Store().ReadEvents(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	n := 0
	for _, e := range stored {
		if e.Type != events.DeviceDataReceived {
			continue
		}
		n++
		if got[e.Seq] != 1 {
			t.Errorf("event %d delivered %d times", e.Seq, got[e.Seq])
		}
	}
	if n != 20 {
		t.Fatalf("%d data events stored, want 20", n)
	}
}

// TestClusterConnectRightAfterProvisioning: a device provisioned through
// one node connects to another at once, before the provisioning event has
// necessarily reached it: the node reads the device's credentials from
// the database instead of refusing them (the kill test's SDK devices, sent
// through HAProxy, were refused this way and stopped for good).
func TestClusterConnectRightAfterProvisioning(t *testing.T) {
	hubs := startCluster(t, 2, "")
	a, b := hubs[0], hubs[1]
	for i := range 5 {
		id := fmt.Sprintf("quick%d", i)
		cr := a.provision(t, id, "WeatherStation")
		c, _, err := dial(t, b.MQTTAddr(), id, cr.MQTTUsername, cr.MQTTPassword)
		if err != nil {
			t.Fatalf("%s: connect to the other node right after provisioning: %v", id, err)
		}
		if _, err := publish(t, c, "devices/"+id+"/data", `{"temperature": 21}`); err != nil {
			t.Fatal(err)
		}
	}
	// A wrong password is still refused.
	cr := a.provision(t, "quick-wrong", "WeatherStation")
	if _, _, err := dial(t, b.MQTTAddr(), "quick-wrong", cr.MQTTUsername, "not-the-password"); err == nil {
		t.Fatal("a wrong password was accepted")
	}
}

// TestClusterAPIKeyRightAfterProvisioning: a device provisioned through
// one node posts data over HTTP to another at once, before the
// provisioning event has necessarily reached it: the node finds the API
// key in the database instead of refusing it; a wrong key is still
// refused.
func TestClusterAPIKeyRightAfterProvisioning(t *testing.T) {
	hubs := startCluster(t, 2, "")
	a, b := hubs[0], hubs[1]
	for i := range 5 {
		id := fmt.Sprintf("quickkey%d", i)
		cr := a.provision(t, id, "WeatherStation")
		if code, body := devicePost(t, b.base, cr.APIKey, "/api/v1/device/data", `{"temperature": 21}`); code >= 300 {
			t.Fatalf("%s: post data to the other node right after provisioning: %d %s", id, code, body)
		}
	}
	if code, _ := devicePost(t, b.base, "not-a-key", "/api/v1/device/data", `{"temperature": 21}`); code != 401 {
		t.Fatalf("a wrong key: %d, want 401", code)
	}
}
