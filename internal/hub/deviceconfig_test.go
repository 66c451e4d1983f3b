package hub_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/hub"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

type configAnswer struct {
	Config struct {
		Checksum string `json:"checksum"`
		Status   string `json:"status"`
		Error    string `json:"error"`
		Rendered string `json:"rendered"`
	} `json:"config"`
	OldChecksum string `json:"old_checksum"`
}

func (th *testHub) configStatus(t *testing.T, id string) string {
	t.Helper()
	var out configAnswer
	if code := th.do(t, "GET", "/api/v1/devices/"+id+"/config", nil, &out); code != 200 {
		t.Fatalf("get config of %s: %d", id, code)
	}
	return out.Config.Status
}

// deviceGet is a device's HTTP request with its API key.
func deviceGet(t *testing.T, base, key, path, ifNoneMatch string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+path, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if ifNoneMatch != "" {
		req.Header.Set("If-None-Match", ifNoneMatch)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func devicePost(t *testing.T, base, key, path, body string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type notice struct {
	Checksum string `json:"checksum"`
	URL      string `json:"url"`
	Backend  string `json:"backend"`
}

// notices returns the config notices the client received, in order.
func (mc *mqttClient) notices(t *testing.T, id string) []notice {
	var out []notice
	for _, p := range mc.received() {
		if p.Topic != "devices/"+id+"/config" {
			continue
		}
		var n notice
		if err := json.Unmarshal(p.Payload, &n); err != nil {
			t.Fatalf("notice %s: %v", p.Payload, err)
		}
		out = append(out, n)
	}
	return out
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestConfigEndToEndMQTT: a device that was offline gets its retained
// notice when it subscribes, downloads, applies and reports over MQTT; a
// template change reaches it while online; a stale report changes
// nothing; deactivation ends with 404s.
func TestConfigEndToEndMQTT(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			extra := ""
			if backend == "postgres" {
				extra = postgresStorage(t)
			}
			testConfigEndToEndMQTT(t, startHub(t, extra))
		})
	}
}

func testConfigEndToEndMQTT(t *testing.T, th *testHub) {
	rec := &eventRecorder{}
	sub, err := th.Subscribe(events.Filter{}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	c := th.provision(t, "r1", "WeatherStation")

	if code := th.do(t, "POST", "/api/v1/templates", map[string]any{"id": "ntp",
		"config":   map[string]any{"ntp": map[string]any{"server": "{{ ntp_server }}"}, "id": "{{ device_id }}"},
		"defaults": map[string]string{"ntp_server": "pool.ntp.org"}}, nil); code != 201 {
		t.Fatalf("create template: %d", code)
	}
	var set configAnswer
	if code := th.do(t, "PUT", "/api/v1/devices/r1/config", map[string]any{"templates": []string{"ntp"}}, &set); code != 200 {
		t.Fatalf("set config: %d", code)
	}
	c1 := set.Config.Checksum

	// The device was offline: it learns of its configuration on subscribe.
	mc, _, err := dial(t, th.MQTTAddr(), "r1", c.MQTTUsername, c.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := mc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "devices/r1/config", QoS: 1}, {Topic: "devices/r1/errors", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "retained notice", func() bool { return len(mc.notices(t, "r1")) == 1 })
	n := mc.notices(t, "r1")[0]
	if n.Checksum != c1 || n.Backend != "json" || n.URL != "/api/v1/device/config" {
		t.Fatalf("notice %+v, want checksum %s", n, c1)
	}
	apply := func(n notice) {
		t.Helper()
		code, h, body := deviceGet(t, th.base, c.APIKey, n.URL, "")
		if code != 200 || sum(body) != n.Checksum || h.Get("ETag") != `"`+n.Checksum+`"` {
			t.Fatalf("download: %d etag %s body %s", code, h.Get("ETag"), body)
		}
		if _, err := publish(t, mc, "devices/r1/config/status", `{"checksum":"`+n.Checksum+`","status":"applied"}`); err != nil {
			t.Fatal(err)
		}
	}
	apply(n)
	eventually.True(t, 10*time.Second, "applied", func() bool { return th.configStatus(t, "r1") == "applied" })
	if len(rec.of(events.ConfigModified, "r1")) != 0 {
		t.Fatal("config_modified on creation")
	}

	// A template change reaches the online device at once.
	var upd struct {
		Job struct {
			ID       string `json:"id"`
			Affected int    `json:"affected"`
		} `json:"job"`
	}
	if code := th.do(t, "PUT", "/api/v1/templates/ntp", map[string]any{
		"config":   map[string]any{"ntp": map[string]any{"server": "{{ ntp_server }}"}, "id": "{{ device_id }}"},
		"defaults": map[string]string{"ntp_server": "time.example"}}, &upd); code != 200 || upd.Job.ID == "" || upd.Job.Affected != 1 {
		t.Fatalf("update template: %d %+v", code, upd)
	}
	eventually.True(t, 10*time.Second, "second notice", func() bool { return len(mc.notices(t, "r1")) == 2 })
	n2 := mc.notices(t, "r1")[1]
	if n2.Checksum == c1 {
		t.Fatal("the notice did not change")
	}
	mods := rec.of(events.ConfigModified, "r1")
	if len(mods) != 1 {
		t.Fatalf("%d config_modified", len(mods))
	}
	if a := mods[0].Args.(*events.ConfigModifiedArgs); a.Action != "related_template_changed" || a.PreviousStatus != "applied" || a.Checksum != n2.Checksum {
		t.Fatalf("config_modified %+v", a)
	}
	if th.configStatus(t, "r1") != "modified" {
		t.Fatal("status not modified")
	}

	// A stale report (the old checksum) never marks the new one applied:
	// it is refused (PUBACK reason code, and why on devices/r1/errors).
	if _, err := publish(t, mc, "devices/r1/config/status", `{"checksum":"`+c1+`","status":"applied"}`); err == nil {
		t.Fatal("a stale report was acknowledged as accepted")
	}
	eventually.True(t, 10*time.Second, "stale report refused", func() bool {
		for _, p := range mc.received() {
			if p.Topic == "devices/r1/errors" && strings.Contains(string(p.Payload), "stale_checksum") {
				return true
			}
		}
		return false
	})
	if th.configStatus(t, "r1") != "modified" {
		t.Fatal("a stale report changed the status")
	}
	apply(n2)
	eventually.True(t, 10*time.Second, "applied again", func() bool { return th.configStatus(t, "r1") == "applied" })

	// An error report: status error, the channel is not working.
	if code := th.do(t, "PUT", "/api/v1/devices/r1/config", map[string]any{"overrides": map[string]any{"extra": 1}}, &set); code != 200 {
		t.Fatalf("set overrides: %d", code)
	}
	eventually.True(t, 10*time.Second, "third notice", func() bool { return len(mc.notices(t, "r1")) == 3 })
	if _, err := publish(t, mc, "devices/r1/config/status", `{"checksum":"`+set.Config.Checksum+`","status":"error","error":"read-only fs"}`); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "error status", func() bool { return th.configStatus(t, "r1") == "error" })
	eventually.True(t, 10*time.Second, "is_working false", func() bool {
		for _, e := range rec.of(events.IsWorkingChanged, "r1") {
			if a := e.Args.(*events.IsWorkingArgs); !a.IsWorking && a.FailureReason == "read-only fs" {
				return true
			}
		}
		return false
	})

	// The audit trail has the old and new checksums of each change.
	var audit struct {
		Entries []struct {
			OperationID string `json:"operation_id"`
			Detail      string `json:"detail"`
		} `json:"entries"`
	}
	if code := th.do(t, "GET", "/api/v1/audit?target=r1", nil, &audit); code != 200 {
		t.Fatalf("audit: status %d", code)
	}
	found := false
	for _, e := range audit.Entries {
		if e.OperationID == "setDeviceConfig" && strings.Contains(e.Detail, set.OldChecksum+" -> "+set.Config.Checksum) {
			found = true
		}
	}
	if !found {
		t.Fatalf("audit trail without checksums: %+v", audit)
	}

	// Deactivation: the empty configuration, then 404.
	var deact configAnswer
	if code := th.do(t, "POST", "/api/v1/devices/r1/config/deactivate", nil, &deact); code != 200 || deact.Config.Status != "deactivating" {
		t.Fatalf("deactivate: %d %+v", code, deact)
	}
	eventually.True(t, 10*time.Second, "deactivation notice", func() bool { return len(mc.notices(t, "r1")) == 4 })
	n4 := mc.notices(t, "r1")[3]
	apply(n4)
	eventually.True(t, 10*time.Second, "deactivated", func() bool { return th.configStatus(t, "r1") == "deactivated" })
	if code, _, _ := deviceGet(t, th.base, c.APIKey, "/api/v1/device/config", ""); code != 404 {
		t.Fatalf("download of a deactivated config: %d", code)
	}
	if code, _, _ := deviceGet(t, th.base, c.APIKey, "/api/v1/device/config/checksum", ""); code != 404 {
		t.Fatalf("checksum of a deactivated config: %d", code)
	}
	eventually.True(t, 10*time.Second, "deactivation signals", func() bool {
		return len(rec.of(events.ConfigDeactivating, "r1")) == 1 && len(rec.of(events.ConfigDeactivated, "r1")) == 1
	})
}

// TestConfigHTTPPolling: a device that polls with its API key and
// If-None-Match, like the OpenWISP agent.
func TestConfigHTTPPolling(t *testing.T) {
	th := startHub(t, "")
	rec := &eventRecorder{}
	sub, err := th.Subscribe(events.Filter{Types: []events.Type{events.ChecksumRequested, events.ConfigDownloadRequested}}, 0, rec.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	c := th.provision(t, "p1", "WeatherStation")
	other := th.provision(t, "p2", "WeatherStation")

	// No configuration yet: 404, and no signal.
	if code, _, _ := deviceGet(t, th.base, c.APIKey, "/api/v1/device/config/checksum", ""); code != 404 {
		t.Fatalf("checksum without config: %d", code)
	}
	if code, _, _ := deviceGet(t, th.base, "bad-key", "/api/v1/device/config/checksum", ""); code != 401 {
		t.Fatalf("bad key: %d", code)
	}
	if code := th.do(t, "PUT", "/api/v1/devices/p1/config", map[string]any{"backend": "env",
		"overrides": map[string]any{"ntp": map[string]any{"server": "{{ srv }}"}}, "vars": map[string]string{"srv": "a.example"}}, nil); code != 200 {
		t.Fatalf("set config: %d", code)
	}
	code, h, body := deviceGet(t, th.base, c.APIKey, "/api/v1/device/config/checksum", "")
	if code != 200 || len(body) != 64 || h.Get("ETag") != `"`+string(body)+`"` {
		t.Fatalf("checksum: %d %s %s", code, h.Get("ETag"), body)
	}
	etag := h.Get("ETag")
	code, _, body2 := deviceGet(t, th.base, c.APIKey, "/api/v1/device/config/checksum", etag)
	if code != 304 || len(body2) != 0 {
		t.Fatalf("checksum with If-None-Match: %d %q", code, body2)
	}
	code, h, cfg := deviceGet(t, th.base, c.APIKey, "/api/v1/device/config", "")
	if code != 200 || string(cfg) != "NTP_SERVER=\"a.example\"\n" || sum(cfg) != string(body) || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
		t.Fatalf("download: %d %q %s", code, cfg, h.Get("Content-Type"))
	}
	if code, _, b := deviceGet(t, th.base, c.APIKey, "/api/v1/device/config", etag); code != 304 || len(b) != 0 {
		t.Fatalf("download with If-None-Match: %d", code)
	}
	// Only the two 200s fired, each once.
	eventually.True(t, 10*time.Second, "request signals", func() bool {
		return len(rec.of(events.ChecksumRequested, "p1")) == 1 && len(rec.of(events.ConfigDownloadRequested, "p1")) == 1
	})
	if a := rec.of(events.ChecksumRequested, "p1")[0].Args.(*events.ConfigRequestArgs); a.Checksum != string(body) || a.Transport != "http" {
		t.Fatalf("checksum_requested %+v", a)
	}

	// Reports over HTTP: a stale one is 409, the current one applies.
	if code, b := devicePost(t, th.base, c.APIKey, "/api/v1/device/config/status", `{"checksum":"0000","status":"applied"}`); code != 409 || !strings.Contains(string(b), "stale_checksum") {
		t.Fatalf("stale report: %d %s", code, b)
	}
	if code, b := devicePost(t, th.base, c.APIKey, "/api/v1/device/config/status", `{"checksum":"`+string(body)+`","status":"applied"}`); code != 200 || !strings.Contains(string(b), `"applied"`) {
		t.Fatalf("report: %d %s", code, b)
	}
	if code, _ := devicePost(t, th.base, other.APIKey, "/api/v1/device/config/status", `{"checksum":"`+string(body)+`","status":"applied"}`); code != 404 {
		t.Fatalf("report of a device without config: %d", code)
	}
	if len(rec.of(events.ChecksumRequested, "p2")) != 0 {
		t.Fatal("a signal for an error answer")
	}
	// Not applied list.
	var list struct {
		Configs []struct {
			DeviceID string `json:"device_id"`
			Status   string `json:"status"`
		} `json:"configs"`
	}
	if code := th.do(t, "GET", "/api/v1/configs?not_applied=true", nil, &list); code != 200 || len(list.Configs) != 0 {
		t.Fatalf("not applied: %d %+v", code, list)
	}
}

// TestConfigGroupOnly: devices with no template of their own are
// configured by their group's templates: those already in the group when
// it gets templates, those created in it, and those moved into it.
func TestConfigGroupOnly(t *testing.T) {
	th := startHub(t, "")
	if code := th.do(t, "POST", "/api/v1/templates", map[string]any{"id": "site",
		"config": map[string]any{"site": "{{ site }}", "id": "{{ device_id }}"}}, nil); code != 201 {
		t.Fatalf("create template: %d", code)
	}
	if code := th.do(t, "POST", "/api/v1/groups", map[string]any{"id": "north"}, nil); code != 201 {
		t.Fatalf("create group: %d", code)
	}
	hasConfig := func(id string) (configAnswer, int) {
		var out configAnswer
		code := th.do(t, "GET", "/api/v1/devices/"+id+"/config", nil, &out)
		return out, code
	}
	th.provision(t, "early", "WeatherStation")
	if code := th.do(t, "PATCH", "/api/v1/devices/early", map[string]any{"group": "north"}, nil); code != 200 {
		t.Fatalf("move early: %d", code)
	}
	if _, code := hasConfig("early"); code != 404 {
		t.Fatalf("early has a config before its group has templates: %d", code)
	}
	// The group's template needs a variable the group does not give yet:
	// refused, naming the device.
	var refused map[string]any
	if code := th.do(t, "PUT", "/api/v1/groups/north/config", map[string]any{"templates": []string{"site"}}, &refused); code != 422 {
		t.Fatalf("group templates with a missing variable: %d %v", code, refused)
	}
	if code := th.do(t, "PUT", "/api/v1/groups/north/config", map[string]any{"templates": []string{"site"}, "vars": map[string]string{"site": "n1"}}, nil); code != 200 {
		t.Fatalf("set group config: %d", code)
	}
	if c, code := hasConfig("early"); code != 200 || c.Config.Status != "modified" || !strings.Contains(c.Config.Rendered, `"n1"`) {
		t.Fatalf("early: %d %+v", code, c)
	}
	// Created in the group.
	if code := th.do(t, "POST", "/api/v1/devices", map[string]any{"id": "born", "type": "WeatherStation", "group": "north"}, nil); code != 201 {
		t.Fatalf("provision born: %d", code)
	}
	eventually.True(t, 10*time.Second, "born configured", func() bool {
		c, code := hasConfig("born")
		return code == 200 && strings.Contains(c.Config.Rendered, `"born"`)
	})
	// Moved into the group.
	th.provision(t, "mover", "WeatherStation")
	if _, code := hasConfig("mover"); code != 404 {
		t.Fatalf("mover has a config outside the group: %d", code)
	}
	if code := th.do(t, "PATCH", "/api/v1/devices/mover", map[string]any{"group": "north"}, nil); code != 200 {
		t.Fatalf("move mover: %d", code)
	}
	eventually.True(t, 10*time.Second, "mover configured", func() bool {
		c, code := hasConfig("mover")
		return code == 200 && strings.Contains(c.Config.Rendered, `"mover"`)
	})
}

// TestConfigDefaultsAfterRestart: a device created while the hub was down
// (by another process on the same database, or committed just before a
// crash, before configuration management saw it) gets its default
// templates when the hub starts again: configuration management follows
// the durable log from where it stopped.
func TestConfigDefaultsAfterRestart(t *testing.T) {
	dir := t.TempDir()
	th := startHubIn(t, dir, "", "")
	if code := th.do(t, "POST", "/api/v1/templates", map[string]any{"id": "base", "default": true, "types": []string{"WeatherStation"},
		"config": map[string]any{"id": "{{ device_id }}"}}, nil); code != 201 {
		t.Fatalf("create template: %d", code)
	}
	th.provision(t, "before", "WeatherStation")
	// The configuration appears once the observer has seen the device:
	// a 404 before that is no failure.
	eventually.True(t, 60*time.Second, "before configured", func() bool {
		var out configAnswer
		return th.do(t, "GET", "/api/v1/devices/before/config", nil, &out) == 200 && out.Config.Status == "modified"
	})
	th.stop()

	// Created while the hub is down, as the registry creates devices.
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(dir, "devicehub.db")})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := commit.NewEvent(events.Event{Type: events.DeviceProvisioned, Time: time.Now().UTC(), DeviceID: "during", DeviceType: "WeatherStation",
		Args: &events.Provisioned{Via: events.ViaOperator}})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Commit(ctx, []*commit.Change{{DeviceID: "during", Ops: []commit.Op{&registry.NewDevice{Type: "WeatherStation",
		MQTTUsername: "during", PasswordHash: []byte("p"), APIKeyHash: []byte("k-during"), CreatedAt: time.Now()}},
		Events: []commit.Event{ev}}}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	th = startHubIn(t, dir, "", "")
	eventually.True(t, 60*time.Second, "during configured", func() bool {
		var out configAnswer
		return th.do(t, "GET", "/api/v1/devices/during/config", nil, &out) == 200 && strings.Contains(out.Config.Rendered, `"during"`)
	})
}

