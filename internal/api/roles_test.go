package api_test

import (
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
)

// roleCall is one call of every operation of the API, to try with each role.
type roleCall struct {
	op           string // operationId
	method, path string
	body         string
	least        string // the least role allowed: viewer, operator, admin, device
}

// roleCalls has one row per operation of the OpenAPI document;
// TestRoleTableCoversEveryOperation keeps it so.
var roleCalls = []roleCall{
	{op: "listDevices", method: "GET", path: "/api/v1/devices", least: "viewer"},
	{op: "getDevice", method: "GET", path: "/api/v1/devices/ws-1", least: "viewer"},
	{op: "provisionDevice", method: "POST", path: "/api/v1/devices", body: `{"id":"new-1","type":"WeatherStation"}`, least: "operator"},
	{op: "listReadings", method: "GET", path: "/api/v1/devices/ws-1/readings", least: "viewer"},
	{op: "latestValues", method: "GET", path: "/api/v1/readings/latest", least: "viewer"},
	{op: "aggregateReadings", method: "GET", path: "/api/v1/devices/ws-1/readings/aggregate?field=temperature&from=0&to=1000", least: "viewer"},
	{op: "listMessages", method: "GET", path: "/api/v1/devices/ws-1/messages", least: "viewer"},
	{op: "listDeviceTypes", method: "GET", path: "/api/v1/device-types", least: "viewer"},
	{op: "createToken", method: "POST", path: "/api/v1/tokens", body: `{"name":"ci","role":"viewer"}`, least: "admin"},
	{op: "listTokens", method: "GET", path: "/api/v1/tokens", least: "admin"},
	{op: "getToken", method: "GET", path: "/api/v1/tokens/t3", least: "admin"},
	{op: "revokeToken", method: "DELETE", path: "/api/v1/tokens/t3", least: "admin"},
	{op: "listAudit", method: "GET", path: "/api/v1/audit", least: "admin"},
	{op: "postDeviceData", method: "POST", path: "/api/v1/device/data", body: `{"temperature":1}`, least: "device"},
	{op: "postDeviceStreamData", method: "POST", path: "/api/v1/device/data/fast", body: `{"temperature":1}`, least: "device"},
	{op: "provisionDeviceByID", method: "POST", path: "/api/v1/devices/new-1/provision", body: `{"type":"WeatherStation"}`, least: "operator"},
	{op: "updateDevice", method: "PATCH", path: "/api/v1/devices/ws-1", body: `{"name":"Roof"}`, least: "operator"},
	{op: "disableDevice", method: "POST", path: "/api/v1/devices/ws-1/disable", least: "operator"},
	{op: "enableDevice", method: "POST", path: "/api/v1/devices/ws-1/enable", least: "operator"},
	{op: "revokeDevice", method: "POST", path: "/api/v1/devices/ws-1/revoke", body: `{"reason":"lost"}`, least: "operator"},
	{op: "rotateDevice", method: "POST", path: "/api/v1/devices/ws-1/rotate", least: "operator"},
	{op: "pinDeviceCertificate", method: "PUT", path: "/api/v1/devices/ws-1/certificate", body: `{"fingerprint":"` + strings.Repeat("ab", 32) + `"}`, least: "operator"},
	{op: "importDevices", method: "POST", path: "/api/v1/devices/import", body: `{"devices":[{"id":"imp-1","type":"WeatherStation"}]}`, least: "operator"},
	{op: "createGroup", method: "POST", path: "/api/v1/groups", body: `{"id":"cellar-2"}`, least: "operator"},
	{op: "listGroups", method: "GET", path: "/api/v1/groups", least: "viewer"},
	{op: "getGroup", method: "GET", path: "/api/v1/groups/roof", least: "viewer"},
	{op: "renameGroup", method: "PATCH", path: "/api/v1/groups/roof", body: `{"name":"Roof"}`, least: "operator"},
	{op: "listGroupDevices", method: "GET", path: "/api/v1/groups/roof/devices", least: "viewer"},
	{op: "createProvisioningToken", method: "POST", path: "/api/v1/provisioning/tokens", body: `{"device_type":"WeatherStation"}`, least: "admin"},
	{op: "listProvisioningTokens", method: "GET", path: "/api/v1/provisioning/tokens", least: "admin"},
	{op: "revokeProvisioningToken", method: "DELETE", path: "/api/v1/provisioning/tokens/pt_1", least: "admin"},
	{op: "listProvisioningOperations", method: "GET", path: "/api/v1/provisioning/operations", least: "operator"},
	{op: "getProvisioningOperation", method: "GET", path: "/api/v1/provisioning/operations/op_1", least: "operator"},
	{op: "approveProvisioningOperation", method: "POST", path: "/api/v1/provisioning/operations/op_1/approve", least: "operator"},
	{op: "rejectProvisioningOperation", method: "POST", path: "/api/v1/provisioning/operations/op_1/reject", least: "operator"},
	{op: "sendCommand", method: "POST", path: "/api/v1/devices/ws-1/commands", body: `{"command":"reboot","payload":{"delay":5},"expires_in":"10m"}`, least: "operator"},
	{op: "listCommands", method: "GET", path: "/api/v1/devices/ws-1/commands", least: "viewer"},
	{op: "getCommand", method: "GET", path: "/api/v1/commands/cmd_1", least: "viewer"},
	{op: "sendFleetCommand", method: "POST", path: "/api/v1/fleet/commands", body: `{"command":"reboot","target":{"device_ids":["ws-1"]}}`, least: "operator"},
	{op: "getFleetCommand", method: "GET", path: "/api/v1/fleet/commands/job_1", least: "viewer"},
	{op: "listFleetCommandDevices", method: "GET", path: "/api/v1/fleet/commands/job_1/devices", least: "viewer"},
	{op: "cancelCommand", method: "POST", path: "/api/v1/commands/cmd_2/cancel", least: "operator"},
	{op: "getTwin", method: "GET", path: "/api/v1/devices/ws-1/twin", least: "viewer"},
	{op: "setDesiredProperties", method: "PUT", path: "/api/v1/devices/ws-1/twin/desired", body: `{"values":{"interval":30,"mode":"eco"},"version":0}`, least: "operator"},
	{op: "patchDesiredProperties", method: "PATCH", path: "/api/v1/devices/ws-1/twin/desired", body: `{"patch":{"interval":30},"version":0}`, least: "operator"},
	{op: "createMonitor", method: "POST", path: "/api/v1/monitors", body: `{"topics":["device_*"],"transport":"tcp"}`, least: "operator"},
	{op: "listMonitors", method: "GET", path: "/api/v1/monitors", least: "viewer"},
	{op: "getMonitor", method: "GET", path: "/api/v1/monitors/mon_1", least: "viewer"},
	{op: "updateMonitor", method: "PATCH", path: "/api/v1/monitors/mon_1", body: `{"batch_size":5}`, least: "operator"},
	{op: "enableMonitor", method: "POST", path: "/api/v1/monitors/mon_h/enable", least: "operator"},
	{op: "deleteMonitor", method: "DELETE", path: "/api/v1/monitors/mon_1", least: "operator"},
	{op: "rotateMonitorSecret", method: "POST", path: "/api/v1/monitors/mon_h/rotate-secret", body: `{"overlap":"1h"}`, least: "operator"},
	{op: "rotateMonitorToken", method: "POST", path: "/api/v1/monitors/mon_1/rotate-token", least: "operator"},
	{op: "createUser", method: "POST", path: "/api/v1/users", body: `{"name":"carol","role":"viewer","password":"long enough"}`, least: "admin"},
	{op: "listUsers", method: "GET", path: "/api/v1/users", least: "admin"},
	{op: "deleteUser", method: "DELETE", path: "/api/v1/users/bob", least: "admin"},
	{op: "whoami", method: "GET", path: "/api/v1/whoami", least: "viewer"},
	{op: "fleetSummary", method: "GET", path: "/api/v1/fleet/summary", least: "viewer"},
	{op: "listPresence", method: "GET", path: "/api/v1/devices/ws-1/presence", least: "viewer"},
	{op: "listTemplates", method: "GET", path: "/api/v1/templates", least: "viewer"},
	{op: "createTemplate", method: "POST", path: "/api/v1/templates", body: `{"id":"log","config":{"level":"{{ lvl }}"},"defaults":{"lvl":"info"}}`, least: "operator"},
	{op: "getTemplate", method: "GET", path: "/api/v1/templates/ntp", least: "viewer"},
	{op: "updateTemplate", method: "PUT", path: "/api/v1/templates/ntp", body: `{"config":{"ntp":"x"}}`, least: "operator"},
	{op: "deleteTemplate", method: "DELETE", path: "/api/v1/templates/ntp", least: "operator"},
	{op: "getConfigJob", method: "GET", path: "/api/v1/config/jobs/job-1", least: "viewer"},
	{op: "getGroupConfig", method: "GET", path: "/api/v1/groups/roof/config", least: "viewer"},
	{op: "setGroupConfig", method: "PUT", path: "/api/v1/groups/roof/config", body: `{"templates":["ntp"],"vars":{"server":"g"}}`, least: "operator"},
	{op: "listConfigs", method: "GET", path: "/api/v1/configs", least: "viewer"},
	{op: "getDeviceConfig", method: "GET", path: "/api/v1/devices/ws-1/config", least: "viewer"},
	{op: "setDeviceConfig", method: "PUT", path: "/api/v1/devices/ws-1/config", body: `{"vars":{"server":"d"}}`, least: "operator"},
	{op: "previewDeviceConfig", method: "POST", path: "/api/v1/devices/ws-1/config/preview", body: `{"backend":"yaml"}`, least: "viewer"},
	{op: "deactivateDeviceConfig", method: "POST", path: "/api/v1/devices/ws-1/config/deactivate", least: "operator"},
	{op: "reactivateDeviceConfig", method: "POST", path: "/api/v1/devices/ws-1/config/reactivate", least: "operator"},
	{op: "getDeviceConfigHistory", method: "GET", path: "/api/v1/devices/ws-1/config/history", least: "viewer"},
	{op: "restoreDeviceConfig", method: "POST", path: "/api/v1/devices/ws-1/config/history/1/restore", least: "operator"},
	{op: "getDeviceConfigChecksum", method: "GET", path: "/api/v1/device/config/checksum", least: "device"},
	{op: "getDeviceConfigDownload", method: "GET", path: "/api/v1/device/config", least: "device"},
	{op: "postDeviceConfigStatus", method: "POST", path: "/api/v1/device/config/status", body: `{"checksum":"9af096f495709e56e1d8a714dba9aefd845dd2b789054b23743fdda4ca79620b","status":"error","error":"e"}`, least: "device"},
	{op: "getFirmwareKey", method: "GET", path: "/api/v1/firmware/key", least: "viewer"},
	{op: "uploadFirmwareArtifact", method: "POST", path: "/api/v1/firmware/artifacts?version=1.1&type=WeatherStation", body: "binary bytes", least: "operator"},
	{op: "listFirmwareArtifacts", method: "GET", path: "/api/v1/firmware/artifacts", least: "viewer"},
	{op: "getFirmwareArtifact", method: "GET", path: "/api/v1/firmware/artifacts/fw_1", least: "viewer"},
	{op: "deleteFirmwareArtifact", method: "DELETE", path: "/api/v1/firmware/artifacts/fw_1", least: "operator"},
	{op: "startRollout", method: "POST", path: "/api/v1/firmware/rollouts", body: `{"artifact_id":"fw_1","group":"roof","max_per_minute":50,"step_timeout":"5m"}`, least: "operator"},
	{op: "listRollouts", method: "GET", path: "/api/v1/firmware/rollouts", least: "viewer"},
	{op: "getRollout", method: "GET", path: "/api/v1/firmware/rollouts/ro_1", least: "viewer"},
	{op: "listRolloutDevices", method: "GET", path: "/api/v1/firmware/rollouts/ro_1/devices", least: "viewer"},
	{op: "pauseRollout", method: "POST", path: "/api/v1/firmware/rollouts/ro_1/pause", least: "operator"},
	{op: "resumeRollout", method: "POST", path: "/api/v1/firmware/rollouts/ro_1/resume", least: "operator"},
	{op: "cancelRollout", method: "POST", path: "/api/v1/firmware/rollouts/ro_1/cancel", least: "operator"},
	{op: "getDeviceFirmwareHistory", method: "GET", path: "/api/v1/devices/ws-1/firmware/history", least: "viewer"},
	{op: "downloadFirmware", method: "GET", path: "/api/v1/device/firmware/fw_1", least: "device"},
	{op: "postDeviceFirmwareStatus", method: "POST", path: "/api/v1/device/firmware/status", body: `{"rollout_id":"ro_1","status":"downloading","progress":10}`, least: "device"},
	{op: "listAlerts", method: "GET", path: "/api/v1/alerts", least: "viewer"},
	{op: "getAlert", method: "GET", path: "/api/v1/alerts/alr_1", least: "viewer"},
	{op: "acknowledgeAlert", method: "POST", path: "/api/v1/alerts/alr_1/acknowledge", body: `{"note":"on it"}`, least: "operator"},
	{op: "clearAlert", method: "POST", path: "/api/v1/alerts/alr_1/clear", least: "operator"},
	{op: "listAlertRules", method: "GET", path: "/api/v1/alert-rules", least: "viewer"},
	{op: "getAlertRule", method: "GET", path: "/api/v1/alert-rules/hot", least: "viewer"},
	{op: "createAlertRule", method: "POST", path: "/api/v1/alert-rules", body: `{"name":"cold","device_type":"WeatherStation","when":"temperature < 0"}`, least: "operator"},
	{op: "deleteAlertRule", method: "DELETE", path: "/api/v1/alert-rules/humid", least: "operator"},
	{op: "testAlertRule", method: "POST", path: "/api/v1/alert-rules/test", body: `{"name":"hot","device_id":"ws-1"}`, least: "viewer"},
	{op: "listAlertSilences", method: "GET", path: "/api/v1/alert-silences", least: "viewer"},
	{op: "createAlertSilence", method: "POST", path: "/api/v1/alert-silences", body: `{"device_id":"ws-1","duration":"2h"}`, least: "operator"},
	{op: "deleteAlertSilence", method: "DELETE", path: "/api/v1/alert-silences/sil_1", least: "operator"},
	// Device-facing operations with the secret in the body: any bearer,
	// or none, is the same; an operator token grants nothing more.
	{op: "createProvisioningOperation", method: "POST", path: "/api/v1/provisioning/operations", body: `{"token":"dhp_good"}`, least: "secret"},
	{op: "registerDevice", method: "POST", path: "/api/v1/device/register", body: `{"shared_secret":"shared-secret-0123","key":"k1","type":"WeatherStation"}`, least: "secret"},
	// streamEvents is tried in TestEventsRoles: a granted stream never ends.
}

