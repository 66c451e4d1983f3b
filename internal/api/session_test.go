package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
)

// doSession calls the API as a signed-in dashboard user: the session
// cookie, and a CSRF header if csrf is not "".
func doSession(t *testing.T, h http.Handler, method, path, secret, csrf, body string) result {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.AddCookie(&http.Cookie{Name: api.SessionCookie, Value: secret})
	if csrf != "" {
		req.Header.Set(api.CSRFHeader, csrf)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := result{status: rec.Code, raw: rec.Body.String()}
	checkContract(t, method, path, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes())
	return res
}

func TestSessionCookie(t *testing.T) {
	f, h := fixture(t)
	if _, err := f.Accounts.AddUser(context.Background(), "olga", "long enough", access.Operator); err != nil {
		t.Fatal(err)
	}
	olga, bob := apitest.SessionSecret("olga"), apitest.SessionSecret("bob") // bob is a viewer
	tests := []struct {
		name                 string
		method, path, body   string
		secret, csrf         string
		wantStatus           int
		wantCode, auditToken string
	}{
		{name: "read", method: "GET", path: "/api/v1/devices", secret: bob, wantStatus: 200},
		{name: "unknown session", method: "GET", path: "/api/v1/devices", secret: "stolen?", wantStatus: 401, wantCode: "unauthorized"},
		{name: "write without CSRF", method: "POST", path: "/api/v1/devices/ws-1/disable", secret: olga, wantStatus: 403, wantCode: "csrf_failed", auditToken: "user:olga"},
		{name: "write with a forged CSRF", method: "POST", path: "/api/v1/devices/ws-1/disable", secret: olga, csrf: accounts.CSRFToken(bob), wantStatus: 403, wantCode: "csrf_failed", auditToken: "user:olga"},
		{name: "write", method: "POST", path: "/api/v1/devices/ws-1/disable", secret: olga, csrf: accounts.CSRFToken(olga), wantStatus: 200, auditToken: "user:olga"},
		{name: "viewer write", method: "POST", path: "/api/v1/devices/ws-1/enable", secret: bob, csrf: accounts.CSRFToken(bob), wantStatus: 403, wantCode: "forbidden", auditToken: "user:bob"},
		{name: "operator on admin's", method: "GET", path: "/api/v1/users", secret: olga, wantStatus: 403, wantCode: "forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(f.Audit.Entries())
			r := doSession(t, h, tt.method, tt.path, tt.secret, tt.csrf, tt.body)
			if r.status != tt.wantStatus || (tt.wantCode != "" && !strings.Contains(r.raw, `"code":"`+tt.wantCode+`"`)) {
				t.Fatalf("got %d %s, want %d %s", r.status, r.raw, tt.wantStatus, tt.wantCode)
			}
			entries := f.Audit.Entries()[before:]
			if tt.auditToken == "" {
				if len(entries) != 0 && tt.method == "GET" {
					t.Fatalf("a read was audited: %+v", entries)
				}
				return
			}
			if len(entries) != 1 || entries[0].TokenID != tt.auditToken || entries[0].TokenName != strings.TrimPrefix(tt.auditToken, "user:") || entries[0].Status != tt.wantStatus {
				t.Fatalf("audit %+v, want one entry by %s with %d", entries, tt.auditToken, tt.wantStatus)
			}
		})
	}
	// A bearer token wins over a cookie: the CLI's rules are unchanged.
	req := httptest.NewRequest("POST", "/api/v1/devices/ws-1/enable", nil)
	req.Header.Set("Authorization", "Bearer "+apitest.OperatorToken)
	req.AddCookie(&http.Cookie{Name: api.SessionCookie, Value: bob})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("token with a viewer's cookie: %d %s", rec.Code, rec.Body)
	}
}

