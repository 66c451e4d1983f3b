package deviceconfig_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/deviceconfig"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

// recorder keeps the committed events and the published notices. The
// config_templates_changed events (the cluster's, not the seed's signals)
// are kept apart, in templates.
type recorder struct {
	mu        sync.Mutex
	evs       []events.Event
	templates []events.TemplatesChangedArgs
	notices   map[string][]deviceconfig.Notice
}

func (r *recorder) Publish(evs []events.Event) {
	r.mu.Lock()
	for _, e := range evs {
		if e.Type == events.ConfigTemplatesChanged {
			r.templates = append(r.templates, *e.Args.(*events.TemplatesChangedArgs))
			continue
		}
		r.evs = append(r.evs, e)
	}
	r.mu.Unlock()
}

// takeTemplates returns the config_templates_changed arguments recorded
// since the last call.
func (r *recorder) takeTemplates() []events.TemplatesChangedArgs {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := r.templates
	r.templates = nil
	return t
}

// take returns the events recorded since the last take.
func (r *recorder) take() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.evs
	r.evs = nil
	return e
}

// brokerPub stands for the MQTT broker's publish (the end-to-end tests in
// internal/hub use the real broker).
type brokerPub struct{ r *recorder }

func (p brokerPub) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if !retain || qos != 1 || !strings.HasPrefix(topic, "devices/") || !strings.HasSuffix(topic, "/config") {
		return fmt.Errorf("unexpected publish %s retain=%v qos=%d", topic, retain, qos)
	}
	var n deviceconfig.Notice
	if err := json.Unmarshal(payload, &n); err != nil {
		return err
	}
	id := strings.TrimSuffix(strings.TrimPrefix(topic, "devices/"), "/config")
	p.r.mu.Lock()
	p.r.notices[id] = append(p.r.notices[id], n)
	p.r.mu.Unlock()
	return nil
}

type groups struct{}

func (groups) GroupExists(_ context.Context, id string) (bool, error) {
	return id == "g1" || id == "g2", nil
}

type fixture struct {
	svc *deviceconfig.Service
	st  *sqlite.Store
	c   *commit.Committer
	rec *recorder
}

func newFixture(t testing.TB, devices int) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "db"), Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{notices: map[string][]deviceconfig.Notice{}}
	c := commit.New(st, rec, commit.Options{}, nil, nil)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var batch []*commit.Change
	for i := range devices {
		id := fmt.Sprintf("d%05d", i)
		grp := "g1"
		if i%2 == 1 {
			grp = "g2"
		}
		batch = append(batch, &commit.Change{DeviceID: id, Ops: []commit.Op{&registry.NewDevice{Type: "router", Name: "Router " + id,
			Group: grp, MQTTUsername: id, PasswordHash: []byte("p"), APIKeyHash: []byte("k" + id), CreatedAt: time.Now()}}})
	}
	for len(batch) > 0 {
		n := min(len(batch), 2000)
		if err := st.Commit(ctx, batch[:n]); err != nil {
			t.Fatal(err)
		}
		batch = batch[n:]
	}
	be, err := deviceconfig.NewBackends()
	if err != nil {
		t.Fatal(err)
	}
	svc := deviceconfig.New(deviceconfig.Deps{Store: st, Committer: c, Publisher: brokerPub{rec}, Groups: groups{}, Backends: be},
		deviceconfig.Options{HistoryKeep: 3}, nil)
	if err := svc.Load(ctx); err != nil {
		t.Fatal(err)
	}
	jobDone := make(chan error, 1)
	go func() { jobDone <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-jobDone
		<-done
		st.Close()
	})
	return &fixture{svc: svc, st: st, c: c, rec: rec}
}

func ptr[T any](v T) *T { return &v }

func doc(s string) map[string]any {
	m, err := deviceconfig.DecodeDoc([]byte(s))
	if err != nil {
		panic(err)
	}
	return m
}

