package bench

import (
	"slices"
	"testing"
	"time"
)

// TestOtherByBin: each interval between two samples counts toward the bin
// of its middle, as the machine's busy time less the system's and the
// generator's, per second of wall time.
func TestOtherByBin(t *testing.T) {
	start := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	ms := time.Millisecond
	// sample at offset o (from start) with the cumulative CPU times.
	sample := func(o, busy, sut, gen time.Duration) cpuSample {
		return cpuSample{at: start.Add(o), busy: busy, sut: sut, gen: gen}
	}
	for _, tc := range []struct {
		name string
		ss   []cpuSample
		want []float64
	}{
		{"none", nil, []float64{0, 0}},
		{"quiet: all the busy time is the system's and the generator's", []cpuSample{
			sample(0, 0, 0, 0), sample(100*ms, 150*ms, 100*ms, 50*ms), sample(200*ms, 300*ms, 200*ms, 100*ms),
		}, []float64{0, 0}},
		{"a burst in the second bin", []cpuSample{
			sample(0, 0, 0, 0), sample(100*ms, 150*ms, 100*ms, 50*ms),
			sample(200*ms, 300*ms, 200*ms, 100*ms), // middle 150 ms: bin 0
			sample(300*ms, 550*ms, 300*ms, 150*ms), // middle 250 ms: bin 1, other 0.1 s
			sample(400*ms, 800*ms, 400*ms, 200*ms), // middle 350 ms: bin 1, other 0.1 s
		}, []float64{0, 1}},
		{"samples before the start and past the bins left out", []cpuSample{
			sample(-200*ms, 0, 0, 0), sample(-100*ms, 200*ms, 0, 0),
			sample(0, 200*ms, 0, 0), sample(100*ms, 250*ms, 0, 0), // bin 0: 0.5 core
			sample(600*ms, 2000*ms, 0, 0), // middle 350 ms: bin 1, 1,750 ms of 500 ms
			sample(700*ms, 2100*ms, 0, 0), // middle 650 ms: no bin
		}, []float64{0.5, 3.5}},
		{"the CPU of the system counted in a later sample than the machine's: not below 0", []cpuSample{
			sample(0, 0, 0, 0), sample(100*ms, 0, 50*ms, 0),
		}, []float64{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := otherByBin(tc.ss, start, 250*ms, 2); !slices.Equal(got, tc.want) {
				t.Errorf("otherByBin = %v, want %v", got, tc.want)
			}
		})
	}
}
