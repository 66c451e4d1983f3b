package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/api"
)

// fakeAuth signs in alice with "right password"; a throttled name is
// refused before its password is checked.
type fakeAuth struct {
	loggedOut []string
}

func (f *fakeAuth) Login(_ context.Context, name, password, _ string) (string, *accounts.Session, *accounts.User, error) {
	switch {
	case name == "throttled":
		return "", nil, nil, accounts.ErrThrottled
	case name == "alice" && password == "right password":
		return "secret-alice", &accounts.Session{User: name, ExpiresAt: time.Now().Add(time.Hour)}, &accounts.User{Name: name, Role: access.Admin}, nil
	}
	return "", nil, nil, accounts.ErrBadLogin
}

func (f *fakeAuth) Authenticate(_ context.Context, secret string) (*accounts.User, *accounts.Session, error) {
	if secret == "secret-alice" {
		return &accounts.User{Name: "alice", Role: access.Admin}, &accounts.Session{User: "alice"}, nil
	}
	return nil, nil, accounts.ErrBadLogin
}

func (f *fakeAuth) Logout(_ context.Context, secret string) error {
	f.loggedOut = append(f.loggedOut, secret)
	return nil
}

func newTestDashboard(t *testing.T) (*Dashboard, *fakeAuth) {
	t.Helper()
	fa := &fakeAuth{}
	apiH := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no API here", http.StatusNotImplemented) })
	d, err := New(apiH, fa, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return d, fa
}

func serve(d http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, r)
	return rec
}

func loginRequest(form url.Values, origin string) *http.Request {
	r := httptest.NewRequest("POST", "http://hub.example/login", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		r.Header.Set("Origin", origin)
	}
	return r
}

func TestLogin(t *testing.T) {
	d, _ := newTestDashboard(t)
	tests := []struct {
		name         string
		form         url.Values
		origin       string
		status       int
		location     string
		cookie       bool
		bodyContains string
	}{
		{"ok", url.Values{"name": {"alice"}, "password": {"right password"}, "next": {"/devices?q=x"}}, "http://hub.example", 303, "/devices?q=x", true, ""},
		{"ok without origin", url.Values{"name": {"alice"}, "password": {"right password"}}, "", 303, "/", true, ""},
		{"open redirect refused", url.Values{"name": {"alice"}, "password": {"right password"}, "next": {"//evil.example/"}}, "", 303, "/", true, ""},
		{"wrong password", url.Values{"name": {"alice"}, "password": {"wrong"}}, "", 401, "", false, "Wrong name or password"},
		{"throttled", url.Values{"name": {"throttled"}, "password": {"x"}}, "", 429, "", false, "Too many failed sign-ins"},
		{"cross-site", url.Values{"name": {"alice"}, "password": {"right password"}}, "http://evil.example", 403, "", false, "cross-site"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := serve(d, loginRequest(tt.form, tt.origin))
			if rec.Code != tt.status || rec.Header().Get("Location") != tt.location {
				t.Fatalf("got %d → %q, want %d → %q (%s)", rec.Code, rec.Header().Get("Location"), tt.status, tt.location, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tt.bodyContains) {
				t.Fatalf("body %q lacks %q", rec.Body, tt.bodyContains)
			}
			c := rec.Result().Cookies()
			if !tt.cookie {
				if len(c) != 0 {
					t.Fatalf("cookie set on a refused sign-in: %+v", c)
				}
				return
			}
			if len(c) != 1 || c[0].Name != api.SessionCookie || c[0].Value != "secret-alice" || !c[0].HttpOnly ||
				c[0].SameSite != http.SameSiteStrictMode || c[0].MaxAge <= 0 || c[0].Secure {
				t.Fatalf("session cookie %+v", c)
			}
		})
	}
	// Under TLS (here: behind a proxy that says so) the cookie is Secure.
	r := loginRequest(url.Values{"name": {"alice"}, "password": {"right password"}}, "")
	r.Header.Set("X-Forwarded-Proto", "https")
	if c := serve(d, r).Result().Cookies(); len(c) != 1 || !c[0].Secure {
		t.Fatalf("cookie under TLS: %+v", c)
	}
}

func TestPagesNeedSession(t *testing.T) {
	d, _ := newTestDashboard(t)
	for _, p := range []string{"/", "/devices", "/devices/ws-1", "/provisioning", "/groups", "/types", "/tokens", "/audit"} {
		rec := serve(d, httptest.NewRequest("GET", p, nil))
		if rec.Code != 303 || !strings.HasPrefix(rec.Header().Get("Location"), "/login?next=") {
			t.Errorf("%s without a session: %d → %q", p, rec.Code, rec.Header().Get("Location"))
		}
	}
	rec := serve(d, httptest.NewRequest("GET", "/login", nil))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `name="password"`) {
		t.Fatalf("login page: %d", rec.Code)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Content-Type-Options"} {
		if rec.Header().Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	if rec := serve(d, httptest.NewRequest("GET", "/static/app.js", nil)); rec.Code != 200 || !strings.Contains(rec.Header().Get("Content-Type"), "javascript") {
		t.Fatalf("static asset: %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
}

func TestLogoutNeedsCSRF(t *testing.T) {
	d, fa := newTestDashboard(t)
	post := func(csrf string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("POST", "/logout", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.AddCookie(&http.Cookie{Name: api.SessionCookie, Value: "secret-alice"})
		return serve(d, r)
	}
	if rec := post("forged"); rec.Code != 403 || len(fa.loggedOut) != 0 {
		t.Fatalf("logout with a forged CSRF token: %d, logged out %v", rec.Code, fa.loggedOut)
	}
	rec := post(accounts.CSRFToken("secret-alice"))
	if rec.Code != 303 || len(fa.loggedOut) != 1 {
		t.Fatalf("logout: %d, logged out %v", rec.Code, fa.loggedOut)
	}
	if c := rec.Result().Cookies(); len(c) != 1 || c[0].MaxAge >= 0 {
		t.Fatalf("cookie not cleared: %+v", c)
	}
}

func TestSafeNext(t *testing.T) {
	tests := map[string]string{
		"":                "/",
		"/devices?q=a":    "/devices?q=a",
		"//evil.example":  "/",
		"/\\evil.example": "/",
		"https://evil":    "/",
		"/login?next=/":   "/",
		"devices":         "/",
	}
	for in, want := range tests {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzSafeNext(f *testing.F) {
	for _, s := range []string{"", "/", "/devices", "//x", "/\\x", "http://x", "/login", "/%2F%2Fx", "\t//x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := safeNext(s)
		u, err := url.Parse(got)
		if err != nil || u.Host != "" || u.Scheme != "" || !strings.HasPrefix(got, "/") {
			t.Fatalf("safeNext(%q) = %q leaves the site", s, got)
		}
	})
}

func TestClip(t *testing.T) {
	tests := []struct {
		n        int
		in, want string
	}{
		{5, "short", "short"},
		{5, "longer text", "longe… (11 B)"},
		{4, "aéb", "aéb"},
		{3, "aéb", "aé… (4 B)"},
		{2, "aébcd", "a… (6 B)"}, // not inside é
		{0, "x", "… (1 B)"},
	}
	for _, tt := range tests {
		if got := clip(tt.n, tt.in); got != tt.want {
			t.Errorf("clip(%d, %q) = %q, want %q", tt.n, tt.in, got, tt.want)
		}
	}
}
