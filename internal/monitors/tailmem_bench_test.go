package monitors

import (
	"bufio"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
)

// BenchmarkTailMemory fills a tail with 1,000,000 device_data_received
// events (many times its count bound of 131,072: the collector runs as
// under sustained ingest, so the peak RSS is its steady state), built as ingest builds
// them (interned field names, a fresh map of values per reading), and
// reports the heap it keeps (retained-MiB: HeapAlloc after a collection,
// less before), the events it holds and the process's peak RSS
// (peak-RSS-MiB, VmHWM: run one sub-benchmark per process, with the
// hub's GOGC=400 GOMEMLIMIT=1024MiB, to compare it). "count" is the tail
// bounded by its count alone, as before monitors.tail_bytes; "bytes" adds
// the default 64 MiB (docs/BENCHMARKS.md).
func BenchmarkTailMemory(b *testing.B) {
	shapes := []struct {
		name        string
		fields, pad int
	}{
		{"4-numbers", 4, 0},
		{"16-numbers", 16, 0},
		{"4-numbers-1KiB-text", 4, 1024},
	}
	bounds := []struct {
		name   string
		budget int64
	}{{"count", math.MaxInt64}, {"bytes", 64 << 20}}
	for _, sh := range shapes {
		keys := make([]string, sh.fields)
		for i := range keys {
			keys[i] = "field" + strconv.Itoa(i)
		}
		devs := make([]string, 1000)
		for i := range devs {
			devs[i] = "dev-" + strconv.Itoa(100000+i)
		}
		text := strings.Repeat("x", sh.pad)
		event := func(seq int64) *events.Event {
			vals := make(map[string]any, len(keys)+1)
			for i, k := range keys {
				vals[k] = float64(seq) + float64(i)/10
			}
			if sh.pad > 0 {
				vals["note"] = strings.Clone(text) // a payload's own bytes
			}
			now := time.Unix(0, seq*int64(time.Millisecond)).UTC()
			dev := devs[seq%int64(len(devs))]
			return &events.Event{Seq: seq, Type: events.DeviceDataReceived, Time: now, DeviceID: dev, DeviceType: "sensor",
				Args: &events.DataReceived{MessageID: seq, Topic: "devices/" + dev + "/data", Transport: "mqtt",
					Readings: []events.Reading{{Time: now, Values: vals}}}}
		}
		for _, bd := range bounds {
			b.Run(sh.name+"/"+bd.name, func(b *testing.B) {
				for range b.N {
					var ms runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&ms)
					before := ms.HeapAlloc
					tl := newTail(1<<17, bd.budget)
					tl.covered = 0
					for i := int64(1); i <= 1_000_000; i++ {
						tl.append(event(i))
					}
					runtime.GC()
					runtime.ReadMemStats(&ms)
					n, est := tl.stats()
					b.ReportMetric(float64(ms.HeapAlloc-before)/(1<<20), "retained-MiB")
					b.ReportMetric(float64(n), "tail-events")
					b.ReportMetric(float64(est)/(1<<20), "estimated-MiB")
					runtime.KeepAlive(tl)
				}
				b.ReportMetric(peakRSS()/(1<<20), "peak-RSS-MiB")
			})
		}
	}
}

// peakRSS is the process's VmHWM in bytes (0 if unknown).
func peakRSS() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

// BenchmarkRetainedSize: the cost of the estimate, paid once per event as
// the tail appends it.
func BenchmarkRetainedSize(b *testing.B) {
	for _, fields := range []int{4, 16} {
		e := dataEvent(1, fields, 0)
		b.Run(strconv.Itoa(fields)+"-numbers", func(b *testing.B) {
			for range b.N {
				retainedSize(e)
			}
		})
	}
	st := &events.Event{Seq: 1, Type: events.DeviceStatusChanged, DeviceID: "dev-1", DeviceType: "sensor",
		Args: &events.StatusChanged{OldStatus: "online", NewStatus: "offline"}}
	b.Run("status-changed", func(b *testing.B) {
		for range b.N {
			retainedSize(st)
		}
	})
}
