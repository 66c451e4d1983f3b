package api_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/registry"
)

func TestTokens(t *testing.T) {
	f, h := fixture(t)
	const admin = apitest.AdminToken

	r := do(t, h, "POST", "/api/v1/tokens", admin, `{"name":"ci","role":"viewer"}`)
	if r.status != 201 || r.body["token"] != "secret-ci" || r.body["role"] != "viewer" || r.body["id"] == "" {
		t.Fatalf("create: %d %s", r.status, r.raw)
	}
	id := r.body["id"].(string)
	// The new token works, with its role.
	if r := do(t, h, "GET", "/api/v1/devices", "secret-ci", ""); r.status != 200 {
		t.Errorf("new viewer token lists: %d", r.status)
	}
	if r := do(t, h, "POST", "/api/v1/devices", "secret-ci", `{"id":"x","type":"WeatherStation"}`); r.status != 403 {
		t.Errorf("new viewer token provisions: %d", r.status)
	}
	r = do(t, h, "GET", "/api/v1/tokens", admin, "")
	toks := r.body["tokens"].([]any)
	if len(toks) != 4 || strings.Contains(r.raw, "secret") {
		t.Errorf("list: %s", r.raw)
	}
	if r := do(t, h, "GET", "/api/v1/tokens/"+id, admin, ""); r.body["token"].(map[string]any)["name"] != "ci" {
		t.Errorf("get: %s", r.raw)
	}
	r = do(t, h, "DELETE", "/api/v1/tokens/"+id, admin, "")
	if r.status != 200 || r.body["token"].(map[string]any)["revoked_at"] == nil {
		t.Errorf("revoke: %d %s", r.status, r.raw)
	}
	if r := do(t, h, "GET", "/api/v1/devices", "secret-ci", ""); r.status != 401 {
		t.Errorf("revoked token: %d", r.status)
	}

	// The audit trail has the two changes, newest first, with targets.
	r = do(t, h, "GET", "/api/v1/audit", admin, "")
	entries := r.body["entries"].([]any)
	if len(entries) < 3 {
		t.Fatalf("audit: %s", r.raw)
	}
	revoke, create := entries[0].(map[string]any), entries[2].(map[string]any)
	if revoke["operation_id"] != "revokeToken" || revoke["target"] != id || revoke["token_name"] != "admin" || revoke["status"] != 200.0 {
		t.Errorf("revoke entry %v", revoke)
	}
	if create["operation_id"] != "createToken" || create["target"] != id || create["status"] != 201.0 {
		t.Errorf("create entry %v", create)
	}
	_ = f
}

func TestTokenErrors(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		status                   int
		code, field              string
	}{
		{"no name", "POST", "/api/v1/tokens", `{"role":"viewer"}`, 400, "invalid_argument", "name"},
		{"empty name", "POST", "/api/v1/tokens", `{"name":"","role":"viewer"}`, 400, "invalid_argument", "name"},
		{"bad role", "POST", "/api/v1/tokens", `{"name":"x","role":"root"}`, 400, "invalid_argument", "role"},
		{"unknown field", "POST", "/api/v1/tokens", `{"name":"x","role":"viewer","ttl":3}`, 400, "invalid_argument", "ttl"},
		{"blank name", "POST", "/api/v1/tokens", `{"name":"  ","role":"viewer"}`, 400, "invalid_argument", ""},
		{"get missing", "GET", "/api/v1/tokens/nope", "", 404, "not_found", ""},
		{"revoke missing", "DELETE", "/api/v1/tokens/nope", "", 404, "not_found", ""},
		{"audit bad cursor", "GET", "/api/v1/audit?cursor=x", "", 400, "bad_cursor", "cursor"},
		{"audit bad since", "GET", "/api/v1/audit?since=x", "", 400, "invalid_argument", "since"},
		{"audit bad limit", "GET", "/api/v1/audit?limit=0", "", 400, "invalid_argument", "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, h := fixture(t)
			r := do(t, h, tt.method, tt.path, apitest.AdminToken, tt.body)
			code, field := errCode(r)
			if r.status != tt.status || code != tt.code || field != tt.field {
				t.Errorf("%d %s, want %d %s %s", r.status, r.raw, tt.status, tt.code, tt.field)
			}
		})
	}
}