var roleRank = map[string]int{"viewer": 1, "operator": 2, "admin": 3}

func TestRoles(t *testing.T) {
	callers := []struct {
		name, token string
	}{
		{"anonymous", ""},
		{"bad token", "nope"},
		{"viewer", apitest.ViewerToken},
		{"operator", apitest.OperatorToken},
		{"admin", apitest.AdminToken},
		{"device", "device-key"},
	}
	for _, c := range roleCalls {
		for _, who := range callers {
			t.Run(c.op+"/"+who.name, func(t *testing.T) {
				f, h := fixture(t)
				token := who.token
				if token == "device-key" {
					token = f.Devices.APIKey("ws-1")
				}
				r := do(t, h, c.method, c.path, token, c.body)
				code, _ := errCode(r)
				var allowed bool
				switch {
				case c.least == "secret":
					allowed = true
				case c.least == "device":
					allowed = who.name == "device"
				case who.name == "device", who.token == "" || who.name == "bad token":
					allowed = false
				default:
					allowed = roleRank[who.name] >= roleRank[c.least]
				}
				switch {
				case allowed && r.status >= 300:
					t.Errorf("%s may %s: got %d %s", who.name, c.op, r.status, r.raw)
				case !allowed && (who.name == "anonymous" || who.name == "bad token" || (who.name == "device") != (c.least == "device")):
					if r.status != 401 || code != "unauthorized" {
						t.Errorf("%s %s: got %d %s, want 401 unauthorized", who.name, c.op, r.status, r.raw)
					}
				case !allowed:
					if r.status != 403 || code != "forbidden" {
						t.Errorf("%s %s: got %d %s, want 403 forbidden", who.name, c.op, r.status, r.raw)
					}
				}
				// Every change asked with an operator token, allowed or
				// refused, is in the audit trail; device data is not (it
				// is in the message log), nor are the refusals of callers
				// without a valid token (they are counted: TestRefusedUnknownCallers).
				entries := f.Audit.Entries()
				wantAudit := c.method != "GET" && c.least != "device" && c.least != "secret" && roleRank[who.name] > 0
				if !wantAudit {
					if len(entries) != 0 {
						t.Errorf("audit entries for %s: %+v", c.op, entries)
					}
					return
				}
				if len(entries) != 1 {
					t.Fatalf("audit entries %+v, want 1", entries)
				}
				e := entries[0]
				if e.Status != r.status || e.OperationID != c.op || e.Method != c.method || e.Path != strings.SplitN(c.path, "?", 2)[0] || e.Time.IsZero() {
					t.Errorf("audit entry %+v for %d", e, r.status)
				}
				if wantID := map[string]string{"viewer": "t3", "operator": "t2", "admin": "t1"}[who.name]; e.TokenID != wantID {
					t.Errorf("audit token %q, want %q", e.TokenID, wantID)
				}
			})
		}
	}
}

