package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer safe for a command writing while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type run struct {
	out, err string
	code     int
}

func runCLI(t *testing.T, ctx context.Context, serve ServeFunc, args ...string) run {
	t.Helper()
	var out, errb syncBuffer
	code := Run(ctx, serve, args, &out, &errb)
	return run{out: out.String(), err: errb.String(), code: code}
}

func noServe(context.Context, string, config.Overrides) error { return errors.New("not in this test") }

// hub starts a fake hub and clears the environment the CLI reads.
func hub(t *testing.T) (*apitest.Fakes, string) {
	t.Helper()
	for _, k := range []string{"DEVICEHUB_TOKEN", "DEVICEHUB_SERVER", "DEVICEHUB_DATA_DIR"} {
		t.Setenv(k, "")
	}
	f := apitest.New()
	srv, _ := f.Server(t, api.Options{})
	return f, srv.URL
}

func keys(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

func TestProvision(t *testing.T) {
	_, url := hub(t)
	ctx := context.Background()
	admin := []string{"--server", url, "--token", apitest.AdminToken}

	r := runCLI(t, ctx, noServe, append([]string{"provision", "ws-1", "--type", "WeatherStation", "--output", "json"}, admin...)...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	var creds map[string]any
	if err := json.Unmarshal([]byte(r.out), &creds); err != nil {
		t.Fatalf("output %q: %v", r.out, err)
	}
	if got := keys(creds); got != "api_key,device_id,mqtt_password,mqtt_username" {
		t.Errorf("JSON keys %s", got)
	}
	if creds["device_id"] != "ws-1" || creds["mqtt_password"] == "" {
		t.Errorf("credentials %v", creds)
	}

	r = runCLI(t, ctx, noServe, append([]string{"provision", "ws-2", "--type", "WeatherStation", "--name", "Roof", "--group", "g"}, admin...)...)
	if r.code != 0 || !strings.Contains(r.out, "mqtt password") || !strings.Contains(r.out, "shown only once") || !strings.Contains(r.out, "ws-2") {
		t.Errorf("exit %d, output:\n%s", r.code, r.out)
	}

	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"exists", append([]string{"provision", "ws-1", "--type", "WeatherStation"}, admin...), ExitError, "already_exists"},
		{"unknown type", append([]string{"provision", "x", "--type", "Toaster"}, admin...), ExitError, "unknown_device_type"},
		{"no type", append([]string{"provision", "x"}, admin...), ExitUsage, "--type is required"},
		{"no id", append([]string{"provision", "--type", "WeatherStation"}, admin...), ExitUsage, "want DEVICE_ID"},
		{"viewer", []string{"provision", "x", "--type", "WeatherStation", "--server", url, "--token", apitest.ViewerToken}, ExitUnauthorized, "forbidden"},
		{"bad token", []string{"provision", "x", "--type", "WeatherStation", "--server", url, "--token", "nope"}, ExitUnauthorized, "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, ctx, noServe, tt.args...)
			if r.code != tt.code || !strings.Contains(r.err, tt.msg) {
				t.Errorf("exit %d, stderr %q; want %d and %q", r.code, r.err, tt.code, tt.msg)
			}
		})
	}
}

func TestDevices(t *testing.T) {
	f, url := hub(t)
	ctx := context.Background()
	for _, id := range []string{"a-1", "b-2"} {
		if _, err := f.Devices.Provision(ctx, registry.ProvisionRequest{ID: id, Type: "WeatherStation", Group: "roof"}); err != nil {
			t.Fatal(err)
		}
	}
	seen := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Devices.Put(registry.Device{ID: "b-2", Type: "WeatherStation", Status: "online", Connected: true, LastSeen: &seen})
	base := []string{"--server", url, "--token", apitest.ViewerToken}

	r := runCLI(t, ctx, noServe, append([]string{"devices"}, base...)...)
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.HasPrefix(lines[1], "a-1") ||
		!strings.Contains(lines[2], "2025-01-01T00:00:00Z") {
		t.Errorf("exit %d, output:\n%s", r.code, r.out)
	}

	r = runCLI(t, ctx, noServe, append([]string{"devices", "-o", "json", "--connected", "--limit", "5"}, base...)...)
	var list map[string][]map[string]any
	if err := json.Unmarshal([]byte(r.out), &list); err != nil {
		t.Fatalf("output %q: %v", r.out, err)
	}
	if len(list["devices"]) != 1 || list["devices"][0]["id"] != "b-2" || list["devices"][0]["connected"] != true {
		t.Errorf("devices %v", list)
	}

	r = runCLI(t, ctx, noServe, append([]string{"devices", "--limit", "1"}, base...)...)
	if !strings.Contains(r.err, "more: --after a-1") {
		t.Errorf("no next-page hint: %q", r.err)
	}

	r = runCLI(t, ctx, noServe, append([]string{"devices", "get", "a-1", "-o", "json"}, base...)...)
	var dev map[string]any
	if err := json.Unmarshal([]byte(r.out), &dev); err != nil || dev["id"] != "a-1" || dev["group"] != "roof" {
		t.Errorf("device %q: %v", r.out, err)
	}
	r = runCLI(t, ctx, noServe, append([]string{"devices", "get", "a-1"}, base...)...)
	if r.code != 0 || !strings.Contains(r.out, "group:") || !strings.Contains(r.out, "roof") {
		t.Errorf("exit %d, output:\n%s", r.code, r.out)
	}
	r = runCLI(t, ctx, noServe, append([]string{"devices", "get", "missing"}, base...)...)
	if r.code != ExitNotFound {
		t.Errorf("missing device: exit %d, stderr %q", r.code, r.err)
	}
}

