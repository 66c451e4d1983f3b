package storetest

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
)

// presenceChange is a change of presence about the MQTT session gen, as
// package presence builds it in cluster mode: a guarded patch and its
// events.
func presenceChange(t *testing.T, dev string, gen uint64, connect bool, sec int) *commit.Change {
	t.Helper()
	seen := at(sec)
	ev := func(typ events.Type, args any) commit.Event {
		return mustEvent(t, events.Event{Type: typ, Time: seen, DeviceID: dev, DeviceType: "sensor", Args: args})
	}
	p := &registry.DevicePatch{LastSeen: &seen, Connected: ptr(connect), Session: gen}
	ch := &commit.Change{DeviceID: dev, Ops: []commit.Op{p}}
	if connect {
		p.Status, p.Node = ptr("online"), ptr(fmt.Sprintf("node-%d", gen))
		ch.Events = []commit.Event{
			ev(events.DeviceConnected, &events.Connected{Generation: gen, Transport: "mqtt", Node: *p.Node}),
			ev(events.DeviceStatusChanged, &events.StatusChanged{OldStatus: "offline", NewStatus: "online"}),
		}
	} else {
		p.Status = ptr("offline")
		ch.Events = []commit.Event{
			ev(events.DeviceDisconnected, &events.Disconnected{Generation: gen, Reason: events.ReasonConnectionLost}),
			ev(events.DeviceStatusChanged, &events.StatusChanged{OldStatus: "online", NewStatus: "offline"}),
		}
	}
	return ch
}

// presenceLog is the device's events in the log but its provisioning, as
// "type g<generation>" (status changes as "old>new").
func presenceLog(t *testing.T, b Backend, dev string) []string {
	t.Helper()
	var got []string
	for _, e := range allEvents(t, b) {
		if e.DeviceID != dev || e.Type == events.DeviceProvisioned {
			continue
		}
		raw, err := json.Marshal(e.Args)
		if err != nil {
			t.Fatal(err)
		}
		var a struct {
			Generation uint64 `json:"generation"`
			Old        string `json:"old_status"`
			New        string `json:"new_status"`
		}
		if err := json.Unmarshal(raw, &a); err != nil {
			t.Fatalf("args of %s: %v", e.Type, err)
		}
		switch e.Type {
		case events.DeviceConnected, events.DeviceDisconnected:
			got = append(got, fmt.Sprintf("%s g%d", e.Type, a.Generation))
		case events.DeviceStatusChanged:
			got = append(got, fmt.Sprintf("%s %s>%s", e.Type, a.Old, a.New))
		default:
			got = append(got, string(e.Type))
		}
	}
	return got
}