func typesOf(evs []events.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, string(e.Type)+":"+e.DeviceID)
	}
	return out
}

func wantEvents(t *testing.T, f *fixture, want ...string) []events.Event {
	t.Helper()
	got := f.rec.take()
	if !slices.Equal(typesOf(got), want) {
		t.Fatalf("events %v, want %v", typesOf(got), want)
	}
	return got
}

// TestServiceSignals drives the service through the seed's cases and
// checks every committed event.
func TestServiceSignals(t *testing.T) {
	f := newFixture(t, 2)
	ctx := context.Background()
	s := f.svc
	mk := func(id, cfg string, defs map[string]string) {
		t.Helper()
		if _, err := s.CreateTemplate(ctx, deviceconfig.TemplateInput{ID: id, Config: doc(cfg), Defaults: defs}); err != nil {
			t.Fatal(err)
		}
	}
	mk("ntp", `{"ntp":{"server":"{{ ntp_server }}"}}`, map[string]string{"ntp_server": "pool.ntp.org"})
	mk("log", `{"log":{"level":"info"}}`, nil)
	mk("ntp-b", `{"ntp":{"server":"b.example"}}`, nil)
	mk("needs", `{"x":"{{ site }}"}`, nil)
	wantEvents(t, f)

	// Creation fires nothing, but the device is told.
	res, err := s.SetDevice(ctx, "d00000", deviceconfig.Update{Templates: &[]string{"ntp", "log"}})
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, f)
	sum1 := res.Config.Checksum
	if n := f.rec.notices["d00000"]; len(n) != 1 || n[0].Checksum != sum1 || n[0].Backend != "json" || n[0].URL != "/api/v1/device/config" {
		t.Fatalf("notices %+v", n)
	}
	if c, err := s.Checksum("d00000"); err != nil || c != sum1 {
		t.Fatalf("checksum %s %v", c, err)
	}

	// A missing variable is refused naming it; nothing is stored.
	_, err = s.SetDevice(ctx, "d00000", deviceconfig.Update{Templates: &[]string{"ntp", "log", "needs"}})
	var mv *deviceconfig.MissingVarsError
	if !errors.As(err, &mv) || !slices.Equal(mv.Names, []string{"site"}) {
		t.Fatalf("missing variable: %v", err)
	}
	wantEvents(t, f)
	// Preview shows it too, and a fixed preview saves nothing.
	if _, err := s.Preview(ctx, "d00000", deviceconfig.Update{Templates: &[]string{"needs"}}); !errors.As(err, &mv) {
		t.Fatalf("preview: %v", err)
	}
	p, err := s.Preview(ctx, "d00000", deviceconfig.Update{Templates: &[]string{"needs"}, Vars: &map[string]string{"site": "north"}})
	if err != nil || !strings.Contains(string(p.Rendered), `"north"`) {
		t.Fatalf("preview %s %v", p.Rendered, err)
	}
	wantEvents(t, f)

	// Reorder with disjoint templates: same render, nothing fires.
	if _, err := s.SetDevice(ctx, "d00000", deviceconfig.Update{Templates: &[]string{"log", "ntp"}}); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, f)

	// The device applies it.
	if err := s.RecordReport(ctx, "d00000", "router", deviceconfig.Report{Checksum: sum1, Applied: true}, nil); err != nil {
		t.Fatal(err)
	}
	evs := wantEvents(t, f, "config_status_changed:d00000", "is_working_changed:d00000")
	if w := evs[1].Args.(*events.IsWorkingArgs); !w.IsWorking || w.OldIsWorking != nil {
		t.Fatalf("first is_working %+v", w)
	}
	// Same status twice: nothing.
	if err := s.RecordReport(ctx, "d00000", "router", deviceconfig.Report{Checksum: sum1, Applied: true}, nil); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, f)

	// Reorder that changes the render: exactly one config_modified.
	res, err = s.SetDevice(ctx, "d00000", deviceconfig.Update{Templates: &[]string{"log", "ntp", "ntp-b"}})
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, f, "config_modified:d00000", "config_status_changed:d00000")
	sum2 := res.Config.Checksum
	res, err = s.SetDevice(ctx, "d00000", deviceconfig.Update{Templates: &[]string{"log", "ntp-b", "ntp"}})
	if err != nil {
		t.Fatal(err)
	}
	evs = wantEvents(t, f, "config_modified:d00000")
	if m := evs[0].Args.(*events.ConfigModifiedArgs); m.Action != "m2m_templates_changed" || m.PreviousStatus != "modified" {
		t.Fatalf("config_modified %+v", m)
	}
	sum3 := res.Config.Checksum

	// A stale report never marks the new checksum applied.
	err = s.RecordReport(ctx, "d00000", "router", deviceconfig.Report{Checksum: sum2, Applied: true}, nil)
	if !errors.Is(err, deviceconfig.ErrStale) {
		t.Fatalf("stale report: %v", err)
	}
	if c, _ := s.Get(ctx, "d00000"); c.Status != deviceconfig.StatusModified {
		t.Fatalf("status after a stale report: %s", c.Status)
	}
	wantEvents(t, f)

	// An error report: status error with the text, channel not working.
	if err := s.RecordReport(ctx, "d00000", "router", deviceconfig.Report{Checksum: sum3, Error: "uci commit failed"}, nil); err != nil {
		t.Fatal(err)
	}
	evs = wantEvents(t, f, "config_status_changed:d00000", "is_working_changed:d00000")
	if st := evs[0].Args.(*events.ConfigStatusArgs); st.Status != "error" || st.Error != "uci commit failed" {
		t.Fatalf("status %+v", st)
	}
	if w := evs[1].Args.(*events.IsWorkingArgs); w.IsWorking || w.FailureReason != "uci commit failed" || *w.OldIsWorking != true {
		t.Fatalf("is_working %+v", w)
	}

	// Backend change.
	if _, err := s.SetDevice(ctx, "d00000", deviceconfig.Update{Backend: ptr("yaml")}); err != nil {
		t.Fatal(err)
	}
	evs = wantEvents(t, f, "config_backend_changed:d00000", "config_modified:d00000", "config_status_changed:d00000")
	if b := evs[0].Args.(*events.ConfigBackendArgs); b.Backend != "yaml" || b.OldBackend != "json" {
		t.Fatalf("backend %+v", b)
	}

	// Group templates: list change fires, variables alone do not.
	_, j, err := s.SetGroup(ctx, "g1", deviceconfig.GroupUpdate{Vars: &map[string]string{"ntp_server": "g1.ntp"}})
	if err != nil {
		t.Fatal(err)
	}
	waitJob(t, s, j)
	wantEvents(t, f, "config_modified:d00000") // its ntp server comes from the group now
	_, j, err = s.SetGroup(ctx, "g1", deviceconfig.GroupUpdate{Templates: &[]string{"log"}})
	if err != nil {
		t.Fatal(err)
	}
	if j.Affected != 1 {
		t.Fatalf("job %+v", j)
	}
	waitJob(t, s, j)
	evs = wantEvents(t, f, "group_templates_changed:") // log is in the device's list already: same render
	if g := evs[0].Args.(*events.GroupTemplatesArgs); g.GroupID != "g1" || !slices.Equal(g.Templates, []string{"log"}) || len(g.OldTemplates) != 0 {
		t.Fatalf("group args %+v", g)
	}
	if _, j, err = s.SetGroup(ctx, "g1", deviceconfig.GroupUpdate{Templates: &[]string{"log"}}); err != nil {
		t.Fatal(err)
	}
	waitJob(t, s, j)
	wantEvents(t, f)

	// A template edit that breaks a device is refused, naming it and the variable.
	_, _, err = s.UpdateTemplate(ctx, deviceconfig.TemplateInput{ID: "log", Config: doc(`{"log":{"level":"{{ level }}"}}`)})
	var be *deviceconfig.BreaksError
	if !errors.As(err, &be) || len(be.Devices) != 1 || be.Devices[0].DeviceID != "d00000" || !slices.Equal(be.Devices[0].Missing, []string{"level"}) ||
		!strings.Contains(err.Error(), "d00000 (missing level)") {
		t.Fatalf("breaking edit: %v", err)
	}
	// A good edit re-renders in the background: one config_modified.
	_, j, err = s.UpdateTemplate(ctx, deviceconfig.TemplateInput{ID: "log", Config: doc(`{"log":{"level":"debug"}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if j.Affected != 1 {
		t.Fatalf("job %+v", j)
	}
	done, err := s.WaitJob(ctx, j.ID)
	if err != nil || done.Changed != 1 || done.Status != deviceconfig.JobDone {
		t.Fatalf("job %+v %v", done, err)
	}
	evs = wantEvents(t, f, "config_modified:d00000")
	if m := evs[0].Args.(*events.ConfigModifiedArgs); m.Action != "related_template_changed" || m.PreviousStatus != "modified" {
		t.Fatalf("config_modified %+v", m)
	}
	// The same edit again changes no render: nothing fires.
	_, j, _ = s.UpdateTemplate(ctx, deviceconfig.TemplateInput{ID: "log", Config: doc(`{"log":{"level":"debug"}}`)})
	if done, _ := s.WaitJob(ctx, j.ID); done.Changed != 0 {
		t.Fatalf("job %+v", done)
	}
	wantEvents(t, f)

	// Deactivation: deactivating, the empty config, then deactivated and 404.
	res, err = s.Deactivate(ctx, "d00000")
	if err != nil {
		t.Fatal(err)
	}
	wantEvents(t, f, "config_status_changed:d00000", "config_deactivating:d00000")
	if string(res.Config.Rendered) != "{}\n" {
		t.Fatalf("deactivating config %q", res.Config.Rendered)
	}
	if _, err := s.SetDevice(ctx, "d00000", deviceconfig.Update{Vars: &map[string]string{}}); !errors.Is(err, deviceconfig.ErrDeactivated) {
		t.Fatalf("change while deactivating: %v", err)
	}
	if err := s.RecordReport(ctx, "d00000", "router", deviceconfig.Report{Checksum: res.Config.Checksum, Applied: true}, nil); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, f, "config_status_changed:d00000", "config_deactivated:d00000", "is_working_changed:d00000")
	if _, err := s.Checksum("d00000"); !errors.Is(err, deviceconfig.ErrNoConfig) {
		t.Fatalf("checksum of a deactivated device: %v", err)
	}
	if _, _, err := s.Download(ctx, "d00000"); !errors.Is(err, deviceconfig.ErrNoConfig) {
		t.Fatalf("download of a deactivated device: %v", err)
	}
	if _, err := s.Reactivate(ctx, "d00000"); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, f, "config_modified:d00000", "config_status_changed:d00000")

	// History keeps the last 3; restoring one brings its checksum back.
	for _, v := range []string{"a", "b", "c", "d"} {
		if _, err := s.SetDevice(ctx, "d00001", deviceconfig.Update{Overrides: &map[string]any{"v": v}}); err != nil {
			t.Fatal(err)
		}
	}
	hs, err := s.History(ctx, "d00001")
	if err != nil || len(hs) != 3 || !strings.Contains(string(hs[0].Rendered), `"d"`) || !strings.Contains(string(hs[2].Rendered), `"b"`) {
		t.Fatalf("history %d %v", len(hs), err)
	}
	r, err := s.Restore(ctx, "d00001", hs[2].ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Config.Checksum != hs[2].Checksum || r.OldChecksum != hs[0].Checksum {
		t.Fatalf("restore: %s, want %s", r.Config.Checksum, hs[2].Checksum)
	}
	f.rec.take()

	// Required templates stay.
	if _, j, err = s.UpdateTemplate(ctx, deviceconfig.TemplateInput{ID: "ntp-b", Config: doc(`{"ntp":{"server":"b.example"}}`), Required: true}); err != nil {
		t.Fatal(err)
	}
	waitJob(t, s, j)
	cur, _ := s.Get(ctx, "d00000")
	if slices.Contains(cur.Templates, "ntp-b") {
		if _, err := s.SetDevice(ctx, "d00000", deviceconfig.Update{Templates: &[]string{}}); !errors.Is(err, deviceconfig.ErrRequired) {
			t.Fatalf("removing a required template: %v", err)
		}
	}
	// A template in use cannot be deleted.
	if err := s.DeleteTemplate(ctx, "log"); !errors.Is(err, deviceconfig.ErrInUse) || !strings.Contains(err.Error(), "group g1") {
		t.Fatalf("delete in use: %v", err)
	}

	// Commands tell whether the channel works.
	f.rec.take()
	s.Observe(ctx, events.Event{Type: events.DeviceCommandExpired, DeviceID: "d00001", DeviceType: "router",
		Args: &events.CommandExpired{CommandID: "c1", Command: "reboot", Status: "sent"}})
	evs = wantEvents(t, f, "is_working_changed:d00001")
	if w := evs[0].Args.(*events.IsWorkingArgs); w.IsWorking || w.OldIsWorking != nil || !strings.Contains(w.FailureReason, "c1") {
		t.Fatalf("is_working %+v", w)
	}
	s.Observe(ctx, events.Event{Type: events.DeviceCommandExpired, DeviceID: "d00001", DeviceType: "router",
		Args: &events.CommandExpired{CommandID: "c2", Command: "reboot", Status: "sent"}})
	wantEvents(t, f)
	s.Observe(ctx, events.Event{Type: events.DeviceCommandResult, DeviceID: "d00001", DeviceType: "router",
		Args: &events.CommandResult{CommandID: "c3", Status: "succeeded"}})
	wantEvents(t, f, "is_working_changed:d00001")
}

func waitJob(t *testing.T, s *deviceconfig.Service, j *deviceconfig.Job) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done, err := s.WaitJob(ctx, j.ID)
	if err != nil || done.Status != deviceconfig.JobDone {
		t.Fatalf("job %+v: %v", done, err)
	}
}

// TestTemplatesChangedEvents: every stored change of templates or group
// configurations commits one config_templates_changed (every node of a
// cluster reads them again on it); a refused one commits none.
func TestTemplatesChangedEvents(t *testing.T) {
	f := newFixture(t, 1)
	ctx := context.Background()
	s := f.svc
	if _, err := s.CreateTemplate(ctx, deviceconfig.TemplateInput{ID: "log", Config: doc(`{"log":{"level":"info"}}`)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.UpdateTemplate(ctx, deviceconfig.TemplateInput{ID: "log", Config: doc(`{"log":{"level":"debug"}}`)}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SetGroup(ctx, "g1", deviceconfig.GroupUpdate{Templates: &[]string{"log"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTemplate(ctx, "log"); !errors.Is(err, deviceconfig.ErrInUse) {
		t.Fatalf("delete of a template in use: %v", err)
	}
	if _, _, err := s.SetGroup(ctx, "g1", deviceconfig.GroupUpdate{Templates: &[]string{}}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteTemplate(ctx, "log"); err != nil {
		t.Fatal(err)
	}
	want := []events.TemplatesChangedArgs{{Template: "log"}, {Template: "log"}, {Group: "g1"}, {Group: "g1"}, {Template: "log", Deleted: true}}
	if got := f.rec.takeTemplates(); !slices.Equal(got, want) {
		t.Fatalf("config_templates_changed %+v, want %+v", got, want)
	}
}
