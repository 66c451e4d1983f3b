package web_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/api/apitest"
)

// TestDashboard drives the dashboard in headless chromium against a real
// hub, real MQTT devices (paho) and real HTTP, the way an operator would:
// sign in, watch a device come online and its reading reach the chart,
// send a command and see its result, approve a provisioning operation and
// see that device connect, then check that a viewer and a forged request
// are refused, and sign out. Every page is saved as a screenshot at
// desktop and phone widths (DEVICEHUB_SCREENSHOTS names the folder).
func TestDashboard(t *testing.T) {
	if chromiumPath() == "" {
		t.Skip("browser tests skipped: no chromium found (apt-get install chromium, or set DEVICEHUB_CHROMIUM)")
	}
	h := startHub(t)
	ctx := context.Background()
	adminPW := addUser(t, h, "alice", "admin")
	viewerPW := addUser(t, h, "victor", "viewer")
	b := newBrowser(t, h.base)
	t.Logf("screenshots in %s", b.shot)

	// Sign in: the overview answers; the form screenshot first.
	b.open("/")
	b.waitJS("the sign-in form", `location.pathname === '/login'`)
	b.screenshots("login")
	b.signIn("alice", adminPW)
	b.waitJS("the overview", `document.querySelector('h1')?.textContent === 'Overview'`)

	// A device is provisioned and appears in the list, offline.
	prov, err := h.admin.ProvisionDevice(ctx, client.ProvisionRequest{ID: "ws-1", Type: "WeatherStation", Name: "Roof station", Tags: []string{"roof"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.ProvisionDevice(ctx, client.ProvisionRequest{ID: "ws-0", Type: "WeatherStation", Name: "Cellar"}); err != nil {
		t.Fatal(err)
	}
	b.open("/devices")
	b.waitJS("ws-1 in the list", `!!document.querySelector('tr[data-id="ws-1"]')`)
	if got := eval[string](b, "status of ws-1", `document.querySelector('tr[data-id="ws-1"] [data-f=status]').textContent`); got == "online" {
		t.Fatalf("ws-1 online before it connected")
	}
	b.waitJS("the live stream", `document.body.dataset.live === 'on'`)

	// It goes online, live, when a real MQTT client connects.
	cr := prov.Credentials
	dev := connectDevice(t, h.MQTTAddr(), "ws-1", cr.MQTTUsername, cr.MQTTPassword)
	b.waitJS("ws-1 online in the list", `document.querySelector('tr[data-id="ws-1"] [data-f=status]').textContent === 'online'`)
	b.screenshots("devices")

	// A reading arrives on its chart and in the latest values.
	b.open("/devices/ws-1")
	b.waitJS("the device page's stream", `document.body.dataset.live === 'on'`)
	b.waitJS("the first chart load", `window.devicehubCharts?.loads >= 1`)
	dev.publish(t, "devices/ws-1/data", `{"temperature": 21.5, "humidity": 40}`)
	b.waitJS("the reading on the chart", `Number(document.querySelector('figure.chart[data-field="temperature"]').dataset.points) >= 1`)
	b.waitJS("the connection in the presence history", `!!document.querySelector('#presence li[data-type=device_connected]')`)
	b.waitJS("the latest value", `document.querySelector('#latest tr[data-field="temperature"] [data-f=v]')?.textContent === '21.5'`)
	dev.publish(t, "devices/ws-1/data", `{"temperature": 22.25, "humidity": 41}`)
	b.waitJS("the second reading drawn on the chart", `Number(document.querySelector('figure.chart[data-field="temperature"] canvas').dataset.drawn) >= 2`)
	// A rejected message shows with its reason.
	// (The hub refuses it in the PUBACK too; that is the broker's test.)
	dev.publishRefused(t, "devices/ws-1/data", `{"temperature": 500}`)
	b.waitJS("the rejected message", `document.querySelector('#messages tr.rejected')?.textContent.includes('rejected')`)

	// A command is sent from the form, the device answers, the result shows.
	b.do("send a command",
		chromedp.SetValue(chromedp.CSS(`#command-form select[name=command]`), "reboot"),
		chromedp.SetValue(chromedp.CSS(`#command-form textarea[name=payload]`), `{"delay": 1}`),
		chromedp.Click(chromedp.CSS(`#command-form button[type=submit]`)),
	)
	b.waitJS("the command's result", `[...document.querySelectorAll('#commands [data-f=status]')].some(s => s.textContent === 'succeeded')`)
	if got := eval[string](b, "result", `document.querySelector('#commands [data-f=result] code').textContent`); !strings.Contains(got, "reboot") {
		t.Fatalf("command result shown: %q", got)
	}

	// The twin editor saves, and refuses to overwrite a change it has not seen.
	b.do("save desired", chromedp.SetValue(chromedp.CSS(`#twin-form textarea`), `{"interval": 30}`), chromedp.Click(chromedp.CSS(`#twin-form button`)))
	b.waitJS("desired version 1", `document.getElementById('twin-version').textContent === '1'`)
	if _, err := h.admin.SetDesired(ctx, "ws-1", map[string]any{"interval": 60}); err != nil {
		t.Fatal(err)
	}
	b.do("save desired over a newer version", chromedp.SetValue(chromedp.CSS(`#twin-form textarea`), `{"interval": 15}`), chromedp.Click(chromedp.CSS(`#twin-form button`)))
	// The conflict dialog is accepted: the editor now shows the hub's values.
	b.waitJS("the conflict handled", `document.getElementById('twin-version').textContent === '2' && document.querySelector('#twin-form textarea').value.includes('60')`)
	if tw, err := h.admin.GetTwin(ctx, "ws-1"); err != nil || tw.Desired.Values["interval"] != float64(60) {
		t.Fatalf("twin after a conflict: %+v, %v (the stale edit must not win)", tw, err)
	}
	b.screenshots("device")

	// A pending provisioning operation is approved in the dashboard, and the
	// device then fetches its credentials and connects.
	ptok, err := h.admin.CreateProvisioningToken(ctx, client.ProvisioningTokenRequest{Name: "factory", DeviceType: "WeatherStation"})
	if err != nil {
		t.Fatal(err)
	}
	anon := client.New(h.base, "", nil)
	op, err := anon.CreateOperation(ctx, ptok.Secret, "ws-2")
	if err != nil {
		t.Fatal(err)
	}
	b.open("/provisioning")
	b.waitJS("the pending operation", fmt.Sprintf(`!!document.querySelector('tr[data-op=%q]')`, op.ID))
	if got := eval[string](b, "code", fmt.Sprintf(`document.querySelector('tr[data-op=%q] .code').textContent`, op.ID)); got != op.VerificationCode {
		t.Fatalf("verification code shown %q, want %q", got, op.VerificationCode)
	}
	b.screenshots("provisioning")
	b.reloadAfter("approve", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-op=%q] button[data-op-action=approve]`, op.ID))))
	var creds *client.Credentials
	apitest.WaitFor(t, 15*time.Second, func() bool {
		got, err := anon.PollOperation(ctx, op.ID, op.Secret)
		if err == nil && got.Credentials != nil {
			creds = got.Credentials
		}
		return creds != nil
	})
	b.open("/devices/ws-2")
	b.waitJS("ws-2's stream", `document.body.dataset.live === 'on'`)
	connectDevice(t, h.MQTTAddr(), "ws-2", creds.MQTTUsername, creds.MQTTPassword)
	b.waitJS("ws-2 online", `document.getElementById('dev-status').textContent === 'online'`)
	b.waitJS("ws-2's presence", `!!document.querySelector('#presence li[data-type=device_connected]')`)

	// The other pages render.
	for _, p := range []string{"/", "/groups", "/types", "/tokens", "/audit"} {
		b.open(p)
		name := strings.Trim(p, "/")
		if name == "" {
			name = "overview"
		}
		b.screenshots(name)
	}
	// The dashboard's changes are in the audit trail under the user's name.
	page, err := h.admin.Audit(ctx, client.AuditQuery{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]bool{}
	for _, e := range page.Entries {
		if e.TokenName == "alice" && e.TokenID == "user:alice" && e.Status < 400 {
			ops[e.OperationID] = true
		}
	}
	for _, want := range []string{"sendCommand", "setDesiredProperties", "approveProvisioningOperation"} {
		if !ops[want] {
			t.Errorf("audit trail: no %s by alice (got %v)", want, ops)
		}
	}

	// A change without the session's CSRF token is refused.
	got := eval[string](b, "POST without CSRF", `fetch('/api/v1/devices/ws-1/disable', {method: 'POST', credentials: 'same-origin'}).then(r => r.status + ' ' + r.headers.get('content-type')).then(s => s)`)
	if !strings.HasPrefix(got, "403") {
		t.Fatalf("POST without CSRF token: got %s, want 403", got)
	}
	code := eval[string](b, "POST with a wrong CSRF token", `fetch('/api/v1/devices/ws-1/disable', {method: 'POST', headers: {'X-CSRF-Token': 'forged'}}).then(r => r.json()).then(j => j.error.code)`)
	if code != "csrf_failed" {
		t.Fatalf("POST with a forged CSRF token: code %q, want csrf_failed", code)
	}
	if d, err := h.admin.GetDevice(ctx, "ws-1"); err != nil || d.Disabled {
		t.Fatalf("ws-1 after refused requests: %+v, %v", d, err)
	}

	// Sign-out ends the session: the old cookie no longer opens a page.
	b.do("sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("signin")))
	b.open("/devices")
	b.waitJS("sent back to sign in", `location.pathname === '/login'`)

	// A viewer sees no write buttons, and the server refuses its writes.
	b.signIn("victor", viewerPW)
	b.open("/devices/ws-1")
	if n := eval[int](b, "write controls", `document.querySelectorAll('#command-form, #cred-actions, #twin-form button, #bulk').length`); n != 0 {
		t.Fatalf("viewer sees %d write controls", n)
	}
	status := eval[int](b, "viewer write", `fetch('/api/v1/devices/ws-1/disable', {method: 'POST', headers: {'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}}).then(r => r.status)`)
	if status != 403 {
		t.Fatalf("viewer's write: status %d, want 403", status)
	}
	b.screenshots("device-viewer")
}