func TestEventsRoles(t *testing.T) {
	_, h := fixture(t)
	for token, want := range map[string]int{"": 401, "nope": 401} {
		if r := do(t, h, "GET", "/api/v1/events", token, ""); r.status != want {
			t.Errorf("token %q: %d %s", token, r.status, r.raw)
		}
	}
	// Granted to viewers: TestEventStream streams with a viewer token.
}

func TestRoleTableCoversEveryOperation(t *testing.T) {
	cd, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]roleCall{"streamEvents": {least: "viewer"}}
	for _, c := range roleCalls {
		rows[c.op] = c
	}
	for _, op := range cd.ops {
		c, ok := rows[op.id]
		if !ok {
			t.Errorf("operation %s (%s %s) has no row in roleCalls", op.id, op.method, op.template)
			continue
		}
		if role, _ := op.op[api.RoleExtension].(string); role != c.least {
			t.Errorf("%s: document says role %q, table %q", op.id, role, c.least)
		}
		if path, _, _ := strings.Cut(c.path, "?"); c.method != "" && (c.method != op.method || !op.re.MatchString(path)) {
			t.Errorf("%s: table calls %s %s, document has %s %s", op.id, c.method, c.path, op.method, op.template)
		}
	}
}

// Finding 6 of issue 9: refusals of callers without a valid token are not
// written to the audit trail, so that no one can grow it from outside;
// they are counted and logged, at most a line a second.
func TestAuditWithoutToken(t *testing.T) {
	f, h := fixture(t)
	for range 50 {
		r := do(t, h, "DELETE", "/api/v1/tokens/t1", "", "")
		if r.status != 401 || !strings.Contains(r.raw, `"code":"unauthorized"`) {
			t.Fatalf("%d %s", r.status, r.raw)
		}
	}
	if e := f.Audit.Entries(); len(e) != 0 {
		t.Errorf("%d audit entries for refused anonymous requests, want none: %+v", len(e), e[0])
	}
}
