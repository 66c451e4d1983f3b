package postgres

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/deviceconfig"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/monitors"
)

type noPublisher struct{}

func (noPublisher) Publish([]events.Event) {}

// TestFencedWritesOfAFormerOwner: node a held job/x and was paused past
// its lease; node b took it. a's late writes, fenced with its token, are
// refused in their own transaction (monitor cursors, a committed change
// such as an evaluator's or the config observer's cursor, retention);
// b's, with the current token, are written; unfenced writes are as
// before.
func TestFencedWritesOfAFormerOwner(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	tokA, ok, err := s.AcquireLease(ctx, "job/x", "node-a", 20*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("a takes the lease: %v %v", ok, err)
	}
	// a is paused: its lease runs out and b takes it.
	eventually.True(t, 10*time.Second, "a's lease expired", func() bool {
		held, err := s.LeaseHeld(ctx, "job/x", tokA)
		return err == nil && !held
	})
	tokB, ok, err := s.AcquireLease(ctx, "job/x", "node-b", time.Hour)
	if err != nil || !ok || tokB <= tokA {
		t.Fatalf("b takes the lease: %d (a had %d) %v %v", tokB, tokA, ok, err)
	}
	asA := commit.WithFence(ctx, commit.Fence{Lease: "job/x", Token: tokA})
	asB := commit.WithFence(ctx, commit.Fence{Lease: "job/x", Token: tokB})

	now := time.Now().UTC()
	if err := s.InsertMonitor(ctx, &monitors.Monitor{ID: "mon_f", Status: monitors.Active, CreatedAt: now, UpdatedAt: now, Cursor: 5}); err != nil {
		t.Fatal(err)
	}
	cursor := func() int64 {
		ms, err := s.ListMonitors(ctx)
		if err != nil || len(ms) != 1 {
			t.Fatalf("list monitors: %v %v", ms, err)
		}
		return ms[0].Cursor
	}
	cases := []struct {
		name    string
		write   func() error
		fenced  bool
		outcome func() bool
	}{
		{"a's monitor cursor", func() error { return s.SaveCursor(asA, "mon_f", 10) }, true, func() bool { return cursor() == 5 }},
		{"a's monitor cursors", func() error { return s.SaveCursors(asA, map[string]int64{"mon_f": 11}) }, true, func() bool { return cursor() == 5 }},
		{"b's monitor cursor", func() error { return s.SaveCursor(asB, "mon_f", 12) }, false, func() bool { return cursor() == 12 }},
		{"b's monitor cursors", func() error { return s.SaveCursors(asB, map[string]int64{"mon_f": 13}) }, false, func() bool { return cursor() == 13 }},
		{"an unfenced cursor", func() error { return s.SaveCursor(ctx, "mon_f", 14) }, false, func() bool { return cursor() == 14 }},
		{"a's retention", func() error { _, err := s.ExpireEvents(asA, now, 10); return err }, true, nil},
		{"b's retention", func() error { _, err := s.ExpireEvents(asB, now, 10); return err }, false, nil},
	}
	for _, c := range cases {
		err := c.write()
		if c.fenced != errors.Is(err, commit.ErrFenced) || (!c.fenced && err != nil) {
			t.Errorf("%s: %v, fenced %v", c.name, err, c.fenced)
		}
		if c.outcome != nil && !c.outcome() {
			t.Errorf("%s: cursor %d afterwards", c.name, cursor())
		}
	}

	// Changes through the write path: a's is refused alone, b's in the
	// same batch is written.
	cm := commit.New(s, noPublisher{}, commit.Options{}, slog.New(slog.DiscardHandler), nil)
	cctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cm.Run(cctx) }()
	defer func() { stop(); <-done }()
	observer := func() int64 {
		seq, _, err := s.ObserverCursor(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	tA, err := cm.Enqueue(asA, &commit.Change{Ops: []commit.Op{&deviceconfig.Op{ObserverCursor: 40}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tA.Wait(ctx); !errors.Is(err, commit.ErrFenced) {
		t.Fatalf("a's committed change: %v, want %v", err, commit.ErrFenced)
	}
	if got := observer(); got == 40 {
		t.Fatal("a's fenced change was written")
	}
	if err := cm.Submit(asB, &commit.Change{Ops: []commit.Op{&deviceconfig.Op{ObserverCursor: 41}}}); err != nil {
		t.Fatalf("b's committed change: %v", err)
	}
	if got := observer(); got != 41 {
		t.Fatalf("observer cursor %d after b's change, want 41", got)
	}
	// One batch with both: only a's fails.
	chA := &commit.Change{Ops: []commit.Op{&deviceconfig.Op{ObserverCursor: 50}}, Fence: &commit.Fence{Lease: "job/x", Token: tokA}}
	chB := &commit.Change{Ops: []commit.Op{&deviceconfig.Op{ObserverCursor: 51}}, Fence: &commit.Fence{Lease: "job/x", Token: tokB}}
	if err := s.Commit(ctx, []*commit.Change{chA, chB}); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(chA.Err, commit.ErrFenced) || chB.Err != nil || observer() != 51 {
		t.Fatalf("one batch: a %v, b %v, observer cursor %d", chA.Err, chB.Err, observer())
	}
}