func TestWhoamiAndUsers(t *testing.T) {
	_, h := fixture(t)
	r := doSession(t, h, "GET", "/api/v1/whoami", apitest.SessionSecret("bob"), "", "")
	if r.status != 200 || !strings.Contains(r.raw, `"kind":"user"`) || !strings.Contains(r.raw, `"role":"viewer"`) {
		t.Fatalf("whoami of a session: %d %s", r.status, r.raw)
	}
	if r := do(t, h, "GET", "/api/v1/whoami", apitest.OperatorToken, ""); !strings.Contains(r.raw, `"kind":"token"`) {
		t.Fatalf("whoami of a token: %s", r.raw)
	}
	tests := []struct {
		name, body string
		status     int
		code       string
	}{
		{"ok", `{"name":"carol","role":"operator","password":"long enough"}`, 201, ""},
		{"exists", `{"name":"carol","role":"operator","password":"long enough"}`, 409, "already_exists"},
		{"short password", `{"name":"dave","role":"operator","password":"short"}`, 400, "invalid_argument"},
		{"bad role", `{"name":"dave","role":"root","password":"long enough"}`, 400, "invalid_argument"},
		{"bad name", `{"name":"da ve","role":"viewer","password":"long enough"}`, 400, "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, h, "POST", "/api/v1/users", apitest.AdminToken, tt.body)
			if r.status != tt.status || (tt.code != "" && !strings.Contains(r.raw, tt.code)) {
				t.Fatalf("got %d %s, want %d %s", r.status, r.raw, tt.status, tt.code)
			}
			if strings.Contains(r.raw, "long enough") {
				t.Fatal("the password is in the answer")
			}
		})
	}
	if r := do(t, h, "DELETE", "/api/v1/users/nobody", apitest.AdminToken, ""); r.status != 404 {
		t.Fatalf("delete unknown user: %d %s", r.status, r.raw)
	}
}

func TestFleetSummary(t *testing.T) {
	_, h := fixture(t)
	r := do(t, h, "GET", "/api/v1/fleet/summary", apitest.ViewerToken, "")
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.raw)
	}
	if r.body["total"] != 3.0 || r.body["online"] != 1.0 || r.body["offline"] != 2.0 {
		t.Fatalf("summary %s: want 3 devices, 1 online, 2 offline", r.raw)
	}
}

func TestTwinVersionConflict(t *testing.T) {
	_, h := fixture(t)
	put := func(body string) result {
		return do(t, h, "PUT", "/api/v1/devices/ws-1/twin/desired", apitest.OperatorToken, body)
	}
	if r := put(`{"values":{"a":1},"expected_version":0}`); r.status != 200 {
		t.Fatalf("first change at version 0: %d %s", r.status, r.raw)
	}
	r := put(`{"values":{"a":2},"expected_version":0}`)
	if code, field := errCode(r); r.status != 412 || code != "version_conflict" || field != "version" || !strings.Contains(r.raw, `"current_version":1`) {
		t.Fatalf("stale change: %d %s, want 412 version_conflict at version 1", r.status, r.raw)
	}
	if r := put(`{"values":{"a":3}}`); r.status != 428 {
		t.Fatalf("change without a version: %d %s, want 428", r.status, r.raw)
	}
	if r := put(`{"values":{"a":3},"version":1}`); r.status != 200 || r.body["twin"] == nil {
		t.Fatalf("change at the current version: %d %s", r.status, r.raw)
	}
	patch := func(body, ifMatch string) result {
		return doHeader(t, h, "PATCH", "/api/v1/devices/ws-1/twin/desired", apitest.OperatorToken, body, http.Header{"If-Match": {ifMatch}})
	}
	if r := patch(`{"patch":{"b":1}}`, `"1"`); r.status != 412 {
		t.Fatalf("stale patch: %d %s", r.status, r.raw)
	}
	r = patch(`{"patch":{"b":1,"a":null}}`, `"2"`)
	if r.status != 200 || !strings.Contains(r.raw, `"values":{"b":1}`) || !strings.Contains(r.raw, `"version":3`) {
		t.Fatalf("patch: %d %s", r.status, r.raw)
	}
}
