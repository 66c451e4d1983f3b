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
			return benchDataEvent(seq, devs[seq%int64(len(devs))], keys, text)
		}
		for _, bd := range bounds {
			b.Run(sh.name+"/"+bd.name, func(b *testing.B) {
				for range b.N {
					var tl *tail
					kept := heapKept(func() {
						tl = newTail(1<<17, bd.budget)
						tl.covered = 0
						for i := int64(1); i <= 1_000_000; i++ {
							tl.append(event(i))
						}
					})
					n, est := tl.stats()
					b.ReportMetric(kept, "retained-MiB")
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

// BenchmarkQueueMemory fills the queues of 4 monitors whose receiver is
// slow (it takes a batch of 100 only when the queue is full, so each queue
// stays full: the steady state of a receiver that cannot keep up) with
// 30,000 device_data_received events each, every monitor its own copies
// (as a monitor behind the tail reads them from the event log), and
// reports the heap kept (retained-MiB), the events queued in all and their
// estimated bytes, and the process's peak RSS (peak-RSS-MiB: one
// sub-benchmark per process, with GOGC=400 GOMEMLIMIT=1024MiB). "count" is
// each queue bounded by its 10,000 events alone, as before
// monitors.queue_bytes; "bytes" adds the default 8 MiB
// (docs/BENCHMARKS.md).
func BenchmarkQueueMemory(b *testing.B) {
	const monitors, perMonitor = 4, 30_000
	shapes := []struct {
		name string
		pad  int
	}{
		{"4-numbers", 0},
		{"4-numbers-1KiB-text", 1024},
		{"4-numbers-8KiB-text", 8192},
	}
	bounds := []struct {
		name   string
		budget int64
	}{{"count", math.MaxInt64}, {"bytes", 8 << 20}}
	for _, sh := range shapes {
		keys := []string{"field0", "field1", "field2", "field3"}
		text := strings.Repeat("x", sh.pad)
		event := func(seq int64) *events.Event {
			return benchDataEvent(seq, "dev-"+strconv.Itoa(100000+int(seq%1000)), keys, text)
		}
		for _, bd := range bounds {
			b.Run(sh.name+"/"+bd.name, func(b *testing.B) {
				for range b.N {
					qs := make([]*queue, monitors)
					kept := heapKept(func() {
						var buf []*events.Event
						for m := range qs {
							q := newQueue(10000, bd.budget, 100, 0)
							qs[m] = q
							for seq := int64(1); seq <= perMonitor; seq++ {
								e := event(seq)
								size := retainedSize(e)
								for q.full(size) {
									// The slow receiver takes a batch and
									// lets it go.
									buf, _, _ = q.poll(buf, 0, time.Now())
									clear(buf)
								}
								q.push(e, size, true, time.Now)
							}
						}
					})
					var n int
					var est int64
					for _, q := range qs {
						qn, qb := q.stats()
						n += qn
						est += qb
					}
					b.ReportMetric(kept, "retained-MiB")
					b.ReportMetric(float64(n), "queued-events")
					b.ReportMetric(float64(est)/(1<<20), "estimated-MiB")
					runtime.KeepAlive(qs)
				}
				b.ReportMetric(peakRSS()/(1<<20), "peak-RSS-MiB")
			})
		}
	}
}

// BenchmarkEncodeCacheMemory encodes 100,000 device_data_received events
// through the monitors' encode cache (JSON, as every monitor of that
// format shares it) and reports the heap it keeps and the bytes it
// counts: "count" is the cache bounded by its 32,768 slots alone, as
// before monitors.encode_cache_bytes; "bytes" adds the default 32 MiB.
func BenchmarkEncodeCacheMemory(b *testing.B) {
	for _, pad := range []int{0, 1024, 8192} {
		for _, bd := range []struct {
			name   string
			budget int64
		}{{"count", math.MaxInt64}, {"bytes", 32 << 20}} {
			b.Run(strconv.Itoa(pad)+"-text/"+bd.name, func(b *testing.B) {
				for range b.N {
					c := newEncodeCache(bd.budget)
					kept := heapKept(func() {
						for seq := int64(1); seq <= 100_000; seq++ {
							if _, err := c.get(dataEvent(seq, 4, pad), "json"); err != nil {
								b.Fatal(err)
							}
						}
					})
					n, est := c.stats()
					b.ReportMetric(kept, "retained-MiB")
					b.ReportMetric(float64(n), "encodings")
					b.ReportMetric(float64(est)/(1<<20), "counted-MiB")
					runtime.KeepAlive(c)
				}
				b.ReportMetric(peakRSS()/(1<<20), "peak-RSS-MiB")
			})
		}
	}
}

// benchDataEvent is the device_data_received event of message seq of
// device dev: one reading with a number for each of keys and, when text
// is not empty, a text field of its own bytes (a payload's).
func benchDataEvent(seq int64, dev string, keys []string, text string) *events.Event {
	vals := make(map[string]any, len(keys)+1)
	for i, k := range keys {
		vals[k] = float64(seq) + float64(i)/10
	}
	if text != "" {
		vals["note"] = strings.Clone(text)
	}
	now := time.Unix(0, seq*int64(time.Millisecond)).UTC()
	return &events.Event{Seq: seq, Type: events.DeviceDataReceived, Time: now, DeviceID: dev, DeviceType: "sensor",
		Args: &events.DataReceived{MessageID: seq, Topic: "devices/" + dev + "/data", Transport: "mqtt",
			Readings: []events.Reading{{Time: now, Values: vals}}}}
}

// heapKept runs build and returns the MiB of heap still in use after it
// (after a GC), against before it: what build made and something keeps.
// The caller keeps it alive past the call (runtime.KeepAlive).
func heapKept(build func()) float64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	build()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return float64(int64(ms.HeapAlloc)-int64(before)) / (1 << 20)
}
