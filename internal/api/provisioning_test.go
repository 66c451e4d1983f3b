package api_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
)

func TestManageEndpoints(t *testing.T) {
	const (
		admin = apitest.AdminToken
		op    = apitest.OperatorToken
	)
	fp := strings.Repeat("ab", 32)
	tests := []struct {
		name         string
		method, path string
		token, body  string
		status       int
		code, field  string
		check        func(t *testing.T, f *apitest.Fakes, r result)
	}{
		{name: "provision by id", method: "POST", path: "/api/v1/devices/p-1/provision", token: op, body: `{"type":"WeatherStation","name":"Roof","group":"g1","tags":["a"]}`, status: 201,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				c := r.body["credentials"].(map[string]any)
				if c["device_id"] != "p-1" || c["mqtt_password"] == "" || r.body["device"].(map[string]any)["group"] != "g1" {
					t.Errorf("body %s", r.raw)
				}
			}},
		{name: "provision by id exists", method: "POST", path: "/api/v1/devices/ws-1/provision", token: op, body: `{"type":"WeatherStation"}`, status: 409, code: "already_exists", field: "id"},
		{name: "provision by id replace", method: "POST", path: "/api/v1/devices/ws-1/provision", token: op, body: `{"type":"WeatherStation","replace":true}`, status: 201,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if f.Devices.APIKey("ws-1") != r.body["credentials"].(map[string]any)["api_key"] {
					t.Error("the old API key still works after replace")
				}
			}},
		{name: "provision by id bad id", method: "POST", path: "/api/v1/devices/a%20b/provision", token: op, body: `{"type":"WeatherStation"}`, status: 400, code: "invalid_argument", field: "id"},
		{name: "update", method: "PATCH", path: "/api/v1/devices/ws-1", token: op,
			body:   `{"name":"Roof","group":"g2","tags":["x"],"location":{"lat":1.5,"lon":2,"description":"mast"},"firmware_version":"1.2","hardware_version":"B","management_ip":"10.0.0.7","metadata":{"k":1}}`,
			status: 200, check: func(t *testing.T, f *apitest.Fakes, r result) {
				d := r.body["device"].(map[string]any)
				loc, _ := d["location"].(map[string]any)
				if d["name"] != "Roof" || d["group"] != "g2" || d["firmware_version"] != "1.2" || d["hardware_version"] != "B" ||
					d["management_ip"] != "10.0.0.7" || loc["description"] != "mast" {
					t.Errorf("device %v", d)
				}
			}},
		{name: "update unknown", method: "PATCH", path: "/api/v1/devices/nope", token: op, body: `{"name":"x"}`, status: 404, code: "not_found"},
		{name: "update bad location", method: "PATCH", path: "/api/v1/devices/ws-1", token: op, body: `{"location":{"lat":91,"lon":0}}`, status: 400, code: "invalid_argument", field: "location.lat"},
		{name: "update unknown field", method: "PATCH", path: "/api/v1/devices/ws-1", token: op, body: `{"colour":"red"}`, status: 400, code: "invalid_argument", field: "colour"},
		{name: "disable", method: "POST", path: "/api/v1/devices/ws-1/disable", token: op, body: `{"reason":"stolen"}`, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if r.body["device"].(map[string]any)["disabled"] != true {
					t.Errorf("body %s", r.raw)
				}
				if pr := do(t, api.New(f.Deps(), api.Options{}, nil).Handler(), "POST", "/api/v1/device/data", f.Devices.APIKey("ws-1"), `{"temperature":1}`); pr.status != 403 {
					t.Errorf("disabled device posts: %d %s", pr.status, pr.raw)
				}
			}},
		{name: "disable unknown", method: "POST", path: "/api/v1/devices/nope/disable", token: op, status: 404, code: "not_found"},
		{name: "enable", method: "POST", path: "/api/v1/devices/ws-1/enable", token: op, status: 200},
		{name: "revoke", method: "POST", path: "/api/v1/devices/ws-1/revoke", token: op, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if f.Devices.APIKey("ws-1") != "" {
					t.Error("API key still valid after revoke")
				}
			}},
		{name: "rotate default overlap", method: "POST", path: "/api/v1/devices/ws-1/rotate", token: op, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if len(f.Devices.Overlaps) != 1 || f.Devices.Overlaps[0] != 0 || r.body["old_valid_until"] != nil {
					t.Errorf("overlaps %v body %s", f.Devices.Overlaps, r.raw)
				}
			}},
		{name: "rotate with overlap", method: "POST", path: "/api/v1/devices/ws-1/rotate", token: op, body: `{"overlap":"2h"}`, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if len(f.Devices.Overlaps) != 1 || f.Devices.Overlaps[0] != 2*time.Hour || r.body["old_valid_until"] == nil {
					t.Errorf("overlaps %v body %s", f.Devices.Overlaps, r.raw)
				}
				if c := r.body["credentials"].(map[string]any); c["mqtt_password"] == "" || c["device_id"] != "ws-1" {
					t.Errorf("credentials %v", c)
				}
			}},
		{name: "rotate bad overlap", method: "POST", path: "/api/v1/devices/ws-1/rotate", token: op, body: `{"overlap":"soon"}`, status: 400, code: "invalid_argument", field: "overlap"},
		{name: "rotate unknown", method: "POST", path: "/api/v1/devices/nope/rotate", token: op, status: 404, code: "not_found"},
		{name: "pin certificate", method: "PUT", path: "/api/v1/devices/ws-1/certificate", token: op, body: `{"fingerprint":"` + strings.ToUpper(fp[:2]) + ":" + fp[2:] + `"}`, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if r.body["fingerprint"] != fp || f.Devices.Certs["ws-1"][0] != 0xab {
					t.Errorf("body %s", r.raw)
				}
			}},
		{name: "unpin certificate", method: "PUT", path: "/api/v1/devices/ws-1/certificate", token: op, body: `{"fingerprint":""}`, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if _, ok := r.body["fingerprint"]; ok || f.Devices.Certs["ws-1"] != ([32]byte{}) {
					t.Errorf("body %s", r.raw)
				}
			}},
		{name: "pin bad certificate", method: "PUT", path: "/api/v1/devices/ws-1/certificate", token: op, body: `{"fingerprint":"abc"}`, status: 400, code: "invalid_argument", field: "fingerprint"},
		{name: "import json", method: "POST", path: "/api/v1/devices/import", token: op, body: `[{"id":"i-1","type":"WeatherStation"},{"id":"i-2","type":"WeatherStation"}]`, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				lines := r.body["lines"].([]any)
				if r.body["created"] != 2.0 || len(lines) != 2 || lines[1].(map[string]any)["credentials"] == nil {
					t.Errorf("report %s", r.raw)
				}
			}},
		{name: "import refused", method: "POST", path: "/api/v1/devices/import", token: op, body: `[{"id":"i-1","type":"WeatherStation"},{"id":"ws-1","type":"WeatherStation"},{"id":"i-3","type":"Toaster"}]`, status: 422,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				lines := r.body["lines"].([]any)
				if r.body["created"] != 0.0 || r.body["refused"] != 2.0 || lines[0].(map[string]any)["status"] != "not_created" ||
					lines[1].(map[string]any)["reason"] == nil {
					t.Errorf("report %s", r.raw)
				}
				if _, err := f.Devices.Get(t.Context(), "i-1"); err == nil {
					t.Error("a refused import created a device")
				}
			}},
		{name: "import partial", method: "POST", path: "/api/v1/devices/import?partial=true", token: op, body: `[{"id":"i-1","type":"WeatherStation"},{"id":"ws-1","type":"WeatherStation"}]`, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if r.body["created"] != 1.0 || r.body["refused"] != 1.0 {
					t.Errorf("report %s", r.raw)
				}
			}},
		{name: "import bad json", method: "POST", path: "/api/v1/devices/import", token: op, body: `{"devices":`, status: 400, code: "invalid_argument"},

		// groups
		{name: "create group", method: "POST", path: "/api/v1/groups", token: op, body: `{"id":"cellar-2","name":"Cellar"}`, status: 201,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if g := r.body["group"].(map[string]any); g["id"] != "cellar-2" || g["name"] != "Cellar" {
					t.Errorf("group %v", g)
				}
			}},
		{name: "create group exists", method: "POST", path: "/api/v1/groups", token: op, body: `{"id":"roof"}`, status: 409, code: "already_exists", field: "id"},
		{name: "create group bad id", method: "POST", path: "/api/v1/groups", token: op, body: `{"id":"a b"}`, status: 400, code: "invalid_argument", field: "id"},
		{name: "list groups", method: "GET", path: "/api/v1/groups", token: op, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				gs := r.body["groups"].([]any)
				if len(gs) != 2 || gs[1].(map[string]any)["id"] != "roof" || gs[1].(map[string]any)["devices"] != 2.0 {
					t.Errorf("groups %s", r.raw)
				}
			}},
		{name: "get group missing", method: "GET", path: "/api/v1/groups/nope", token: op, status: 404, code: "not_found"},
		{name: "rename group", method: "PATCH", path: "/api/v1/groups/roof", token: op, body: `{"name":"The roof"}`, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if g := r.body["group"].(map[string]any); g["id"] != "roof" || g["name"] != "The roof" {
					t.Errorf("group %v", g)
				}
			}},
		{name: "rename group empty", method: "PATCH", path: "/api/v1/groups/roof", token: op, body: `{"name":""}`, status: 400, code: "invalid_argument", field: "name"},
		{name: "group devices paged", method: "GET", path: "/api/v1/groups/roof/devices?limit=1", token: op, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if ids := deviceIDs(r); ids != "ws-1" || r.body["next"] != "ws-1" {
					t.Errorf("ids %s next %v", ids, r.body["next"])
				}
			}},
		{name: "group devices missing", method: "GET", path: "/api/v1/groups/nope/devices", token: op, status: 404, code: "not_found"},

		// provisioning tokens
		{name: "create provisioning token", method: "POST", path: "/api/v1/provisioning/tokens", token: admin,
			body: `{"device_type":"WeatherStation","group":"g","tags":["t"],"expires_at":"2025-02-01T00:00:00Z","max_uses":3,"auto_approve":true}`, status: 201,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if r.body["token"] == "" || r.body["max_uses"] != 3.0 || r.body["auto_approve"] != true || r.body["expires_at"] != "2025-02-01T00:00:00Z" {
					t.Errorf("token %s", r.raw)
				}
			}},
		{name: "create provisioning token unknown type", method: "POST", path: "/api/v1/provisioning/tokens", token: admin, body: `{"device_type":"Toaster"}`, status: 400, code: "invalid_argument"},
		{name: "create provisioning token past", method: "POST", path: "/api/v1/provisioning/tokens", token: admin, body: `{"device_type":"WeatherStation","expires_at":"2020-01-01T00:00:00Z"}`, status: 400, code: "invalid_argument"},
		{name: "create provisioning token negative uses", method: "POST", path: "/api/v1/provisioning/tokens", token: admin, body: `{"device_type":"WeatherStation","max_uses":-1}`, status: 400, code: "invalid_argument", field: "max_uses"},
		{name: "operator may not create provisioning tokens", method: "POST", path: "/api/v1/provisioning/tokens", token: op, body: `{"device_type":"WeatherStation"}`, status: 403, code: "forbidden"},
		{name: "list provisioning tokens", method: "GET", path: "/api/v1/provisioning/tokens", token: admin, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				toks := r.body["tokens"].([]any)
				if len(toks) != 1 || toks[0].(map[string]any)["token"] != nil {
					t.Errorf("tokens %s (secrets must not be listed)", r.raw)
				}
			}},
		{name: "revoke provisioning token", method: "DELETE", path: "/api/v1/provisioning/tokens/pt_1", token: admin, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if r.body["token"].(map[string]any)["revoked_at"] == nil {
					t.Errorf("body %s", r.raw)
				}
			}},
		{name: "revoke provisioning token missing", method: "DELETE", path: "/api/v1/provisioning/tokens/pt_9", token: admin, status: 404, code: "not_found"},

		// operations, operator side
		{name: "list pending", method: "GET", path: "/api/v1/provisioning/operations?status=pending", token: op, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				ops := r.body["operations"].([]any)
				if len(ops) != 1 || ops[0].(map[string]any)["verification_code"] != "K7MPQ2XH" {
					t.Errorf("operations %s", r.raw)
				}
			}},
		{name: "list bad status", method: "GET", path: "/api/v1/provisioning/operations?status=maybe", token: op, status: 400, code: "invalid_argument", field: "status"},
		{name: "operator gets operation", method: "GET", path: "/api/v1/provisioning/operations/op_1", token: op, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if r.body["verification_code"] != "K7MPQ2XH" || r.body["credentials"] != nil || r.body["requested_device_id"] != "wanted-1" {
					t.Errorf("operation %s", r.raw)
				}
			}},
		{name: "operator gets missing operation", method: "GET", path: "/api/v1/provisioning/operations/op_9", token: op, status: 404, code: "not_found"},
		{name: "approve with override", method: "POST", path: "/api/v1/provisioning/operations/op_1/approve", token: op, body: `{"device_id":"chosen-1"}`, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if o := r.body["operation"].(map[string]any); o["status"] != "approved" || o["device_id"] != "chosen-1" {
					t.Errorf("operation %v", o)
				}
			}},
		{name: "approve taken id", method: "POST", path: "/api/v1/provisioning/operations/op_1/approve", token: op, body: `{"device_id":"ws-1"}`, status: 409, code: "already_exists", field: "id"},
		{name: "approve missing", method: "POST", path: "/api/v1/provisioning/operations/op_9/approve", token: op, status: 404, code: "not_found"},
		{name: "reject", method: "POST", path: "/api/v1/provisioning/operations/op_1/reject", token: op, body: `{"reason":"not ours"}`, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if o := r.body["operation"].(map[string]any); o["status"] != "rejected" || o["reason"] != "not ours" {
					t.Errorf("operation %v", o)
				}
			}},

		// device side
		{name: "create operation unknown token", method: "POST", path: "/api/v1/provisioning/operations", body: `{"token":"dhp_nope"}`, status: 401, code: "invalid_token", field: "token"},
		{name: "create operation ignores unknown keys", method: "POST", path: "/api/v1/provisioning/operations", body: `{"token":"dhp_good","firmware":"2.0"}`, status: 201},
		{name: "create operation bad json", method: "POST", path: "/api/v1/provisioning/operations", body: `{"token":`, status: 400, code: "invalid_argument"},
		{name: "create operation trailing data", method: "POST", path: "/api/v1/provisioning/operations", body: `{"token":"dhp_good"} {}`, status: 400, code: "invalid_argument"},
		{name: "create operation operator token is no token", method: "POST", path: "/api/v1/provisioning/operations", token: admin, body: `{}`, status: 401, code: "invalid_token", field: "token"},
		{name: "poll pending", method: "GET", path: "/api/v1/provisioning/operations/op_1", token: apitest.OperationSecret, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				if r.body["status"] != "pending" || r.body["verification_code"] != nil {
					t.Errorf("poll %s", r.raw)
				}
			}},
		{name: "poll no bearer", method: "GET", path: "/api/v1/provisioning/operations/op_1", status: 401, code: "unauthorized"},
		{name: "poll wrong secret", method: "GET", path: "/api/v1/provisioning/operations/op_1", token: "dho_wrong", status: 401, code: "unauthorized"},
		{name: "register new", method: "POST", path: "/api/v1/device/register", body: `{"shared_secret":"shared-secret-0123","key":"mac-1","type":"WeatherStation"}`, status: 200,
			check: func(t *testing.T, f *apitest.Fakes, r result) {
				c := r.body["credentials"].(map[string]any)
				if r.body["is_new"] != true || r.body["device_id"] != "dev-mac-1" || c["mqtt_password"] == "" {
					t.Errorf("body %s", r.raw)
				}
			}},
		{name: "register bad secret", method: "POST", path: "/api/v1/device/register", body: `{"shared_secret":"nope","key":"mac-1"}`, status: 401, code: "bad_shared_secret", field: "shared_secret"},
		{name: "register no key", method: "POST", path: "/api/v1/device/register", body: `{"shared_secret":"shared-secret-0123"}`, status: 400, code: "invalid_argument"},
		{name: "register no type", method: "POST", path: "/api/v1/device/register", body: `{"shared_secret":"shared-secret-0123","key":"mac-2"}`, status: 400, code: "invalid_argument", field: "type"},
		{name: "register taken id", method: "POST", path: "/api/v1/device/register", body: `{"shared_secret":"shared-secret-0123","key":"mac-3","device_id":"ws-1","type":"WeatherStation"}`, status: 409, code: "already_exists", field: "device_id"},
		{name: "register too large", method: "POST", path: "/api/v1/device/register", body: `{"key":"` + strings.Repeat("a", 70<<10) + `"}`, status: 413, code: "payload_too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, h := fixture(t)
			r := do(t, h, tt.method, tt.path, tt.token, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d; body %.300s", r.status, tt.status, r.raw)
			}
			code, field := errCode(r)
			if code != tt.code || field != tt.field {
				t.Errorf("error code %q field %q, want %q %q; body %.300s", code, field, tt.code, tt.field, r.raw)
			}
			if tt.check != nil {
				tt.check(t, f, r)
			}
		})
	}
}

