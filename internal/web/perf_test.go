package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
)

// TestChartWeekPerformance measures, in headless chromium, a device page's
// chart of one week at one reading every 10 s (60,480 points): the time to
// fetch the readings through the API and the time to draw them. It is a
// measurement, not a check of a speed: it runs only with
// DEVICEHUB_BROWSER_PERF=1 and logs its figures.
func TestChartWeekPerformance(t *testing.T) {
	if os.Getenv("DEVICEHUB_BROWSER_PERF") == "" {
		t.Skip("set DEVICEHUB_BROWSER_PERF=1 to measure the chart of a week in chromium")
	}
	if chromiumPath() == "" {
		t.Skip("browser tests skipped: no chromium found (apt-get install chromium, or set DEVICEHUB_CHROMIUM)")
	}
	h := startHub(t)
	ctx := context.Background()
	prov, err := h.admin.ProvisionDevice(ctx, client.ProvisionRequest{ID: "ws-1", Type: "WeatherStation"})
	if err != nil {
		t.Fatal(err)
	}
	dev := connectDevice(t, h.MQTTAddr(), "ws-1", prov.Credentials.MQTTUsername, prov.Credentials.MQTTPassword)
	const points, step = 60_480, 10 * time.Second
	// The last reading a minute ago: the week window, which moves with
	// the clock, leaves out the first few by the time the page draws.
	start := time.Now().Add(-time.Minute).Add(-(points - 1) * step)
	for i := 0; i < points; i += 500 {
		batch := make([]map[string]any, 0, 500)
		for j := i; j < min(points, i+500); j++ {
			batch = append(batch, map[string]any{"ts": start.Add(time.Duration(j) * step).UnixMilli(), "temperature": 15 + float64(j%8640)/864, "humidity": 40 + float64(j%100)/10})
		}
		b, _ := json.Marshal(batch)
		dev.publish(t, "devices/ws-1/data", string(b))
	}
	pw := addUser(t, h, "alice", "viewer")
	br := newBrowser(t, h.base)
	br.signIn("alice", pw)
	br.open("/devices/ws-1")
	br.waitJS("the first load", `window.devicehubCharts?.loads >= 1`)
	br.do("choose a week", chromedp.Click(chromedp.CSS(`#range input[value="168h"]`)))
	eventually.CheckFor(t, 2*time.Minute, 100*time.Millisecond, func() error {
		if n := eval[int](br, "loads", `window.devicehubCharts.loads`); n < 2 {
			return fmt.Errorf("the week did not load (%d loads)", n)
		}
		return nil
	})
	got := eval[map[string]float64](br, "timing", `({points: window.devicehubCharts.points, fetchMs: window.devicehubCharts.fetchMs, drawMs: window.devicehubCharts.drawMs})`)
	drawn := eval[int](br, "drawn", `Number(document.querySelector('figure.chart[data-field="temperature"] canvas').dataset.drawn)`)
	var redraws []string
	for range 5 {
		redraws = append(redraws, strings.TrimRight(strings.TrimRight(jsonNumber(eval[float64](br, "redraw", `window.devicehubCharts.redraw()`)), "0"), "."))
	}
	t.Logf("week chart: %v readings fetched in %.0f ms, first draw of 2 charts %.1f ms; %d points drawn per chart; redraws of both charts (ms): %s",
		got["points"], got["fetchMs"], got["drawMs"], drawn, strings.Join(redraws, " "))
	if drawn < points-60 || drawn > points {
		t.Errorf("drawn %d points, want about %d", drawn, points)
	}
	br.screenshots("device-week")
}

func jsonNumber(f float64) string {
	b, _ := json.Marshal(float64(int(f*100)) / 100)
	return string(b)
}
