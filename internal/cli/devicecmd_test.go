package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/registry"
)

func TestCommandAndTwinCommands(t *testing.T) {
	f, url := hub(t)
	ctx := context.Background()
	if _, err := f.Devices.Provision(ctx, registry.ProvisionRequest{ID: "ws-1", Type: "WeatherStation"}); err != nil {
		t.Fatal(err)
	}
	base := []string{"--server", url, "--token", "operator-secret"}
	tests := []struct {
		name string
		args []string
		code int
		want []string // substrings of stdout (stderr for errors)
	}{
		{"send", []string{"command", "send", "ws-1", "reboot", "--payload", `{"delay":5}`}, ExitOK, []string{"cmd_new_1", "reboot", "queued"}},
		{"send bad payload", []string{"command", "send", "ws-1", "reboot", "--payload", `{`}, ExitUsage, []string{"not JSON"}},
		{"send undeclared", []string{"command", "send", "ws-1", "explode"}, ExitError, []string{"unknown_command"}},
		{"send unknown device", []string{"command", "send", "nope", "reboot"}, ExitNotFound, nil},
		{"send and wait (no answer)", []string{"command", "send", "ws-1", "reboot", "--wait", "--timeout", "1s"}, ExitError, []string{"queued"}},
		{"fleet send", []string{"send", "--devices", "ws-1,nope", "reboot"}, ExitOK, []string{"job_2", "2 matched, 1 refused"}},
		{"fleet job", []string{"command", "job", "job_2"}, ExitOK, []string{"queued 1"}},
		{"fleet job devices", []string{"command", "job", "job_2", "--devices"}, ExitOK, []string{"ws-1", "reboot", "queued"}},
		{"fleet and wait", []string{"send", "--group", "g", "reboot", "--wait"}, ExitUsage, []string{"--wait"}},
		{"cancel", []string{"command", "cancel", "cmd_new_1"}, ExitOK, []string{"cmd_new_1", "canceled"}},
		{"cancel finished", []string{"command", "cancel", "cmd_1"}, ExitError, []string{"command_finished"}},
		{"list", []string{"command", "list", "ws-1"}, ExitOK, []string{"cmd_1", "succeeded", `{"uptime":0}`}},
		{"get", []string{"command", "get", "cmd_1", "-o", "json"}, ExitOK, []string{`"status": "succeeded"`}},
		{"twin set", []string{"twin", "set", "ws-1", `{"interval":30}`}, ExitOK, []string{"version 1", "interval=30"}},
		{"twin set not an object", []string{"twin", "set", "ws-1", `[1]`}, ExitUsage, []string{"JSON object"}},
		{"twin get", []string{"twin", "get", "ws-1", "-o", "json"}, ExitOK, []string{`"version": 1`, `"interval": 30`}},
		{"twin patch", []string{"twin", "patch", "ws-1", `{"led":"off"}`}, ExitOK, []string{"version 2", "interval=30", `led="off"`, "never reported"}},
		{"twin patch stale", []string{"twin", "patch", "ws-1", `{"led":"on"}`, "--version", "1"}, ExitError, []string{"version_conflict"}},
		{"twin set at version", []string{"twin", "set", "ws-1", `{"a":1}`, "--version", "2"}, ExitOK, []string{"version 3"}},
		{"twin show", []string{"twin", "show", "ws-1"}, ExitOK, []string{"version 3", "delta:", "a: desired 1, never reported"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, ctx, noServe, append(base, tt.args...)...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout %s\nstderr %s", r.code, tt.code, r.out, r.err)
			}
			for _, w := range tt.want {
				if !strings.Contains(r.out+r.err, w) {
					t.Errorf("output lacks %q:\nstdout %s\nstderr %s", w, r.out, r.err)
				}
			}
			if strings.Contains(strings.Join(tt.args, " "), "-o json") && !json.Valid([]byte(r.out)) {
				t.Errorf("not JSON: %s", r.out)
			}
		})
	}
}
