package web_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
)

// TestDevicesList drives the devices list in chromium against a real hub
// and real MQTT devices: the order by last seen holds across pages (a
// device that would be on the second page by id is first once it is
// seen), and the bulk actions (command as one fleet job, group, disable)
// reach the selected devices and are audited under the user's name.
func TestDevicesList(t *testing.T) {
	if chromiumPath() == "" {
		t.Skip("browser tests skipped: no chromium found (apt-get install chromium, or set DEVICEHUB_CHROMIUM)")
	}
	h := startHub(t)
	ctx := context.Background()
	pw := addUser(t, h, "olga", "operator")
	// 30 devices: more than the smallest page (25).
	creds := map[string]client.Credentials{}
	for i := range 30 {
		id := fmt.Sprintf("ws-%02d", i)
		p, err := h.admin.ProvisionDevice(ctx, client.ProvisionRequest{ID: id, Type: "WeatherStation"})
		if err != nil {
			t.Fatal(err)
		}
		creds[id] = p.Credentials
	}
	if _, err := h.admin.CreateGroup(ctx, "roof", "Roof"); err != nil {
		t.Fatal(err)
	}
	// ws-29 (last by id) and ws-28 connect: both are seen, ws-29 last.
	connectDevice(t, h.MQTTAddr(), "ws-28", creds["ws-28"].MQTTUsername, creds["ws-28"].MQTTPassword)
	connectDevice(t, h.MQTTAddr(), "ws-29", creds["ws-29"].MQTTUsername, creds["ws-29"].MQTTPassword)
	for _, id := range []string{"ws-28", "ws-29"} {
		eventually.True(t, 20*time.Second, id+" seen and connected", func() bool {
			d, err := h.admin.GetDevice(ctx, id)
			return err == nil && d.LastSeen != nil && d.Connected
		})
	}

	b := newBrowser(t, h.base)
	b.signIn("olga", pw)
	b.open("/devices?limit=25")
	if n := eval[int](b, "rows", `document.querySelectorAll('#devices tbody tr[data-id]').length`); n != 25 {
		t.Fatalf("first page by id: %d rows, want 25", n)
	}
	if eval[bool](b, "ws-29 on page 1", `!!document.querySelector('tr[data-id="ws-29"]')`) {
		t.Fatal("ws-29 on the first page by id")
	}
	// Sorted by last seen: the seen devices come first, from all pages.
	b.do("sort by last seen", chromedp.Click(chromedp.ID("sort-seen")), chromedp.WaitReady(chromedp.CSS(`th[aria-sort=descending]`)))
	first := eval[[]string](b, "order", `[...document.querySelectorAll('#devices tbody tr[data-id]')].slice(0, 3).map(r => r.dataset.id)`)
	if len(first) < 2 || first[0] != "ws-29" && first[0] != "ws-28" || first[1] != "ws-28" && first[1] != "ws-29" {
		t.Fatalf("first rows by last seen: %v, want ws-29 and ws-28 first", first)
	}
	// The next page goes on in the same order: the 5 never-seen devices
	// left after the 25 of the first page, by id.
	// The link loads a new document: follow it with Navigate, which waits
	// for that document's load (a click followed by a wait for an element
	// the first page has too raced with the navigation and read no rows).
	href := eval[string](b, "next page link", `document.getElementById('next').href`)
	b.do("next page", chromedp.Navigate(href), chromedp.WaitReady(chromedp.CSS(`th[aria-sort=descending]`)))
	next := eval[[]string](b, "order", `[...document.querySelectorAll('#devices tbody tr[data-id]')].map(r => r.dataset.id)`)
	if fmt.Sprint(next) != "[ws-23 ws-24 ws-25 ws-26 ws-27]" {
		t.Fatalf("second page by last seen: %v", next)
	}
	b.screenshots("devices-by-last-seen")

	// Bulk command: ws-28 and ws-29 (they answer), one fleet job.
	b.open("/devices?sort=last_seen&limit=25")
	b.do("select two",
		chromedp.Click(chromedp.CSS(`tr[data-id="ws-29"] input[type=checkbox]`)),
		chromedp.Click(chromedp.CSS(`tr[data-id="ws-28"] input[type=checkbox]`)),
		chromedp.WaitVisible(chromedp.ID("bulk")),
		chromedp.SetValue(chromedp.CSS(`#bulk select[name=command]`), "reboot"),
	)
	b.screenshots("devices-bulk")
	b.do("send to both", chromedp.Click(chromedp.CSS(`#bulk button[data-bulk=command]`)))
	b.waitJS("both answered", `document.getElementById('bulk-job').dataset.done === '2'`)
	job := eval[string](b, "job id", `document.getElementById('bulk-job').dataset.job`)
	ans, err := h.admin.GetFleetCommand(ctx, job)
	if err != nil || ans.Job.Targets != 2 || ans.Summary == nil || ans.Summary.Succeeded != 2 {
		t.Fatalf("fleet job %s: %+v %+v, %v", job, ans, ans.Summary, err)
	}

	// Bulk group and disable: one call per device.
	b.open("/devices?limit=25")
	b.reloadAfter("select three and move them",
		chromedp.Click(chromedp.CSS(`tr[data-id="ws-00"] input[type=checkbox]`)),
		chromedp.Click(chromedp.CSS(`tr[data-id="ws-01"] input[type=checkbox]`)),
		chromedp.Click(chromedp.CSS(`tr[data-id="ws-02"] input[type=checkbox]`)),
		chromedp.SetValue(chromedp.CSS(`#bulk select[name=group]`), "roof"),
		chromedp.Click(chromedp.CSS(`#bulk button[data-bulk=group]`)),
	)
	eventually.True(t, 20*time.Second, "three devices in roof", func() bool {
		l, err := h.admin.ListDevices(ctx, client.ListOptions{Group: "roof"})
		return err == nil && len(l.Devices) == 3
	})
	b.open("/devices?group=roof")
	b.reloadAfter("disable one", chromedp.Click(chromedp.CSS(`tr[data-id="ws-01"] input[type=checkbox]`)), chromedp.Click(chromedp.CSS(`#bulk button[data-bulk=disable]`)))
	b.waitJS("ws-01 disabled in the list", `document.querySelector('tr[data-id="ws-01"]')?.classList.contains('disabled')`)
	if d, err := h.admin.GetDevice(ctx, "ws-01"); err != nil || !d.Disabled {
		t.Fatalf("ws-01: %+v, %v", d, err)
	}
	page, err := h.admin.Audit(ctx, client.AuditQuery{Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, e := range page.Entries {
		if e.TokenID == "user:olga" && e.Status < 400 {
			count[e.OperationID]++
		}
	}
	if count["sendFleetCommand"] != 1 || count["updateDevice"] != 3 || count["disableDevice"] != 1 {
		t.Fatalf("olga's audited changes: %v", count)
	}
}

// TestCommandForm sends a command with declared parameters from the
// device page: the form has a typed field for each, the browser refuses a
// value out of bounds, and the device receives the typed payload.
func TestCommandForm(t *testing.T) {
	if chromiumPath() == "" {
		t.Skip("browser tests skipped: no chromium found (apt-get install chromium, or set DEVICEHUB_CHROMIUM)")
	}
	h := startHub(t)
	ctx := context.Background()
	pw := addUser(t, h, "olga", "operator")
	p, err := h.admin.ProvisionDevice(ctx, client.ProvisionRequest{ID: "door-1", Type: "Door"})
	if err != nil {
		t.Fatal(err)
	}
	connectDevice(t, h.MQTTAddr(), "door-1", p.Credentials.MQTTUsername, p.Credentials.MQTTPassword)
	b := newBrowser(t, h.base)
	b.signIn("olga", pw)
	b.open("/devices/door-1")
	b.waitJS("the stream", `document.body.dataset.live === 'on'`)
	// lock takes any payload; unlock shows its parameters instead.
	if eval[bool](b, "raw payload for lock", `document.getElementById('payload-raw').hidden`) {
		t.Fatal("lock: the free payload is hidden")
	}
	b.do("choose unlock", chromedp.SetValue(chromedp.CSS(`#command-form select[name=command]`), "unlock"),
		chromedp.Evaluate[chromedp.Void](`document.querySelector('#command-form select').dispatchEvent(new Event('change'))`))
	b.waitJS("unlock's fields", `!document.querySelector('fieldset[data-params-for=unlock]').hidden && document.getElementById('payload-raw').hidden`)
	// Out of bounds: the browser does not submit.
	b.do("after = 7200", chromedp.SetValue(chromedp.CSS(`input[name="p.after"]`), "7200"))
	if eval[bool](b, "validity", `document.getElementById('command-form').checkValidity()`) {
		t.Fatal("after = 7200 (max 3600) passes the form's check")
	}
	b.do("after = 5", chromedp.SetValue(chromedp.CSS(`input[name="p.after"]`), "5"), chromedp.SetValue(chromedp.CSS(`input[name="p.note"]`), "courier"))
	b.screenshots("device-command-params")
	b.do("send", chromedp.Click(chromedp.CSS(`#command-form button[type=submit]`)))
	b.waitJS("the result", `[...document.querySelectorAll('#commands [data-f=status]')].some(s => s.textContent === 'succeeded')`)
	cmds, err := h.admin.ListCommands(ctx, "door-1", "", 10)
	if err != nil || len(cmds) != 1 {
		t.Fatalf("commands: %v, %v", cmds, err)
	}
	if got := string(cmds[0].Payload); got != `{"after":5,"note":"courier"}` {
		t.Fatalf("payload %s, want the typed parameters", got)
	}
}

// TestProvisioningDecisions approves a pending operation under another
// device id and rejects one with the reason the device reads, from the
// provisioning page; both are audited under the user's name.
func TestProvisioningDecisions(t *testing.T) {
	if chromiumPath() == "" {
		t.Skip("browser tests skipped: no chromium found (apt-get install chromium, or set DEVICEHUB_CHROMIUM)")
	}
	h := startHub(t)
	ctx := context.Background()
	pw := addUser(t, h, "olga", "operator")
	ptok, err := h.admin.CreateProvisioningToken(ctx, client.ProvisioningTokenRequest{Name: "factory", DeviceType: "WeatherStation"})
	if err != nil {
		t.Fatal(err)
	}
	anon := client.New(h.base, "", nil)
	asked, err := anon.CreateOperation(ctx, ptok.Secret, "serial-123")
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := anon.CreateOperation(ctx, ptok.Secret, "intruder")
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, h.base)
	b.signIn("olga", pw)
	b.open("/provisioning")
	row := func(id string) string { return fmt.Sprintf(`tr[data-op=%q]`, id) }
	b.reloadAfter("approve as roof-7",
		chromedp.SendKeys(chromedp.CSS(row(asked.ID)+` input[name=device_id]`), "roof-7"),
		chromedp.Click(chromedp.CSS(row(asked.ID)+` button[data-op-action=approve-as]`)))
	b.reloadAfter("reject", chromedp.Click(chromedp.CSS(row(stranger.ID)+` button[data-op-action=reject]`)))
	got, err := h.admin.GetOperation(ctx, asked.ID)
	if err != nil || got.DeviceID != "roof-7" || got.Status == "pending" || got.Status == "rejected" {
		t.Fatalf("approved as roof-7: %+v, %v", got, err)
	}
	if _, err := h.admin.GetDevice(ctx, "roof-7"); err != nil {
		t.Fatalf("roof-7 not provisioned: %v", err)
	}
	got, err = h.admin.GetOperation(ctx, stranger.ID)
	if err != nil || got.Status != "rejected" || got.Reason != "not ours" {
		t.Fatalf("rejected: %+v, %v", got, err)
	}
	b.screenshots("provisioning-decided")
	page, err := h.admin.Audit(ctx, client.AuditQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]bool{}
	for _, e := range page.Entries {
		if e.TokenID == "user:olga" && e.Status < 400 {
			ops[e.OperationID] = true
		}
	}
	if !ops["approveProvisioningOperation"] || !ops["rejectProvisioningOperation"] {
		t.Fatalf("olga's audited decisions: %v", ops)
	}
}
