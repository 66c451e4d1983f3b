package events

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestEventJSONRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		ev   Event
	}{
		{"data", Event{Seq: 1, Type: DeviceDataReceived, Time: at, DeviceID: "d1", DeviceType: "T",
			Args: &DataReceived{MessageID: 7, Topic: "devices/d1/data", Transport: "mqtt",
				Readings: []Reading{{Time: at, Values: map[string]any{"t": 1.5}}}}}},
		{"status", Event{Seq: 2, Type: DeviceStatusChanged, Time: at, DeviceID: "d1", DeviceType: "T",
			Args: &StatusChanged{OldStatus: "offline", NewStatus: "online"}}},
		{"disconnected", Event{Seq: 3, Type: DeviceDisconnected, Time: at, DeviceID: "d1", DeviceType: "T",
			Args: &Disconnected{Generation: 4, Reason: ReasonHeartbeatTimeout}}},
		{"rejected", Event{Seq: 4, Type: MessageRejected, Time: at, DeviceID: "d1", DeviceType: "T",
			Args: &Rejected{Topic: "devices/d1/data", Code: "validation_failed", Field: "t", Reason: "too hot"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.ev)
			if err != nil {
				t.Fatal(err)
			}
			var got Event
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.ev) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tt.ev)
			}
		})
	}
}

// Credentials must never leave the process in an encoded event.
func TestProvisionedNeverSerialisesCredentials(t *testing.T) {
	ev := Event{Type: DeviceProvisioned, DeviceID: "d1",
		Args: &Provisioned{Credentials: &Credentials{MQTTUsername: "d1", MQTTPassword: "secret-pw", APIKey: "secret-key"}}}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"secret-pw", "secret-key"} {
		if strings.Contains(string(b), s) {
			t.Fatalf("encoded event contains a secret: %s", b)
		}
	}
}

func TestFilter(t *testing.T) {
	e := &Event{Type: DeviceConnected, DeviceID: "d1", DeviceType: "T"}
	tests := []struct {
		name string
		f    Filter
		want bool
	}{
		{"zero matches all", Filter{}, true},
		{"type", Filter{Types: []Type{DeviceConnected}}, true},
		{"other type", Filter{Types: []Type{DeviceDisconnected}}, false},
		{"device type (sender)", Filter{DeviceTypes: []string{"T"}}, true},
		{"other device type", Filter{DeviceTypes: []string{"U"}}, false},
		{"device", Filter{DeviceIDs: []string{"d2", "d1"}}, true},
		{"all must hold", Filter{Types: []Type{DeviceConnected}, DeviceIDs: []string{"d2"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.Match(e); got != tt.want {
				t.Fatalf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}
