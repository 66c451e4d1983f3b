package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/alerts"
	"github.com/devicehub/devicehub/internal/commit"
)

func alertChange(t *testing.T, kind int, a alerts.Alert, cursor int64, evType events.Type) *commit.Change {
	ch := &commit.Change{DeviceID: a.DeviceID, Ops: []commit.Op{&alerts.AlertOp{Kind: kind, Alert: a}}}
	if cursor > 0 {
		ch.Ops = append(ch.Ops, &alerts.CursorOp{Seq: cursor})
	}
	if evType != "" {
		ch.Events = []commit.Event{mustEvent(t, events.Event{Type: evType, Time: a.UpdatedAt, DeviceID: a.DeviceID, DeviceType: a.DeviceType,
			Args: &events.Alert{AlertID: a.ID, Rule: a.Rule, State: a.State}})}
	}
	return ch
}

// testAlerts: alerts go through the write path with their events and the
// evaluator's cursor; one open alert per (rule, device); listing filters;
// rules and silences.
func testAlerts(t *testing.T, b Backend) {
	ctx := context.Background()
	if _, ok, err := b.AlertCursor(ctx); err != nil || ok {
		t.Fatalf("AlertCursor of a new store: %v %v", ok, err)
	}
	raised := at(10)
	a := alerts.Alert{ID: "alr_1", Rule: "hot", DeviceID: "d1", DeviceType: "sensor", Severity: "major", State: alerts.StateActive,
		Message: "too hot", Labels: map[string]string{"team": "ops"}, Value: 81.5, Count: 1,
		StartedAt: at(10), RaisedAt: &raised, LastAt: at(10), UpdatedAt: at(10)}
	mustCommit(t, b, alertChange(t, alerts.OpInsert, a, 7, events.AlertRaised))
	if seq, ok, err := b.AlertCursor(ctx); err != nil || !ok || seq != 7 {
		t.Fatalf("AlertCursor = %d %v %v, want 7", seq, ok, err)
	}
	got, err := b.GetAlert(ctx, "alr_1")
	if err != nil || !reflect.DeepEqual(*got, a) {
		t.Fatalf("GetAlert:\n got %+v %v\nwant %+v", got, err, a)
	}
	evs, err := b.ReadEvents(ctx, 0, 100)
	if err != nil || len(evs) != 1 || evs[0].Type != events.AlertRaised || evs[0].Args.(*events.Alert).AlertID != "alr_1" {
		t.Fatalf("events %+v %v", evs, err)
	}

	// A second open alert for the same (rule, device) fails its change
	// alone; the rest of the batch is written.
	dup := a
	dup.ID = "alr_2"
	other := a
	other.ID, other.DeviceID = "alr_3", "d2"
	batch := []*commit.Change{alertChange(t, alerts.OpInsert, dup, 8, events.AlertRaised), alertChange(t, alerts.OpInsert, other, 0, events.AlertRaised)}
	mustCommit(t, b, batch...)
	if !errors.Is(batch[0].Err, commit.ErrConflict) || batch[1].Err != nil {
		t.Fatalf("duplicate open alert: %v, other: %v", batch[0].Err, batch[1].Err)
	}
	if seq, _, _ := b.AlertCursor(ctx); seq != 7 {
		t.Fatalf("cursor of a failed change written: %d", seq)
	}
	if _, err := b.GetAlert(ctx, "alr_2"); !errors.Is(err, alerts.ErrNotFound) {
		t.Fatalf("GetAlert of the refused alert: %v", err)
	}

	// Update (acknowledge, re-fire), clear, and a new alert after a clear.
	ack := at(20)
	a.State, a.AckAt, a.AckBy, a.AckNote, a.Count, a.Value, a.LastAt, a.UpdatedAt = alerts.StateAcknowledged, &ack, "op", "seen", 3, "text", at(19), at(20)
	mustCommit(t, b, alertChange(t, alerts.OpUpdate, a, 9, events.AlertAcknowledged))
	cl := at(30)
	a.State, a.ClearedAt, a.ClearedBy, a.UpdatedAt = alerts.StateCleared, &cl, "rule", at(30)
	mustCommit(t, b, alertChange(t, alerts.OpUpdate, a, 10, events.AlertCleared))
	again := alertChange(t, alerts.OpUpdate, a, 11, "")
	mustCommit(t, b, again)
	if !errors.Is(again.Err, commit.ErrConflict) {
		t.Fatalf("update of a cleared alert: %v", again.Err)
	}
	if got, _ := b.GetAlert(ctx, "alr_1"); !reflect.DeepEqual(*got, a) {
		t.Fatalf("cleared alert:\n got %+v\nwant %+v", got, a)
	}
	dup.StartedAt, dup.LastAt, dup.UpdatedAt, dup.State = at(40), at(40), at(40), alerts.StatePending
	dup.RaisedAt = nil
	mustCommit(t, b, alertChange(t, alerts.OpInsert, dup, 12, ""))
	open, err := b.OpenAlerts(ctx)
	if err != nil || len(open) != 2 || open[0].ID != "alr_2" || open[1].ID != "alr_3" {
		t.Fatalf("OpenAlerts %+v %v", open, err)
	}
	del := alertChange(t, alerts.OpDelete, dup, 13, "")
	mustCommit(t, b, del)
	if del.Err != nil {
		t.Fatal(del.Err)
	}
	if _, err := b.GetAlert(ctx, "alr_2"); !errors.Is(err, alerts.ErrNotFound) {
		t.Fatalf("deleted pending alert: %v", err)
	}

	// Listing filters.
	for _, tc := range []struct {
		q    alerts.Query
		want []string
	}{
		{alerts.Query{}, []string{"alr_3", "alr_1"}},
		{alerts.Query{States: []string{alerts.StateCleared}}, []string{"alr_1"}},
		{alerts.Query{States: []string{alerts.StateActive, alerts.StatePending}}, []string{"alr_3"}},
		{alerts.Query{DeviceID: "d1"}, []string{"alr_1"}},
		{alerts.Query{Rule: "hot", DeviceType: "sensor", Severity: "major"}, []string{"alr_3", "alr_1"}},
		{alerts.Query{Severity: "minor"}, nil},
		{alerts.Query{Limit: 1}, []string{"alr_3"}},
	} {
		list, err := b.ListAlerts(ctx, tc.q)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, x := range list {
			ids = append(ids, x.ID)
		}
		if !reflect.DeepEqual(ids, tc.want) {
			t.Errorf("ListAlerts(%+v) = %v, want %v", tc.q, ids, tc.want)
		}
	}

	// Rules and silences.
	spec := alerts.RuleSpec{Name: "cold", DeviceType: "sensor", When: "temperature < 0", Labels: map[string]string{"x": "y"}}
	if err := b.InsertAlertRule(ctx, alerts.StoredRule{Spec: spec, CreatedAt: at(1), CreatedBy: "tok"}); err != nil {
		t.Fatal(err)
	}
	if err := b.InsertAlertRule(ctx, alerts.StoredRule{Spec: spec, CreatedAt: at(1)}); !errors.Is(err, alerts.ErrExists) {
		t.Fatalf("duplicate rule: %v", err)
	}
	rules, err := b.ListAlertRules(ctx)
	if err != nil || len(rules) != 1 || !reflect.DeepEqual(rules[0], alerts.StoredRule{Spec: spec, CreatedAt: at(1), CreatedBy: "tok"}) {
		t.Fatalf("ListAlertRules %+v %v", rules, err)
	}
	if err := b.DeleteAlertRule(ctx, "cold"); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteAlertRule(ctx, "cold"); !errors.Is(err, alerts.ErrNotFound) {
		t.Fatalf("delete missing rule: %v", err)
	}
	s1 := alerts.Silence{ID: "sil_1", Rule: "hot", Until: at(100), Note: "maintenance", CreatedBy: "tok", CreatedAt: at(1)}
	s2 := alerts.Silence{ID: "sil_2", DeviceID: "d1", Until: at(50), CreatedAt: at(1)}
	for _, s := range []alerts.Silence{s1, s2} {
		if err := b.InsertSilence(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	sl, err := b.ListSilences(ctx, at(60))
	if err != nil || !reflect.DeepEqual(sl, []alerts.Silence{s1}) {
		t.Fatalf("ListSilences %+v %v", sl, err)
	}
	if err := b.DeleteSilence(ctx, "sil_1"); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteSilence(ctx, "sil_1"); !errors.Is(err, alerts.ErrNotFound) {
		t.Fatalf("delete missing silence: %v", err)
	}
}

// testAlertsConcurrent: many writers (separate commits, in parallel) raise
// the same (rule, device) alert; exactly one is stored open, and so for
// every round.
func testAlertsConcurrent(t *testing.T, b Backend) {
	ctx := context.Background()
	const writers, rounds = 8, 5
	for round := range rounds {
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				now := at(round*10 + w)
				a := alerts.Alert{ID: fmt.Sprintf("alr_r%d_w%d", round, w), Rule: "hot", DeviceID: "d1", DeviceType: "sensor",
					Severity: "major", State: alerts.StateActive, Count: 1, StartedAt: now, RaisedAt: &now, LastAt: now, UpdatedAt: now}
				ch := alertChange(t, alerts.OpInsert, a, 0, events.AlertRaised)
				if err := b.Commit(ctx, []*commit.Change{ch}); err != nil {
					// A serialization failure of the whole batch is fine: it
					// wrote nothing.
					return
				}
				if ch.Err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				} else if !errors.Is(ch.Err, commit.ErrConflict) {
					t.Errorf("writer %d: %v", w, ch.Err)
				}
			}()
		}
		wg.Wait()
		open, err := b.ListAlerts(ctx, alerts.Query{Rule: "hot", DeviceID: "d1", States: []string{alerts.StateActive}})
		if err != nil {
			t.Fatal(err)
		}
		if ok != 1 || len(open) != 1 {
			t.Fatalf("round %d: %d inserts succeeded, %d open alerts; want 1 and 1", round, ok, len(open))
		}
		evs, err := b.ReadEvents(ctx, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		if n := countType(evs, events.AlertRaised); n != round+1 {
			t.Fatalf("round %d: %d alert_raised events, want %d", round, n, round+1)
		}
		// Clear it for the next round.
		a := open[0]
		cl := time.Unix(0, 0).UTC()
		a.State, a.ClearedAt = alerts.StateCleared, &cl
		mustCommit(t, b, alertChange(t, alerts.OpUpdate, a, 0, ""))
	}
}

func countType(evs []events.Event, typ events.Type) int {
	n := 0
	for _, e := range evs {
		if e.Type == typ {
			n++
		}
	}
	return n
}