// TestProvisioningFlow runs a token, an operation, an approval with an
// overridden id and the device's polls against the fakes.
func TestProvisioningFlow(t *testing.T) {
	f, h := fixture(t)
	r := do(t, h, "POST", "/api/v1/provisioning/tokens", apitest.AdminToken, `{"device_type":"WeatherStation","max_uses":1}`)
	if r.status != 201 {
		t.Fatalf("token: %d %s", r.status, r.raw)
	}
	token := r.body["token"].(string)
	r = do(t, h, "POST", "/api/v1/provisioning/operations", "", `{"token":"`+token+`","device_id":"asked-1"}`)
	if r.status != 201 || r.body["verification_code"] == "" || r.body["secret"] == "" || r.body["expires_at"] == "" {
		t.Fatalf("operation: %d %s", r.status, r.raw)
	}
	id, secret := r.body["id"].(string), r.body["secret"].(string)
	if r := do(t, h, "POST", "/api/v1/provisioning/operations", "", `{"token":"`+token+`"}`); r.status != 403 {
		t.Errorf("second use of a single-use token: %d %s", r.status, r.raw)
	} else if code, _ := errCode(r); code != "token_exhausted" {
		t.Errorf("code %s", code)
	}
	if r := do(t, h, "GET", "/api/v1/provisioning/operations/"+id, secret, ""); r.body["status"] != "pending" {
		t.Fatalf("poll: %s", r.raw)
	}
	if r := do(t, h, "POST", "/api/v1/provisioning/operations/"+id+"/approve", apitest.OperatorToken, `{"device_id":"over-1"}`); r.status != 200 {
		t.Fatalf("approve: %d %s", r.status, r.raw)
	}
	r = do(t, h, "GET", "/api/v1/provisioning/operations/"+id, secret, "")
	c, _ := r.body["credentials"].(map[string]any)
	if r.status != 200 || r.body["status"] != "approved" || r.body["device_id"] != "over-1" || c["device_id"] != "over-1" || c["mqtt_password"] == "" {
		t.Fatalf("poll after approval: %d %s", r.status, r.raw)
	}
	if f.Devices.APIKey("over-1") != c["api_key"] {
		t.Error("delivered credentials are not the device's")
	}
	r = do(t, h, "GET", "/api/v1/provisioning/operations/"+id, secret, "")
	if code, _ := errCode(r); r.status != 410 || code != "already_delivered" || strings.Contains(r.raw, "mqtt_password") {
		t.Fatalf("second poll: %d %s", r.status, r.raw)
	}
	if r := do(t, h, "POST", "/api/v1/provisioning/operations/"+id+"/approve", apitest.OperatorToken, ""); r.status != 409 {
		t.Errorf("approve twice: %d %s", r.status, r.raw)
	}

	// Rejected: the device reads the status and the reason.
	do(t, h, "POST", "/api/v1/provisioning/operations/op_1/reject", apitest.OperatorToken, `{"reason":"not ours"}`)
	r = do(t, h, "GET", "/api/v1/provisioning/operations/op_1", apitest.OperationSecret, "")
	if r.status != 200 || r.body["status"] != "rejected" || r.body["reason"] != "not ours" {
		t.Errorf("poll rejected: %d %s", r.status, r.raw)
	}
	if r := do(t, h, "POST", "/api/v1/provisioning/operations/op_1/approve", apitest.OperatorToken, ""); r.status != 410 {
		t.Errorf("approve rejected: %d %s", r.status, r.raw)
	} else if code, _ := errCode(r); code != "operation_rejected" {
		t.Errorf("code %s", code)
	}
}

