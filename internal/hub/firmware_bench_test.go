package hub_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/firmware"
	"github.com/devicehub/devicehub/internal/registry"
)

// rssKB is the process's resident set size now (/proc/self/status VmRSS).
func rssKB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// BenchmarkFirmwareDownload: 100 devices fetch a 10 MB artifact at once,
// over HTTP with their API keys (GET /api/v1/device/firmware/{id}). MB/s
// is the aggregate; peak-rss-MB the process's largest resident set during
// the downloads (hub and clients share the process) and rss-growth-MB its
// growth over the resident set before them: the file streams, so it stays
// far below 100 × 10 MB.
//
//	go test ./internal/hub -run '^$' -bench FirmwareDownload -benchtime 3x -count 3
func BenchmarkFirmwareDownload(b *testing.B) {
	const devices, size = 100, 10 << 20
	th := startHub(b, "")
	ctx := context.Background()
	buf := make([]byte, size)
	rand.Read(buf)
	art, err := th.Firmware().UploadArtifact(ctx, bytes.NewReader(buf), firmware.Upload{Version: "2.0.0", Type: "WeatherStation"})
	if err != nil {
		b.Fatal(err)
	}
	buf = nil
	keys := make([]string, devices)
	for i := range keys {
		cr, err := th.Registry().Provision(ctx, registry.ProvisionRequest{ID: fmt.Sprintf("dl-%03d", i), Type: "WeatherStation"})
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = cr.APIKey
	}
	tr := &http.Transport{MaxIdleConnsPerHost: devices}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	url := th.base + "/api/v1/device/firmware/" + art.ID
	base := rssKB()
	var peak atomic.Int64
	b.SetBytes(devices * size)
	b.ResetTimer()
	for range b.N {
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			t := time.NewTicker(5 * time.Millisecond)
			defer t.Stop()
			for {
				if r := rssKB(); r > peak.Load() {
					peak.Store(r)
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		var wg sync.WaitGroup
		errs := make(chan error, devices)
		for _, k := range keys {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("Authorization", "Bearer "+k)
				resp, err := hc.Do(req)
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				n, err := io.Copy(io.Discard, resp.Body)
				if err != nil || resp.StatusCode != 200 || n != size {
					errs <- fmt.Errorf("download: status %d, %d bytes, %v", resp.StatusCode, n, err)
				}
			}()
		}
		wg.Wait()
		close(stop)
		<-sampled
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(peak.Load())/1024, "peak-rss-MB")
	b.ReportMetric(float64(peak.Load()-base)/1024, "rss-growth-MB")
}

// BenchmarkRolloutScheduling10k: a rollout to 10,000 devices (imported in
// one change, none connected). start-ms is the time StartRollout takes to
// resolve the target and commit 10,000 queued rows; decide-ms the time
// until the scheduler has decided to start all of them (in memory;
// StartRollout wakes it, so no tick is waited for); notify-ms until the
// store holds all 10,000 notified states (committed with their events and
// history; the notices are published after each commit); idle-cpu-ms/s the process's CPU per second afterwards,
// while the 10,000 updates are in progress and the scheduler checks their
// timeouts at every tick (firmware.tick, default 1s; DEVICEHUB_BENCH_TICK
// sets another, to magnify the cost of a pass).
//
//	go test ./internal/hub -run '^$' -bench RolloutScheduling10k -benchtime 1x -count 3
func BenchmarkRolloutScheduling10k(b *testing.B) {
	const devices = 10000
	extra := ""
	if tick := os.Getenv("DEVICEHUB_BENCH_TICK"); tick != "" {
		extra = "firmware: {tick: " + tick + "}\n"
	}
	for range b.N {
		b.StopTimer()
		th := startHub(b, extra)
		ctx := context.Background()
		f := registry.ImportFile{}
		for i := range devices {
			f.Devices = append(f.Devices, registry.ImportDevice{ID: fmt.Sprintf("sch-%05d", i), Type: "WeatherStation"})
		}
		body, _ := json.Marshal(f)
		if rep, err := th.Registry().ImportJSON(ctx, body, registry.ImportOptions{}); err != nil {
			b.Fatal(err, rep)
		}
		art, err := th.Firmware().UploadArtifact(ctx, strings.NewReader("firmware"), firmware.Upload{Version: "2.0.0", Type: "WeatherStation"})
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 := time.Now()
		p, err := th.Firmware().StartRollout(ctx, firmware.Spec{ArtifactID: art.ID, Target: firmware.Target{Type: "WeatherStation"},
			StepTimeout: time.Hour, TotalTimeout: time.Hour})
		if err != nil || p.Total != devices {
			b.Fatal(err, p)
		}
		start := time.Since(t0)
		for {
			p, err = th.Firmware().GetRollout(ctx, p.ID)
			if err != nil {
				b.Fatal(err)
			}
			if p.Counts[firmware.Notified] == devices {
				break
			}
			time.Sleep(5 * time.Millisecond) // polling interval of a measurement, not synchronisation
		}
		decide := time.Since(t0) - start
		// The scheduler decides in memory, then commits and publishes:
		// wait until the store holds every notified state.
		for {
			us, err := th.Store().ListDeviceUpdates(ctx, p.ID)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, u := range us {
				if u.State == firmware.Notified {
					n++
				}
			}
			if n == devices {
				break
			}
			time.Sleep(20 * time.Millisecond) // polling interval of a measurement, not synchronisation
		}
		notify := time.Since(t0) - start
		b.StopTimer()
		c0, w0 := cpuTime(b), time.Now()
		time.Sleep(2 * time.Second) // the measured idle period
		idle := float64((cpuTime(b) - c0).Milliseconds()) / time.Since(w0).Seconds()
		b.ReportMetric(float64(start.Milliseconds()), "start-ms")
		b.ReportMetric(float64(decide.Milliseconds()), "decide-ms")
		b.ReportMetric(float64(notify.Milliseconds()), "notify-ms")
		b.ReportMetric(idle, "idle-cpu-ms/s")
	}
}
