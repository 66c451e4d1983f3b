package hub_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/eventually"
)

type apiTwin struct {
	Desired struct {
		Version int64          `json:"version"`
		Values  map[string]any `json:"values"`
	} `json:"desired"`
	Reported struct {
		Values   map[string]any       `json:"values"`
		KeyTimes map[string]time.Time `json:"key_times"`
	} `json:"reported"`
	Delta map[string]struct {
		Desired       any  `json:"desired"`
		Reported      any  `json:"reported"`
		NeverReported bool `json:"never_reported"`
	} `json:"delta"`
}

// TestE2ETwin: two writers patch the desired properties from the same
// version: the second is refused with 412 and the current version, and
// nothing of the first is lost; the delta empties once the device
// reports what is desired, with twin_delta_changed events to follow.
func TestE2ETwin(t *testing.T) {
	th := startHub(t, "")
	var rec eventRecorder
	sub, err := th.Subscribe(events.Filter{Types: []events.Type{events.TwinDeltaChanged, events.TwinDesiredChanged, events.TwinReportedChanged}}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	c := th.provision(t, "tw-1", "WeatherStation")

	var out struct {
		Twin apiTwin `json:"twin"`
	}
	if code := th.do(t, "PATCH", "/api/v1/devices/tw-1/twin/desired", map[string]any{"patch": map[string]any{"interval": 30}, "version": 0}, &out); code != 200 || out.Twin.Desired.Version != 1 {
		t.Fatalf("first patch: %d %+v", code, out)
	}
	// A second writer that read version 0 too.
	var e struct {
		Error struct {
			Code           string `json:"code"`
			CurrentVersion int64  `json:"current_version"`
		} `json:"error"`
	}
	if code := th.do(t, "PATCH", "/api/v1/devices/tw-1/twin/desired", map[string]any{"patch": map[string]any{"led": "on"}, "version": 0}, &e); code != http.StatusPreconditionFailed ||
		e.Error.Code != "version_conflict" || e.Error.CurrentVersion != 1 {
		t.Fatalf("stale patch: %d %+v", code, e)
	}
	if code := th.do(t, "PUT", "/api/v1/devices/tw-1/twin/desired", map[string]any{"values": map[string]any{"x": 1}}, &e); code != http.StatusPreconditionRequired {
		t.Fatalf("put without a version: %d %+v", code, e)
	}
	// It reads again and retries: both changes are there.
	req, _ := http.NewRequest("PATCH", th.base+"/api/v1/devices/tw-1/twin/desired", jsonBody(map[string]any{"patch": map[string]any{"led": "on"}}))
	req.Header.Set("Authorization", "Bearer "+th.token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("If-Match", `"1"`)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("ETag") != `"2"` {
		t.Fatalf("retry with If-Match: %d, ETag %q", resp.StatusCode, resp.Header.Get("ETag"))
	}
	out.Twin = apiTwin{}
	th.do(t, "GET", "/api/v1/devices/tw-1/twin", nil, &out)
	if out.Twin.Desired.Version != 2 || out.Twin.Desired.Values["interval"] != 30.0 || out.Twin.Desired.Values["led"] != "on" ||
		len(out.Twin.Delta) != 2 || !out.Twin.Delta["led"].NeverReported {
		t.Fatalf("twin after the retry: %+v", out.Twin)
	}

	// The device reports: first one key, then the other.
	d := dialCommandDevice(t, th, "tw-1", c, false)
	mc := &mqttClient{Client: d.Client}
	if _, err := publish(t, mc, "devices/tw-1/twin/reported", `{"interval": 30, "led": "off"}`); err != nil {
		t.Fatal(err)
	}
	out.Twin = apiTwin{}
	th.do(t, "GET", "/api/v1/devices/tw-1/twin", nil, &out)
	if len(out.Twin.Delta) != 1 || out.Twin.Delta["led"].Reported != "off" || out.Twin.Reported.KeyTimes["interval"].IsZero() {
		t.Fatalf("twin after the first report: %+v", out.Twin)
	}
	if _, err := publish(t, mc, "devices/tw-1/twin/reported", `{"led": "on"}`); err != nil {
		t.Fatal(err)
	}
	out.Twin = apiTwin{}
	th.do(t, "GET", "/api/v1/devices/tw-1/twin", nil, &out)
	if len(out.Twin.Delta) != 0 || !out.Twin.Reported.KeyTimes["led"].After(out.Twin.Reported.KeyTimes["interval"]) &&
		!out.Twin.Reported.KeyTimes["led"].Equal(out.Twin.Reported.KeyTimes["interval"]) {
		t.Fatalf("twin in step: %+v", out.Twin)
	}
	// Convergence as a monitor sees it: [interval] → [interval led] →
	// [led] → in step.
	var got []string
	eventually.True(t, 10*time.Second, "four twin_delta_changed", func() bool {
		got = got[:0]
		for _, e := range rec.of(events.TwinDeltaChanged, "tw-1") {
			a := e.Args.(*events.TwinDelta)
			got = append(got, strings.Join(a.Keys, "+"))
		}
		return len(got) >= 4
	})
	if strings.Join(got, " ") != "interval interval+led led " {
		t.Fatalf("delta events %q", got)
	}
	if rs := rec.of(events.TwinReportedChanged, "tw-1"); len(rs) != 2 || rs[1].Args.(*events.TwinReported).Version != 2 {
		t.Fatalf("reported events %+v", rs)
	}
	if ds := rec.of(events.TwinDesiredChanged, "tw-1"); len(ds) != 2 || ds[1].Args.(*events.TwinDesired).Patch["led"] != "on" || len(ds[1].Args.(*events.TwinDesired).Patch) != 1 {
		t.Fatalf("desired events %+v", ds)
	}
}

func jsonBody(v any) *bytes.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}