func TestProvisioningTokenErrors(t *testing.T) {
	tests := []struct {
		name   string
		setup  func(f *apitest.Fakes)
		status int
		code   string
	}{
		{"expired", func(f *apitest.Fakes) { f.Provisioning.Now = f.Provisioning.Now.Add(48 * time.Hour) }, 401, "token_expired"},
		{"revoked", func(f *apitest.Fakes) { f.Provisioning.RevokeToken(t.Context(), "pt_1") }, 401, "token_revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, h := fixture(t)
			tt.setup(f)
			r := do(t, h, "POST", "/api/v1/provisioning/operations", "", `{"token":"`+apitest.ProvisioningToken+`"}`)
			if code, _ := errCode(r); r.status != tt.status || code != tt.code {
				t.Errorf("%d %s", r.status, r.raw)
			}
		})
	}
}

func TestRegisterAgain(t *testing.T) {
	f, h := fixture(t)
	body := `{"shared_secret":"shared-secret-0123","key":"mac-9","device_id":"reg-1","type":"WeatherStation"}`
	first := do(t, h, "POST", "/api/v1/device/register", "", body)
	again := do(t, h, "POST", "/api/v1/device/register", "", body)
	if first.body["is_new"] != true || again.body["is_new"] != false || again.body["device_id"] != "reg-1" {
		t.Fatalf("first %s again %s", first.raw, again.raw)
	}
	k1 := first.body["credentials"].(map[string]any)["api_key"]
	k2 := again.body["credentials"].(map[string]any)["api_key"]
	if k1 == k2 || f.Devices.APIKey("reg-1") != k2 {
		t.Errorf("keys %v %v", k1, k2)
	}
	f.Provisioning.RegistrationOff = true
	r := do(t, h, "POST", "/api/v1/device/register", "", body)
	if code, _ := errCode(r); r.status != 403 || code != "registration_disabled" {
		t.Errorf("%d %s", r.status, r.raw)
	}
}

