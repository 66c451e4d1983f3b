package monitors_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/monitors"
	"github.com/devicehub/devicehub/internal/monitors/monitorstest"
	"github.com/devicehub/devicehub/monitorclient"
)

// countingReceiver verifies and decodes every delivery (as a real
// receiver would) and counts the events, per monitor.
func countingReceiver(b *testing.B, secrets *sync.Map) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, _ := secrets.Load(r.Header.Get(monitorclient.HeaderMonitorID))
		sec, _ := s.(string)
		monitorclient.NewHandler(monitorclient.HandlerOptions{Secrets: []string{sec}}, func(_ context.Context, bt *monitorclient.Batch) error {
			n.Add(int64(len(bt.Events)))
			return nil
		}).ServeHTTP(w, r)
	}))
	b.Cleanup(srv.Close)
	return srv, &n
}

// publishFast commits n events in changes of one event, keeping up to
// 2000 in flight.
func (h *hub) publishFast(n int) {
	ctx := context.Background()
	ev, err := commit.NewEvent(events.Event{Type: events.DeviceStatusChanged, Time: time.Now().UTC(), DeviceID: "d1", DeviceType: "sensor",
		Args: &events.StatusChanged{OldStatus: "online", NewStatus: "offline"}})
	if err != nil {
		h.t.Fatal(err)
	}
	var pending []*commit.Ticket
	flush := func() {
		for _, t := range pending {
			if err := t.Wait(ctx); err != nil {
				h.t.Fatal(err)
			}
		}
		pending = pending[:0]
	}
	for range n {
		t, err := h.com.Enqueue(ctx, &commit.Change{DeviceID: "d1", Events: []commit.Event{ev}})
		if err != nil {
			h.t.Fatal(err)
		}
		pending = append(pending, t)
		if len(pending) == 2000 {
			flush()
		}
	}
	flush()
}

func benchOptions() monitors.Options {
	o := testOptions()
	o.IdleCursorSave = time.Second
	return o
}

