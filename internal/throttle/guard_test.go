package throttle

import (
	"errors"
	"testing"
	"time"
)

func TestGuard(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tests := []struct {
		name  string
		steps func(g *Guard)
		// the attempt checked last
		source, target string
		wantThrottled  bool
	}{
		{"fresh", func(*Guard) {}, "10.0.0.1:1", "d1", false},
		{"source at its limit", func(g *Guard) {
			for range 2 {
				g.Failed("10.0.0.1:1", "", "x")
			}
		}, "10.0.0.1:9", "d9", true},
		{"source below its limit", func(g *Guard) { g.Failed("10.0.0.1:1", "", "x") }, "10.0.0.1:1", "", false},
		{"target at its limit from many sources", func(g *Guard) {
			g.Failed("10.0.0.1:1", "d1", "x")
			g.Failed("10.0.0.2:1", "d1", "x")
			g.Failed("10.0.0.3:1", "d1", "x")
		}, "10.0.0.4:1", "d1", true},
		{"another target", func(g *Guard) {
			for range 3 {
				g.Failed("", "d1", "x")
			}
		}, "", "d2", false},
		{"success clears the target", func(g *Guard) {
			for range 3 {
				g.Failed("", "d1", "x")
			}
			g.Succeeded("d1")
		}, "", "d1", false},
		{"the window ends", func(g *Guard) {
			for range 3 {
				g.Failed("10.0.0.1:1", "d1", "x")
			}
			now = now.Add(time.Minute)
		}, "10.0.0.1:1", "d1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewGuard("test", Options{SourceLimit: 2, TargetLimit: 3, Window: time.Minute, Now: clock}, nil, nil)
			tt.steps(g)
			err := g.Check(tt.source, tt.target)
			if got := errors.Is(err, ErrThrottled); got != tt.wantThrottled {
				t.Fatalf("throttled %v (%v), want %v", got, err, tt.wantThrottled)
			}
			var th *Throttled
			if tt.wantThrottled && (!errors.As(err, &th) || th.RetryAfter(now) != time.Minute) {
				t.Errorf("error %v: want the window's end", err)
			}
		})
	}
}

func TestSampler(t *testing.T) {
	var s Sampler
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if n, ok := s.Tick(t0); !ok || n != 1 {
		t.Fatalf("first: %d %v", n, ok)
	}
	for range 5 {
		if _, ok := s.Tick(t0.Add(time.Millisecond)); ok {
			t.Fatal("logged within the second")
		}
	}
	if n, ok := s.Tick(t0.Add(time.Second)); !ok || n != 6 {
		t.Fatalf("next second: %d %v, want 6 true", n, ok)
	}
}

// TestSamplerEvery: with Every set, a sustained stream of occurrences is
// logged once per Every, each line counting those not logged since the
// last (the slow-commit lines: one per 10 s under sustained overload).
func TestSamplerEvery(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type tick struct {
		at     time.Duration // after t0
		n      int           // lines it stands for when logged
		logged bool
	}
	tests := []struct {
		name  string
		every time.Duration
		ticks []tick
	}{
		{"first is logged", 10 * time.Second, []tick{{0, 1, true}}},
		{"ten a second for 25s", 10 * time.Second, func() []tick {
			var ts []tick
			for i := 0; i < 250; i++ {
				at := time.Duration(i) * 100 * time.Millisecond
				switch i {
				case 0:
					ts = append(ts, tick{at, 1, true})
				case 100, 200: // 10s and 20s after the last line
					ts = append(ts, tick{at, 100, true})
				default:
					ts = append(ts, tick{at, 0, false})
				}
			}
			return ts
		}()},
		{"just before the interval", 10 * time.Second, []tick{{0, 1, true}, {10*time.Second - 1, 0, false}, {10 * time.Second, 2, true}}},
		{"quiet then one", 10 * time.Second, []tick{{0, 1, true}, {time.Hour, 1, true}}},
		{"zero is a second", 0, []tick{{0, 1, true}, {500 * time.Millisecond, 0, false}, {time.Second, 2, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Sampler{Every: tt.every}
			for i, tk := range tt.ticks {
				n, ok := s.Tick(t0.Add(tk.at))
				if ok != tk.logged || n != tk.n {
					t.Fatalf("tick %d at %s: (%d, %v), want (%d, %v)", i, tk.at, n, ok, tk.n, tk.logged)
				}
			}
		})
	}
}