func TestAuditPaging(t *testing.T) {
	f, h := fixture(t)
	for _, id := range []string{"a1", "a2", "a3"} {
		if r := do(t, h, "POST", "/api/v1/devices", apitest.OperatorToken, `{"id":"`+id+`","type":"WeatherStation"}`); r.status != 201 {
			t.Fatal(r.raw)
		}
	}
	do(t, h, "POST", "/api/v1/devices", apitest.ViewerToken, `{"id":"a4","type":"WeatherStation"}`)
	r := do(t, h, "GET", "/api/v1/audit?limit=2", apitest.AdminToken, "")
	if es := r.body["entries"].([]any); len(es) != 2 || r.body["next"] != "3" || es[0].(map[string]any)["status"] != 403.0 {
		t.Fatalf("page 1: %s", r.raw)
	}
	r = do(t, h, "GET", "/api/v1/audit?limit=2&cursor=3", apitest.AdminToken, "")
	if es := r.body["entries"].([]any); len(es) != 2 || r.body["next"] != nil || es[1].(map[string]any)["target"] != "a1" {
		t.Fatalf("page 2: %s", r.raw)
	}
	r = do(t, h, "GET", "/api/v1/audit?failed=true", apitest.AdminToken, "")
	if es := r.body["entries"].([]any); len(es) != 1 || es[0].(map[string]any)["token_name"] != "dash" {
		t.Errorf("failed: %s", r.raw)
	}
	r = do(t, h, "GET", "/api/v1/audit?target=a2&token_id=t2", apitest.AdminToken, "")
	if es := r.body["entries"].([]any); len(es) != 1 {
		t.Errorf("target: %s", r.raw)
	}
	// Without an audit log the trail is not available, and changes work.
	deps := f.Deps()
	deps.Audit = nil
	h = api.New(deps, api.Options{}, nil).Handler()
	if r := do(t, h, "GET", "/api/v1/audit", apitest.AdminToken, ""); r.status != 501 {
		t.Errorf("audit without a log: %d", r.status)
	}
	if r := do(t, h, "POST", "/api/v1/devices", apitest.OperatorToken, `{"id":"a5","type":"WeatherStation"}`); r.status != 201 {
		t.Errorf("provision without a log: %d", r.status)
	}
}

