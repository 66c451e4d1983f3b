package extbroker

import (
	"strings"
	"testing"
)

func TestDeviceOf(t *testing.T) {
	tests := []struct {
		topic, id string
		ok        bool
	}{
		{"devices/d1/data", "d1", true},
		{"devices/d1/commands/c1/result", "d1", true},
		{"devices//data", "", false},
		{"devices/d1", "", false},
		{"other/d1/data", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			id, ok := deviceOf(tt.topic)
			if id != tt.id || ok != tt.ok {
				t.Errorf("deviceOf(%q) = %q, %v; want %q, %v", tt.topic, id, ok, tt.id, tt.ok)
			}
		})
	}
}

// FuzzDeviceOf: the topic comes from the broker; the id found is always
// the topic's second level, never empty, never with a slash.
func FuzzDeviceOf(f *testing.F) {
	for _, s := range []string{"devices/d1/data", "devices//x", "devices/a", "x/y/z", "devices/+/data"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		id, ok := deviceOf(topic)
		if !ok {
			return
		}
		if id == "" || strings.Contains(id, "/") || !strings.HasPrefix(topic, "devices/"+id+"/") {
			t.Fatalf("deviceOf(%q) = %q", topic, id)
		}
	})
}
