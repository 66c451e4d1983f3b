package deviceconfig

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/devicehub/devicehub/events"
)

// render renders templates for device d1 with the json backend and returns
// the checksum.
func renderSum(t *testing.T, overrides map[string]any, tpls ...*Template) string {
	t.Helper()
	be, _ := NewBackends()
	b, _ := be.Get("json")
	out, err := Render(Input{Device: DeviceInfo{ID: "d1", Type: "router"}, Templates: tpls, Overrides: overrides, Backend: b})
	if err != nil {
		t.Fatal(err)
	}
	return out.Checksum
}

func types(sig []Signal) []events.Type {
	var out []events.Type
	for _, s := range sig {
		out = append(out, s.Type)
	}
	return out
}

func TestConfigSignals(t *testing.T) {
	ntp := &Template{ID: "ntp", Config: map[string]any{"ntp": map[string]any{"server": "a"}}}
	log := &Template{ID: "log", Config: map[string]any{"log": map[string]any{"level": "info"}}}
	// Two templates that set the same key: their order decides the render.
	ntpB := &Template{ID: "ntp-b", Config: map[string]any{"ntp": map[string]any{"server": "b"}}}
	sumNL := renderSum(t, nil, ntp, log)
	sumLN := renderSum(t, nil, log, ntp)
	sumNB := renderSum(t, nil, ntp, ntpB)
	sumBN := renderSum(t, nil, ntpB, ntp)
	if sumNL != sumLN {
		t.Fatal("templates with disjoint keys must render the same in any order")
	}
	if sumNB == sumBN {
		t.Fatal("templates with the same key must render differently when reordered")
	}
	sumOver := renderSum(t, map[string]any{"ntp": map[string]any{"server": "c"}}, ntp, log)

	exists := func(st Status, sum string) Snapshot {
		return Snapshot{Exists: true, Backend: "json", Checksum: sum, Status: st}
	}
	tests := []struct {
		name string
		tr   Transition
		want []events.Type
		// previous status / action of config_modified when it fires
		prev, action string
	}{
		{name: "creation fires nothing",
			tr:   Transition{Before: Snapshot{}, After: exists(StatusModified, sumNL), Action: events.ActionConfigChanged},
			want: nil},
		{name: "override changes render: modified from applied",
			tr:   Transition{Before: exists(StatusApplied, sumNL), After: exists(StatusModified, sumOver), Action: events.ActionConfigChanged},
			want: []events.Type{events.ConfigModified, events.ConfigStatusChanged}, prev: "applied", action: "config_changed"},
		{name: "already modified: config_modified anyway, no status change",
			tr:   Transition{Before: exists(StatusModified, sumNL), After: exists(StatusModified, sumOver), Action: events.ActionConfigChanged},
			want: []events.Type{events.ConfigModified}, prev: "modified", action: "config_changed"},
		{name: "reorder that changes the render fires once",
			tr:   Transition{Before: exists(StatusApplied, sumNB), After: exists(StatusModified, sumBN), Action: events.ActionM2MTemplatesChanged},
			want: []events.Type{events.ConfigModified, events.ConfigStatusChanged}, prev: "applied", action: "m2m_templates_changed"},
		{name: "reorder with an unchanged render fires nothing",
			tr:   Transition{Before: exists(StatusApplied, sumNL), After: exists(StatusApplied, sumLN), Action: events.ActionM2MTemplatesChanged},
			want: nil},
		{name: "template edit reaches the device",
			tr:   Transition{Before: exists(StatusError, sumNL), After: exists(StatusModified, sumOver), Action: events.ActionRelatedTemplateChanged},
			want: []events.Type{events.ConfigModified, events.ConfigStatusChanged}, prev: "error", action: "related_template_changed"},
		{name: "template edit with an unchanged render fires nothing",
			tr:   Transition{Before: exists(StatusApplied, sumNL), After: exists(StatusApplied, sumNL), Action: events.ActionRelatedTemplateChanged},
			want: nil},
		{name: "backend change on an existing config",
			tr: Transition{Before: exists(StatusApplied, sumNL),
				After: Snapshot{Exists: true, Backend: "yaml", Checksum: "y", Status: StatusModified}, Action: events.ActionConfigChanged},
			want: []events.Type{events.ConfigBackendChanged, events.ConfigModified, events.ConfigStatusChanged}, prev: "applied", action: "config_changed"},
		{name: "backend set at creation fires nothing",
			tr:   Transition{After: Snapshot{Exists: true, Backend: "yaml", Checksum: "y", Status: StatusModified}, Action: events.ActionConfigChanged},
			want: nil},
		{name: "applied report changes status only",
			tr:   Transition{Before: exists(StatusModified, sumNL), After: exists(StatusApplied, sumNL)},
			want: []events.Type{events.ConfigStatusChanged}},
		{name: "same status twice fires nothing",
			tr:   Transition{Before: exists(StatusApplied, sumNL), After: exists(StatusApplied, sumNL)},
			want: nil},
		{name: "deactivation",
			tr:   Transition{Before: exists(StatusApplied, sumNL), After: exists(StatusDeactivating, "empty")},
			want: []events.Type{events.ConfigStatusChanged, events.ConfigDeactivating}},
		{name: "deactivated once the device applied the empty config",
			tr:   Transition{Before: exists(StatusDeactivating, "empty"), After: exists(StatusDeactivated, "empty")},
			want: []events.Type{events.ConfigStatusChanged, events.ConfigDeactivated}},
		{name: "deactivating twice fires nothing",
			tr:   Transition{Before: exists(StatusDeactivating, "empty"), After: exists(StatusDeactivating, "empty")},
			want: nil},
		{name: "reactivation is a modification",
			tr:   Transition{Before: exists(StatusDeactivated, "empty"), After: exists(StatusModified, sumNL), Action: events.ActionConfigChanged},
			want: []events.Type{events.ConfigModified, events.ConfigStatusChanged}, prev: "deactivated", action: "config_changed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ConfigSignals(tt.tr)
			if !slices.Equal(types(got), tt.want) {
				t.Fatalf("signals = %v, want %v", types(got), tt.want)
			}
			for _, s := range got {
				if m, ok := s.Args.(*events.ConfigModifiedArgs); ok {
					if m.PreviousStatus != tt.prev || m.Action != tt.action {
						t.Fatalf("config_modified(%s, %s), want (%s, %s)", m.PreviousStatus, m.Action, tt.prev, tt.action)
					}
					if m.Checksum != tt.tr.After.Checksum || m.OldChecksum != tt.tr.Before.Checksum {
						t.Fatalf("checksums %s/%s", m.OldChecksum, m.Checksum)
					}
				}
				if st, ok := s.Args.(*events.ConfigStatusArgs); ok {
					if st.Status != string(tt.tr.After.Status) || st.OldStatus != string(tt.tr.Before.Status) {
						t.Fatalf("status args %+v", st)
					}
				}
			}
		})
	}
}

