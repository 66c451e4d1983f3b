package hub_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/lease"
)

// leaseHolder returns the node holding a live lease, "" if none.
func leaseHolder(t *testing.T, th *testHub, name string) string {
	t.Helper()
	infos, err := th.Store().(lease.Store).Leases(context.Background(), name)
	if err != nil || len(infos) != 1 || !infos[0].Live {
		return ""
	}
	return infos[0].Holder
}

// dialOn connects a device to a node (retrying while the node has not
// learnt its credentials yet) and subscribes it to topic.
func dialOn(t *testing.T, th *testHub, id string, cr creds, topic string) *mqttClient {
	t.Helper()
	var mc *mqttClient
	eventually.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var err error
		mc, _, err = dial(t, th.MQTTAddr(), id, cr.MQTTUsername, cr.MQTTPassword)
		return err
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	return mc
}

// TestClusterConfigNoticesAcrossNodes: a configuration set through node
// a reaches, at once, the device connected to node b; a device that
// connects to b afterwards finds its notice there; b answers the device's
// download with the new configuration.
func TestClusterConfigNoticesAcrossNodes(t *testing.T) {
	hubs := startCluster(t, 2, "")
	a, b := hubs[0], hubs[1]
	crOn := a.provision(t, "cfg-on", "WeatherStation")
	crOff := a.provision(t, "cfg-off", "WeatherStation")
	if code := a.do(t, "POST", "/api/v1/templates", map[string]any{"id": "ntp",
		"config":   map[string]any{"ntp": map[string]any{"server": "{{ ntp_server }}"}, "id": "{{ device_id }}"},
		"defaults": map[string]string{"ntp_server": "pool.ntp.org"}}, nil); code != 201 {
		t.Fatalf("create template through node a: %d", code)
	}
	on := dialOn(t, b, "cfg-on", crOn, "devices/cfg-on/config")
	var set configAnswer
	if code := a.do(t, "PUT", "/api/v1/devices/cfg-on/config", map[string]any{"templates": []string{"ntp"}}, &set); code != 200 {
		t.Fatalf("set config through node a: %d", code)
	}
	eventually.True(t, 20*time.Second, "the device on node b got the notice of the config set through node a", func() bool {
		ns := on.notices(t, "cfg-on")
		return len(ns) > 0 && ns[len(ns)-1].Checksum == set.Config.Checksum
	})
	// A change: the live notice names the new checksum.
	var set2 configAnswer
	if code := a.do(t, "PUT", "/api/v1/devices/cfg-on/config", map[string]any{"templates": []string{"ntp"},
		"vars": map[string]string{"ntp_server": "time.example"}}, &set2); code != 200 || set2.Config.Checksum == set.Config.Checksum {
		t.Fatalf("change config through node a: %d, checksum %s (was %s)", code, set2.Config.Checksum, set.Config.Checksum)
	}
	eventually.True(t, 20*time.Second, "the device on node b got the changed notice", func() bool {
		ns := on.notices(t, "cfg-on")
		return len(ns) > 0 && ns[len(ns)-1].Checksum == set2.Config.Checksum
	})
	code, _, body := deviceGet(t, b.base, crOn.APIKey, "/api/v1/device/config", "")
	if code != 200 || sum(body) != set2.Config.Checksum {
		t.Fatalf("download through node b: %d, checksum %s, want %s", code, sum(body), set2.Config.Checksum)
	}

	// Set while the device is away; it connects to node b and finds it.
	var setOff configAnswer
	if code := a.do(t, "PUT", "/api/v1/devices/cfg-off/config", map[string]any{"templates": []string{"ntp"}}, &setOff); code != 200 {
		t.Fatalf("set config through node a: %d", code)
	}
	off := dialOn(t, b, "cfg-off", crOff, "devices/cfg-off/config")
	eventually.True(t, 20*time.Second, "the device that connected to node b found its notice", func() bool {
		ns := off.notices(t, "cfg-off")
		return len(ns) > 0 && ns[len(ns)-1].Checksum == setOff.Config.Checksum
	})
}

// TestClusterFirmwareNoticesAcrossNodes: the rollout scheduler runs on
// the node holding job/firmware; its notice reaches at once a device
// connected to the other node, and a device of the rollout that connects
// to the other node later gets its pending notice (the resend interval is
// an hour: only the connect can bring it).
func TestClusterFirmwareNoticesAcrossNodes(t *testing.T) {
	hubs := startCluster(t, 2, "firmware: {tick: 20ms, connect_delay: 50ms, notice_resend: 1h}\n")
	var owner, other *testHub
	eventually.True(t, 20*time.Second, "a node holds job/firmware", func() bool {
		switch leaseHolder(t, hubs[0], "job/firmware") {
		case "node-0":
			owner, other = hubs[0], hubs[1]
		case "node-1":
			owner, other = hubs[1], hubs[0]
		default:
			return false
		}
		return true
	})
	crOn := owner.provision(t, "fw-on", "WeatherStation")
	crLate := owner.provision(t, "fw-late", "WeatherStation")
	on := dialOn(t, other, "fw-on", crOn, "devices/fw-on/firmware")
	_, r := fwSetup(t, owner, client.RolloutRequest{DeviceIDs: []string{"fw-on", "fw-late"}, StepTimeout: "10m"})
	firmwareNotices := func(mc *mqttClient, id string) []string {
		var out []string
		for _, p := range mc.received() {
			if p.Topic == "devices/"+id+"/firmware" {
				out = append(out, string(p.Payload))
			}
		}
		return out
	}
	eventually.True(t, 20*time.Second, "the device on the other node got the notice", func() bool {
		ns := firmwareNotices(on, "fw-on")
		return len(ns) > 0 && strings.Contains(ns[0], r.ID)
	})
	late := dialOn(t, other, "fw-late", crLate, "devices/fw-late/firmware")
	eventually.True(t, 20*time.Second, "the device that connected to the other node later got its pending notice", func() bool {
		ns := firmwareNotices(late, "fw-late")
		return len(ns) > 0 && strings.Contains(ns[0], r.ID)
	})
}
