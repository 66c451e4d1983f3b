package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/monitors"
)

// testMonitors: monitors and their cursors round-trip, update, list by id
// and delete with their cursor.
func testMonitors(t *testing.T, b Backend) {
	ctx := context.Background()
	dur := 2.5
	ts := at(30)
	a := monitors.Monitor{
		ID: "mon_a",
		Spec: monitors.Spec{
			Topics: []string{"device_*", "*[group=north]"}, Transport: "http", URL: "https://example.com/hook",
			Method: "POST", BasicAuth: "u:p", ConnectTimeoutMS: 5000, ResponseTimeoutMS: 7000,
			BatchSize: 10, BatchDuration: &dur, Compression: "zlib", Format: "xml",
			AutoReplayOnConnect: true, Description: "ä hook",
		},
		Status: monitors.Connecting, CreatedAt: at(1), UpdatedAt: at(1),
		Secret: "whsec_abc", Cursor: 42,
	}
	c := monitors.Monitor{
		ID:     "mon_c",
		Spec:   monitors.Spec{Topics: []string{"*"}, Transport: "tcp", Ack: "explicit", BatchSize: 1, BatchDuration: new(float64), Compression: "none", Format: "json"},
		Status: monitors.Inactive, CreatedAt: at(2), UpdatedAt: at(2), TokenHash: []byte("0123456789abcdef0123456789abcdef"),
	}
	for _, m := range []*monitors.Monitor{&c, &a} {
		if err := b.InsertMonitor(ctx, m); err != nil {
			t.Fatalf("InsertMonitor %s: %v", m.ID, err)
		}
	}
	if err := b.InsertMonitor(ctx, &a); err == nil {
		t.Fatal("InsertMonitor of an existing id: no error")
	}
	list, err := b.ListMonitors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || !reflect.DeepEqual(list[0], a) || !reflect.DeepEqual(list[1], c) {
		t.Fatalf("ListMonitors:\n got %+v\nwant %+v\n     %+v", list, a, c)
	}

	a.Status, a.StatusReason = monitors.Suspended, "HTTP 500"
	a.LastConnect, a.LastSent, a.FailingSince, a.PrevSecretUntil = &ts, &ts, &ts, &ts
	a.PrevSecret, a.Secret = a.Secret, "whsec_new"
	a.Description = "changed"
	a.UpdatedAt = at(31)
	if err := b.UpdateMonitor(ctx, &a); err != nil {
		t.Fatal(err)
	}
	if err := b.SaveCursor(ctx, a.ID, 99); err != nil {
		t.Fatal(err)
	}
	a.Cursor = 99
	list, err = b.ListMonitors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(list[0], a) {
		t.Fatalf("after update:\n got %+v\nwant %+v", list[0], a)
	}
	missing := monitors.Monitor{ID: "mon_missing", Spec: c.Spec, Status: monitors.Active, CreatedAt: at(1), UpdatedAt: at(1)}
	if err := b.UpdateMonitor(ctx, &missing); !errors.Is(err, monitors.ErrNotFound) {
		t.Fatalf("UpdateMonitor of a missing monitor: %v, want ErrNotFound", err)
	}
	if err := b.DeleteMonitor(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := b.DeleteMonitor(ctx, a.ID); !errors.Is(err, monitors.ErrNotFound) {
		t.Fatalf("DeleteMonitor twice: %v, want ErrNotFound", err)
	}
	if err := b.SaveCursor(ctx, a.ID, 100); err != nil {
		t.Fatalf("SaveCursor of a deleted monitor: %v", err)
	}
	if err := b.SaveCursors(ctx, map[string]int64{a.ID: 101, c.ID: 57}); err != nil {
		t.Fatalf("SaveCursors with a deleted monitor: %v", err)
	}
	list, err = b.ListMonitors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != c.ID || list[0].Cursor != 57 {
		t.Fatalf("after delete and SaveCursors: %+v", list)
	}
	c.Cursor = 57
	// A state change through the write path: the state and its event in
	// one transaction; for a missing monitor the change fails alone and
	// its event is dropped.
	c.Status, c.StatusReason, c.LastConnect, c.UpdatedAt = monitors.Active, "connected", &ts, at(40)
	ev := mustEvent(t, events.Event{Type: events.MonitorStatusChanged, Time: at(40),
		Args: &events.MonitorStatus{MonitorID: c.ID, OldStatus: "INACTIVE", NewStatus: "ACTIVE"}})
	gone := monitors.Monitor{ID: "mon_gone", Status: monitors.Active, UpdatedAt: at(40)}
	evGone := mustEvent(t, events.Event{Type: events.MonitorStatusChanged, Time: at(40),
		Args: &events.MonitorStatus{MonitorID: gone.ID, NewStatus: "ACTIVE"}})
	before, err := b.LastSeq(ctx)
	if err != nil {
		t.Fatal(err)
	}
	okCh := &commit.Change{Ops: []commit.Op{&monitors.StateChange{Monitor: c}}, Events: []commit.Event{ev}}
	goneCh := &commit.Change{Ops: []commit.Op{&monitors.StateChange{Monitor: gone}}, Events: []commit.Event{evGone}}
	mustCommit(t, b, okCh, goneCh)
	if okCh.Err != nil || !errors.Is(goneCh.Err, monitors.ErrNotFound) {
		t.Fatalf("state changes: %v, %v", okCh.Err, goneCh.Err)
	}
	evs, err := b.ReadEvents(ctx, before, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 || evs[0].Type != events.MonitorStatusChanged || evs[0].Args.(*events.MonitorStatus).MonitorID != c.ID {
		t.Fatalf("events after the state changes: %+v", evs)
	}
	list, err = b.ListMonitors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(list[0], c) {
		t.Fatalf("after the state change:\n got %+v\nwant %+v", list[0], c)
	}

	// The deleted monitor's cursor went with it: a new monitor of the same
	// id starts from its own cursor.
	a.Cursor = 5
	if err := b.InsertMonitor(ctx, &a); err != nil {
		t.Fatal(err)
	}
	list, _ = b.ListMonitors(ctx)
	if list[0].ID != a.ID || list[0].Cursor != 5 {
		t.Fatalf("re-created monitor's cursor = %d, want 5", list[0].Cursor)
	}
}