func TestDeviceFilters(t *testing.T) {
	f, h := fixture(t)
	ctx := context.Background()
	for i, d := range []registry.ProvisionRequest{
		{ID: "door-1", Type: "WeatherStation", Name: "Front Door", Tags: []string{"entry", "ground"}},
		{ID: "door-2", Type: "WeatherStation", Name: "Back door", Tags: []string{"entry"}},
		{ID: "lamp-1", Type: "WeatherStation", Name: "Hall lamp", Tags: []string{"ground"}},
	} {
		if _, err := f.Devices.Provision(ctx, d); err != nil {
			t.Fatal(i, err)
		}
	}
	tests := []struct {
		name, query, want, next string
	}{
		{"tag", "tag=entry", "door-1,door-2", ""},
		{"tag paged", "tag=ground&limit=1", "door-1", "door-1"},
		{"tag next page", "tag=ground&limit=1&after=door-1", "lamp-1", ""},
		{"q on name ignoring case", "q=DOOR", "door-1,door-2", ""},
		{"q on id", "q=lamp", "lamp-1", ""},
		{"q and tag", "q=front&tag=entry", "door-1", ""},
		{"q and group", "q=ws&group=roof", "ws-1,ws-3", ""},
		{"nothing", "tag=none", "", ""},
		// By last seen: lamp-1 newest, door-2 before door-1 (never seen).
		{"by last seen", "tag=ground&sort=last_seen", "lamp-1,door-1", ""},
		{"by last seen paged", "sort=last_seen&limit=2", "lamp-1,door-2", "1000000000000000_door-2"},
		{"by last seen next page", "sort=last_seen&limit=2&after=1000000000000000_door-2", "door-1,ws-1", "_ws-1"},
		{"by last seen among the never seen", "sort=last_seen&limit=2&after=_ws-1", "ws-2,ws-3", ""},
	}
	seen := func(sec int64) *time.Time { t := time.Unix(sec, 0).UTC(); return &t }
	for id, at := range map[string]*time.Time{"lamp-1": seen(2_000_000_000), "door-2": seen(1_000_000_000)} {
		d, err := f.Devices.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		d.LastSeen = at
		f.Devices.Put(*d)
	}
	if r := do(t, h, "GET", "/api/v1/devices?sort=last_seen&after=yesterday", apitest.ViewerToken, ""); r.status != 400 || !strings.Contains(r.raw, "LASTSEEN_ID") {
		t.Errorf("a bad cursor: %d %s, want 400 naming the cursor's form", r.status, r.raw)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, h, "GET", "/api/v1/devices?"+tt.query, apitest.ViewerToken, "")
			next, _ := r.body["next"].(string)
			if ids := deviceIDs(r); ids != tt.want || next != tt.next {
				t.Errorf("ids %q next %q, want %q %q", ids, next, tt.want, tt.next)
			}
		})
	}
}

// TestValidationErrorShape checks that huma's own validation errors have
// the API's one error shape and name the field.
func TestValidationErrorShape(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		field                    string
	}{
		{"query enum", "GET", "/api/v1/devices?connected=maybe", "", "connected"},
		{"query maximum", "GET", "/api/v1/devices/ws-1/readings?limit=99999", "", "limit"},
		{"query not a number", "GET", "/api/v1/devices?limit=ten", "", "limit"},
		{"query bool", "GET", "/api/v1/devices/ws-1/messages?rejected=perhaps", "", "rejected"},
		{"body missing property", "POST", "/api/v1/devices", `{"type":"WeatherStation"}`, "id"},
		{"body pattern", "POST", "/api/v1/devices", `{"id":"a b","type":"WeatherStation"}`, "id"},
		{"body wrong type", "POST", "/api/v1/devices", `{"id":"x","type":"WeatherStation","replace":"yes"}`, "replace"},
		{"body unknown property", "POST", "/api/v1/devices", `{"id":"x","type":"WeatherStation","colour":"red"}`, "colour"},
		{"body not an object", "POST", "/api/v1/devices", `[1]`, ""},
		{"body not json", "POST", "/api/v1/devices", `{`, ""},
		{"path pattern", "POST", "/api/v1/device/data/a+b", `{}`, "stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, h := fixture(t)
			token := apitest.AdminToken
			if strings.HasPrefix(tt.path, "/api/v1/device/") {
				token = f.Devices.APIKey("ws-1")
			}
			r := do(t, h, tt.method, tt.path, token, tt.body)
			if r.status != 400 || len(r.body) != 1 {
				t.Fatalf("%d %s", r.status, r.raw)
			}
			e := r.body["error"].(map[string]any)
			code, field := errCode(r)
			if code != "invalid_argument" || field != tt.field || e["message"] == "" {
				t.Errorf("error %v, want field %q", e, tt.field)
			}
			for k := range e {
				if k != "code" && k != "message" && k != "field" {
					t.Errorf("error has key %q", k)
				}
			}
			if tt.field != "" && !strings.HasPrefix(e["message"].(string), tt.field+": ") {
				t.Errorf("message %q does not name the field", e["message"])
			}
		})
	}
}
