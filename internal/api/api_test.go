package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

func TestMain(m *testing.M) {
	code := m.Run()
	// The contract coverage needs the whole package's tests.
	if code == 0 && flag.Lookup("test.run").Value.String() == "" && flag.Lookup("test.skip").Value.String() == "" {
		if cd, err := loadContract(); err != nil {
			fmt.Fprintln(os.Stderr, "contract:", err)
			code = 1
		} else if missing := cd.unverified(); len(missing) > 0 {
			fmt.Fprintln(os.Stderr, "contract: no test validated a success answer of", missing)
			code = 1
		}
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// fixture returns fakes with two devices, readings and messages.
func fixture(t *testing.T) (*apitest.Fakes, http.Handler) {
	t.Helper()
	f := apitest.New()
	ctx := context.Background()
	for _, id := range []string{"ws-1", "ws-2", "ws-3"} {
		if _, err := f.Devices.Provision(ctx, registry.ProvisionRequest{ID: id, Type: "WeatherStation", Group: "roof"}); err != nil {
			t.Fatal(err)
		}
	}
	f.Devices.Put(registry.Device{ID: "ws-2", Type: "WeatherStation", Group: "cellar", Status: "online", Connected: true})
	f.Readings.Add(
		readings.Record{ID: 1, DeviceID: "ws-1", Time: t0, Values: map[string]any{"temperature": 20.5, "humidity": 40.0}},
		readings.Record{ID: 2, DeviceID: "ws-1", Time: t0.Add(time.Minute), Stream: "fast", Values: map[string]any{"temperature": 21.0}},
		readings.Record{ID: 3, DeviceID: "ws-1", Time: t0.Add(2 * time.Minute), Values: map[string]any{"humidity": 41.0}},
	)
	f.Messages.Add(
		messagelog.Message{ID: 1, DeviceID: "ws-1", Topic: "devices/ws-1/data", Transport: "mqtt", Payload: []byte(`{"temperature":20.5}`), Accepted: true},
		messagelog.Message{ID: 2, DeviceID: "ws-1", Topic: "devices/ws-1/data", Transport: "mqtt", Payload: []byte{0xff, 0x00}, Code: "invalid_json"},
		messagelog.Message{ID: 3, DeviceID: "ws-2", Topic: "devices/ws-2/data", Transport: "http", Payload: []byte(`{}`), Accepted: true},
	)
	if _, err := f.Accounts.AddUser(ctx, "bob", "long enough", access.Viewer); err != nil {
		t.Fatal(err)
	}
	return f, api.New(f.Deps(), api.Options{}, nil).Handler()
}

type result struct {
	status int
	body   map[string]any
	raw    string
}

func do(t *testing.T, h http.Handler, method, path, token, body string) result {
	t.Helper()
	return doHeader(t, h, method, path, token, body, nil)
}

func doHeader(t *testing.T, h http.Handler, method, path, token, body string, header http.Header) result {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := result{status: rec.Code, raw: rec.Body.String()}
	checkContract(t, method, path, rec.Code, rec.Header().Get("Content-Type"), rec.Body.Bytes())
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(rec.Body.Bytes(), &res.body); err != nil {
			t.Fatalf("%s %s: bad JSON %q: %v", method, path, rec.Body.String(), err)
		}
	}
	return res
}

func errCode(r result) (code, field string) {
	e, _ := r.body["error"].(map[string]any)
	code, _ = e["code"].(string)
	field, _ = e["field"].(string)
	return code, field
}

func TestEndpoints(t *testing.T) {
	const (
		admin  = apitest.AdminToken
		op     = apitest.OperatorToken
		viewer = apitest.ViewerToken
	)
	tests := []struct {
		name         string
		method, path string
		token, body  string
		status       int
		code, field  string                       // expected error
		check        func(t *testing.T, r result) // more checks on success
	}{
		// auth and roles
		{name: "no token", method: "GET", path: "/api/v1/devices", status: 401, code: "unauthorized"},
		{name: "bad token", method: "GET", path: "/api/v1/devices", token: "nope", status: 401, code: "unauthorized"},
		{name: "viewer lists", method: "GET", path: "/api/v1/devices", token: viewer, status: 200},
		{name: "viewer may not provision", method: "POST", path: "/api/v1/devices", token: viewer, body: `{"id":"x","type":"WeatherStation"}`, status: 403, code: "forbidden"},
		{name: "operator provisions", method: "POST", path: "/api/v1/devices", token: op, body: `{"id":"op-1","type":"WeatherStation"}`, status: 201},
		{name: "unknown endpoint", method: "GET", path: "/api/v1/nope", token: admin, status: 404, code: "not_found"},

		// devices
		{name: "list all", method: "GET", path: "/api/v1/devices", token: admin, status: 200, check: func(t *testing.T, r result) {
			if ids := deviceIDs(r); ids != "ws-1,ws-2,ws-3" || r.body["next"] != nil {
				t.Errorf("ids %s next %v", ids, r.body["next"])
			}
		}},
		{name: "list paged", method: "GET", path: "/api/v1/devices?limit=2", token: admin, status: 200, check: func(t *testing.T, r result) {
			if ids := deviceIDs(r); ids != "ws-1,ws-2" || r.body["next"] != "ws-2" {
				t.Errorf("ids %s next %v", ids, r.body["next"])
			}
		}},
		{name: "list next page", method: "GET", path: "/api/v1/devices?limit=2&after=ws-2", token: admin, status: 200, check: func(t *testing.T, r result) {
			if ids := deviceIDs(r); ids != "ws-3" || r.body["next"] != nil {
				t.Errorf("ids %s next %v", ids, r.body["next"])
			}
		}},
		{name: "list filtered", method: "GET", path: "/api/v1/devices?group=roof&connected=false&type=WeatherStation", token: admin, status: 200, check: func(t *testing.T, r result) {
			if ids := deviceIDs(r); ids != "ws-1,ws-3" {
				t.Errorf("ids %s", ids)
			}
		}},
		{name: "list connected", method: "GET", path: "/api/v1/devices?connected=true&status=online", token: admin, status: 200, check: func(t *testing.T, r result) {
			if ids := deviceIDs(r); ids != "ws-2" {
				t.Errorf("ids %s", ids)
			}
		}},
		{name: "list empty is an array", method: "GET", path: "/api/v1/devices?group=none", token: admin, status: 200, check: func(t *testing.T, r result) {
			if !strings.Contains(r.raw, `"devices":[]`) {
				t.Errorf("body %s", r.raw)
			}
		}},
		{name: "bad connected", method: "GET", path: "/api/v1/devices?connected=maybe", token: admin, status: 400, code: "invalid_argument", field: "connected"},
		{name: "bad limit", method: "GET", path: "/api/v1/devices?limit=0", token: admin, status: 400, code: "invalid_argument", field: "limit"},
		{name: "limit too big", method: "GET", path: "/api/v1/devices?limit=1001", token: admin, status: 400, code: "invalid_argument", field: "limit"},
		{name: "get", method: "GET", path: "/api/v1/devices/ws-1", token: viewer, status: 200, check: func(t *testing.T, r result) {
			if d := r.body["device"].(map[string]any); d["id"] != "ws-1" || d["type"] != "WeatherStation" {
				t.Errorf("device %v", d)
			}
		}},
		{name: "get missing", method: "GET", path: "/api/v1/devices/nope", token: viewer, status: 404, code: "not_found"},

		// provisioning
		{name: "provision", method: "POST", path: "/api/v1/devices", token: admin,
			body: `{"id":"new-1","type":"WeatherStation","name":"Roof","group":"g","tags":["a"],"metadata":{"floor":3}}`, status: 201,
			check: func(t *testing.T, r result) {
				c := r.body["credentials"].(map[string]any)
				if len(c) != 4 || c["device_id"] != "new-1" || c["mqtt_username"] != "new-1" || c["mqtt_password"] == "" || c["api_key"] == "" {
					t.Errorf("credentials %v", c)
				}
				if d := r.body["device"].(map[string]any); d["name"] != "Roof" || d["group"] != "g" {
					t.Errorf("device %v", d)
				}
			}},
		{name: "provision exists", method: "POST", path: "/api/v1/devices", token: admin, body: `{"id":"ws-1","type":"WeatherStation"}`, status: 409, code: "already_exists", field: "id"},
		{name: "provision replace", method: "POST", path: "/api/v1/devices", token: admin, body: `{"id":"ws-1","type":"WeatherStation","replace":true}`, status: 201},
		{name: "provision unknown type", method: "POST", path: "/api/v1/devices", token: admin, body: `{"id":"x","type":"Toaster"}`, status: 400, code: "unknown_device_type", field: "type"},
		{name: "provision bad id", method: "POST", path: "/api/v1/devices", token: admin, body: `{"id":"a b","type":"WeatherStation"}`, status: 400, code: "invalid_argument", field: "id"},
		{name: "provision no id", method: "POST", path: "/api/v1/devices", token: admin, body: `{"type":"WeatherStation"}`, status: 400, code: "invalid_argument", field: "id"},
		{name: "provision no type", method: "POST", path: "/api/v1/devices", token: admin, body: `{"id":"x"}`, status: 400, code: "invalid_argument", field: "type"},
		{name: "provision unknown field", method: "POST", path: "/api/v1/devices", token: admin, body: `{"id":"x","type":"WeatherStation","colour":"red"}`, status: 400, code: "invalid_argument", field: "colour"},
		{name: "provision wrong field type", method: "POST", path: "/api/v1/devices", token: admin, body: `{"id":"x","type":"WeatherStation","tags":"a"}`, status: 400, code: "invalid_argument", field: "tags"},
		{name: "provision bad json", method: "POST", path: "/api/v1/devices", token: admin, body: `{"id":`, status: 400, code: "invalid_argument"},
		{name: "provision empty body", method: "POST", path: "/api/v1/devices", token: admin, status: 400, code: "invalid_argument"},
		{name: "provision trailing data", method: "POST", path: "/api/v1/devices", token: admin, body: `{"id":"x","type":"WeatherStation"} {}`, status: 400, code: "invalid_argument"},
		{name: "provision too large", method: "POST", path: "/api/v1/devices", token: admin, body: `{"id":"x","name":"` + strings.Repeat("a", 2<<20) + `"}`, status: 413, code: "payload_too_large"},

		// readings
		{name: "readings", method: "GET", path: "/api/v1/devices/ws-1/readings", token: viewer, status: 200, check: func(t *testing.T, r result) {
			if got := readingIDs(r); got != "3,2,1" {
				t.Errorf("ids %s (want newest first)", got)
			}
		}},
		{name: "readings paged", method: "GET", path: "/api/v1/devices/ws-1/readings?limit=2", token: viewer, status: 200, check: func(t *testing.T, r result) {
			if got := readingIDs(r); got != "3,2" || r.body["next"] != "o2" {
				t.Errorf("ids %s next %v", got, r.body["next"])
			}
		}},
		{name: "readings cursor", method: "GET", path: "/api/v1/devices/ws-1/readings?limit=2&cursor=o2", token: viewer, status: 200, check: func(t *testing.T, r result) {
			if got := readingIDs(r); got != "1" {
				t.Errorf("ids %s", got)
			}
		}},
		{name: "readings range rfc3339 and ms", method: "GET", path: fmt.Sprintf("/api/v1/devices/ws-1/readings?from=%s&to=%d", t0.Add(30*time.Second).Format(time.RFC3339), t0.Add(2*time.Minute).UnixMilli()), token: viewer, status: 200, check: func(t *testing.T, r result) {
			if got := readingIDs(r); got != "2" {
				t.Errorf("ids %s", got)
			}
		}},
		{name: "readings field and stream", method: "GET", path: "/api/v1/devices/ws-1/readings?field=temperature&stream=fast", token: viewer, status: 200, check: func(t *testing.T, r result) {
			if got := readingIDs(r); got != "2" {
				t.Errorf("ids %s", got)
			}
		}},
		{name: "readings none", method: "GET", path: "/api/v1/devices/ws-2/readings", token: viewer, status: 200, check: func(t *testing.T, r result) {
			if !strings.Contains(r.raw, `"readings":[]`) {
				t.Errorf("body %s", r.raw)
			}
		}},
		{name: "readings bad cursor", method: "GET", path: "/api/v1/devices/ws-1/readings?cursor=bad", token: viewer, status: 400, code: "bad_cursor", field: "cursor"},
		{name: "readings bad from", method: "GET", path: "/api/v1/devices/ws-1/readings?from=yesterday", token: viewer, status: 400, code: "invalid_argument", field: "from"},
		{name: "readings to before from", method: "GET", path: "/api/v1/devices/ws-1/readings?from=2000&to=1000", token: viewer, status: 400, code: "invalid_argument", field: "to"},
		{name: "readings limit", method: "GET", path: "/api/v1/devices/ws-1/readings?limit=10001", token: viewer, status: 400, code: "invalid_argument", field: "limit"},
		{name: "readings unknown device", method: "GET", path: "/api/v1/devices/nope/readings", token: viewer, status: 404, code: "not_found"},

		// messages
		{name: "messages", method: "GET", path: "/api/v1/devices/ws-1/messages", token: viewer, status: 200, check: func(t *testing.T, r result) {
			msgs := r.body["messages"].([]any)
			if len(msgs) != 2 {
				t.Fatalf("messages %v", msgs)
			}
			bin, text := msgs[0].(map[string]any), msgs[1].(map[string]any)
			if bin["payload_base64"] != "/wA=" || bin["code"] != "invalid_json" || text["payload"] != `{"temperature":20.5}` {
				t.Errorf("messages %v", msgs)
			}
		}},
		{name: "messages paged", method: "GET", path: "/api/v1/devices/ws-1/messages?limit=1", token: viewer, status: 200, check: func(t *testing.T, r result) {
			if len(r.body["messages"].([]any)) != 1 || r.body["next"] != "2" {
				t.Errorf("body %s", r.raw)
			}
		}},
		{name: "messages rejected", method: "GET", path: "/api/v1/devices/ws-1/messages?rejected=true", token: viewer, status: 200, check: func(t *testing.T, r result) {
			if len(r.body["messages"].([]any)) != 1 {
				t.Errorf("body %s", r.raw)
			}
		}},
		{name: "messages bad before", method: "GET", path: "/api/v1/devices/ws-1/messages?before=x", token: viewer, status: 400, code: "invalid_argument", field: "before"},

		// device types
		{name: "device types", method: "GET", path: "/api/v1/device-types", token: viewer, status: 200, check: func(t *testing.T, r result) {
			ts := r.body["device_types"].([]any)
			ws := ts[0].(map[string]any)
			if len(ts) != 1 || ws["name"] != "WeatherStation" || ws["heartbeat_interval"] != "1m0s" || ws["heartbeat_timeout"] != "1m30s" {
				t.Errorf("types %v", ts)
			}
		}},

		// operations endpoints
		{name: "healthz", method: "GET", path: "/healthz", status: 200},
		{name: "readyz", method: "GET", path: "/readyz", status: 200},
		{name: "metrics absent", method: "GET", path: "/metrics", status: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, h := fixture(t)
			r := do(t, h, tt.method, tt.path, tt.token, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d; body %.300s", r.status, tt.status, r.raw)
			}
			code, field := errCode(r)
			if code != tt.code || field != tt.field {
				t.Errorf("error code %q field %q, want %q %q; body %.300s", code, field, tt.code, tt.field, r.raw)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

func deviceIDs(r result) string {
	var ids []string
	for _, d := range r.body["devices"].([]any) {
		ids = append(ids, d.(map[string]any)["id"].(string))
	}
	return strings.Join(ids, ",")
}

func readingIDs(r result) string {
	var ids []string
	for _, d := range r.body["readings"].([]any) {
		ids = append(ids, fmt.Sprint(d.(map[string]any)["id"]))
	}
	return strings.Join(ids, ",")
}

func TestNotReady(t *testing.T) {
	f, _ := fixture(t)
	f.Ready = errors.New("starting")
	h := api.New(f.Deps(), api.Options{}, nil).Handler()
	r := do(t, h, "GET", "/readyz", "", "")
	if code, _ := errCode(r); r.status != 503 || code != "not_ready" {
		t.Errorf("readyz: %d %s", r.status, r.raw)
	}
	if r := do(t, h, "GET", "/healthz", "", ""); r.status != 200 {
		t.Errorf("healthz: %d", r.status)
	}
}

func TestMetrics(t *testing.T) {
	f, _ := fixture(t)
	deps := f.Deps()
	deps.Metrics = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "up 1\n") })
	r := do(t, api.New(deps, api.Options{}, nil).Handler(), "GET", "/metrics", "", "")
	if r.status != 200 || r.raw != "up 1\n" {
		t.Errorf("metrics: %d %q", r.status, r.raw)
	}
}

func TestInternalErrorsDoNotLeak(t *testing.T) {
	f, _ := fixture(t)
	f.Devices.Err = apitest.ErrBoom
	h := api.New(f.Deps(), api.Options{}, nil).Handler()
	for _, path := range []string{"/api/v1/devices", "/api/v1/devices/ws-1"} {
		r := do(t, h, "GET", path, apitest.AdminToken, "")
		if code, _ := errCode(r); r.status != 500 || code != "internal" || strings.Contains(r.raw, "secret") {
			t.Errorf("%s: %d %s", path, r.status, r.raw)
		}
	}
}

func TestMissingDependency(t *testing.T) {
	f, _ := fixture(t)
	deps := f.Deps()
	deps.Messages = nil
	deps.DeviceData = nil
	h := api.New(deps, api.Options{}, nil).Handler()
	if r := do(t, h, "GET", "/api/v1/devices/ws-1/messages", apitest.AdminToken, ""); r.status != 501 {
		t.Errorf("messages: %d %s", r.status, r.raw)
	}
	if r := do(t, h, "GET", "/api/v1/devices/ws-1/messages", "", ""); r.status != 401 {
		t.Errorf("messages without token: %d (auth comes first)", r.status)
	}
	if r := do(t, h, "POST", "/api/v1/device/data", "k", "{}"); r.status != 501 {
		t.Errorf("data: %d %s", r.status, r.raw)
	}
}

func TestPanicIs500(t *testing.T) {
	f, _ := fixture(t)
	deps := f.Deps()
	deps.Types = panicTypes{}
	r := do(t, api.New(deps, api.Options{}, nil).Handler(), "GET", "/api/v1/device-types", apitest.AdminToken, "")
	if code, _ := errCode(r); r.status != 500 || code != "internal" {
		t.Errorf("%d %s", r.status, r.raw)
	}
}

type panicTypes struct{}

func (panicTypes) List() []*devicetype.Type { panic("oops") }
