package sqlite

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// slowLines is a slog handler keeping the suppressed count of each
// "slow commit" line.
type slowLines struct {
	mu         sync.Mutex
	suppressed []int64
}

func (h *slowLines) Enabled(context.Context, slog.Level) bool { return true }
func (h *slowLines) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "slow commit" {
		return nil
	}
	n := int64(-1)
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "suppressed" {
			n = a.Value.Int64()
		}
		return true
	})
	h.mu.Lock()
	h.suppressed = append(h.suppressed, n)
	h.mu.Unlock()
	return nil
}
func (h *slowLines) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *slowLines) WithGroup(string) slog.Handler      { return h }

// TestSlowCommitLogLimited: under sustained overload (every Commit slow,
// here) the "slow commit" line is logged at most once per 10 s of the
// store's clock, each line counting the slow Commits not logged since the
// last one.
func TestSlowCommitLogLimited(t *testing.T) {
	tests := []struct {
		name    string
		commits []time.Duration // the clock at each Commit
		want    []int64         // the suppressed count of each line logged
	}{
		{"one", []time.Duration{0}, []int64{0}},
		{"ten a second for 21s", func() []time.Duration {
			var at []time.Duration
			for i := range 210 {
				at = append(at, time.Duration(i)*100*time.Millisecond)
			}
			return at
		}(), []int64{0, 99, 99}},
		{"a burst, then quiet, then one", []time.Duration{0, time.Second, 2 * time.Second, time.Hour}, []int64{0, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t)
			h := &slowLines{}
			t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
			var now time.Time // Commit reads it under s.wmu, after this goroutine set it
			s.log, s.slowCommit, s.clock = slog.New(h), 0, func() time.Time { return now }
			ctx := context.Background()
			for i, at := range tt.commits {
				now = t0.Add(at)
				ev := commit.Event{Event: events.Event{Type: events.StorageLow, Time: now}, Args: []byte(`{}`)}
				if err := s.Commit(ctx, []*commit.Change{{Events: []commit.Event{ev}}}); err != nil {
					t.Fatalf("commit %d: %v", i, err)
				}
			}
			h.mu.Lock()
			defer h.mu.Unlock()
			if !slices.Equal(h.suppressed, tt.want) {
				t.Fatalf("lines with suppressed counts %v, want %v", h.suppressed, tt.want)
			}
		})
	}
}