// testStaleSession: a change of presence about an MQTT session older than
// the device's stored one (a disconnect reported by a node that had not
// yet heard that the device reconnected to another node) writes neither
// its state nor its events, in its own batch or in one with the newer
// session and other devices' changes; a change about the stored session,
// or a newer one, and changes without a session apply as before.
func testStaleSession(t *testing.T, b Backend) {
	type step struct {
		batch      []*commit.Change
		superseded []bool // per change of batch
	}
	tests := []struct {
		name  string
		steps func(t *testing.T, dev string) []step
		// The device afterwards, and its presence events in the log.
		connected bool
		lastSeen  int
		log       []string
	}{
		{
			name: "older disconnect after a newer connect",
			steps: func(t *testing.T, dev string) []step {
				return []step{
					{[]*commit.Change{presenceChange(t, dev, 5, true, 10)}, []bool{false}},
					{[]*commit.Change{presenceChange(t, dev, 4, false, 11)}, []bool{true}},
				}
			},
			connected: true, lastSeen: 10,
			log: []string{"device_connected g5", "device_status_changed offline>online"},
		},
		{
			name: "both sessions of another node, then the stale disconnect",
			steps: func(t *testing.T, dev string) []step {
				return []step{
					{[]*commit.Change{presenceChange(t, dev, 4, true, 10)}, []bool{false}},
					{[]*commit.Change{presenceChange(t, dev, 5, true, 12)}, []bool{false}},
					{[]*commit.Change{presenceChange(t, dev, 4, false, 13)}, []bool{true}},
				}
			},
			connected: true, lastSeen: 12,
			log: []string{
				"device_connected g4", "device_status_changed offline>online",
				"device_connected g5", "device_status_changed offline>online",
			},
		},
		{
			name: "stale disconnect in a batch with readings and the newer session",
			steps: func(t *testing.T, dev string) []step {
				other := dev + "-other"
				provision(t, b, other)
				return []step{
					{[]*commit.Change{presenceChange(t, dev, 5, true, 10)}, []bool{false}},
					{[]*commit.Change{
						data{device: dev, times: []int{20}, values: map[string]any{"v": 1.0}}.change(t),
						presenceChange(t, dev, 4, false, 1001),
						presenceChange(t, other, 3, true, 14),
						presenceChange(t, dev, 5, false, 15),
						presenceChange(t, dev, 6, true, 16),
						presenceChange(t, dev, 5, false, 1002),
					}, []bool{false, true, false, false, false, true}},
				}
			},
			connected: true, lastSeen: 16,
			log: []string{
				"device_connected g5", "device_status_changed offline>online",
				"device_data_received",
				"device_disconnected g5", "device_status_changed online>offline",
				"device_connected g6", "device_status_changed offline>online",
			},
		},
		{
			name: "disconnect of the stored session applies",
			steps: func(t *testing.T, dev string) []step {
				return []step{
					{[]*commit.Change{presenceChange(t, dev, 5, true, 10)}, []bool{false}},
					{[]*commit.Change{presenceChange(t, dev, 5, false, 11)}, []bool{false}},
					{[]*commit.Change{presenceChange(t, dev, 4, false, 12)}, []bool{true}},
				}
			},
			connected: false, lastSeen: 11,
			log: []string{
				"device_connected g5", "device_status_changed offline>online",
				"device_disconnected g5", "device_status_changed online>offline",
			},
		},
		{
			name: "stale connect after a newer one",
			steps: func(t *testing.T, dev string) []step {
				return []step{
					{[]*commit.Change{presenceChange(t, dev, 8, true, 10)}, []bool{false}},
					{[]*commit.Change{presenceChange(t, dev, 7, true, 11)}, []bool{true}},
				}
			},
			connected: true, lastSeen: 10,
			log: []string{"device_connected g8", "device_status_changed offline>online"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := fmt.Sprintf("gen%d", i)
			provision(t, b, dev)
			var want []commit.Event
			for k, s := range tt.steps(t, dev) {
				mustCommit(t, b, s.batch...)
				for j, ch := range s.batch {
					if ch.Err != nil || ch.Duplicate || ch.Superseded != s.superseded[j] {
						t.Fatalf("step %d change %d (%s): Err %v Duplicate %v Superseded %v, want Superseded %v",
							k, j, ch.DeviceID, ch.Err, ch.Duplicate, ch.Superseded, s.superseded[j])
					}
					checkSeqs(t, ch, !ch.Superseded)
					if ch.DeviceID == dev && !ch.Superseded {
						want = append(want, ch.Events...)
					}
				}
			}
			if got := presenceLog(t, b, dev); !slices.Equal(got, tt.log) {
				t.Errorf("events of %s:\n got  %q\n want %q", dev, got, tt.log)
			}
			// The newer session's events are intact, seqs included.
			var got []events.Event
			for _, e := range allEvents(t, b) {
				if e.DeviceID == dev && e.Type != events.DeviceProvisioned {
					got = append(got, e)
				}
			}
			wantEvs := make([]events.Event, len(want))
			for j, e := range want {
				wantEvs[j] = e.Event
			}
			equalJSON(t, "events", got, wantEvs)
			d := getDevice(t, b, dev)
			status := "offline"
			if tt.connected {
				status = "online"
			}
			if d.Connected != tt.connected || d.Status != status || d.LastSeen == nil || !d.LastSeen.Equal(at(tt.lastSeen)) {
				t.Errorf("device = connected %v status %q last_seen %v; want connected %v status %q last_seen %v",
					d.Connected, d.Status, d.LastSeen, tt.connected, status, at(tt.lastSeen).Format(time.RFC3339))
			}
		})
	}
}
