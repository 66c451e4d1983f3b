package bench

import (
	"testing"
	"time"
)

// TestScheduleContinuous: the measured phase goes on with the warm-up's
// schedule: every device keeps its phase across the boundary, with no gap
// and no burst of all devices at the boundary.
func TestScheduleContinuous(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name             string
		warmup, dur      time.Duration
		interval         time.Duration
		devices          int
		wantWarm, wantMe int // messages scheduled in each phase
	}{
		{"100 devices 10/s each", time.Second, 3 * time.Second, 100 * time.Millisecond, 100, 1000, 3000},
		{"1000 devices, interval not a multiple", time.Second, 2 * time.Second, 333 * time.Millisecond, 1000, 3004, 6006},
		{"no warm-up", 0, time.Second, 50 * time.Millisecond, 10, 0, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSchedule(t0, tt.warmup, tt.dur, tt.interval, tt.devices)
			if got := s.measured.Sub(s.start); got != tt.warmup {
				t.Fatalf("boundary %v after start, want %v", got, tt.warmup)
			}
			if got := s.end.Sub(s.measured); got != tt.dur {
				t.Fatalf("measured phase %v, want %v", got, tt.dur)
			}
			var warm, measured int
			var times []time.Time // every message's time, any device
			for i := range tt.devices {
				prev := time.Time{}
				for k := int64(0); ; k++ {
					at := s.at(i, k)
					if !at.Before(s.end) {
						break
					}
					if k > 0 && at.Sub(prev) != tt.interval {
						t.Fatalf("device %d message %d: %v after the one before, want %v", i, k, at.Sub(prev), tt.interval)
					}
					prev = at
					if s.warm(at) {
						warm++
					} else {
						measured++
						times = append(times, at)
					}
				}
			}
			if warm != tt.wantWarm || measured != tt.wantMe {
				t.Errorf("warm-up %d, measured %d messages; want %d, %d", warm, measured, tt.wantWarm, tt.wantMe)
			}
			// No burst at the boundary: the measured phase's first
			// interval holds one message per device, no more.
			var first int
			for _, at := range times {
				if at.Sub(s.measured) < tt.interval {
					first++
				}
			}
			if first != tt.devices {
				t.Errorf("%d messages in the measured phase's first interval, want %d (one per device)", first, tt.devices)
			}
		})
	}
}
