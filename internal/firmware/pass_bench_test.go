package firmware

import (
	"fmt"
	"log/slog"
	"testing"
	"time"
)

// benchRollout is a running rollout of n queued devices, registered with
// s, without a store: the pass's own cost.
func benchRollout(s *Service, n int, now time.Time) *active {
	a := newActive(Rollout{ID: "ro_bench", Status: RolloutRunning, CreatedAt: now, UpdatedAt: now, AliveAt: now,
		Spec: Spec{StepTimeout: time.Hour, TotalTimeout: time.Hour, HealthWindow: time.Hour, Settle: time.Minute}}, Artifact{ID: "fw_bench", Version: "2"})
	for i := range n {
		a.add(&DeviceUpdate{RolloutID: a.r.ID, DeviceID: fmt.Sprintf("d-%05d", i), Order: i, State: Queued, StateSince: now, UpdatedAt: now})
	}
	s.mu.Lock()
	s.addActive(a)
	s.mu.Unlock()
	return a
}

// BenchmarkPassStart10k: one pass that starts 10,000 queued devices (the
// decision, in memory).
//
//	go test ./internal/firmware -run '^$' -bench Pass -benchtime 20x -count 3
func BenchmarkPassStart10k(b *testing.B) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for range b.N {
		b.StopTimer()
		s := New(Deps{}, Options{}, slog.New(slog.DiscardHandler))
		benchRollout(s, 10000, now)
		b.StartTimer()
		if w := s.pass(now); len(w.notices) != 10000 {
			b.Fatalf("%d notices", len(w.notices))
		}
	}
}

// BenchmarkPassIdle10k: a pass while 10,000 devices are in progress and
// nothing is due (what every tick costs then).
func BenchmarkPassIdle10k(b *testing.B) {
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	s := New(Deps{}, Options{}, slog.New(slog.DiscardHandler))
	benchRollout(s, 10000, now)
	s.pass(now)
	b.ResetTimer()
	for i := range b.N {
		// A second later each time, within the hour of every timeout.
		if w := s.pass(now.Add(time.Second + time.Duration(i)*time.Microsecond)); len(w.notices) != 0 {
			b.Fatalf("%d notices", len(w.notices))
		}
	}
}