func TestImportCSV(t *testing.T) {
	_, h := fixture(t)
	req := httptest.NewRequest("POST", "/api/v1/devices/import", strings.NewReader("id,type\nc-1,WeatherStation\nc-2,WeatherStation\n"))
	req.Header.Set("Authorization", "Bearer "+apitest.OperatorToken)
	req.Header.Set("Content-Type", "text/csv; charset=utf-8")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	checkContract(t, "POST", "/api/v1/devices/import", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes())
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"line":3`) {
		t.Errorf("%d %s", rec.Code, rec.Body)
	}
	req = httptest.NewRequest("POST", "/api/v1/devices/import", strings.NewReader("<xml/>"))
	req.Header.Set("Authorization", "Bearer "+apitest.OperatorToken)
	req.Header.Set("Content-Type", "application/xml")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	checkContract(t, "POST", "/api/v1/devices/import", rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes())
	if rec.Code != 415 {
		t.Errorf("xml: %d %s", rec.Code, rec.Body)
	}
}

func TestRotationOverlapOption(t *testing.T) {
	f, _ := fixture(t)
	h := api.New(f.Deps(), api.Options{RotationOverlap: 3 * time.Hour}, nil).Handler()
	r := do(t, h, "POST", "/api/v1/devices/ws-1/rotate", apitest.OperatorToken, "")
	if r.status != 200 || len(f.Devices.Overlaps) != 1 || f.Devices.Overlaps[0] != 3*time.Hour {
		t.Errorf("%d %s overlaps %v", r.status, r.raw, f.Devices.Overlaps)
	}
	r = do(t, h, "POST", "/api/v1/devices/ws-1/rotate", apitest.OperatorToken, `{"overlap":"0s"}`)
	if r.status != 200 || f.Devices.Overlaps[1] != 0 {
		t.Errorf("%d %s overlaps %v", r.status, r.raw, f.Devices.Overlaps)
	}
}
