package bench

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 ≤ p ≤ 1) of sorted by the
// nearest-rank method: the smallest value with at least p of the values at
// or below it. It returns 0 for an empty slice.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	i := int(math.Ceil(p*float64(n))) - 1
	return sorted[min(max(i, 0), n-1)]
}

// Median returns the median of xs (the mean of the two middle values for
// an even count), without modifying xs; 0 for none.
func Median(xs []float64) float64 {
	n := len(xs)
	if n == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Latency is a latency distribution in milliseconds.
type Latency struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// LatencyOf summarises durations (it sorts ds).
func LatencyOf(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	pick := func(p float64) time.Duration {
		i := int(math.Ceil(p*float64(len(ds)))) - 1
		return ds[min(max(i, 0), len(ds)-1)]
	}
	return Latency{N: len(ds), P50: ms(pick(0.50)), P99: ms(pick(0.99)), Max: ms(ds[len(ds)-1])}
}

// Spread is the median, minimum and maximum of one figure over rounds.
type Spread struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	N      int     `json:"n"`
}

// SpreadOf summarises xs; the zero Spread for none.
func SpreadOf(xs []float64) Spread {
	if len(xs) == 0 {
		return Spread{}
	}
	return Spread{Median: Median(xs), Min: slices.Min(xs), Max: slices.Max(xs), N: len(xs)}
}

// Ratio compares devicehub with a reference on one figure: above 1 means
// devicehub did better.
type Ratio struct {
	Figure string  `json:"figure"`
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	Rounds int     `json:"rounds"`
}

// RatioOf compares devicehub's values of a figure with a reference's, one
// value per round, rounds in the same order (the runs alternate, so round
// i of both ran under the same conditions). Median is the ratio of the
// medians; Min and Max are the smallest and largest per-round ratios
// (widened to include Median). For a figure where higher is better the
// ratio is devicehub/reference, else reference/devicehub, so that above 1
// always means devicehub did better. It returns nil when either side has
// no usable value.
func RatioOf(figure string, dh, ref []float64, higherIsBetter bool) *Ratio {
	ok := func(x float64) bool { return x > 0 && !math.IsInf(x, 0) && !math.IsNaN(x) }
	var a, b []float64 // usable values; a failed run reports 0
	for _, x := range dh {
		if ok(x) {
			a = append(a, x)
		}
	}
	for _, x := range ref {
		if ok(x) {
			b = append(b, x)
		}
	}
	if len(a) == 0 || len(b) == 0 {
		return nil
	}
	div := func(x, y float64) float64 {
		if higherIsBetter {
			return x / y
		}
		return y / x
	}
	r := &Ratio{Figure: figure, Median: div(Median(a), Median(b)), Min: math.Inf(1), Max: math.Inf(-1)}
	for i := range min(len(dh), len(ref)) {
		if !ok(dh[i]) || !ok(ref[i]) {
			continue
		}
		x := div(dh[i], ref[i])
		r.Min, r.Max = math.Min(r.Min, x), math.Max(r.Max, x)
		r.Rounds++
	}
	r.Min, r.Max = math.Min(r.Min, r.Median), math.Max(r.Max, r.Median)
	return r
}
