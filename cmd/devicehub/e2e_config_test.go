package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/client"
)

// TestE2EConfigCLI: `devicehub templates` and `devicehub config` against
// the real binary: create a template, a group's templates and variables,
// a device's own; preview refuses a missing variable by name; an edit
// answers with a re-render job; history, restore, the list of devices not
// applied, deactivation and reactivation.
func TestE2EConfigCLI(t *testing.T) {
	h := startE2E(t, "")
	h.provision(t, "r1")
	run := func(args ...string) string {
		t.Helper()
		out, errs, code := h.cli(t, "", args...)
		if code != 0 {
			t.Fatalf("devicehub %s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	var tpl client.TemplateResult
	h.cliJSON(t, &tpl, "templates", "create", "ntp", "--config", `{"ntp": {"server": "{{ ntp_server }}", "site": "{{ site }}"}}`,
		"--default-var", "ntp_server=pool.ntp.org")
	if tpl.Template.ID != "ntp" || tpl.Template.Defaults["ntp_server"] != "pool.ntp.org" {
		t.Fatalf("created %+v", tpl)
	}
	if out := run("templates", "list"); !strings.Contains(out, "ntp") {
		t.Fatalf("list: %s", out)
	}
	if _, err := h.api.CreateGroup(t.Context(), "north", ""); err != nil {
		t.Fatal(err)
	}
	if out := run("devices", "update", "r1", "--group", "north"); !strings.Contains(out, "r1") {
		t.Fatalf("update: %s", out)
	}

	// A missing variable is named on preview and refused on save.
	out, errs, code := h.cli(t, "", "config", "preview", "r1", "--template", "ntp")
	if code == 0 || !strings.Contains(errs, "site") {
		t.Fatalf("preview without site: exit %d %s %s", code, out, errs)
	}
	if _, errs, code := h.cli(t, "", "config", "set", "r1", "--template", "ntp"); code == 0 || !strings.Contains(errs, "site") {
		t.Fatalf("set without site: exit %d %s", code, errs)
	}
	var grp client.GroupConfigResult
	h.cliJSON(t, &grp, "config", "group", "north", "--var", "site=north-1")
	if grp.Group.Vars["site"] != "north-1" {
		t.Fatalf("group %+v", grp)
	}
	if out := run("config", "preview", "r1", "--template", "ntp"); !strings.Contains(out, "north-1") || !strings.Contains(out, "pool.ntp.org") {
		t.Fatalf("preview: %s", out)
	}
	var set client.DeviceConfigResult
	h.cliJSON(t, &set, "config", "set", "r1", "--template", "ntp", "--var", "ntp_server=10.0.0.1")
	if set.Config.Status != "modified" || set.Config.Rendered == nil || !strings.Contains(*set.Config.Rendered, "10.0.0.1") {
		t.Fatalf("set %+v", set)
	}
	first := set.Config.Checksum
	if out := run("config", "list", "--not-applied"); !strings.Contains(out, "r1") || !strings.Contains(out, "modified") {
		t.Fatalf("not applied: %s", out)
	}

	// An edit of the template re-renders its devices in a job.
	var edit client.TemplateResult
	h.cliJSON(t, &edit, "templates", "edit", "ntp", "--config", `{"ntp": {"server": "{{ ntp_server }}", "site": "{{ site }}", "v": 2}}`)
	if edit.Job == nil || edit.Job.Affected != 1 {
		t.Fatalf("edit %+v", edit)
	}
	if out := run("config", "job", edit.Job.ID, "--wait"); !strings.Contains(out, "1 changed") {
		t.Fatalf("job: %s", out)
	}
	var got client.DeviceConfigResult
	h.cliJSON(t, &got, "config", "get", "r1")
	if got.Config.Checksum == first {
		t.Fatalf("the edit changed nothing: %+v", got)
	}

	// History and restore: back to the configuration before a change of
	// the device's variables.
	second := got.Config.Checksum
	h.cliJSON(t, &set, "config", "set", "r1", "--var", "ntp_server=10.0.0.2")
	if set.Config.Checksum == second {
		t.Fatalf("set %+v", set)
	}
	var hist []client.ConfigHistoryEntry
	h.cliJSON(t, &hist, "config", "history", "r1")
	var entry int64
	for _, e := range hist {
		if e.Checksum == second {
			entry = e.ID
		}
	}
	if entry == 0 {
		t.Fatalf("history %+v has no %s", hist, second)
	}
	if out := run("config", "history", "r1"); !strings.Contains(out, second) {
		t.Fatalf("history: %s", out)
	}
	var restored client.DeviceConfigResult
	h.cliJSON(t, &restored, "config", "restore", "r1", strconv.FormatInt(entry, 10))
	if restored.Config.Checksum != second || restored.Config.Vars["ntp_server"] != "10.0.0.1" {
		t.Fatalf("restored %+v, want %s", restored, second)
	}

	// Deactivate and reactivate; a template in use cannot be deleted.
	if out := run("config", "deactivate", "r1"); !strings.Contains(out, "deactivating") {
		t.Fatalf("deactivate: %s", out)
	}
	if out := run("config", "reactivate", "r1"); !strings.Contains(out, "modified") {
		t.Fatalf("reactivate: %s", out)
	}
	if _, errs, code := h.cli(t, "", "templates", "delete", "ntp"); code == 0 || !strings.Contains(errs, "template_in_use") {
		t.Fatalf("delete in use: exit %d %s", code, errs)
	}
}
