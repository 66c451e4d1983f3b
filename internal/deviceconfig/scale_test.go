package deviceconfig_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/deviceconfig"
)

// seedConfigs gives every device of f a configuration with template "fleet",
// odd devices with an override that hides what the template sets, so that
// an edit of the template changes the render of even devices only.
func seedConfigs(t testing.TB, f *fixture, devices int) {
	t.Helper()
	ctx := context.Background()
	if _, err := f.svc.CreateTemplate(ctx, deviceconfig.TemplateInput{ID: "fleet",
		Config: doc(`{"ntp":{"server":"a.example"},"name":"{{ name }}"}`)}); err != nil {
		t.Fatal(err)
	}
	tpl, _ := f.svc.Template("fleet")
	be, _ := deviceconfig.NewBackends()
	js, _ := be.Get("json")
	var tickets []*commit.Ticket
	now := time.Now().UTC()
	for i := range devices {
		id := fmt.Sprintf("d%05d", i)
		c := &deviceconfig.DeviceConfig{DeviceID: id, Backend: "json", Templates: []string{"fleet"}, Vars: map[string]string{},
			Overrides: map[string]any{}, Status: deviceconfig.StatusApplied, StatusSince: now, CreatedAt: now, UpdatedAt: now}
		if i%2 == 1 {
			c.Overrides = doc(`{"ntp":{"server":"fixed.example"}}`)
		}
		out, err := deviceconfig.Render(deviceconfig.Input{Device: deviceconfig.DeviceInfo{ID: id, Name: "Router " + id, Type: "router", Group: map[bool]string{true: "g1", false: "g2"}[i%2 == 0]},
			Templates: []*deviceconfig.Template{tpl}, Overrides: c.Overrides, Backend: js})
		if err != nil {
			t.Fatal(err)
		}
		c.Rendered, c.Checksum = out.Bytes, out.Checksum
		tk, err := f.c.Enqueue(ctx, &commit.Change{DeviceID: id, Ops: []commit.Op{&deviceconfig.Op{Device: c}}})
		if err != nil {
			t.Fatal(err)
		}
		tickets = append(tickets, tk)
	}
	for _, tk := range tickets {
		if err := tk.Wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.svc.Load(ctx); err != nil {
		t.Fatal(err)
	}
	f.rec.take()
}

// TestRerender10k: a template used by 10,000 devices (2,000 under -race,
// see race_test.go) is edited; the API call answers with a job and the
// count, and the job fires one config_modified per device whose checksum
// changed (the even half), and tells each of them.
func TestRerender10k(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 devices: not in -short")
	}
	const n = rerenderDevices
	f := newFixture(t, n)
	seedConfigs(t, f, n)
	ctx := context.Background()
	t0 := time.Now()
	_, j, err := f.svc.UpdateTemplate(ctx, deviceconfig.TemplateInput{ID: "fleet", Config: doc(`{"ntp":{"server":"b.example"},"name":"{{ name }}"}`)})
	t.Logf("update answered in %v", time.Since(t0))
	if err != nil {
		t.Fatal(err)
	}
	if j.Affected != n || j.ID == "" {
		t.Fatalf("job %+v", j)
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	done, err := f.svc.WaitJob(wctx, j.ID)
	t.Logf("job done in %v", time.Since(t0))
	if err != nil || done.Status != deviceconfig.JobDone || done.Changed != n/2 || done.Done != n || done.Failed != 0 {
		t.Fatalf("job %+v %v", done, err)
	}
	seen := map[string]int{}
	for _, e := range f.rec.take() {
		if e.Type != events.ConfigModified {
			if e.Type == events.ConfigStatusChanged {
				continue
			}
			t.Fatalf("unexpected %s", e.Type)
		}
		seen[e.DeviceID]++
		if a := e.Args.(*events.ConfigModifiedArgs); a.Action != events.ActionRelatedTemplateChanged || a.PreviousStatus != "applied" {
			t.Fatalf("args %+v", a)
		}
	}
	if len(seen) != n/2 {
		t.Fatalf("%d devices got config_modified, want %d", len(seen), n/2)
	}
	for i := range n {
		id := fmt.Sprintf("d%05d", i)
		want := 1 - i%2
		if seen[id] != want {
			t.Fatalf("%s: %d config_modified, want %d", id, seen[id], want)
		}
		if len(f.rec.notices[id]) != want {
			t.Fatalf("%s: %d notices, want %d", id, len(f.rec.notices[id]), want)
		}
	}
}
