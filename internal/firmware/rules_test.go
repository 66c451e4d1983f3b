package firmware

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestPhaseOf(t *testing.T) {
	tests := []struct {
		name   string
		phases []int
		n      int
		want   []int // devices per phase
	}{
		{"one phase", nil, 5, []int{5}},
		{"10 50 100 of 50", []int{10, 50, 100}, 50, []int{5, 20, 25}},
		{"rounds up", []int{10, 100}, 3, []int{1, 2}},
		{"17 of 6", []int{17, 100}, 6, []int{2, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make([]int, max(len(tt.phases), 1))
			for i := range tt.n {
				got[phaseOf(tt.phases, i, tt.n)]++
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("phase sizes %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestInWindow(t *testing.T) {
	at := func(h, m int) time.Time { return time.Date(2025, 1, 1, h, m, 0, 0, time.UTC) }
	tests := []struct {
		name string
		w    *Window
		t    time.Time
		want bool
	}{
		{"no window", nil, at(3, 0), true},
		{"inside", &Window{"01:00", "05:00"}, at(3, 0), true},
		{"end excluded", &Window{"01:00", "05:00"}, at(5, 0), false},
		{"over midnight, late", &Window{"22:00", "04:00"}, at(23, 30), true},
		{"over midnight, early", &Window{"22:00", "04:00"}, at(3, 59), true},
		{"over midnight, outside", &Window{"22:00", "04:00"}, at(12, 0), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := inWindow(tt.w, tt.t); got != tt.want {
				t.Fatalf("inWindow = %v", got)
			}
		})
	}
}

func TestRateIncrease(t *testing.T) {
	a := newActive(Rollout{Spec: Spec{MaxPerMinute: 10, RateIncrease: &RateIncrease{AfterSuccesses: 2, Factor: 2, MaxPerMinute: 50}}}, Artifact{})
	for range 5 {
		a.add(&DeviceUpdate{DeviceID: "x", State: Updated})
	}
	// 5 successes: two doublings (after 2 and 4).
	if got := a.rate(); got != 40 {
		t.Fatalf("rate after 5 successes = %d, want 40", got)
	}
	for range 5 {
		a.add(&DeviceUpdate{DeviceID: "y", State: Updated})
	}
	if got := a.rate(); got != 50 {
		t.Fatalf("rate capped = %d, want 50", got)
	}
}

func TestValidate(t *testing.T) {
	s := New(Deps{}, Options{}, slog.New(slog.DiscardHandler))
	tests := []struct {
		name string
		sp   Spec
		ok   bool
	}{
		{"group", Spec{Target: Target{Group: "roof"}}, true},
		{"list", Spec{Target: Target{DeviceIDs: []string{"a", "b"}}}, true},
		{"no target", Spec{}, false},
		{"both", Spec{Target: Target{Group: "g", DeviceIDs: []string{"a"}}}, false},
		{"late with list", Spec{Target: Target{DeviceIDs: []string{"a"}}, IncludeLate: true}, false},
		{"bad id", Spec{Target: Target{DeviceIDs: []string{"a/b"}}}, false},
		{"phases not increasing", Spec{Target: Target{Group: "g"}, Phases: []int{50, 10}}, false},
		{"bad window", Spec{Target: Target{Group: "g"}, Window: &Window{"25:00", "01:00"}}, false},
		{"increase without rate", Spec{Target: Target{Group: "g"}, RateIncrease: &RateIncrease{AfterSuccesses: 1, Factor: 2}}, false},
		{"abort percent", Spec{Target: Target{Group: "g"}, AbortFailurePercent: 120}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp := tt.sp
			err := s.validate(&sp)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Fatalf("validate: %v", err)
			}
			if tt.ok && (sp.StepTimeout != 10*time.Minute || sp.Settle != time.Minute) {
				t.Fatalf("defaults not filled: %+v", sp)
			}
		})
	}
	sp := Spec{Target: Target{Group: "g"}, Phases: []int{10, 50}, Retries: 2}
	if err := s.validate(&sp); err != nil || len(sp.Phases) != 3 || sp.Phases[2] != 100 || !sp.RetryFailed || !sp.RetryTimedOut {
		t.Fatalf("validate filled %+v, %v", sp, err)
	}
}

func TestDeadline(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	sp := Spec{StepTimeout: 10 * time.Minute, TotalTimeout: time.Hour, HealthWindow: 5 * time.Minute, Settle: time.Minute}
	tests := []struct {
		name string
		u    DeviceUpdate
		want time.Duration // after t0; -1: none
	}{
		{"queued", DeviceUpdate{State: Queued, StateSince: t0}, -1},
		{"finished", DeviceUpdate{State: Updated, StateSince: t0, StartedAt: at(0)}, -1},
		{"step", DeviceUpdate{State: Downloading, StateSince: t0.Add(20 * time.Minute), StartedAt: at(0)}, 30 * time.Minute},
		{"total first", DeviceUpdate{State: Installing, StateSince: t0.Add(55 * time.Minute), StartedAt: at(0)}, time.Hour},
		{"health window", DeviceUpdate{State: Rebooting, StateSince: t0, StartedAt: at(0), RebootAt: at(2 * time.Minute)}, 7 * time.Minute},
		{"settle", DeviceUpdate{State: Confirming, StateSince: t0, StartedAt: at(0), RebootAt: at(2 * time.Minute), ConfirmedAt: at(3 * time.Minute)}, 4 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := deadline(&tt.u, sp)
			if tt.want < 0 {
				if ok {
					t.Fatalf("deadline %s, want none", got)
				}
				return
			}
			if !ok || !got.Equal(t0.Add(tt.want)) {
				t.Fatalf("deadline %s %v, want %s", got, ok, t0.Add(tt.want))
			}
		})
	}
}

// The counts the pass uses follow every state change, including retries.
func TestCountsFollowMoves(t *testing.T) {
	s := New(Deps{}, Options{}, slog.New(slog.DiscardHandler))
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	a := newActive(Rollout{ID: "r", Status: RolloutRunning, Spec: Spec{Retries: 1, RetryFailed: true, StepTimeout: time.Minute, TotalTimeout: time.Hour}}, Artifact{Version: "2"})
	for i, id := range []string{"a", "b", "c"} {
		a.add(&DeviceUpdate{DeviceID: id, Order: i, Phase: phaseOf([]int{33, 100}, i, 3), State: Queued, StateSince: now})
	}
	w := &work{}
	s.start(a, now, w)
	if p := a.currentPhase(); p != 0 || a.count[Notified] != 1 || a.count[Queued] != 2 {
		t.Fatalf("phase %d counts %v", p, a.count)
	}
	s.move(a, a.byDevice["a"], Failed, "x", 0, now, w) // retried: queued again
	if a.count[Queued] != 3 || a.count[Failed] != 0 || a.phase0Failed != 0 || a.open[0] != 1 {
		t.Fatalf("after a retried failure: %v, phase 0 failed %d, open %v", a.count, a.phase0Failed, a.open)
	}
	s.start(a, now, w)
	s.move(a, a.byDevice["a"], Failed, "x", 0, now, w) // no retry left
	if f, fails, open := a.finishedCounts(); f != 1 || fails != 1 || open != 2 || a.phase0Failed != 1 || a.currentPhase() != 1 {
		t.Fatalf("finished %d failures %d open %d phase0 %d phase %d", f, fails, open, a.phase0Failed, a.currentPhase())
	}
	// A step timeout comes due at the pass after it passed, not before.
	s.start(a, now, w)
	s.expire(a, now.Add(30*time.Second), w)
	if a.count[Notified] != 2 {
		t.Fatalf("timed out early: %v", a.count)
	}
	s.expire(a, now.Add(61*time.Second), w)
	if a.count[TimedOut] != 2 {
		t.Fatalf("not timed out: %v", a.count)
	}
}
