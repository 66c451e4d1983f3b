package bench

import (
	"math"
	rtmetrics "runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Where a slow acknowledgement spent its time.
//
// An open-loop PUBACK latency counts from the message's scheduled time to
// its PUBACK in the load generator, which runs on the same machine as the
// system under test. These figures split it: the hub's own histograms
// (scraped from /metrics before and after the load; the difference is the
// load's), the Go scheduler's latency in the hub and in the load
// generator (how long runnable goroutines waited for a CPU), and how late
// the load generator's paced publishes left against their schedule.
// Histogram quantiles are the upper bound of the bucket that holds them.

// histQuantile returns the q-quantile of the Prometheus histogram name
// over the observations between two scrapes (see metrics), in
// milliseconds: the upper bound of its bucket, or the largest finite
// bound if it is in +Inf. ok is false when nothing was observed.
func histQuantile(before, after map[string]float64, name string, q float64) (ms float64, ok bool) {
	type bucket struct{ le, n float64 }
	var bs []bucket
	prefix := name + `_bucket{le="`
	for k, v := range after {
		rest, found := strings.CutPrefix(k, prefix)
		if !found {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue
		}
		bs = append(bs, bucket{le, v - before[k]})
	}
	slices.SortFunc(bs, func(a, b bucket) int { return cmpFloat(a.le, b.le) })
	if len(bs) == 0 || bs[len(bs)-1].n <= 0 {
		return 0, false
	}
	want := q * bs[len(bs)-1].n
	last := 0.0
	for _, b := range bs {
		if !math.IsInf(b.le, 1) {
			last = b.le
		}
		if b.n >= want {
			return last * 1000, true
		}
	}
	return last * 1000, true
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// hubTails adds the split of devicehub's latency to f from the scrapes
// before and after the load.
func hubTails(f map[string]float64, before, after map[string]float64) {
	for fig, name := range map[string]string{
		"hub_handle_p99_ms":   "devicehub_ingest_handle_duration_seconds",
		"hub_commit_p99_ms":   "devicehub_commit_duration_seconds",
		"hub_commit_max_ms":   "devicehub_commit_duration_seconds",
		"hub_wait_p99_ms":     "devicehub_commit_wait_seconds",
		"hub_sched_p99_ms":    "go_sched_latencies_seconds",
		"hub_gc_pause_max_ms": "go_sched_pauses_total_gc_seconds",
		// The message log's compaction (SQLite): its longest hold of
		// the writer, which every commit waits for.
		"hub_msglog_hold_max_ms": "devicehub_message_log_compaction_hold_seconds",
		// The WAL checkpoint's last round (SQLite), which holds the
		// writer too.
		"hub_checkpoint_hold_p99_ms": "devicehub_sqlite_checkpoint_hold_seconds",
		"hub_checkpoint_hold_max_ms": "devicehub_sqlite_checkpoint_hold_seconds",
	} {
		q := 0.99
		if strings.HasSuffix(fig, "_max_ms") {
			q = 1
		}
		if v, ok := histQuantile(before, after, name, q); ok {
			f[fig] = v
		}
	}
	if n, ok := after["devicehub_message_log_compacted_messages_total"]; ok {
		f["hub_msglog_compacted"] = n - before["devicehub_message_log_compacted_messages_total"]
	}
	if n, ok := after["devicehub_sqlite_checkpoint_hold_seconds_count"]; ok {
		f["hub_checkpoints"] = n - before["devicehub_sqlite_checkpoint_hold_seconds_count"]
	}
	if n := after["go_gc_duration_seconds_count"] - before["go_gc_duration_seconds_count"]; n >= 0 && len(after) > 0 {
		f["hub_gc_cycles"] = n
	}
	// The GC settings in force (runtime.gc_percent, or GOGC when set): an
	// A/B of two builds is only one if they match or differ on purpose.
	if v, ok := after["go_gc_gogc_percent"]; ok {
		f["hub_gc_percent"] = v
	}
	if v, ok := after["go_gc_gomemlimit_bytes"]; ok && v < math.MaxInt64 {
		f["hub_memory_limit_mb"] = v / (1 << 20)
	}
}

// schedSample is the load generator's own scheduler latency histogram and
// GC count at one instant (runtime/metrics).
type schedSample struct {
	lat    *rtmetrics.Float64Histogram
	cycles uint64
}

func readSched() schedSample {
	s := []rtmetrics.Sample{{Name: "/sched/latencies:seconds"}, {Name: "/gc/cycles/total:gc-cycles"}}
	rtmetrics.Read(s)
	var out schedSample
	if s[0].Value.Kind() == rtmetrics.KindFloat64Histogram {
		out.lat = s[0].Value.Float64Histogram()
	}
	if s[1].Value.Kind() == rtmetrics.KindUint64 {
		out.cycles = s[1].Value.Uint64()
	}
	return out
}

// schedSince returns the p99 and the largest scheduler latency (bucket
// upper bounds, ms) and the GC cycles between two samples.
func schedSince(a, b schedSample) (p99, maxMS float64, cycles uint64) {
	if a.lat == nil || b.lat == nil || len(a.lat.Counts) != len(b.lat.Counts) {
		return 0, 0, b.cycles - a.cycles
	}
	counts := make([]uint64, len(b.lat.Counts))
	var total uint64
	for i := range counts {
		counts[i] = b.lat.Counts[i] - a.lat.Counts[i]
		total += counts[i]
	}
	if total == 0 {
		return 0, 0, b.cycles - a.cycles
	}
	upper := func(i int) float64 {
		u := b.lat.Buckets[i+1]
		if math.IsInf(u, 1) {
			u = b.lat.Buckets[i]
		}
		return u * 1000
	}
	want := uint64(math.Ceil(0.99 * float64(total)))
	var seen uint64
	p99 = -1
	for i, c := range counts {
		seen += c
		if p99 < 0 && seen >= want {
			p99 = upper(i)
		}
		if c > 0 {
			maxMS = upper(i)
		}
	}
	return p99, maxMS, b.cycles - a.cycles
}

// maxOtherCores is the CPU other processes of the machine may use during
// a run (other_cores) before its figures are said not to be the system's.
const maxOtherCores = 0.2

// maxOtherBurst is the same for a quarter second of the load (the
// largest of otherByBin, other_cores_max): a burst of another process
// that the round's average hides.
const maxOtherBurst = 0.5

// slowBin is the width of the bins of LoadResult.Slow.
const slowBin = 250 * time.Millisecond

// slowThreshold is the latency from which a message counts as slow in
// LoadResult.Slow: goal 2's bound.
const slowThreshold = 20 * time.Millisecond

// cpuSample is the machine's busy CPU time and that of the system under
// test and of the load generator at one instant.
type cpuSample struct {
	at             time.Time
	busy, sut, gen time.Duration
}

// cpuSampleEvery is how often sampleCPU reads them: a fifth of a slow
// bin, so that each bin's figure is made of several samples.
const cpuSampleEvery = slowBin / 5

// sampleCPU reads the CPU times every cpuSampleEvery until stop is
// closed, then sends what it read on out. The round's other_cores is an
// average over the load: a burst of another process of a few hundred
// milliseconds (a build's link step) hardly moves it, but it is as long
// as the burst of slow messages it causes; sampled, it can be put beside
// them (otherByBin).
func sampleCPU(stop <-chan struct{}, sutPID, genPID int, out chan<- []cpuSample) {
	var ss []cpuSample
	tick := time.NewTicker(cpuSampleEvery)
	defer tick.Stop()
	for {
		s := cpuSample{at: time.Now()}
		var err1, err2, err3 error
		s.busy, err1 = machineBusy()
		s.sut, err2 = cpuTime(sutPID)
		s.gen, err3 = cpuTime(genPID)
		if err1 == nil && err2 == nil && err3 == nil {
			ss = append(ss, s)
		}
		select {
		case <-stop:
			out <- ss
			return
		case <-tick.C:
		}
	}
}

// otherByBin returns the cores other processes used (the machine's busy
// CPU less the system's and the generator's) in each of n bins of width
// bin from start, from consecutive samples: each interval between two
// samples counts toward the bin of its middle. A bin no interval fell in
// is 0.
func otherByBin(ss []cpuSample, start time.Time, bin time.Duration, n int) []float64 {
	other := make([]time.Duration, n)
	wall := make([]time.Duration, n)
	for i := 1; i < len(ss); i++ {
		a, b := ss[i-1], ss[i]
		mid := a.at.Add(b.at.Sub(a.at) / 2)
		if mid.Before(start) {
			continue
		}
		k := int(mid.Sub(start) / bin)
		if k >= n {
			continue
		}
		other[k] += (b.busy - a.busy) - (b.sut - a.sut) - (b.gen - a.gen)
		wall[k] += b.at.Sub(a.at)
	}
	out := make([]float64, n)
	for k := range out {
		if wall[k] > 0 {
			out[k] = max(other[k].Seconds()/wall[k].Seconds(), 0)
		}
	}
	return out
}

// fmtBins formats otherByBin's figures for the progress log.
func fmtBins(v []float64) string {
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = strconv.FormatFloat(x, 'f', 2, 64)
	}
	return "[" + strings.Join(parts, " ") + "]"
}
