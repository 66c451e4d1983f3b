package registry_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is the committer's publisher: it keeps every committed event.
type recorder struct {
	mu  sync.Mutex
	evs []events.Event
}

func (r *recorder) Publish(evs []events.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, evs...)
	r.mu.Unlock()
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.evs)
}

func (r *recorder) ofType(t events.Type) []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Event
	for _, e := range r.evs {
		if e.Type == t {
			out = append(out, e)
		}
	}
	return out
}

// kicks records the kicker's calls.
type kicks struct {
	mu  sync.Mutex
	ids []string
}

func (k *kicks) Kick(id, _ string) {
	k.mu.Lock()
	k.ids = append(k.ids, id)
	k.mu.Unlock()
}

func (k *kicks) list() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.ids)
}

type env struct {
	store *sqlite.Store
	svc   *registry.Service
	rec   *recorder
	kicks *kicks
	clock *clock
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newEnv runs a registry over real SQLite and the real committer.
func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "hub.db"), Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	c := commit.New(st, rec, commit.Options{}, slog.New(slog.DiscardHandler), nil)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
	types := devicetype.NewRegistry()
	for _, n := range []string{"sensor", "meter"} {
		if err := types.Register(devicetype.Type{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	e := &env{store: st, rec: rec, kicks: &kicks{}, clock: &clock{t: time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)}}
	e.svc = registry.NewService(st, c, types, e.kicks, slog.New(slog.DiscardHandler))
	registry.SetClock(e.svc, e.clock.now)
	if err := e.svc.Load(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) provision(t *testing.T, id string) events.Credentials {
	t.Helper()
	creds, err := e.svc.Provision(context.Background(), registry.ProvisionRequest{ID: id, Type: "sensor"})
	if err != nil {
		t.Fatalf("Provision %s: %v", id, err)
	}
	return creds
}

func wantErr(t *testing.T, what string, got, want error) {
	t.Helper()
	if !errors.Is(got, want) {
		t.Fatalf("%s: err = %v, want %v", what, got, want)
	}
}

func ptr[T any](v T) *T { return &v }

func TestUpdateEvents(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.Provision(ctx, registry.ProvisionRequest{ID: "d1", Type: "sensor", Name: "first", Group: "north",
		ManagementIP: "10.0.0.1", FirmwareVersion: "1.0"}); err != nil {
		t.Fatal(err)
	}
	// Creation fires none of the change signals.
	for _, typ := range []events.Type{events.DeviceNameChanged, events.DeviceGroupChanged, events.ManagementIPChanged} {
		if n := len(e.rec.ofType(typ)); n != 0 {
			t.Fatalf("%s fired %d times on creation", typ, n)
		}
	}
	d, err := e.svc.Get(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if d.ManagementIP != "10.0.0.1" || d.FirmwareVersion != "1.0" || d.Group != "north" {
		t.Fatalf("device after provision = %+v", d)
	}

	tests := []struct {
		name string
		req  registry.UpdateRequest
		want map[events.Type]any
		err  error
	}{
		{"rename", registry.UpdateRequest{Name: ptr("second")},
			map[events.Type]any{events.DeviceNameChanged: &events.NameChanged{Name: "second", OldName: "first"}}, nil},
		{"same name fires nothing", registry.UpdateRequest{Name: ptr("second")}, nil, nil},
		{"move group", registry.UpdateRequest{Group: ptr("south")},
			map[events.Type]any{events.DeviceGroupChanged: &events.GroupChanged{GroupID: "south", OldGroupID: "north"}}, nil},
		{"management ip", registry.UpdateRequest{ManagementIP: ptr("10.0.0.2")},
			map[events.Type]any{events.ManagementIPChanged: &events.ManagementIP{IP: "10.0.0.2", OldIP: "10.0.0.1"}}, nil},
		{"fields without signals", registry.UpdateRequest{Tags: &[]string{"a"}, Location: &registry.Location{Lat: 1, Lon: 2},
			HardwareVersion: ptr("rev b"), Metadata: map[string]any{"k": "v"}}, nil, nil},
		{"bad ip", registry.UpdateRequest{ManagementIP: ptr("not-an-ip")}, nil, registry.ErrInvalid},
		{"bad group", registry.UpdateRequest{Group: ptr("a b")}, nil, registry.ErrInvalid},
		{"bad location", registry.UpdateRequest{Location: &registry.Location{Lat: 91}}, nil, registry.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := map[events.Type]int{}
			for typ := range tt.want {
				before[typ] = len(e.rec.ofType(typ))
			}
			all := e.rec.count()
			_, err := e.svc.Update(ctx, "d1", tt.req)
			if tt.err != nil {
				wantErr(t, "Update", err, tt.err)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == nil && e.rec.count() != all {
				t.Fatalf("update fired %d events", e.rec.count()-all)
			}
			for typ, args := range tt.want {
				got := e.rec.ofType(typ)
				if len(got) != before[typ]+1 {
					t.Fatalf("%s fired %d times, want once", typ, len(got)-before[typ])
				}
				if ev := got[len(got)-1]; ev.Seq == 0 || !equalArgs(ev.Args, args) {
					t.Fatalf("%s = %+v (seq %d), want %+v", typ, ev.Args, ev.Seq, args)
				}
			}
		})
	}
	d, err = e.svc.Get(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "second" || d.Group != "south" || d.ManagementIP != "10.0.0.2" || d.HardwareVersion != "rev b" ||
		d.Location == nil || d.Location.Lat != 1 || !slices.Equal(d.Tags, []string{"a"}) || d.Metadata["k"] != "v" {
		t.Fatalf("device = %+v", d)
	}
	// Groups named by devices exist.
	groups, err := e.svc.ListGroups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, g := range groups {
		ids = append(ids, g.ID)
	}
	if !slices.Equal(ids, []string{"north", "south"}) {
		t.Fatalf("groups = %v", ids)
	}
	_, err = e.svc.Update(ctx, "missing", registry.UpdateRequest{Name: ptr("x")})
	wantErr(t, "update of missing device", err, registry.ErrNotFound)
}

func equalArgs(a, b any) bool {
	switch x := a.(type) {
	case *events.NameChanged:
		return *x == *b.(*events.NameChanged)
	case *events.GroupChanged:
		return *x == *b.(*events.GroupChanged)
	case *events.ManagementIP:
		return *x == *b.(*events.ManagementIP)
	}
	return false
}

func TestGroups(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateGroup(ctx, registry.CreateGroupRequest{ID: "lab", Name: "The lab"}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.CreateGroup(ctx, registry.CreateGroupRequest{ID: "lab"})
	wantErr(t, "second create", err, registry.ErrGroupExists)
	_, err = e.svc.CreateGroup(ctx, registry.CreateGroupRequest{ID: "bad id"})
	wantErr(t, "bad id", err, registry.ErrInvalid)
	g, err := e.svc.RenameGroup(ctx, "lab", "Lab 2")
	if err != nil || g.Name != "Lab 2" {
		t.Fatalf("RenameGroup = %+v, %v", g, err)
	}
	_, err = e.svc.RenameGroup(ctx, "nope", "x")
	wantErr(t, "rename missing", err, registry.ErrGroupNotFound)
	if _, err := e.svc.Provision(ctx, registry.ProvisionRequest{ID: "g1", Type: "sensor", Group: "lab"}); err != nil {
		t.Fatal(err)
	}
	e.provision(t, "g2")
	devs, err := e.svc.ListGroupDevices(ctx, "lab", registry.ListOptions{})
	if err != nil || len(devs) != 1 || devs[0].ID != "g1" {
		t.Fatalf("ListGroupDevices = %v, %v", devs, err)
	}
	g, err = e.svc.GetGroup(ctx, "lab")
	if err != nil || g.Devices != 1 || g.Name != "Lab 2" {
		t.Fatalf("GetGroup = %+v, %v", g, err)
	}
}

func TestRotationOverlap(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, e *env, old, cur events.Credentials)
	}{
		{"both valid, new retires old", func(t *testing.T, e *env, old, cur events.Credentials) {
			if _, err := e.svc.Authenticate("r1", "r1", []byte(old.MQTTPassword)); err != nil {
				t.Fatalf("old password during overlap: %v", err)
			}
			if _, _, err := e.svc.AuthenticateAPIKey(old.APIKey); err != nil {
				t.Fatalf("old api key during overlap: %v", err)
			}
			if _, err := e.svc.Authenticate("r1", "r1", []byte(cur.MQTTPassword)); err != nil {
				t.Fatalf("new password: %v", err)
			}
			_, err := e.svc.Authenticate("r1", "r1", []byte(old.MQTTPassword))
			wantErr(t, "old password after first use of the new one", err, registry.ErrUnauthorized)
			_, _, err = e.svc.AuthenticateAPIKey(old.APIKey)
			wantErr(t, "old api key after first use of the new one", err, registry.ErrUnauthorized)
			// The retirement is stored: a restart does not revive them.
			eventually.True(t, 5*time.Second, "the retirement stored", func() bool {
				fresh := registry.NewService(e.store, nil, nil, nil, slog.New(slog.DiscardHandler))
				registry.SetClock(fresh, e.clock.now)
				if err := fresh.Load(ctx); err != nil {
					t.Fatal(err)
				}
				_, err := fresh.Authenticate("r1", "r1", []byte(old.MQTTPassword))
				return errors.Is(err, registry.ErrUnauthorized)
			})
		}},
		{"period ends", func(t *testing.T, e *env, old, cur events.Credentials) {
			e.clock.advance(2 * time.Hour)
			_, err := e.svc.Authenticate("r1", "r1", []byte(old.MQTTPassword))
			wantErr(t, "old password after the period", err, registry.ErrUnauthorized)
			if _, err := e.svc.Authenticate("r1", "r1", []byte(cur.MQTTPassword)); err != nil {
				t.Fatal(err)
			}
		}},
		{"overlap survives a restart", func(t *testing.T, e *env, old, cur events.Credentials) {
			fresh := registry.NewService(e.store, nil, nil, nil, slog.New(slog.DiscardHandler))
			registry.SetClock(fresh, e.clock.now)
			if err := fresh.Load(ctx); err != nil {
				t.Fatal(err)
			}
			for _, pw := range []string{old.MQTTPassword, cur.MQTTPassword} {
				if _, err := fresh.Authenticate("r1", "r1", []byte(pw)); err != nil {
					t.Fatalf("after reload: %v", err)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			old := e.provision(t, "r1")
			res, err := e.svc.Rotate(ctx, "r1", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if res.OldValidUntil == nil || res.Credentials.MQTTPassword == old.MQTTPassword {
				t.Fatalf("Rotate = %+v", res)
			}
			evs := e.rec.ofType(events.DeviceProvisioned)
			last := evs[len(evs)-1].Args.(*events.Provisioned)
			if last.Via != events.ViaRotation || last.Credentials == nil || last.Credentials.MQTTPassword != res.Credentials.MQTTPassword {
				t.Fatalf("device_provisioned of the rotation = %+v", last)
			}
			tt.run(t, e, old, res.Credentials)
		})
	}
	t.Run("no overlap", func(t *testing.T) {
		e := newEnv(t)
		old := e.provision(t, "r1")
		res, err := e.svc.Rotate(ctx, "r1", 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.Authenticate("r1", "r1", []byte(old.MQTTPassword))
		wantErr(t, "old password", err, registry.ErrUnauthorized)
		if _, err := e.svc.Authenticate("r1", "r1", []byte(res.Credentials.MQTTPassword)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRevokeAndDisable(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	c1 := e.provision(t, "v1")
	c2 := e.provision(t, "v2")

	if err := e.svc.Revoke(ctx, "v1", "stolen"); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Authenticate("v1", "v1", []byte(c1.MQTTPassword))
	wantErr(t, "revoked password", err, registry.ErrRevoked)
	_, _, err = e.svc.AuthenticateAPIKey(c1.APIKey)
	wantErr(t, "revoked api key", err, registry.ErrUnauthorized)
	if got := e.kicks.list(); !slices.Equal(got, []string{"v1"}) {
		t.Fatalf("kicks = %v", got)
	}
	if n := len(e.rec.ofType(events.DeviceCredentialsRevoked)); n != 1 {
		t.Fatalf("device_credentials_revoked fired %d times", n)
	}
	// Re-provisioning brings it back with new credentials.
	c1b, err := e.svc.Provision(ctx, registry.ProvisionRequest{ID: "v1", Type: "sensor", Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate("v1", "v1", []byte(c1b.MQTTPassword)); err != nil {
		t.Fatalf("after re-provision: %v", err)
	}

	if err := e.svc.Disable(ctx, "v2", "maintenance"); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Authenticate("v2", "v2", []byte(c2.MQTTPassword))
	wantErr(t, "disabled", err, registry.ErrDisabled)
	wantErr(t, "Active", e.svc.Active("v2"), registry.ErrDisabled)
	if got := e.kicks.list(); !slices.Contains(got, "v2") {
		t.Fatalf("disabled device not kicked: %v", got)
	}
	d, err := e.svc.Get(ctx, "v2")
	if err != nil || !d.Disabled {
		t.Fatalf("stored device = %+v, %v", d, err)
	}
	// A restart keeps it disabled.
	fresh := registry.NewService(e.store, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err := fresh.Load(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = fresh.Authenticate("v2", "v2", []byte(c2.MQTTPassword))
	wantErr(t, "disabled after reload", err, registry.ErrDisabled)
	_, err = fresh.Authenticate("v1", "v1", []byte(c1.MQTTPassword))
	wantErr(t, "revoked after reload", err, registry.ErrUnauthorized)

	if err := e.svc.Enable(ctx, "v2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate("v2", "v2", []byte(c2.MQTTPassword)); err != nil {
		t.Fatalf("enabled: %v", err)
	}
	wantErr(t, "disable missing", e.svc.Disable(ctx, "nope", ""), registry.ErrNotFound)
}

func TestCertificatePin(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.provision(t, "c1")
	fp := [32]byte{1, 2, 3}
	_, err := e.svc.AuthenticateCert("c1", fp)
	wantErr(t, "before pin", err, registry.ErrUnauthorized)
	if err := e.svc.PinCertificate(ctx, "c1", fp); err != nil {
		t.Fatal(err)
	}
	if typ, err := e.svc.AuthenticateCert("c1", fp); err != nil || typ != "sensor" {
		t.Fatalf("AuthenticateCert = %q, %v", typ, err)
	}
	_, err = e.svc.AuthenticateCert("c1", [32]byte{9})
	wantErr(t, "other certificate", err, registry.ErrUnauthorized)
	fresh := registry.NewService(e.store, nil, nil, nil, slog.New(slog.DiscardHandler))
	if err := fresh.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.AuthenticateCert("c1", fp); err != nil {
		t.Fatalf("after reload: %v", err)
	}
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	csvGood := "id,type,name,group,tags,management_ip,lat,lon\n" +
		"i1,sensor,one,site-a,x;y,10.1.1.1,1.5,2.5\n" +
		"i2,meter,two,site-b,,,,\n"
	csvBad := "id,type,name,group\n" +
		"j1,sensor,ok,g\n" +
		"bad id,sensor,,\n" +
		"j3,nosuchtype,,\n" +
		"j1,sensor,dup,\n" +
		"taken,sensor,,\n"
	tests := []struct {
		name    string
		csv     string
		opts    registry.ImportOptions
		err     error
		status  []string
		created []string
	}{
		{"all good", csvGood, registry.ImportOptions{}, nil, []string{"created", "created"}, []string{"i1", "i2"}},
		{"all or nothing", csvBad, registry.ImportOptions{}, registry.ErrImportRefused,
			[]string{"not_created", "refused", "refused", "refused", "refused"}, nil},
		{"partial", csvBad, registry.ImportOptions{Partial: true}, nil,
			[]string{"created", "refused", "refused", "refused", "refused"}, []string{"j1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			e.provision(t, "taken")
			rep, err := e.svc.ImportCSV(ctx, strings.NewReader(tt.csv), tt.opts)
			if tt.err != nil {
				wantErr(t, "ImportCSV", err, tt.err)
			} else if err != nil {
				t.Fatal(err)
			}
			var st []string
			for _, l := range rep.Lines {
				st = append(st, l.Status)
				if l.Status == registry.ImportRefused && l.Reason == "" {
					t.Errorf("line %d refused without a reason", l.Line)
				}
			}
			if !slices.Equal(st, tt.status) {
				t.Fatalf("statuses = %v, want %v (%+v)", st, tt.status, rep.Lines)
			}
			if rep.Lines[0].Line != 2 {
				t.Fatalf("first line number = %d, want 2", rep.Lines[0].Line)
			}
			devs, err := e.svc.List(ctx, registry.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, d := range devs {
				if d.ID != "taken" {
					ids = append(ids, d.ID)
				}
			}
			if !slices.Equal(ids, tt.created) {
				t.Fatalf("devices = %v, want %v", ids, tt.created)
			}
			for _, l := range rep.Lines {
				if l.Status != registry.ImportCreated {
					continue
				}
				if _, err := e.svc.Authenticate(l.ID, l.ID, []byte(l.Credentials.MQTTPassword)); err != nil {
					t.Fatalf("imported %s cannot authenticate: %v", l.ID, err)
				}
			}
		})
	}
	t.Run("json with groups", func(t *testing.T) {
		e := newEnv(t)
		rep, err := e.svc.ImportJSON(ctx, []byte(`{"groups":[{"id":"g1","name":"Group one"}],
			"devices":[{"id":"k1","type":"sensor","group":"g1","firmware_version":"2.0"},{"id":"k2","type":"meter"}]}`), registry.ImportOptions{})
		if err != nil || rep.Created != 2 {
			t.Fatalf("ImportJSON = %+v, %v", rep, err)
		}
		g, err := e.svc.GetGroup(ctx, "g1")
		if err != nil || g.Name != "Group one" || g.Devices != 1 {
			t.Fatalf("group = %+v, %v", g, err)
		}
		d, err := e.svc.Get(ctx, "k1")
		if err != nil || d.FirmwareVersion != "2.0" {
			t.Fatalf("k1 = %+v, %v", d, err)
		}
		if n := len(e.rec.ofType(events.DeviceProvisioned)); n != 2 {
			t.Fatalf("device_provisioned fired %d times", n)
		}
	})
}

func TestTopicAllowed(t *testing.T) {
	tests := []struct {
		name, id, topic string
		write, want     bool
	}{
		{"own topic", "d1", "devices/d1/data", true, true},
		{"own filter", "d1", "devices/d1/#", false, true},
		{"publish to a wildcard", "d1", "devices/d1/#", true, false},
		{"other device", "d1", "devices/d2/data", false, false},
		{"id prefix of another", "d1", "devices/d10/data", false, false},
		{"wildcard device", "d1", "devices/+/data", false, false},
		{"wildcard client id", "+", "devices/+/data", false, false},
		{"prefix only", "d1", "devices/d1/", false, false},
		{"empty id", "", "devices//x", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := registry.TopicAllowed(tt.id, tt.topic, tt.write); got != tt.want {
				t.Fatalf("TopicAllowed(%q, %q, %v) = %v", tt.id, tt.topic, tt.write, got)
			}
		})
	}
}

func FuzzDecodeImportJSON(f *testing.F) {
	f.Add([]byte(`{"devices":[{"id":"a","type":"t"}]}`))
	f.Add([]byte(`[{"id":"a","type":"t","location":{"lat":1,"lon":2}}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = registry.DecodeImportJSON(b)
	})
}

func FuzzDecodeImportCSV(f *testing.F) {
	f.Add("id,type,tags,metadata\na,t,x;y,{}\n")
	f.Add("id,type,lat,lon\na,t,1,nope\n")
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = registry.DecodeImportCSV(strings.NewReader(s))
	})
}

// Finding 2: the sessions opened with credentials end when the
// credentials do: at once for a rotation without overlap, at the end of
// the overlap if the device never used its new ones, never if it did.
func TestRotationClosesOldSessions(t *testing.T) {
	ctx := context.Background()
	t.Run("no overlap", func(t *testing.T) {
		e := newEnv(t)
		e.provision(t, "k1")
		if _, err := e.svc.Rotate(ctx, "k1", 0); err != nil {
			t.Fatal(err)
		}
		if got := e.kicks.list(); !slices.Equal(got, []string{"k1"}) {
			t.Fatalf("kicks = %v, want k1 closed at once", got)
		}
	})
	t.Run("overlap ends unused", func(t *testing.T) {
		e := newEnv(t)
		registry.SetClock(e.svc, time.Now)
		e.provision(t, "k2")
		if _, err := e.svc.Rotate(ctx, "k2", 50*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if got := e.kicks.list(); len(got) != 0 {
			t.Fatalf("kicks = %v during the overlap", got)
		}
		eventually.True(t, 5*time.Second, "k2 kicked", func() bool { return slices.Equal(e.kicks.list(), []string{"k2"}) })
	})
	t.Run("new credentials used", func(t *testing.T) {
		e := newEnv(t)
		registry.SetClock(e.svc, time.Now)
		e.provision(t, "k3")
		res, err := e.svc.Rotate(ctx, "k3", 50*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.Authenticate("k3", "k3", []byte(res.Credentials.MQTTPassword)); err != nil {
			t.Fatal(err)
		}
		// Rotate once more with a long overlap: its own timer must not fire,
		// and the first (retired) one must not kick when it would have.
		if _, err := e.svc.Rotate(ctx, "k3", time.Hour); err != nil {
			t.Fatal(err)
		}
		// Polling for an absence: past the first overlap's end, bounded.
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for deadline := time.Now().Add(200 * time.Millisecond); time.Now().Before(deadline); <-tick.C {
			if got := e.kicks.list(); len(got) != 0 {
				t.Fatalf("kicks = %v: a session with the new credentials was closed", got)
			}
		}
	})
}

// Finding 9: ids a URL path cannot carry plainly are refused, for
// devices and groups alike.
func TestValidID(t *testing.T) {
	tests := []struct {
		id   string
		want bool
	}{
		{"dev-1", true},
		{"a.b", true},
		{"...", true},
		{"x:y_z", true},
		{".", false},
		{"..", false},
		{"", false},
		{"a/b", false},
		{"a%2F", false},
		{"a?b", false},
		{"a#b", false},
		{"a b", false},
		{strings.Repeat("a", 129), false},
	}
	for _, tt := range tests {
		if got := registry.ValidID(tt.id); got != tt.want {
			t.Errorf("ValidID(%q) = %v, want %v", tt.id, got, tt.want)
		}
		if got := registry.ValidGroupID(tt.id); got != tt.want {
			t.Errorf("ValidGroupID(%q) = %v, want %v", tt.id, got, tt.want)
		}
	}
	e := newEnv(t)
	for _, id := range []string{".", ".."} {
		_, err := e.svc.Provision(context.Background(), registry.ProvisionRequest{ID: id, Type: "sensor"})
		wantErr(t, "provision "+id, err, registry.ErrInvalidID)
	}
}
