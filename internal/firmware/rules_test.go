package firmware

import (
	"errors"
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
	s := New(Deps{}, Options{}, nil)
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
