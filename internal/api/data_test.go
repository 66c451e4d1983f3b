package api_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/registry"
)

func dataFixture(t testing.TB) (*apitest.Fakes, http.Handler, string) {
	f := apitest.New()
	creds, err := f.Devices.Provision(context.Background(), registry.ProvisionRequest{ID: "ws-1", Type: "WeatherStation"})
	if err != nil {
		t.Fatal(err)
	}
	return f, api.New(f.Deps(), api.Options{MaxDataBytes: 4096}, nil).Handler(), creds.APIKey
}

func TestDeviceData(t *testing.T) {
	tests := []struct {
		name        string
		path        string
		key, body   string
		status      int
		code, field string
		want        string // substring of a successful body
	}{
		{name: "object", path: "/api/v1/device/data", body: `{"temperature":21.5}`, status: 200, want: `"readings":1`},
		{name: "array on a stream", path: "/api/v1/device/data/fast", body: `[{"temperature":1},{"temperature":2}]`, status: 200, want: `"readings":2`},
		{name: "no key", path: "/api/v1/device/data", key: "-", body: `{}`, status: 401, code: "unauthorized"},
		{name: "bad key", path: "/api/v1/device/data", key: "nope", body: `{}`, status: 401, code: "unauthorized"},
		{name: "admin token is not a device key", path: "/api/v1/device/data", key: apitest.AdminToken, body: `{}`, status: 401, code: "unauthorized"},
		{name: "not json", path: "/api/v1/device/data", body: `hello`, status: 422, code: "invalid_json", want: "Content-Type: application/json"},
		{name: "out of range", path: "/api/v1/device/data", body: `{"temperature":99}`, status: 422, code: "out_of_range", field: "temperature"},
		{name: "too large", path: "/api/v1/device/data", body: `{"x":"` + strings.Repeat("a", 5000) + `"}`, status: 413, code: "payload_too_large"},
		{name: "bad stream", path: "/api/v1/device/data/a+b", body: `{}`, status: 400, code: "invalid_argument", field: "stream"},
		{name: "stream with a slash", path: "/api/v1/device/data/a%2Fb", body: `{}`, status: 400, code: "invalid_argument", field: "stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, h, key := dataFixture(t)
			switch tt.key {
			case "-":
				key = ""
			case "":
			default:
				key = tt.key
			}
			r := do(t, h, "POST", tt.path, key, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d: %s", r.status, tt.status, r.raw)
			}
			code, field := errCode(r)
			if code != tt.code || field != tt.field {
				t.Errorf("error %q %q, want %q %q: %s", code, field, tt.code, tt.field, r.raw)
			}
			if !strings.Contains(r.raw, tt.want) {
				t.Errorf("body %s, want %s", r.raw, tt.want)
			}
			if tt.status == 200 {
				c := f.Data.Calls[len(f.Data.Calls)-1]
				if c.DeviceID != "ws-1" || c.DeviceType != "WeatherStation" || string(c.Payload) != tt.body {
					t.Errorf("call %+v", c)
				}
				if tt.path == "/api/v1/device/data/fast" && c.Stream != "fast" {
					t.Errorf("stream %q", c.Stream)
				}
			}
		})
	}
}

func TestDeviceDataDuplicate(t *testing.T) {
	_, h, key := dataFixture(t)
	first := do(t, h, "POST", "/api/v1/device/data", key, `{"temperature":1,"msg_id":"m1"}`)
	again := do(t, h, "POST", "/api/v1/device/data", key, `{"temperature":1,"msg_id":"m1"}`)
	if first.body["duplicate"] != false || again.body["duplicate"] != true || first.body["message_id"] != again.body["message_id"] {
		t.Errorf("first %s, again %s", first.raw, again.raw)
	}
}

func TestDeviceDataDisabled(t *testing.T) {
	f, h, key := dataFixture(t)
	f.Devices.Put(registry.Device{ID: "ws-1", Type: "WeatherStation", Disabled: true})
	r := do(t, h, "POST", "/api/v1/device/data", key, `{}`)
	if code, _ := errCode(r); r.status != 403 || code != "device_disabled" {
		t.Errorf("%d %s", r.status, r.raw)
	}
}

func FuzzDeviceDataBody(f *testing.F) {
	for _, s := range []string{`{"temperature":1}`, `[{"a":1},{"b":2}]`, `[1]`, `"x"`, `{`, ``, "\xff", `{"ts":"2024-01-01T00:00:00Z","msg_id":"m"}`} {
		f.Add([]byte(s), "application/json", "")
	}
	f.Fuzz(func(t *testing.T, body []byte, contentType, stream string) {
		_, h, key := dataFixture(t)
		path := "/api/v1/device/data"
		if stream != "" {
			path += "/" + stream
		}
		req, err := http.NewRequest("POST", "http://hub"+path, bytes.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", contentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("status %d for body %q stream %q: %s", rec.Code, body, stream, rec.Body)
		}
		checkContract(t, "POST", req.URL.Path, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes())
		// The mux may redirect or refuse odd paths itself; every answer
		// of the handler is JSON.
		if (rec.Code == 200 || rec.Code == 422) && !strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
			t.Fatalf("status %d content type %q", rec.Code, rec.Header().Get("Content-Type"))
		}
	})
}

// TestDeviceDataContentType: a JSON body sent as a form (what curl -d
// sends) is read as JSON; other types go to the ingest as they are.
func TestDeviceDataContentType(t *testing.T) {
	tests := []struct {
		name, sent, passed string
	}{
		{"none", "", ""},
		{"json", "application/json", "application/json"},
		{"curl -d", "application/x-www-form-urlencoded", ""},
		{"form with charset", "application/x-www-form-urlencoded; charset=utf-8", ""},
		{"gzip", "application/json+gzip", "application/json+gzip"},
		{"text", "text/plain", "text/plain"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, h, key := dataFixture(t)
			req := httptest.NewRequest("POST", "/api/v1/device/data", strings.NewReader(`{"temperature":20}`))
			req.Header.Set("Authorization", "Bearer "+key)
			if tt.sent != "" {
				req.Header.Set("Content-Type", tt.sent)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if got := f.Data.Calls[len(f.Data.Calls)-1].ContentType; got != tt.passed {
				t.Errorf("ingest got content type %q, want %q", got, tt.passed)
			}
		})
	}
}
