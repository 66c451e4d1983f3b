package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/performance"
	"github.com/chromedp/chromedp"
	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/registry"
)

// TestChartWeekPerformance measures, in headless chromium, a device page's
// chart of one week at one reading every 10 s (60,480 points): the time to
// first draw (the buckets fetched through the API, then drawn). It is a
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
	got := eval[map[string]float64](br, "timing", `({points: window.devicehubCharts.points, buckets: window.devicehubCharts.buckets, fetchMs: window.devicehubCharts.fetchMs, drawMs: window.devicehubCharts.drawMs})`)
	covered := eval[int](br, "covered", `Number(document.querySelector('figure.chart[data-field="temperature"]').dataset.points)`)
	var redraws []string
	for range 5 {
		redraws = append(redraws, strings.TrimRight(strings.TrimRight(jsonNumber(eval[float64](br, "redraw", `window.devicehubCharts.redraw()`)), "0"), "."))
	}
	t.Logf("week chart: time to first draw %.0f ms (fetch %.0f ms of %v buckets for 2 fields covering %d readings each, draw %.1f ms); redraws of both charts (ms): %s",
		got["fetchMs"]+got["drawMs"], got["fetchMs"], got["buckets"], covered, got["drawMs"], strings.Join(redraws, " "))
	if covered < points-60 || covered > points {
		t.Errorf("the chart covers %d readings, want about %d", covered, points)
	}
	br.screenshots("device-week")
}

func jsonNumber(f float64) string {
	b, _ := json.Marshal(float64(int(f*100)) / 100)
	return string(b)
}

// TestLiveCPU measures, in headless chromium, the browser's CPU while
// 1,000 real MQTT devices change status every second (each publishes its
// status, alternating online and maintenance, spread evenly over the
// second): the renderer's main-thread task time over wall time (Chrome
// DevTools Protocol Performance.getMetrics), on the devices list (250
// rows on the page) and the overview, beside the same pages idle. A
// measurement, not a check of a speed: it runs only with
// DEVICEHUB_BROWSER_PERF=1 and logs its figures.
func TestLiveCPU(t *testing.T) {
	if os.Getenv("DEVICEHUB_BROWSER_PERF") == "" {
		t.Skip("set DEVICEHUB_BROWSER_PERF=1 to measure the browser's CPU under 1,000 status changes a second")
	}
	if chromiumPath() == "" {
		t.Skip("browser tests skipped: no chromium found (apt-get install chromium, or set DEVICEHUB_CHROMIUM)")
	}
	const n = 1000
	window := 20 * time.Second
	if v, err := time.ParseDuration(os.Getenv("DEVICEHUB_PERF_WINDOW")); err == nil && v > 0 {
		window = v
	}
	h := startHub(t)
	ctx := context.Background()
	devs := make([]*paho.Client, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			id := fmt.Sprintf("ws-%04d", i)
			cr, err := h.Registry().Provision(ctx, registry.ProvisionRequest{ID: id, Type: "WeatherStation"})
			if err != nil {
				t.Error(err)
				return
			}
			conn, err := net.Dial("tcp", h.MQTTAddr())
			if err != nil {
				t.Error(err)
				return
			}
			c := paho.NewClient(paho.ClientConfig{Conn: conn})
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if _, err := c.Connect(cctx, &paho.Connect{ClientID: id, KeepAlive: 60, CleanStart: true,
				Username: cr.MQTTUsername, UsernameFlag: true, Password: []byte(cr.MQTTPassword), PasswordFlag: true}); err != nil {
				t.Errorf("connect %s: %v", id, err)
				return
			}
			devs[i] = c
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Cleanup(func() {
		for _, c := range devs {
			_ = c.Disconnect(&paho.Disconnect{})
		}
	})

	// churn makes every device change its status once a second, until
	// stop is closed: ten devices every 10 ms.
	churn := func(stop <-chan struct{}) <-chan int {
		sent := make(chan int, 1)
		go func() {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			count, round := 0, 0
			for {
				select {
				case <-stop:
					sent <- count
					return
				case <-tick.C:
				}
				status := "maintenance"
				if (round/100)%2 == 1 {
					status = "online"
				}
				for j := range 10 {
					i := (round%100)*10 + j
					_, _ = devs[i].Publish(ctx, &paho.Publish{Topic: "devices/" + fmt.Sprintf("ws-%04d", i) + "/status", QoS: 0, Payload: []byte(`{"status":"` + status + `"}`)})
					count++
				}
				round++
			}
		}()
		return sent
	}

	pw := addUser(t, h, "perf", "viewer")
	br := newBrowser(t, h.base)
	br.signIn("perf", pw)
	if _, err := chromedp.Call(br.ctx, performance.Enable, performance.EnableParams{}); err != nil {
		t.Fatal(err)
	}
	metrics := func() map[string]float64 {
		res, err := chromedp.Call(br.ctx, performance.GetMetrics, cdp.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]float64{}
		for _, x := range res.Metrics {
			m[x.Name] = x.Value
		}
		return m
	}
	wait := func(d time.Duration) {
		tm := time.NewTimer(d)
		defer tm.Stop()
		<-tm.C // a measurement window, not a synchronisation
	}
	measure := func(path string, busy bool) {
		br.open(path)
		br.waitJS("the stream", `document.body.dataset.live === 'on'`)
		var stop chan struct{}
		var sent <-chan int
		if busy {
			stop = make(chan struct{})
			sent = churn(stop)
			wait(3 * time.Second) // the stream is full before the window opens
		}
		ev0 := eval[int](br, "events", `window.devicehubLive?.events ?? 0`)
		b0 := eval[int](br, "batches", `window.devicehubLive?.batches ?? 0`)
		m0 := metrics()
		wait(window)
		m1 := metrics()
		ev1 := eval[int](br, "events", `window.devicehubLive?.events ?? 0`)
		b1 := eval[int](br, "batches", `window.devicehubLive?.batches ?? 0`)
		published := 0
		if busy {
			close(stop)
			published = <-sent
		}
		wall := m1["Timestamp"] - m0["Timestamp"]
		pct := func(k string) float64 { return 100 * (m1[k] - m0[k]) / wall }
		load, _ := os.ReadFile("/proc/loadavg")
		t.Logf("%-22s busy=%-5v main thread %5.1f%% (script %4.1f%%, layout %4.1f%%, style %4.1f%%); %6.0f events/s in %4.1f DOM batches/s; %d status messages published; heap %.1f MB; load %s",
			path, busy, pct("TaskDuration"), pct("ScriptDuration"), pct("LayoutDuration"), pct("RecalcStyleDuration"),
			float64(ev1-ev0)/wall, float64(b1-b0)/wall, published, m1["JSHeapUsedSize"]/1e6, strings.Fields(string(load))[0])
	}
	pages := []string{"/devices?limit=250", "/"}
	if v := os.Getenv("DEVICEHUB_PERF_PAGES"); v != "" {
		pages = strings.Split(v, ",")
	}
	for _, p := range pages {
		measure(p, false)
		measure(p, true)
	}
}
