package broker

import (
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/registry"
)

// ownTopic is the subscribe rule: a topic or filter under devices/{id}/.
func ownTopic(id, topic string) bool { return registry.TopicAllowed(id, topic, false) }

func TestOwnTopic(t *testing.T) {
	tests := []struct {
		name, id, topic string
		want            bool
	}{
		{"own topic", "dev1", "devices/dev1/data", true},
		{"own filter", "dev1", "devices/dev1/#", true},
		{"own single-level wildcard", "dev1", "devices/dev1/+/result", true},
		{"prefix only", "dev1", "devices/dev1/", false},
		{"no slash", "dev1", "devices/dev1", false},
		{"other device", "dev1", "devices/dev2/data", false},
		{"id is a prefix of another id", "dev1", "devices/dev10/data", false},
		{"wildcard device", "dev1", "devices/+/data", false},
		{"everything", "dev1", "#", false},
		{"shared subscription", "dev1", "$share/g/devices/dev1/data", false},
		{"sys", "dev1", "$SYS/broker/clients", false},
		{"empty id", "", "devices//x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ownTopic(tt.id, tt.topic); got != tt.want {
				t.Fatalf("ownTopic(%q, %q) = %v, want %v", tt.id, tt.topic, got, tt.want)
			}
		})
	}
}

func FuzzOwnTopic(f *testing.F) {
	f.Add("dev1", "devices/dev1/data")
	f.Add("dev1", "devices/dev10/#")
	f.Add("a", "devices/a//")
	f.Fuzz(func(t *testing.T, id, topic string) {
		if !ownTopic(id, topic) {
			return
		}
		prefix := "devices/" + id + "/"
		if !strings.HasPrefix(topic, prefix) || len(topic) == len(prefix) {
			t.Fatalf("ownTopic(%q, %q) accepted a topic outside %s", id, topic, prefix)
		}
	})
}
