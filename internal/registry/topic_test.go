package registry

import (
	"strings"
	"testing"
)

func TestDeviceIDFromTopic(t *testing.T) {
	for _, tt := range []struct {
		topic, id string
		ok        bool
	}{
		{"devices/d1/data", "d1", true},
		{"devices/d1/commands/c1/result", "d1", true},
		{"devices/d1/", "d1", true},
		{"devices/d1", "", false},
		{"devices//data", "", false},
		{"devices/", "", false},
		{"$SYS/broker/uptime", "", false},
		{"other/d1/data", "", false},
		{"", "", false},
	} {
		t.Run(tt.topic, func(t *testing.T) {
			id, ok := DeviceIDFromTopic(tt.topic)
			if id != tt.id || ok != tt.ok {
				t.Errorf("DeviceIDFromTopic(%q) = %q, %v; want %q, %v", tt.topic, id, ok, tt.id, tt.ok)
			}
		})
	}
}

// FuzzDeviceIDFromTopic: topics come from devices and brokers; the id
// found is always the topic's second level, never empty, never with a
// slash.
func FuzzDeviceIDFromTopic(f *testing.F) {
	for _, s := range []string{"devices/d1/data", "devices//x", "devices/a", "x/y/z", "devices/+/data"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		id, ok := DeviceIDFromTopic(topic)
		if !ok {
			return
		}
		if id == "" || strings.Contains(id, "/") || !strings.HasPrefix(topic, TopicPrefix+id+"/") {
			t.Fatalf("DeviceIDFromTopic(%q) = %q", topic, id)
		}
	})
}