// TestConfigDefaultsObserverLate: a device provisioned right after a
// default template is created gets its default templates even when the
// configuration observer starts after both. The hub serves requests before
// its observer has subscribed, and on a first start there is no stored
// cursor to cover what came in between (the observer used to start from
// the end of the log as it found it, so it skipped that device).
func TestConfigDefaultsObserverLate(t *testing.T) {
	dir := t.TempDir()
	hold := make(chan struct{})
	th := startHubBefore(t, dir, fmt.Sprintf("data_dir: %s\nmqtt:\n  addr: 127.0.0.1:0\nhttp:\n  addr: 127.0.0.1:0\n%s", dir, testTypes),
		func(h *hub.Hub) { hub.HoldConfigObserver(h, hold) })
	if code := th.do(t, "POST", "/api/v1/templates", map[string]any{"id": "base", "default": true, "types": []string{"WeatherStation"},
		"config": map[string]any{"id": "{{ device_id }}"}}, nil); code != 201 {
		t.Fatalf("create template: %d", code)
	}
	th.provision(t, "early", "WeatherStation")
	close(hold)
	eventually.True(t, 30*time.Second, "early configured", func() bool {
		var out configAnswer
		return th.do(t, "GET", "/api/v1/devices/early/config", nil, &out) == 200 && strings.Contains(out.Config.Rendered, `"early"`)
	})
}
