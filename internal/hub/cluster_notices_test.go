package hub_test

import (
	"context"
	"errors"
	"fmt"
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

// TestClusterFirmwareAcrossNodes: three nodes, one of them (the owner)
// holding job/firmware, the rollout scheduler. On one node set:
//   - the owner's notice reaches at once a device connected to another
//     node, and a device of the rollout that connects to another node
//     later gets its pending notice (the resend interval is an hour: only
//     the connect can bring it);
//   - a rollout started through a node that is not the owner progresses
//     at once (the owner loads it from the store on its event; no lease
//     changes hands);
//   - devices connected to a third node report failures, and the rollout
//     aborts itself by its rule, each report counted once;
//   - a pause, resume and cancel through a node that is not the owner
//     are applied by the owner before the answer comes back;
//   - the owner stops: a survivor takes the scheduler over and applies
//     the report committed meanwhile (none lost), not the one applied
//     before (none twice).
func TestClusterFirmwareAcrossNodes(t *testing.T) {
	hubs := startCluster(t, 3, "firmware: {tick: 20ms, connect_delay: 50ms, notice_resend: 1h}\n")
	var owner *testHub
	var others []*testHub
	eventually.True(t, 20*time.Second, "a node holds job/firmware", func() bool {
		holder := leaseHolder(t, hubs[0], "job/firmware")
		owner, others = nil, nil
		for i, h := range hubs {
			if holder == fmt.Sprintf("node-%d", i) {
				owner = h
			} else {
				others = append(others, h)
			}
		}
		return owner != nil
	})
	a, c := others[0], others[1] // a takes the operator's requests, c holds the devices
	ids := []string{"fw-on", "fw-late", "fw-new", "fw-f1", "fw-f2", "fw-f3", "fw-f4", "fw-p1", "fw-p2", "fw-m1", "fw-m2"}
	crs := map[string]creds{}
	for _, id := range ids {
		crs[id] = a.provision(t, id, "WeatherStation")
	}
	firmwareNotices := func(mc *mqttClient, id string) []string {
		var out []string
		for _, p := range mc.received() {
			if p.Topic == "devices/"+id+"/firmware" {
				out = append(out, string(p.Payload))
			}
		}
		return out
	}
	noticed := func(mc *mqttClient, id, rollout string) func() bool {
		return func() bool {
			for _, n := range firmwareNotices(mc, id) {
				if strings.Contains(n, rollout) {
					return true
				}
			}
			return false
		}
	}
	ctx := context.Background()

	t.Run("notices from the owner", func(t *testing.T) {
		on := dialOn(t, c, "fw-on", crs["fw-on"], "devices/fw-on/firmware")
		_, r := fwSetup(t, owner, client.RolloutRequest{DeviceIDs: []string{"fw-on", "fw-late"}, StepTimeout: "10m"})
		eventually.True(t, 20*time.Second, "the device on another node got the notice", noticed(on, "fw-on", r.ID))
		late := dialOn(t, c, "fw-late", crs["fw-late"], "devices/fw-late/firmware")
		eventually.True(t, 20*time.Second, "the device that connected to another node later got its pending notice", noticed(late, "fw-late", r.ID))
	})

	t.Run("started through another node", func(t *testing.T) {
		dev := dialOn(t, c, "fw-new", crs["fw-new"], "devices/fw-new/firmware")
		_, r := fwSetup(t, a, client.RolloutRequest{DeviceIDs: []string{"fw-new"}, StepTimeout: "10m"})
		eventually.True(t, 20*time.Second, "the rollout started through a node that does not run the scheduler notified its device", noticed(dev, "fw-new", r.ID))
	})

	t.Run("reports through a third node abort the rollout", func(t *testing.T) {
		fs := []string{"fw-f1", "fw-f2", "fw-f3", "fw-f4"}
		devs := map[string]*mqttClient{}
		for _, id := range fs {
			devs[id] = dialOn(t, c, id, crs[id], "devices/"+id+"/firmware")
		}
		api, r := fwSetup(t, a, client.RolloutRequest{DeviceIDs: fs, StepTimeout: "10m", AbortFailurePercent: 50, AbortMinDevices: 2})
		for _, id := range fs {
			eventually.True(t, 20*time.Second, id+" notified", noticed(devs[id], id, r.ID))
		}
		// Two devices fail (each after progress reports); two keep
		// downloading. 2 of 2 finished failed: at 50% after 2, it aborts.
		for _, id := range fs {
			report := func(payload string) {
				t.Helper()
				if _, err := publish(t, devs[id], "devices/"+id+"/firmware/status", payload); err != nil {
					t.Fatal(err)
				}
			}
			report(`{"rollout_id":"` + r.ID + `","attempt":0,"status":"downloading","progress":10}`)
			if id == "fw-f1" || id == "fw-f2" {
				report(`{"rollout_id":"` + r.ID + `","attempt":0,"status":"failed","message":"flash full"}`)
			}
		}
		eventually.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			got, err := api.GetRollout(ctx, r.ID)
			if err != nil {
				return err
			}
			if got.Status != "aborted" || got.Counts["failed"] != 2 || got.Counts["downloading"] != 2 {
				return fmt.Errorf("rollout %s (%s), counts %v; want aborted with 2 failed, 2 downloading", got.Status, got.Reason, got.Counts)
			}
			if !strings.Contains(got.Reason, "2 of 2 finished devices failed") {
				return fmt.Errorf("reason %q", got.Reason)
			}
			return nil
		})
		// Each report made one state change, whatever node read the
		// rollout: notified, downloading, failed.
		eventually.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			h, err := api.FirmwareHistory(ctx, "fw-f1", r.ID)
			if err != nil {
				return err
			}
			var states []string
			for _, e := range h {
				states = append(states, e.State)
			}
			if got := strings.Join(states, ","); got != "queued,notified,downloading,failed" && got != "notified,downloading,failed" {
				return fmt.Errorf("history of fw-f1: %s", got)
			}
			return nil
		})
	})

	t.Run("pause resume cancel through another node", func(t *testing.T) {
		p1 := dialOn(t, c, "fw-p1", crs["fw-p1"], "devices/fw-p1/firmware")
		// One device a minute: fw-p1 at once, fw-p2 a minute later.
		api, r := fwSetup(t, a, client.RolloutRequest{DeviceIDs: []string{"fw-p1", "fw-p2"}, StepTimeout: "10m", MaxPerMinute: 1})
		eventually.True(t, 20*time.Second, "fw-p1 notified", noticed(p1, "fw-p1", r.ID))
		ownerAPI := client.New(owner.base, owner.token, nil)
		for _, step := range []struct{ action, want string }{{"pause", "paused"}, {"resume", "running"}, {"cancel", "canceled"}} {
			got, err := api.RolloutAction(ctx, r.ID, step.action)
			if err != nil {
				t.Fatalf("%s through a node that does not run the scheduler: %v", step.action, err)
			}
			if got.Status != step.want {
				t.Fatalf("%s answered status %s, want %s", step.action, got.Status, step.want)
			}
			// Applied by the owner before the answer: its scheduler sees it.
			if now, err := ownerAPI.GetRollout(ctx, r.ID); err != nil || now.Status != step.want {
				t.Fatalf("after %s the owner has the rollout %v (%v), want %s", step.action, now, err, step.want)
			}
		}
		eventually.True(t, 20*time.Second, "fw-p1 told of the cancel", func() bool {
			for _, n := range firmwareNotices(p1, "fw-p1") {
				if strings.Contains(n, `"cancel":true`) {
					return true
				}
			}
			return false
		})
		// The owner's refusal comes back as it is.
		_, err := api.RolloutAction(ctx, r.ID, "pause")
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != 409 {
			t.Fatalf("pause of a canceled rollout through another node: %v, want 409", err)
		}
	})

	t.Run("owner stops between two reports", func(t *testing.T) {
		ms := []string{"fw-m1", "fw-m2"}
		devs := map[string]*mqttClient{}
		for _, id := range ms {
			devs[id] = dialOn(t, c, id, crs[id], "devices/"+id+"/firmware")
		}
		api, r := fwSetup(t, a, client.RolloutRequest{DeviceIDs: ms, StepTimeout: "10m", AbortFailurePercent: 100, AbortMinDevices: 2})
		for _, id := range ms {
			eventually.True(t, 20*time.Second, id+" notified", noticed(devs[id], id, r.ID))
		}
		fail := func(id string) {
			t.Helper()
			if _, err := publish(t, devs[id], "devices/"+id+"/firmware/status", `{"rollout_id":"`+r.ID+`","status":"failed"}`); err != nil {
				t.Fatal(err)
			}
		}
		fail("fw-m1")
		eventually.True(t, 20*time.Second, "the owner applied fw-m1's failure", func() bool {
			return updateOf(t, api, r.ID, "fw-m1").State == "failed"
		})
		owner.stop()
		fail("fw-m2") // committed by c, whoever runs the scheduler now
		eventually.CheckFor(t, 30*time.Second, 20*time.Millisecond, func() error {
			got, err := api.GetRollout(ctx, r.ID)
			if err != nil {
				return err
			}
			if got.Status != "aborted" || got.Counts["failed"] != 2 || !strings.Contains(got.Reason, "2 of 2 finished devices failed") {
				return fmt.Errorf("rollout %s (%s), counts %v; want aborted, 2 of 2 failed", got.Status, got.Reason, got.Counts)
			}
			return nil
		})
		if h := leaseHolder(t, a, "job/firmware"); h == "" {
			t.Fatal("no survivor holds job/firmware")
		}
		// The owner's API answers from its memory, which may be ahead of
		// the store by the commit in flight; the history is the store's.
		for _, id := range ms {
			eventually.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
				h, err := api.FirmwareHistory(ctx, id, r.ID)
				if err != nil {
					return err
				}
				n := 0
				for _, e := range h {
					if e.State == "failed" {
						n++
					}
				}
				if n != 1 {
					return fmt.Errorf("%s failed %d times in its history %v, want once", id, n, h)
				}
				return nil
			})
		}
	})
}
