package hub_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/cluster/natstest"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/lease"
)

// startCluster starts n hub nodes in this process on one PostgreSQL
// schema and a NATS JetStream server; the nodes share the first node's
// data directory files (admin token, key secrets), as a deployment copies
// them.
func startCluster(t *testing.T, n int, extra string) []*testHub {
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
	return hubs
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
