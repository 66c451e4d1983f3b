package bench

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// ErrBadOptions is wrapped by the errors of Run for options that are
// wrong in themselves (not a failure of the run): the command line is to
// blame.
var ErrBadOptions = errors.New("bad bench options")

// Bounds of an open-loop rate (messages per second, all devices
// together). Outside them the load generator's per-device interval
// (devices/rate) leaves time.Duration's range or rounds to 0, which would
// silently run a closed loop, or schedule no message at all in a run.
const (
	MinOpenLoopRate = 1
	MaxOpenLoopRate = 100_000_000
)

// ParseOpenLoopRates parses the value of --open-loop-rate: comma-separated
// DEVICES=RATE pairs, an absolute open-loop offered rate in messages per
// second for an ingest device count ("100=10000,1000=14000"). Spaces
// around a pair, a count or a rate are allowed; an empty value is no
// rate. A count must be a positive integer and appear once; a rate must be
// a number from MinOpenLoopRate to MaxOpenLoopRate. Whether each count is
// one of the run's device counts is checked by Run.
func ParseOpenLoopRates(s string) (map[int]float64, error) {
	rates := map[int]float64{}
	if strings.TrimSpace(s) == "" {
		return rates, nil
	}
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("%q: want DEVICES=RATE (e.g. 100=10000)", strings.TrimSpace(pair))
		}
		n, err := strconv.Atoi(k)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q: device count %q is not a positive integer", strings.TrimSpace(pair), k)
		}
		rate, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(rate) || math.IsInf(rate, 0) {
			return nil, fmt.Errorf("%q: rate %q is not a number of messages per second", strings.TrimSpace(pair), v)
		}
		if rate <= 0 {
			return nil, fmt.Errorf("%q: rate %s must be above 0 messages per second", strings.TrimSpace(pair), v)
		}
		if rate < MinOpenLoopRate || rate > MaxOpenLoopRate {
			return nil, fmt.Errorf("%q: rate %s must be from %d to %d messages per second (all devices together)", strings.TrimSpace(pair), v, MinOpenLoopRate, MaxOpenLoopRate)
		}
		if _, dup := rates[n]; dup {
			return nil, fmt.Errorf("%q: a second rate for %d devices (one rate per device count)", strings.TrimSpace(pair), n)
		}
		rates[n] = rate
	}
	return rates, nil
}

// FormatOpenLoopRates writes rates as ParseOpenLoopRates reads them, in
// increasing device count.
func FormatOpenLoopRates(rates map[int]float64) string {
	var pairs []string
	for _, n := range slices.Sorted(maps.Keys(rates)) {
		pairs = append(pairs, strconv.Itoa(n)+"="+strconv.FormatFloat(rates[n], 'g', -1, 64))
	}
	return strings.Join(pairs, ",")
}

// checkOpenLoopRates refuses a rate for a device count the run does not
// measure (it would silently measure nothing at that rate), and a rate
// out of bounds that did not come through ParseOpenLoopRates.
func checkOpenLoopRates(rates map[int]float64, devices []int) error {
	for _, n := range slices.Sorted(maps.Keys(rates)) {
		if rate := rates[n]; !(rate >= MinOpenLoopRate && rate <= MaxOpenLoopRate) {
			return fmt.Errorf("%w: open-loop rate %v for %d devices: must be from %d to %d messages per second", ErrBadOptions, rate, n, MinOpenLoopRate, MaxOpenLoopRate)
		}
		if !slices.Contains(devices, n) {
			ds := make([]string, len(devices))
			for i, d := range devices {
				ds[i] = strconv.Itoa(d)
			}
			return fmt.Errorf("%w: --open-loop-rate %d=%s: %d devices is not one of the ingest device counts (--devices %s)",
				ErrBadOptions, n, strconv.FormatFloat(rates[n], 'g', -1, 64), n, strings.Join(ds, ","))
		}
	}
	return nil
}

