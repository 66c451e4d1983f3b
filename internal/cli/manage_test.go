package cli

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/registry"
)

func TestManageCommands(t *testing.T) {
	f, url := hub(t)
	ctx := context.Background()
	if _, err := f.Devices.Provision(ctx, registry.ProvisionRequest{ID: "ws-1", Type: "WeatherStation", Group: "roof"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "devices.csv")
	os.WriteFile(csvPath, []byte("id,type\nc-1,WeatherStation\nc-2,WeatherStation\n"), 0o600)
	badPath := filepath.Join(dir, "bad.json")
	os.WriteFile(badPath, []byte(`[{"id":"j-1","type":"WeatherStation"},{"id":"ws-1","type":"WeatherStation"}]`), 0o600)

	admin := []string{"--server", url, "--token", apitest.AdminToken}
	op := []string{"--server", url, "--token", apitest.OperatorToken}
	viewer := []string{"--server", url, "--token", apitest.ViewerToken}
	tests := []struct {
		name  string
		args  []string
		auth  []string
		code  int
		out   string // in stdout
		errs  string // in stderr
		check func(t *testing.T, out string)
	}{
		{name: "provision by id", args: []string{"provision", "p-1", "--type", "WeatherStation", "-o", "json"}, auth: op, out: `"mqtt_password"`},
		{name: "provision replace", args: []string{"provision", "ws-1", "--type", "WeatherStation", "--replace"}, auth: op, out: "shown only once"},
		{name: "update", args: []string{"devices", "update", "ws-1", "--name", "Roof", "--group", "g2", "--lat", "1", "--lon", "2", "--firmware", "1.0", "-o", "json"}, auth: op,
			check: func(t *testing.T, out string) {
				var d map[string]any
				json.Unmarshal([]byte(out), &d)
				if d["name"] != "Roof" || d["group"] != "g2" || d["firmware_version"] != "1.0" || d["location"] == nil {
					t.Errorf("device %s", out)
				}
			}},
		{name: "update nothing", args: []string{"devices", "update", "ws-1"}, auth: op, code: ExitUsage, errs: "nothing to change"},
		{name: "update lat alone", args: []string{"devices", "update", "ws-1", "--lat", "1"}, auth: op, code: ExitUsage, errs: "--lat and --lon"},
		{name: "update unknown", args: []string{"devices", "update", "nope", "--name", "x"}, auth: op, code: ExitNotFound},
		{name: "disable", args: []string{"devices", "disable", "ws-1", "--reason", "stolen"}, auth: op, out: "disabled"},
		{name: "disable json", args: []string{"devices", "disable", "ws-1", "-o", "json"}, auth: op, out: `"disabled": true`},
		{name: "enable", args: []string{"devices", "enable", "ws-1"}, auth: op, out: "enabled"},
		{name: "revoke", args: []string{"devices", "revoke", "ws-1"}, auth: op, out: "revoked"},
		{name: "revoke viewer", args: []string{"devices", "revoke", "ws-1"}, auth: viewer, code: ExitUnauthorized, errs: "forbidden"},
		{name: "rotate", args: []string{"devices", "rotate", "ws-1", "--overlap", "1h"}, auth: op, out: "at the latest"},
		{name: "rotate json", args: []string{"devices", "rotate", "ws-1", "-o", "json"}, auth: op, out: `"mqtt_password"`},
		{name: "rotate unknown", args: []string{"devices", "rotate", "nope"}, auth: op, code: ExitNotFound},
		{name: "certificate", args: []string{"devices", "certificate", "ws-1", strings.Repeat("0f", 32)}, auth: op, out: "pinned"},
		{name: "certificate bad", args: []string{"devices", "certificate", "ws-1", "xyz"}, auth: op, code: ExitError, errs: "invalid_argument"},
		{name: "certificate no arg", args: []string{"devices", "certificate", "ws-1"}, auth: op, code: ExitUsage},
		{name: "import csv", args: []string{"devices", "import", csvPath}, auth: op, out: "2 created, 0 refused"},
		{name: "import refused", args: []string{"devices", "import", badPath}, auth: op, code: ExitError, out: "0 created, 1 refused", errs: "import refused"},
		{name: "import refused json", args: []string{"devices", "import", badPath, "-o", "json"}, auth: op, code: ExitError, out: `"not_created"`},
		{name: "import partial", args: []string{"devices", "import", badPath, "--partial"}, auth: op, out: "1 created, 1 refused"},
		{name: "import missing file", args: []string{"devices", "import", filepath.Join(dir, "nope.csv")}, auth: op, code: ExitError},

		{name: "groups create", args: []string{"groups", "create", "cellar", "--name", "Cellar"}, auth: op, out: "Group cellar (Cellar) created"},
		{name: "groups create exists", args: []string{"groups", "create", "roof"}, auth: op, code: ExitError, errs: "already_exists"},
		{name: "groups list", args: []string{"groups"}, auth: viewer, out: "roof"},
		{name: "groups list json", args: []string{"groups", "list", "-o", "json"}, auth: viewer, out: `"id": "roof"`},
		{name: "groups rename", args: []string{"groups", "rename", "roof", "The roof"}, auth: op, out: `"The roof"`},
		{name: "groups rename missing", args: []string{"groups", "rename", "nope", "x"}, auth: op, code: ExitNotFound},
		{name: "groups devices", args: []string{"groups", "devices", "g2", "-o", "json"}, auth: viewer, out: `"ws-1"`},

		{name: "tokens create", args: []string{"provisioning", "tokens", "create", "--type", "WeatherStation", "--max-uses", "2", "--expires", "24h", "--auto-approve", "-o", "json"}, auth: admin,
			check: func(t *testing.T, out string) {
				var tok map[string]any
				json.Unmarshal([]byte(out), &tok)
				if tok["token"] == "" || tok["max_uses"] != 2.0 || tok["auto_approve"] != true {
					t.Errorf("token %s", out)
				}
			}},
		{name: "tokens create table", args: []string{"provisioning", "tokens", "create", "--type", "WeatherStation"}, auth: admin, out: "shown only once"},
		{name: "tokens create no type", args: []string{"provisioning", "tokens", "create"}, auth: admin, code: ExitUsage, errs: "--type is required"},
		{name: "tokens create bad expiry", args: []string{"provisioning", "tokens", "create", "--type", "WeatherStation", "--expires", "soon"}, auth: admin, code: ExitUsage},
		{name: "tokens create operator", args: []string{"provisioning", "tokens", "create", "--type", "WeatherStation"}, auth: op, code: ExitUnauthorized},
		{name: "tokens list", args: []string{"provisioning", "tokens", "list"}, auth: admin, out: "pt_1"},
		{name: "tokens revoke", args: []string{"provisioning", "tokens", "revoke", "pt_1"}, auth: admin, out: "revoked"},
		{name: "tokens revoke missing", args: []string{"provisioning", "tokens", "revoke", "pt_9"}, auth: admin, code: ExitNotFound},
		{name: "operations list", args: []string{"provisioning", "list"}, auth: op, out: "K7MPQ2XH"},
		{name: "operations list json", args: []string{"provisioning", "list", "--all", "-o", "json"}, auth: op, out: `"verification_code": "K7MPQ2XH"`},
		{name: "operations get", args: []string{"provisioning", "get", "op_1"}, auth: op, out: "wanted-1"},
		{name: "approve override", args: []string{"provisioning", "approve", "op_1", "--device-id", "chosen-1"}, auth: op, out: "device chosen-1"},
		{name: "approve again", args: []string{"provisioning", "approve", "op_1"}, auth: op, code: ExitError, errs: "operation_decided"},
		{name: "reject decided", args: []string{"provisioning", "reject", "op_1"}, auth: op, code: ExitError},
		{name: "approve missing", args: []string{"provisioning", "approve", "op_9"}, auth: op, code: ExitNotFound},
		{name: "approve viewer", args: []string{"provisioning", "approve", "op_1"}, auth: viewer, code: ExitUnauthorized},
		{name: "approve no id", args: []string{"provisioning", "approve"}, auth: op, code: ExitUsage},
	}
	// The rows run in order against one hub: later rows see earlier changes.
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, ctx, noServe, append(tt.args, tt.auth...)...)
			if r.code != tt.code || !strings.Contains(r.out, tt.out) || !strings.Contains(r.err, tt.errs) {
				t.Errorf("exit %d (want %d)\nstdout: %s\nstderr: %s\nwant stdout %q stderr %q", r.code, tt.code, r.out, r.err, tt.out, tt.errs)
			}
			if tt.check != nil {
				tt.check(t, r.out)
			}
		})
	}
}

func TestRejectCommand(t *testing.T) {
	_, url := hub(t)
	r := runCLI(t, context.Background(), noServe, "provisioning", "reject", "op_1", "--reason", "not ours", "-o", "json", "--server", url, "--token", apitest.OperatorToken)
	if r.code != 0 || !strings.Contains(r.out, `"rejected"`) || !strings.Contains(r.out, "not ours") {
		t.Errorf("exit %d out %s err %s", r.code, r.out, r.err)
	}
}