func TestReadings(t *testing.T) {
	f, url := hub(t)
	ctx := context.Background()
	f.Devices.Put(registry.Device{ID: "ws-1", Type: "WeatherStation"})
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Readings.Add(
		readings.Record{ID: 1, DeviceID: "ws-1", Time: t0, Values: map[string]any{"temperature": 20.5, "label": "x"}},
		readings.Record{ID: 2, DeviceID: "ws-1", Time: t0.Add(time.Minute), Stream: "fast", Values: map[string]any{"temperature": 21.0}},
	)
	base := []string{"--server", url, "--token", apitest.ViewerToken}
	r := runCLI(t, ctx, noServe, append([]string{"readings", "ws-1"}, base...)...)
	want := "TIME                  STREAM  VALUES\n" +
		"2025-03-01T12:01:00Z  fast    temperature=21\n" +
		"2025-03-01T12:00:00Z  -       label=\"x\" temperature=20.5\n"
	if r.code != 0 || r.out != want {
		t.Errorf("exit %d, output:\n%s\nwant:\n%s", r.code, r.out, want)
	}

	r = runCLI(t, ctx, noServe, append([]string{"readings", "ws-1", "-o", "json", "--from", t0.Add(30 * time.Second).Format(time.RFC3339), "--to", "1h", "--stream", "fast", "--field", "temperature", "--limit", "5"}, base...)...)
	var page struct {
		Readings []map[string]any `json:"readings"`
	}
	if err := json.Unmarshal([]byte(r.out), &page); err != nil {
		t.Fatalf("output %q: %v", r.out, err)
	}
	// --to 1h means an hour ago, which is after t0 in 2025.
	if len(page.Readings) != 1 || keys(page.Readings[0]) != "device_id,id,message_id,received_at,stream,ts,values" {
		t.Errorf("readings %v", page.Readings)
	}
	if q := f.Readings.Last; q.Stream != "fast" || q.Field != "temperature" || q.Limit != 5 || !q.From.Equal(t0.Add(30*time.Second)) {
		t.Errorf("query %+v", q)
	}

	r = runCLI(t, ctx, noServe, append([]string{"readings", "ws-1", "--from", "yesterday"}, base...)...)
	if r.code != ExitUsage {
		t.Errorf("bad --from: exit %d", r.code)
	}
	r = runCLI(t, ctx, noServe, append([]string{"readings", "nope"}, base...)...)
	if r.code != ExitNotFound {
		t.Errorf("unknown device: exit %d", r.code)
	}
}

func TestEvents(t *testing.T) {
	f, url := hub(t)
	f.Events.Publish(events.Event{Type: events.DeviceConnected, DeviceID: "filler"})
	f.Events.Publish(events.Event{Type: events.DeviceConnected, DeviceID: "a", DeviceType: "WeatherStation", Args: &events.Connected{Transport: "mqtt"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, noServe, []string{"events", "--from", "1", "--type", "device_connected,device_disconnected", "--device-id", "a", "-o", "json", "--server", url, "--token", apitest.ViewerToken}, &out, &errb)
	}()
	apitest.WaitFor(t, 5*time.Second, func() bool { return f.Events.Subscribers() == 1 })
	f.Events.Publish(events.Event{Type: events.DeviceDisconnected, DeviceID: "a", DeviceType: "WeatherStation", Args: &events.Disconnected{Reason: events.ReasonLastWill}})
	f.Events.Publish(events.Event{Type: events.DeviceDisconnected, DeviceID: "other", Args: &events.Disconnected{}})
	apitest.WaitFor(t, 5*time.Second, func() bool { return strings.Count(out.String(), "\n") >= 2 })
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("lines %q", lines)
	}
	for i, line := range lines {
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if keys(e) != "args,device_id,device_type,seq,time,type" || e["seq"] != float64(i+2) {
			t.Errorf("event %v", e)
		}
	}
	if !strings.Contains(lines[1], `"reason":"last_will"`) {
		t.Errorf("second event %s", lines[1])
	}
}

