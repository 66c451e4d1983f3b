package web_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
)

// TestFleetPages drives the alerts, firmware, configuration and monitors
// pages and the overview's tiles in chromium against a real hub and a
// real MQTT device: an alert raised by the device's reading appears live
// and is acknowledged from the page, a rollout is paused, a configuration
// not applied is listed and counted, a monitor is deleted; each change is
// audited under the user's name, and a viewer sees none of the buttons.
func TestFleetPages(t *testing.T) {
	if chromiumPath() == "" {
		t.Skip("browser tests skipped: no chromium found (apt-get install chromium, or set DEVICEHUB_CHROMIUM)")
	}
	h := startHub(t)
	ctx := context.Background()
	pw := addUser(t, h, "olga", "operator")
	viewerPW := addUser(t, h, "victor", "viewer")
	prov, err := h.admin.ProvisionDevice(ctx, client.ProvisionRequest{ID: "ws-1", Type: "WeatherStation"})
	if err != nil {
		t.Fatal(err)
	}
	dev := connectDevice(t, h.MQTTAddr(), "ws-1", prov.Credentials.MQTTUsername, prov.Credentials.MQTTPassword)
	if _, err := h.admin.CreateAlertRule(ctx, client.AlertRule{Name: "hot", DeviceType: "WeatherStation", When: "temperature > 30", Severity: "critical", Message: "too hot"}); err != nil {
		t.Fatal(err)
	}
	art, err := h.admin.UploadArtifact(ctx, bytes.NewReader(bytes.Repeat([]byte("fw"), 5000)), client.UploadArtifact{Version: "2.0", Type: "WeatherStation"})
	if err != nil {
		t.Fatal(err)
	}
	ro, err := h.admin.StartRollout(ctx, client.RolloutRequest{ArtifactID: art.ID, DeviceIDs: []string{"ws-1"}, StepTimeout: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.CreateTemplate(ctx, client.TemplateSpec{ID: "ntp", Name: "Time", Config: map[string]any{"ntp": "{{ server }}"}, Defaults: map[string]string{"server": "pool.ntp.org"}, Types: []string{"WeatherStation"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.SetDeviceConfig(ctx, "ws-1", client.DeviceConfigUpdate{Templates: &[]string{"ntp"}}); err != nil {
		t.Fatal(err)
	}
	mon, err := h.admin.CreateTCPMonitor(ctx, []string{"device_*"}, client.MonitorSpec{Description: "to the data lake"})
	if err != nil {
		t.Fatal(err)
	}

	b := newBrowser(t, h.base)
	b.signIn("olga", pw)

	// The alert is raised while the page is open: the list follows live.
	b.open("/alerts")
	b.waitJS("the live stream", `document.body.dataset.live === 'on'`)
	dev.publish(t, "devices/ws-1/data", `{"temperature": 41}`)
	b.waitJS("the alert on the page", `!!document.querySelector('#alerts tr[data-state=active]')`)
	b.screenshots("alerts")
	// By keyboard: Tab from the top reaches the skip link first; the
	// acknowledge button takes the focus and Enter presses it.
	b.do("tab", chromedp.KeyEvent(kb.Tab))
	if got := eval[string](b, "focus", `document.activeElement.textContent`); got != "Skip to content" {
		t.Errorf("first Tab focuses %q, want the skip link", got)
	}
	b.do("acknowledge by keyboard", chromedp.Focus(chromedp.CSS(`#alerts tr[data-state=active] button[data-alert-action=acknowledge]`)), chromedp.KeyEvent(kb.Enter))
	eventually.True(t, 20*time.Second, "the alert acknowledged by olga", func() bool {
		as, err := h.admin.Alerts(ctx, client.AlertQuery{DeviceID: "ws-1"})
		return err == nil && len(as) == 1 && as[0].State == "acknowledged" && as[0].AckBy != ""
	})

	// The overview counts the open alert, the configuration not applied
	// and the rollout in progress.
	b.open("/")
	for id, want := range map[string]string{"n-alerts": "1", "n-config": "1", "n-rollouts": "1"} {
		if got := eval[string](b, id, fmt.Sprintf(`document.getElementById(%q).textContent`, id)); got != want {
			t.Errorf("overview tile %s: %q, want %q", id, got, want)
		}
	}
	b.screenshots("overview-fleet")
	// The tiles follow: the alert cleared elsewhere leaves none open.
	b.waitJS("the overview's stream", `document.body.dataset.live === 'on'`)
	as, err := h.admin.Alerts(ctx, client.AlertQuery{DeviceID: "ws-1"})
	if err != nil || len(as) != 1 {
		t.Fatalf("alerts: %v, %v", as, err)
	}
	if _, err := h.admin.ClearAlert(ctx, as[0].ID, "fixed"); err != nil {
		t.Fatal(err)
	}
	b.waitJS("no open alert on the tile", `document.getElementById('n-alerts').textContent === '0'`)

	// The device page shows its configuration, firmware and alerts.
	b.open("/devices/ws-1")
	b.waitJS("the device's configuration", `document.querySelector('#dev-config')?.textContent.includes('ntp')`)
	b.waitJS("the device's alert", `document.querySelector('#dev-alerts')?.textContent.includes('hot')`)
	b.waitJS("the device's firmware update", `!!document.querySelector('#dev-firmware')`)
	b.screenshots("device-fleet")

	b.open("/config")
	b.waitJS("ws-1's configuration not applied", `!!document.querySelector('#configs tr[data-device="ws-1"]')`)
	b.screenshots("config")

	b.open("/firmware")
	b.waitJS("the rollout", fmt.Sprintf(`!!document.querySelector('#rollouts tr[data-rollout=%q]')`, ro.ID))
	b.screenshots("firmware")
	b.do("pause", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-rollout=%q] button[data-rollout-action=pause]`, ro.ID))))
	b.waitJS("the rollout paused on the page", fmt.Sprintf(`document.querySelector('tr[data-rollout=%q]')?.dataset.status === 'paused'`, ro.ID))
	if got, err := h.admin.GetRollout(ctx, ro.ID); err != nil || got.Status != "paused" {
		t.Fatalf("rollout after pause: %+v, %v", got, err)
	}
	b.open("/firmware/rollouts/" + ro.ID)
	b.waitJS("the rollout's device", `document.body.textContent.includes('ws-1')`)
	b.screenshots("rollout")

	b.open("/monitors")
	b.waitJS("the monitor", fmt.Sprintf(`!!document.querySelector('tr[data-monitor=%q]')`, mon.Monitor.ID))
	b.screenshots("monitors")
	b.do("delete the monitor", chromedp.Click(chromedp.CSS(fmt.Sprintf(`tr[data-monitor=%q] button[data-monitor-action=delete]`, mon.Monitor.ID))))
	b.waitJS("the monitor gone", fmt.Sprintf(`!document.querySelector('tr[data-monitor=%q]')`, mon.Monitor.ID))
	if ms, err := h.admin.Monitors(ctx, ""); err != nil || len(ms) != 0 {
		t.Fatalf("monitors after delete: %v, %v", ms, err)
	}

	page, err := h.admin.Audit(ctx, client.AuditQuery{Limit: 200})
	if err != nil {
		t.Fatal(err)
	}
	ops := map[string]bool{}
	for _, e := range page.Entries {
		if e.TokenID == "user:olga" && e.Status < 400 {
			ops[e.OperationID] = true
		}
	}
	for _, want := range []string{"acknowledgeAlert", "pauseRollout", "deleteMonitor"} {
		if !ops[want] {
			t.Errorf("audit trail: no %s by olga (got %v)", want, ops)
		}
	}

	// A viewer reads the pages without a write button.
	b.do("sign out", chromedp.Click(chromedp.ID("signout")), chromedp.WaitVisible(chromedp.ID("signin")))
	b.signIn("victor", viewerPW)
	for _, p := range []string{"/alerts?state=all", "/firmware", "/firmware/rollouts/" + ro.ID, "/config", "/monitors"} {
		b.open(p)
		if n := eval[int](b, "buttons on "+p, `document.querySelectorAll('main button').length`); n != 0 {
			t.Errorf("viewer sees %d buttons on %s", n, p)
		}
	}
}
