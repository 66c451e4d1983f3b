package cli

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

func TestLatest(t *testing.T) {
	f, url := hub(t)
	ctx := context.Background()
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Readings.Add(
		readings.Record{ID: 1, DeviceID: "ws-1", Time: t0, Values: map[string]any{"temperature": 20.5, "label": "x"}},
		readings.Record{ID: 2, DeviceID: "ws-2", Time: t0.Add(time.Minute), Stream: "fast", Values: map[string]any{"temperature": 21.0}},
	)
	base := []string{"--server", url, "--token", apitest.ViewerToken}
	r := runCLI(t, ctx, noServe, append([]string{"latest"}, base...)...)
	want := "DEVICE  STREAM  FIELD        VALUE  TIME\n" +
		"ws-1    -       label        \"x\"    2025-03-01T12:00:00Z\n" +
		"ws-1    -       temperature  20.5   2025-03-01T12:00:00Z\n" +
		"ws-2    fast    temperature  21     2025-03-01T12:01:00Z\n"
	if r.code != 0 || r.out != want {
		t.Errorf("exit %d, output:\n%s\nwant:\n%s", r.code, r.out, want)
	}
	r = runCLI(t, ctx, noServe, append([]string{"latest", "--limit", "1", "--field", "temperature", "-o", "json"}, base...)...)
	var page struct {
		Devices []struct {
			DeviceID string `json:"device_id"`
		} `json:"devices"`
		Next string `json:"next"`
	}
	if err := json.Unmarshal([]byte(r.out), &page); err != nil || len(page.Devices) != 1 || page.Next != "ws-1" {
		t.Errorf("json output %q: %v", r.out, err)
	}
	if r := runCLI(t, ctx, noServe, append([]string{"latest", "extra"}, base...)...); r.code != ExitUsage {
		t.Errorf("an argument: exit %d", r.code)
	}
}

func TestAggregate(t *testing.T) {
	f, url := hub(t)
	ctx := context.Background()
	f.Devices.Put(registry.Device{ID: "ws-1", Type: "WeatherStation"})
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range 4 {
		f.Readings.Add(readings.Record{ID: int64(i), DeviceID: "ws-1", Time: t0.Add(time.Duration(i) * time.Minute), Values: map[string]any{"temperature": float64(i) + 0.5}})
	}
	base := []string{"--server", url, "--token", apitest.ViewerToken}
	r := runCLI(t, ctx, noServe, append([]string{"aggregate", "ws-1", "--field", "temperature", "--from", t0.Format(time.RFC3339), "--to", t0.Add(4 * time.Minute).Format(time.RFC3339), "--buckets", "2"}, base...)...)
	want := "START                 COUNT  MIN  MAX  AVG  LAST\n" +
		"2025-03-01T12:00:00Z  2      0.5  1.5  1    1.5\n" +
		"2025-03-01T12:02:00Z  2      2.5  3.5  3    3.5\n"
	if r.code != 0 || r.out != want {
		t.Errorf("exit %d, output:\n%s\nwant:\n%s", r.code, r.out, want)
	}
	for name, args := range map[string][]string{
		"no field":  {"aggregate", "ws-1"},
		"bad from":  {"aggregate", "ws-1", "--field", "t", "--from", "yesterday"},
		"no device": {"aggregate", "--field", "t"},
	} {
		if r := runCLI(t, ctx, noServe, append(args, base...)...); r.code != ExitUsage {
			t.Errorf("%s: exit %d", name, r.code)
		}
	}
	if r := runCLI(t, ctx, noServe, append([]string{"aggregate", "nope", "--field", "t"}, base...)...); r.code != ExitNotFound {
		t.Errorf("unknown device: exit %d", r.code)
	}
}
