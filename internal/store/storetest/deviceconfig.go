package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/deviceconfig"
)

func configChange(id string, op *deviceconfig.Op) *commit.Change {
	return &commit.Change{DeviceID: id, Ops: []commit.Op{op}}
}

func testDeviceConfig(t *testing.T, b Backend) {
	ctx := context.Background()
	provision(t, b, "cfg-a", "cfg-b")

	// Templates: a number keeps its text (json.Number) through the store.
	cfg, _ := deviceconfig.DecodeDoc([]byte(`{"ntp":{"server":"{{ ntp }}","port":123,"ratio":1.5e300},"list":[1,"x"]}`))
	tpl := &deviceconfig.Template{ID: "ntp", Name: "NTP", Config: cfg, Defaults: map[string]string{"ntp": "pool"},
		Default: true, Required: true, Types: []string{"sensor"}, Version: 1, CreatedAt: at(1), UpdatedAt: at(1)}
	mustCommit(t, b, configChange("", &deviceconfig.Op{Template: tpl}),
		configChange("", &deviceconfig.Op{Template: &deviceconfig.Template{ID: "other", Config: map[string]any{}, Version: 1, CreatedAt: at(1), UpdatedAt: at(1)}}))
	ts, err := b.ListTemplates(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 2 || ts[0].ID != "ntp" || ts[1].ID != "other" {
		t.Fatalf("templates %+v", ts)
	}
	equalJSON(t, "template", &ts[0], tpl)
	if got, _ := deviceconfig.EncodeDoc(ts[0].Config); string(got) != `{"list":[1,"x"],"ntp":{"port":123,"ratio":1.5e300,"server":"{{ ntp }}"}}` {
		t.Fatalf("template config stored as %s", got)
	}
	tpl2 := *tpl
	tpl2.Version, tpl2.Name, tpl2.UpdatedAt = 2, "NTP 2", at(2)
	mustCommit(t, b, configChange("", &deviceconfig.Op{Template: &tpl2}), configChange("", &deviceconfig.Op{DeleteTemplate: "other"}))
	ts, _ = b.ListTemplates(ctx)
	if len(ts) != 1 || ts[0].Version != 2 || ts[0].Name != "NTP 2" || !ts[0].CreatedAt.Equal(at(1)) {
		t.Fatalf("templates after update and delete: %+v", ts)
	}

	// Groups.
	g := &deviceconfig.GroupConfig{GroupID: "g1", Templates: []string{"ntp", "b", "a"}, Vars: map[string]string{"ntp": "g"}, UpdatedAt: at(3)}
	mustCommit(t, b, configChange("", &deviceconfig.Op{Group: g}))
	gs, err := b.ListGroupConfigs(ctx)
	if err != nil || len(gs) != 1 {
		t.Fatalf("groups %v %v", gs, err)
	}
	equalJSON(t, "group", &gs[0], g)

	// Device configurations, with history and management state.
	if _, err := b.GetDeviceConfig(ctx, "cfg-a"); !errors.Is(err, deviceconfig.ErrNoConfig) {
		t.Fatalf("no config yet: %v", err)
	}
	over, _ := deviceconfig.DecodeDoc([]byte(`{"z":1,"a":{"b":[true,null]}}`))
	dc := &deviceconfig.DeviceConfig{DeviceID: "cfg-a", Backend: "yaml", Templates: []string{"x", "ntp"}, Vars: map[string]string{"v": "1"},
		Overrides: over, Status: deviceconfig.StatusModified, StatusSince: at(4), Checksum: "sum1", Rendered: []byte("a: 1\n"),
		CreatedAt: at(4), UpdatedAt: at(4)}
	hist := func(sum string, sec int) *deviceconfig.HistoryEntry {
		return &deviceconfig.HistoryEntry{DeviceID: "cfg-a", Checksum: sum, Backend: "yaml", Rendered: []byte(sum), Templates: []string{"x"},
			Vars: map[string]string{}, Overrides: map[string]any{}, CreatedAt: at(sec)}
	}
	mustCommit(t, b, configChange("cfg-a", &deviceconfig.Op{Device: dc, History: hist("sum1", 4), Keep: 2}))
	got, err := b.GetDeviceConfig(ctx, "cfg-a")
	if err != nil {
		t.Fatal(err)
	}
	equalJSON(t, "device config", got, dc)
	if string(got.Rendered) != "a: 1\n" {
		t.Fatalf("rendered %q", got.Rendered)
	}
	dc2 := *dc
	dc2.Status, dc2.Checksum, dc2.AppliedChecksum, dc2.Error, dc2.UpdatedAt = deviceconfig.StatusError, "sum2", "sum1", "boom", at(5)
	mustCommit(t, b, configChange("cfg-a", &deviceconfig.Op{Device: &dc2, History: hist("sum2", 5), Keep: 2}))
	mustCommit(t, b, configChange("cfg-a", &deviceconfig.Op{History: hist("sum3", 6), Keep: 2}))
	hs, err := b.ConfigHistory(ctx, "cfg-a")
	if err != nil || len(hs) != 2 || hs[0].Checksum != "sum3" || hs[1].Checksum != "sum2" || string(hs[0].Rendered) != "sum3" {
		t.Fatalf("history keeps the newest 2, newest first: %+v %v", hs, err)
	}
	bc := &deviceconfig.DeviceConfig{DeviceID: "cfg-b", Backend: "json", Status: deviceconfig.StatusApplied, StatusSince: at(6),
		Checksum: "b", Rendered: []byte("{}"), CreatedAt: at(6), UpdatedAt: at(6)}
	mustCommit(t, b, configChange("cfg-b", &deviceconfig.Op{Device: bc}))

	rows, err := b.ListDeviceConfigs(ctx, deviceconfig.ListQuery{})
	if err != nil || len(rows) != 2 {
		t.Fatalf("list %v %v", rows, err)
	}
	if rows[0].DeviceID != "cfg-a" || rows[0].Device != (deviceconfig.DeviceInfo{ID: "cfg-a", Name: "name of cfg-a", Type: "sensor", Group: "g1"}) ||
		rows[0].Rendered != nil || rows[0].Status != deviceconfig.StatusError || rows[0].Error != "boom" || rows[0].AppliedChecksum != "sum1" {
		t.Fatalf("row %+v", rows[0])
	}
	for _, tt := range []struct {
		name string
		q    deviceconfig.ListQuery
		want []string
	}{
		{"not applied", deviceconfig.ListQuery{NotApplied: true}, []string{"cfg-a"}},
		{"by status", deviceconfig.ListQuery{Status: deviceconfig.StatusApplied}, []string{"cfg-b"}},
		{"paged", deviceconfig.ListQuery{After: "cfg-a", Limit: 1}, []string{"cfg-b"}},
		{"first page", deviceconfig.ListQuery{Limit: 1}, []string{"cfg-a"}},
	} {
		rows, err := b.ListDeviceConfigs(ctx, tt.q)
		var ids []string
		for _, r := range rows {
			ids = append(ids, r.DeviceID)
		}
		if err != nil || len(ids) != len(tt.want) || (len(ids) > 0 && ids[0] != tt.want[0]) {
			t.Fatalf("%s: %v %v", tt.name, ids, err)
		}
	}
	if d, err := b.ConfigDevice(ctx, "cfg-b"); err != nil || d.Name != "name of cfg-b" || d.Type != "sensor" || d.Group != "g1" {
		t.Fatalf("config device %+v %v", d, err)
	}
	if _, err := b.ConfigDevice(ctx, "nope"); !errors.Is(err, deviceconfig.ErrDeviceNotFound) {
		t.Fatalf("missing device: %v", err)
	}

	if m, err := b.GetManagement(ctx, "cfg-a"); m != nil || err != nil {
		t.Fatalf("no management state yet: %v %v", m, err)
	}
	yes := false
	mustCommit(t, b, configChange("cfg-a", &deviceconfig.Op{Management: &deviceconfig.Management{DeviceID: "cfg-a", IsWorking: &yes, FailureReason: "x", UpdatedAt: at(7)}}))
	m, err := b.GetManagement(ctx, "cfg-a")
	if err != nil || m.IsWorking == nil || *m.IsWorking || m.FailureReason != "x" || !m.UpdatedAt.Equal(at(7)) {
		t.Fatalf("management %+v %v", m, err)
	}

	// An op about a device that does not exist fails its change alone.
	ch := configChange("ghost", &deviceconfig.Op{Device: &deviceconfig.DeviceConfig{DeviceID: "ghost", Backend: "json", Status: "modified",
		StatusSince: at(8), CreatedAt: at(8), UpdatedAt: at(8)}})
	mustCommit(t, b, ch)
	if !errors.Is(ch.Err, commit.ErrDeviceNotFound) {
		t.Fatalf("config of a missing device: %v", ch.Err)
	}
	if _, err := b.GetDeviceConfig(ctx, "ghost"); !errors.Is(err, deviceconfig.ErrNoConfig) {
		t.Fatalf("ghost config stored: %v", err)
	}
}