func TestEventsTable(t *testing.T) {
	f, url := hub(t)
	f.Events.Publish(events.Event{Type: events.DeviceConnected, DeviceID: "filler", DeviceType: "Other"})
	f.Events.Publish(events.Event{Type: events.DeviceConnected, DeviceID: "a", DeviceType: "WeatherStation", Args: &events.Connected{Transport: "mqtt"}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, noServe, []string{"events", "--from", "1", "--device-type", "WeatherStation", "--server", url, "--token", apitest.ViewerToken}, &out, &errb)
	}()
	apitest.WaitFor(t, 5*time.Second, func() bool { return strings.Contains(out.String(), "\n") })
	cancel()
	<-done
	if want := "2\t2025-01-02T03:04:05Z\tdevice_connected\ta\tWeatherStation\t{\"generation\":0,\"transport\":\"mqtt\"}\n"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
}

func TestTokenSources(t *testing.T) {
	_, url := hub(t)
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin.token"), []byte(apitest.AdminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := t.TempDir()

	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
	}{
		{"file via --data-dir", nil, []string{"--server", url, "--data-dir", dir}, 0},
		{"file via env data dir", map[string]string{"DEVICEHUB_DATA_DIR": dir}, []string{"--server", url}, 0},
		{"env token and server", map[string]string{"DEVICEHUB_TOKEN": apitest.ViewerToken, "DEVICEHUB_SERVER": url}, []string{"--data-dir", empty}, 0},
		{"flag token over env", map[string]string{"DEVICEHUB_TOKEN": "wrong"}, []string{"--server", url, "--token", apitest.ViewerToken}, 0},
		{"no token anywhere", nil, []string{"--server", url, "--data-dir", empty}, ExitUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			r := runCLI(t, ctx, noServe, append([]string{"devices"}, tt.args...)...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", r.code, tt.code, r.err)
			}
		})
	}
}

func TestServe(t *testing.T) {
	var gotPath string
	var got config.Overrides
	serve := func(ctx context.Context, path string, o config.Overrides) error {
		if ctx.Err() != nil {
			return errors.New("context already done")
		}
		gotPath, got = path, o
		return nil
	}
	str := func(p *string) string {
		if p == nil {
			return "<nil>"
		}
		return *p
	}
	tests := []struct {
		name                 string
		args                 []string
		path                 string
		dataDir, mqtt, httpA string
	}{
		{"no flags", []string{"serve"}, "", "<nil>", "<nil>", "<nil>"},
		{"all flags", []string{"serve", "--config", "hub.yml", "--data-dir", "/d", "--mqtt-addr", ":1", "--http-addr", ":2"}, "hub.yml", "/d", ":1", ":2"},
		{"data dir before the command", []string{"--data-dir", "/e", "serve"}, "", "/e", "<nil>", "<nil>"},
		{"empty value is still given", []string{"serve", "--mqtt-addr", ""}, "", "<nil>", "", "<nil>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, context.Background(), serve, tt.args...)
			if r.code != 0 {
				t.Fatalf("exit %d: %s", r.code, r.err)
			}
			if gotPath != tt.path || str(got.DataDir) != tt.dataDir || str(got.MQTTAddr) != tt.mqtt || str(got.HTTPAddr) != tt.httpA {
				t.Errorf("serve(%q, data %s mqtt %s http %s)", gotPath, str(got.DataDir), str(got.MQTTAddr), str(got.HTTPAddr))
			}
		})
	}
	failing := func(context.Context, string, config.Overrides) error {
		return fmt.Errorf("config: %w", config.ErrInvalid)
	}
	if r := runCLI(t, context.Background(), failing, "serve"); r.code != ExitError || !strings.Contains(r.err, "invalid configuration") {
		t.Errorf("failing serve: exit %d, stderr %q", r.code, r.err)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"unknown command", []string{"frobnicate"}},
		{"unknown flag", []string{"devices", "--colour"}},
		{"bad output", []string{"devices", "-o", "yaml"}},
		{"extra argument", []string{"devices", "get", "a", "b"}},
		{"serve with an argument", []string{"serve", "x"}},
		{"bad flag value", []string{"devices", "--limit", "many"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, context.Background(), noServe, tt.args...)
			if r.code != ExitUsage || !strings.Contains(r.err, "--help") {
				t.Errorf("exit %d, stderr %q", r.code, r.err)
			}
		})
	}
	if r := runCLI(t, context.Background(), noServe); r.code != 0 || !strings.Contains(r.out, "Available Commands") {
		t.Errorf("no args: exit %d, output %q", r.code, r.out)
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"nil", nil, 0},
		{"plain", errors.New("x"), 1},
		{"usage", &usageError{err: errors.New("x")}, 2},
		{"not found", fmt.Errorf("get: %w", &client.Error{Status: 404}), 3},
		{"unauthorized", &client.Error{Status: 401}, 4},
		{"forbidden", &client.Error{Status: 403}, 4},
		{"no token", fmt.Errorf("%w: hint", errNoToken), 4},
		{"server error", &client.Error{Status: 500}, 1},
		{"conflict", &client.Error{Status: 409}, 1},
	}
	for _, tt := range tests {
		if got := ExitCode(tt.err); got != tt.want {
			t.Errorf("%s: ExitCode = %d, want %d", tt.name, got, tt.want)
		}
	}
}