// rateScenarioName is the name of the open-loop scenario of n devices at
// the absolute rate: "ingest_open_N_rate_R". The fraction scenarios end
// in a bare integer (ingest_open_N_P), so the two cannot collide, and the
// charts find both by their common prefix.
func rateScenarioName(n int, rate float64) string {
	return fmt.Sprintf("ingest_open_%d_rate_%s", n, strconv.FormatFloat(rate, 'f', -1, 64))
}

// rateSettings is OpenLoopRate as results.json's settings keep it: the
// rate by device count, {} when none was given.
func rateSettings(rates map[int]float64) map[string]float64 {
	m := map[string]float64{}
	for n, rate := range rates {
		m[strconv.Itoa(n)] = rate
	}
	return m
}

// openScenarios are the open-loop ingest scenarios of n devices, in the
// order they run: one at the absolute rate of OpenLoopRate if it has n,
// else one per fraction of OpenLoop of devicehub's closed-loop peak.
// other is the cores other processes used during that peak's rounds
// (median): above maxOtherCores the peak is low, which the notes say.
func (r *runner) openScenarios(n int, peak, other float64) []*Scenario {
	figures := []string{"offered_rate", "achieved_rate", "puback_p50_ms", "puback_p99_ms", "puback_max_ms", "signal_p50_ms", "signal_p99_ms", "cpu_s_per_10k", "lost"}
	notes := []string{
		"Latency counts from the time each message was scheduled, so a slow acknowledgement is not hidden by the schedule (no coordinated omission).",
		fmt.Sprintf("Each device has %s at most; a device whose window is full falls behind its schedule.", inflightText(r.o.Inflight)),
		signalNote(r.o.NoSignal),
	}
	busy := other > maxOtherCores
	if rate, ok := r.o.OpenLoopRate[n]; ok {
		pct := 100 * rate / peak
		sc := &Scenario{
			Name:        rateScenarioName(n, rate),
			Title:       fmt.Sprintf("Ingest, %d devices, QoS 1, %s, open loop at an absolute %s msgs/s (%.0f %% of devicehub's peak)", n, inflightText(r.o.Inflight), fmtNum(rate), pct),
			Headline:    "puback_p99_ms",
			Figures:     figures,
			OfferedLoad: rate,
			OfferedPct:  pct,
			Absolute:    true,
			Notes: append([]string{
				fmt.Sprintf("Offered load: an absolute %s msgs/s for every system (--open-loop-rate %d=%s), not a fraction of a peak: the same for any devicehub binary, whatever its own peak, so that the tails of two binaries compare. "+
					"It is %.0f %% of devicehub's closed-loop peak in this run (%s readings/s), where the charts place it.",
					fmtNum(rate), n, strconv.FormatFloat(rate, 'g', -1, 64), pct, fmtNum(peak)),
			}, notes...),
		}
		if busy {
			sc.Notes = append(sc.Notes, fmt.Sprintf("The peak this load's share is taken of was measured while other processes of the machine used %.2f cores (median of its rounds): it is low, and the share too high; the load itself does not depend on it.", other))
		}
		return []*Scenario{sc}
	}
	var out []*Scenario
	for _, frac := range r.o.OpenLoop {
		sc := &Scenario{
			Name:        fmt.Sprintf("ingest_open_%d_%d", n, int(math.Round(frac*100))),
			Title:       fmt.Sprintf("Ingest, %d devices, QoS 1, %s, open loop at %.0f %% of devicehub's peak", n, inflightText(r.o.Inflight), frac*100),
			Headline:    "puback_p99_ms",
			Figures:     figures,
			OfferedLoad: frac * peak,
			OfferedPct:  frac * 100,
			Notes:       slices.Clone(notes),
		}
		if busy {
			sc.Notes = append(sc.Notes, fmt.Sprintf("The peak these loads are fractions of was measured while other processes of the machine used %.2f cores (median of its rounds): it is low, and so are these loads.", other))
		}
		out = append(out, sc)
	}
	return out
}