func TestApplyReport(t *testing.T) {
	cur := func(st Status) Snapshot { return Snapshot{Exists: true, Checksum: "c2", Status: st} }
	tests := []struct {
		name      string
		cur       Snapshot
		r         Report
		status    Status
		stale     bool
		working   *bool
		errorText string
	}{
		{"applied", cur(StatusModified), Report{Checksum: "c2", Applied: true}, StatusApplied, false, ptr(true), ""},
		{"error keeps the text", cur(StatusModified), Report{Checksum: "c2", Error: "disk full"}, StatusError, false, ptr(false), "disk full"},
		{"stale applied never marks the new one applied", cur(StatusModified), Report{Checksum: "c1", Applied: true}, StatusModified, true, nil, ""},
		{"stale error changes nothing", cur(StatusApplied), Report{Checksum: "c1", Error: "x"}, StatusApplied, true, nil, ""},
		{"applied again", cur(StatusApplied), Report{Checksum: "c2", Applied: true}, StatusApplied, false, ptr(true), ""},
		{"deactivating applied", cur(StatusDeactivating), Report{Checksum: "c2", Applied: true}, StatusDeactivated, false, ptr(true), ""},
		{"deactivating failed stays", cur(StatusDeactivating), Report{Checksum: "c2", Error: "busy"}, StatusDeactivating, false, ptr(false), "busy"},
		{"deactivated ignores reports", cur(StatusDeactivated), Report{Checksum: "c2", Applied: true}, StatusDeactivated, true, nil, ""},
		{"no config", Snapshot{}, Report{Checksum: "c2", Applied: true}, "", true, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ApplyReport(tt.cur, tt.r)
			if o.Status != tt.status || o.Stale != tt.stale || o.Error != tt.errorText {
				t.Fatalf("outcome %+v", o)
			}
			if (o.Working == nil) != (tt.working == nil) || (o.Working != nil && *o.Working != *tt.working) {
				t.Fatalf("working %v, want %v", o.Working, tt.working)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestWorkingSignal(t *testing.T) {
	tests := []struct {
		name      string
		old       *Management
		working   bool
		reason    string
		fire      bool
		oldNull   bool
		oldReason string
	}{
		{name: "first outcome: old values null", old: nil, working: true, fire: true, oldNull: true},
		{name: "first failure: old values null", old: &Management{}, working: false, reason: "x", fire: true, oldNull: true},
		{name: "turns false", old: &Management{IsWorking: ptr(true)}, working: false, reason: "command expired", fire: true, oldReason: ""},
		{name: "turns true", old: &Management{IsWorking: ptr(false), FailureReason: "disk"}, working: true, fire: true, oldReason: "disk"},
		{name: "stays true", old: &Management{IsWorking: ptr(true)}, working: true, fire: false},
		{name: "stays false with a new reason", old: &Management{IsWorking: ptr(false), FailureReason: "a"}, working: false, reason: "b", fire: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, fire := WorkingSignal(tt.old, tt.working, tt.reason)
			if fire != tt.fire {
				t.Fatalf("fire = %v", fire)
			}
			if !fire {
				return
			}
			b, _ := json.Marshal(a)
			var m map[string]any
			json.Unmarshal(b, &m)
			if tt.oldNull {
				if v, ok := m["old_is_working"]; !ok || v != nil {
					t.Fatalf("old_is_working = %v, want null (%s)", v, b)
				}
				if v, ok := m["old_failure_reason"]; !ok || v != nil {
					t.Fatalf("old_failure_reason = %v, want null (%s)", v, b)
				}
				return
			}
			if *a.OldIsWorking == tt.working || *a.OldFailureReason != tt.oldReason || a.IsWorking != tt.working {
				t.Fatalf("args %s", b)
			}
		})
	}
}

func TestGroupTemplatesSignal(t *testing.T) {
	tests := []struct {
		name     string
		created  bool
		old, cur []string
		fire     bool
	}{
		{"group created with templates", true, nil, []string{"a"}, false},
		{"added", false, []string{"a"}, []string{"a", "b"}, true},
		{"removed", false, []string{"a", "b"}, []string{"a"}, true},
		{"reordered", false, []string{"a", "b"}, []string{"b", "a"}, true},
		{"unchanged", false, []string{"a", "b"}, []string{"a", "b"}, false},
		{"cleared", false, []string{"a"}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, fire := GroupTemplatesSignal(tt.created, "g", tt.old, tt.cur)
			if fire != tt.fire {
				t.Fatalf("fire = %v", fire)
			}
			if fire && (a.GroupID != "g" || a.Templates == nil || a.OldTemplates == nil) {
				t.Fatalf("args %+v", a)
			}
		})
	}
}

func TestRequestSignal(t *testing.T) {
	for status, fire := range map[int]bool{200: true, 204: true, 304: false, 400: false, 401: false, 403: false, 404: false, 500: false, 503: false} {
		if RequestSignal(status) != fire {
			t.Errorf("RequestSignal(%d) = %v", status, !fire)
		}
	}
}

func TestStatusAfterRender(t *testing.T) {
	tests := []struct {
		cur     Status
		changed bool
		want    Status
	}{
		{StatusApplied, true, StatusModified},
		{StatusApplied, false, StatusApplied},
		{StatusError, true, StatusModified},
		{StatusModified, true, StatusModified},
		{StatusDeactivating, true, StatusDeactivating},
		{StatusDeactivated, true, StatusDeactivated},
	}
	for _, tt := range tests {
		if got := StatusAfterRender(tt.cur, tt.changed); got != tt.want {
			t.Errorf("StatusAfterRender(%s, %v) = %s, want %s", tt.cur, tt.changed, got, tt.want)
		}
	}
}

func TestModifyAction(t *testing.T) {
	a := &DeviceConfig{Templates: []string{"a", "b"}}
	if got := ModifyAction(a, &DeviceConfig{Templates: []string{"b", "a"}}); got != events.ActionM2MTemplatesChanged {
		t.Fatal(got)
	}
	if got := ModifyAction(a, &DeviceConfig{Templates: []string{"a", "b"}, Vars: map[string]string{"x": "1"}}); got != events.ActionConfigChanged {
		t.Fatal(got)
	}
}
