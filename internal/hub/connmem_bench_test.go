package hub_test

import (
	"os"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkConnectionMemory measures what an idle connected device costs
// the hub (issue 14, goal 6): devices connect from another process as the
// bench's connections scenario's do (MQTT 5, 10 s keepalive, no
// subscription), then the hub's own process is measured. Per connection:
// goroutine stacks in use (runtime.MemStats.StackInuse) and heap in use
// (HeapInuse), both after two forced collections (the second shrinks
// stacks the first found oversized); the resident set's growth (VmRSS,
// before any forced collection: what the bench reports); goroutines; and
// the hub's CPU while the devices are held idle for holdFor (keepalives,
// timers), in % of one core; and the runtime's starting stack size at
// the end (start-stack-B). b.N is not used: run it with -benchtime 1x.
//
//	go test ./internal/hub -run '^$' -bench ConnectionMemory -benchtime 1x -count 3
//
// DEVICEHUB_BENCH_DEVICES sets the devices (default 10,000; at most the
// hub's MQTT connection cap, 13,125 with the 20,000 open files a process
// may hold here). DEVICEHUB_BENCH_SUBSCRIBE=1: each device subscribes at
// QoS 1 to its commands and desired properties once connected, as the Go
// SDK's devices do. DEVICEHUB_BENCH_IDLE_CPUPROFILE=FILE writes a CPU
// profile of the idle hold, DEVICEHUB_BENCH_HEAPPROFILE=FILE a heap
// profile with the devices connected (after a collection: set
// GODEBUG=memprofilerate=1 to see every allocation). (go test's -memprofile does not show the
// connections: it is written after the devices disconnected.)
//
// Three fleets, one sub-benchmark each: idle (the bench's devices: no
// subscription), subscribed (each subscribes to its commands at QoS 1, as
// the SDK's devices do, and keeps a 300 s keepalive) and messaged
// (subscribed, and each was sent one QoS 0 message on its commands topic
// once all were connected: mochi's write loop of the connection has run).
func BenchmarkConnectionMemory(b *testing.B) {
	for _, bm := range []struct {
		name       string
		subscribed bool
		messaged   bool
	}{
		{"idle", false, false},
		{"subscribed", true, false},
		{"messaged", true, true},
	} {
		b.Run(bm.name, func(b *testing.B) { connectionMemory(b, bm.subscribed, bm.messaged) })
	}
}

func connectionMemory(b *testing.B, subscribed, messaged bool) {
	const holdFor = 5 * time.Second
	devices := benchDevices()
	th := startHub(b, "ingest: {rate_limit: {rate: 0, burst: 0}}\n")
	var m0, m1 runtime.MemStats
	var rss0, g0 int64
	ids := startFleet(b, th, "cm-", devices, !subscribed, func() {
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m0)
		rss0 = vmRSS(b)
		g0 = int64(runtime.NumGoroutine())
	})
	if messaged {
		for _, id := range ids {
			if err := th.Broker().Publish("devices/"+id+"/commands/bench", []byte(`{}`), false, 0); err != nil {
				b.Fatal(err)
			}
		}
	}
	rss1 := vmRSS(b)
	if path := os.Getenv("DEVICEHUB_BENCH_HEAPPROFILE"); path != "" {
		writeHeapProfile(b, path)
	}
	if path := os.Getenv("DEVICEHUB_BENCH_IDLE_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	cpu0, t0 := cpuTime(b), time.Now()
	time.Sleep(holdFor) // the idle hold being measured, not synchronisation
	cpu, held := cpuTime(b)-cpu0, time.Since(t0)
	pprof.StopCPUProfile()
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m1)
	g1 := int64(runtime.NumGoroutine())
	n := float64(devices)
	b.ReportMetric(float64(int64(m1.StackInuse)-int64(m0.StackInuse))/n, "stack-B/conn")
	b.ReportMetric(float64(int64(m1.HeapInuse)-int64(m0.HeapInuse))/n, "heap-B/conn")
	b.ReportMetric(float64(rss1-rss0)/n/1024, "rss-KiB/conn")
	b.ReportMetric(float64(g1-g0)/n, "goroutines/conn")
	b.ReportMetric(100*cpu.Seconds()/held.Seconds(), "idle-cpu-%")
	b.ReportMetric(float64(startingStack()), "start-stack-B")
}

// startingStack is the stack the runtime gives a new goroutine: Go sizes
// it from the average stack the last collection scanned (adaptive
// starting stacks), and a goroutine started larger than 2 KiB keeps it
// while it uses more than a quarter of it.
func startingStack() uint64 {
	s := []metrics.Sample{{Name: "/gc/stack/starting-size:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// writeHeapProfile writes a heap profile of the held connections to
// path, after a collection (DEVICEHUB_BENCH_HEAPPROFILE).
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// vmRSS is the process's resident set in bytes (/proc/self/status).
func vmRSS(b *testing.B) int64 {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status:", err)
	}
	for line := range strings.Lines(string(s)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
