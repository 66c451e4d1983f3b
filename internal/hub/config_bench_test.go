package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/eventually"
)

// configFleet imports n devices into group "fleet" of a running hub and
// gives the group template "fleet" (so every device gets a configuration),
// returning the devices' credentials.
func configFleet(b *testing.B, th *testHub, n int) (*client.Client, []client.Credentials) {
	b.Helper()
	ctx := context.Background()
	api := client.New(th.base, th.token, nil)
	if _, err := api.CreateGroup(ctx, "fleet", ""); err != nil {
		b.Fatal(err)
	}
	var creds []client.Credentials
	for start := 0; start < n; start += 10000 {
		var devs []map[string]string
		for i := start; i < min(n, start+10000); i++ {
			devs = append(devs, map[string]string{"id": fmt.Sprintf("r%05d", i), "type": "WeatherStation", "group": "fleet"})
		}
		body, _ := json.Marshal(devs)
		rep, err := api.ImportDevices(ctx, body, "application/json", false)
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range rep.Lines {
			creds = append(creds, *l.Credentials)
		}
	}
	if _, err := api.CreateTemplate(ctx, client.TemplateSpec{ID: "fleet",
		Config: map[string]any{"ntp": map[string]any{"server": "a.example"}, "name": "{{ device_id }}"}}); err != nil {
		b.Fatal(err)
	}
	if _, err := api.SetGroupConfig(ctx, "fleet", client.GroupConfigUpdate{Templates: &[]string{"fleet"}}); err != nil {
		b.Fatal(err)
	}
	return api, creds
}

// BenchmarkConfigRerender: a template used by 10,000 devices
// (CONFIG_BENCH_DEVICES) is edited through the REST API. Reports the time
// the API took to answer (it starts a background job), the time to the
// last config_modified committed (seen on the event bus), the time to the
// end of the job (its last retained notice was published by the broker)
// and the time until ten real MQTT devices subscribed to their notices
// received the new one.
func BenchmarkConfigRerender(b *testing.B) {
	n := 10000
	if v := os.Getenv("CONFIG_BENCH_DEVICES"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	for i := range b.N {
		b.StopTimer()
		th := startHub(b, "")
		api, creds := configFleet(b, th, n)
		ctx := context.Background()
		// Ten devices online, spread over the fleet, waiting for notices.
		var watchers []*mqttClient
		for k := range 10 {
			c := creds[k*(n/10)]
			mc, _, err := dial(b, th.MQTTAddr(), c.DeviceID, c.MQTTUsername, c.MQTTPassword)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := mc.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/" + c.DeviceID + "/config", QoS: 1}}}); err != nil {
				b.Fatal(err)
			}
			watchers = append(watchers, mc)
		}
		var modified atomic.Int64
		var lastModified atomic.Int64 // unix ns
		sub, err := th.Subscribe(events.Filter{Types: []events.Type{events.ConfigModified}}, 0, func(events.Event) {
			modified.Add(1)
			lastModified.Store(time.Now().UnixNano())
		})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		res, err := api.UpdateTemplate(ctx, "fleet", client.TemplateSpec{
			Config: map[string]any{"ntp": map[string]any{"server": "b.example"}, "name": "{{ device_id }}"}})
		answered := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if res.Job == nil || res.Job.Affected != n {
			b.Fatalf("job %+v", res.Job)
		}
		var job *client.ConfigJob
		eventually.True(b, 5*time.Minute, "the re-render job", func() bool {
			if job, err = api.ConfigJob(ctx, res.Job.ID); err != nil {
				b.Fatal(err)
			}
			return job.FinishedAt != nil
		})
		jobDone := job.FinishedAt.Sub(start)
		eventually.True(b, time.Minute, "every config_modified", func() bool { return modified.Load() == int64(n) })
		for _, mc := range watchers {
			eventually.True(b, time.Minute, "the notice", func() bool { return len(mc.noticesB(b)) >= 2 })
		}
		devicesTold := time.Since(start)
		b.StopTimer()
		sub.Close()
		if job.Changed != n || job.Failed != 0 {
			b.Fatalf("job %+v", job)
		}
		if i == 0 {
			b.ReportMetric(answered.Seconds()*1000, "ms-api-answer")
			b.ReportMetric(time.Unix(0, lastModified.Load()).Sub(start).Seconds(), "s-last-config_modified")
			b.ReportMetric(jobDone.Seconds(), "s-last-notice")
			b.ReportMetric(devicesTold.Seconds(), "s-10-devices-told")
		}
	}
}

// BenchmarkConfigChecksumPolling: 1,000 devices poll
// GET /api/v1/device/config/checksum with If-None-Match over HTTP/1.1
// keep-alive connections (CONFIG_BENCH_POLLERS concurrent, default 64);
// every answer must be 304. Reports requests per second and latency
// percentiles.
func BenchmarkConfigChecksumPolling(b *testing.B) {
	const devices = 1000
	pollers := 64
	if v := os.Getenv("CONFIG_BENCH_POLLERS"); v != "" {
		pollers, _ = strconv.Atoi(v)
	}
	th := startHub(b, "")
	api, creds := configFleet(b, th, devices)
	ctx := context.Background()
	sums := make([]string, devices)
	for i, c := range creds {
		dc, err := api.DeviceConfig(ctx, c.DeviceID)
		if err != nil {
			b.Fatal(err)
		}
		sums[i] = `"` + dc.Checksum + `"`
	}
	tr := &http.Transport{MaxIdleConnsPerHost: pollers, MaxConnsPerHost: pollers}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	url := th.base + "/api/v1/device/config/checksum"
	var next atomic.Int64
	lat := make([][]time.Duration, pollers)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	cpu0 := processCPU()
	start := time.Now()
	for w := range pollers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				d := i % devices
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Authorization", "Bearer "+creds[d].APIKey)
				req.Header.Set("If-None-Match", sums[d])
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					failed.Store(err.Error())
					return
				}
				resp.Body.Close()
				lat[w] = append(lat[w], time.Since(t0))
				if resp.StatusCode != http.StatusNotModified {
					failed.Store(fmt.Sprintf("HTTP %d", resp.StatusCode))
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpu0
	b.StopTimer()
	if f := failed.Load(); f != nil {
		b.Fatal(f)
	}
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "µs-p50")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "µs-p99")
	// CPU time of the process (hub and pollers) per request: what the
	// rate would be on cores of its own, whatever else the machine runs.
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "µs-cpu/req")
}

// processCPU is the user and system CPU time this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// noticesB counts the config notices mc received.
func (mc *mqttClient) noticesB(b *testing.B) []notice {
	var out []notice
	for _, p := range mc.received() {
		var n notice
		if json.Unmarshal(p.Payload, &n) == nil && n.Checksum != "" {
			out = append(out, n)
		}
	}
	return out
}