// BenchmarkHTTPDelivery: events per second from commit to a real HTTP
// receiver that verifies and decodes them, batch size 100, with one
// monitor and with 100 monitors at once (events/s counts every monitor's
// deliveries).
func BenchmarkHTTPDelivery(b *testing.B) {
	for _, monitorsN := range []int{1, 100} {
		b.Run(fmt.Sprintf("monitors=%d/batch=100", monitorsN), func(b *testing.B) {
			h := startHub(b, "", benchOptions())
			var secrets sync.Map
			srv, got := countingReceiver(b, &secrets)
			for range monitorsN {
				res := h.create(monitors.Spec{Topics: []string{"device_*"}, Transport: "http", URL: srv.URL, Method: "POST",
					BatchSize: 100, BatchDuration: fptr(0.05), AutoReplayOnConnect: true})
				secrets.Store(res.Monitor.ID, res.Secret)
			}
			b.ResetTimer()
			start := time.Now()
			h.publishFast(b.N)
			want := int64(b.N * monitorsN)
			eventually.True(b, 10*time.Minute, "every delivery", func() bool { return got.Load() >= want })
			b.StopTimer()
			b.ReportMetric(float64(want)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkIngest: the commit rate of events with no monitor, with 10
// active monitors delivering to a real receiver, and with one monitor
// whose receiver answers 500 forever (replay on, so it keeps its backlog).
//
// The receiver is a process of its own (monitorstest.StartReceiver) that
// checks each delivery's signature and decodes it, as an outside system
// would: its CPU is not the hub's. events/s is the commit rate; cpu-us/ev
// is this process's CPU time (getrusage: committer, bus, monitors, HTTP
// client) per event from the start until every monitor delivered every
// event, which load on the machine distorts much less than the rate.
func BenchmarkIngest(b *testing.B) {
	for _, tc := range []struct {
		name    string
		active  int
		failing bool
	}{{"monitors=0", 0, false}, {"monitors=10", 10, false}, {"failing=1", 0, true}} {
		b.Run(tc.name, func(b *testing.B) {
			h := startHub(b, "", benchOptions())
			recv := monitorstest.StartReceiver(b, "decode")
			for range tc.active {
				res := h.create(monitors.Spec{Topics: []string{"*"}, Transport: "http", URL: recv.URL, Method: "POST",
					BatchSize: 100, BatchDuration: fptr(0.05), AutoReplayOnConnect: true})
				recv.Secret(res.Monitor.ID, res.Secret)
			}
			if tc.failing {
				bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
				b.Cleanup(bad.Close)
				h.create(monitors.Spec{Topics: []string{"*"}, Transport: "http", URL: bad.URL, BatchSize: 100, BatchDuration: fptr(0.05), AutoReplayOnConnect: true})
			}
			base := recv.Count() // status events of the monitors themselves
			b.ResetTimer()
			cpu0 := monitorstest.CPUTime(b)
			start := time.Now()
			h.publishFast(b.N)
			elapsed := time.Since(start)
			want := base + int64(tc.active*b.N)
			eventually.True(b, 10*time.Minute, "every delivery", func() bool { return recv.Count() >= want })
			cpu := monitorstest.CPUTime(b) - cpu0
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/1000/float64(b.N), "cpu-us/ev")
		})
	}
}

// BenchmarkReplayBacklog: a stream monitor with replay that was away
// while MONITORS_BENCH_BACKLOG events (default 100000) were committed
// reconnects and receives them all; reports events/s of the replay, the
// peak growth of the heap in use during it (HeapInuse: what the process
// holds, garbage not yet collected included, so it depends on the
// collector's pacing: with GOGC=100 up to about twice the live heap) and
// the peak growth of the live heap (runtime/metrics /gc/heap/live:bytes,
// the heap marked live by the latest collection: what the replay needs).
func BenchmarkReplayBacklog(b *testing.B) {
	size := 100000
	if v := os.Getenv("MONITORS_BENCH_BACKLOG"); v != "" {
		size, _ = strconv.Atoi(v)
	}
	for range b.N {
		b.StopTimer()
		h := startHub(b, "", benchOptions())
		addr := h.serveStream(b, nil)
		res := h.create(monitors.Spec{Topics: []string{"device_*"}, Transport: "tcp", BatchSize: 1000, BatchDuration: fptr(0.01),
			Compression: "zlib", AutoReplayOnConnect: true})
		// The backlog, written straight into the store in large batches
		// (no receiver is connected, so nothing reads it yet).
		ctx := context.Background()
		ev, _ := commit.NewEvent(events.Event{Type: events.DeviceStatusChanged, Time: time.Now().UTC(), DeviceID: "d1", DeviceType: "sensor",
			Args: &events.StatusChanged{OldStatus: "online", NewStatus: "offline"}})
		for done := 0; done < size; {
			n := min(5000, size-done)
			batch := make([]*commit.Change, n)
			for i := range batch {
				batch[i] = &commit.Change{DeviceID: "d1", Events: []commit.Event{ev}}
			}
			if err := h.st.Commit(ctx, batch); err != nil {
				b.Fatal(err)
			}
			done += n
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		base := ms.HeapInuse
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(live)
		liveBase := live[0].Value.Uint64()
		var peak, livePeak atomic.Uint64
		stopSample := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			var ms runtime.MemStats
			t := time.NewTicker(50 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stopSample:
					return
				case <-t.C:
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
					metrics.Read(live)
					if v := live[0].Value.Uint64(); v > livePeak.Load() {
						livePeak.Store(v)
					}
				}
			}
		}()
		var got atomic.Int64
		b.StartTimer()
		start := time.Now()
		stop := runStream(b, monitorclient.StreamOptions{Addr: addr, MonitorID: res.Monitor.ID, Token: res.Token,
			Callback: func(bt *monitorclient.Batch) bool { got.Add(int64(len(bt.Events))); return true }})
		eventually.True(b, 30*time.Minute, "the backlog", func() bool { return got.Load() >= int64(size) })
		b.StopTimer()
		elapsed := time.Since(start)
		close(stopSample)
		<-sampled
		stop()
		b.ReportMetric(float64(size)/elapsed.Seconds(), "events/s")
		b.ReportMetric(elapsed.Seconds(), "s/replay")
		b.ReportMetric(float64(peak.Load()-min(peak.Load(), base))/(1<<20), "MiB-peak-heap-growth")
		b.ReportMetric(float64(livePeak.Load()-min(livePeak.Load(), liveBase))/(1<<20), "MiB-peak-live-growth")
		h.stop()
	}
}
