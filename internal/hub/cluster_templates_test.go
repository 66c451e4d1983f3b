package hub_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/eventually"
)

// TestClusterTemplatesAcrossNodes: configuration templates are held in
// memory by every node; one created, then edited, through node a is
// known to node b's API at once and renders there with its new content,
// and one deleted through a is gone from b. Then NATS stops: a template
// created through a still reaches b (its config_templates_changed event
// comes from the event log; a core NATS note would be lost).
func TestClusterTemplatesAcrossNodes(t *testing.T) {
	hubs, nc := startClusterNATS(t, 2, "")
	a, b := hubs[0], hubs[1]
	b.provision(t, "tpl-dev", "WeatherStation")
	if code := a.do(t, "POST", "/api/v1/templates", map[string]any{"id": "ntp",
		"config":   map[string]any{"ntp": map[string]any{"server": "{{ ntp_server }}"}},
		"defaults": map[string]string{"ntp_server": "pool.ntp.org"}}, nil); code != 201 {
		t.Fatalf("create template through node a: %d", code)
	}
	eventually.True(t, 20*time.Second, "node b knows the template created through node a", func() bool {
		return b.do(t, "GET", "/api/v1/templates/ntp", nil, nil) == 200
	})
	if code := a.do(t, "PUT", "/api/v1/templates/ntp", map[string]any{
		"config":   map[string]any{"ntp": map[string]any{"server": "{{ ntp_server }}"}},
		"defaults": map[string]string{"ntp_server": "time.example"}}, nil); code != 200 {
		t.Fatalf("edit template through node a: %d", code)
	}
	// A configuration set through node b renders with the edited defaults.
	eventually.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
		var set configAnswer
		if code := b.do(t, "PUT", "/api/v1/devices/tpl-dev/config", map[string]any{"templates": []string{"ntp"}}, &set); code != 200 {
			return fmt.Errorf("set config through node b: %d", code)
		}
		if !strings.Contains(set.Config.Rendered, "time.example") {
			return fmt.Errorf("node b rendered %q, not the template as edited through node a", set.Config.Rendered)
		}
		return nil
	})
	// Deleted through a (after the device stops using it): gone from b.
	if code := b.do(t, "PUT", "/api/v1/devices/tpl-dev/config", map[string]any{"templates": []string{}}, nil); code != 200 {
		t.Fatalf("clear config through node b: %d", code)
	}
	if code := a.do(t, "DELETE", "/api/v1/templates/ntp", nil, nil); code != 204 && code != 200 {
		t.Fatalf("delete template through node a: %d", code)
	}
	eventually.True(t, 20*time.Second, "node b forgot the template deleted through node a", func() bool {
		return b.do(t, "GET", "/api/v1/templates/ntp", nil, nil) == 404
	})

	nc.Servers[0].Shutdown()
	if code := a.do(t, "POST", "/api/v1/templates", map[string]any{"id": "syslog",
		"config": map[string]any{"syslog": "{{ device_id }}"}}, nil); code != 201 {
		t.Fatalf("create template through node a with NATS down: %d", code)
	}
	eventually.True(t, 20*time.Second, "node b knows the template created through node a while NATS was down", func() bool {
		return b.do(t, "GET", "/api/v1/templates/syslog", nil, nil) == 200
	})
}
