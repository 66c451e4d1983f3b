package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/firmware"
)

// testFirmware writes artifacts, rollouts, device updates and their
// history through the commit path and reads them back.
func testFirmware(t *testing.T, b Backend) {
	ctx := context.Background()
	art := firmware.Artifact{ID: "fw_1", Version: "1.4.2", Type: "Sensor", Hardware: "rev-b", Size: 1234,
		SHA256: "ab", Signature: "sig", PublicKey: "pub", SignedBy: "hub", Filename: "fw.bin", CreatedAt: at(1)}
	mustCommit(t, b, &commit.Change{Ops: []commit.Op{&firmware.Op{Artifact: &art}}})
	got, err := b.GetArtifact(ctx, "fw_1")
	if err != nil || !reflect.DeepEqual(*got, art) {
		t.Fatalf("GetArtifact = %+v, %v; want %+v", got, err, art)
	}
	if _, err := b.GetArtifact(ctx, "fw_x"); !errors.Is(err, firmware.ErrNotFound) {
		t.Fatalf("GetArtifact of a missing id: %v, want ErrNotFound", err)
	}
	list, err := b.ListArtifacts(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "fw_1" {
		t.Fatalf("ListArtifacts = %+v, %v", list, err)
	}

	// A rollout of a missing artifact fails its change alone.
	bad := &commit.Change{Ops: []commit.Op{&firmware.Op{CreateRollout: true, Rollout: &firmware.Rollout{ID: "ro_bad", Spec: firmware.Spec{ArtifactID: "fw_x"},
		Status: firmware.RolloutRunning, CreatedAt: at(2), UpdatedAt: at(2)}}}}
	mustCommit(t, b, bad)
	if !errors.Is(bad.Err, firmware.ErrNotFound) {
		t.Fatalf("rollout of a missing artifact: Err = %v", bad.Err)
	}

	r := firmware.Rollout{ID: "ro_1", Spec: firmware.Spec{ArtifactID: "fw_1", Target: firmware.Target{Group: "north"}, MaxPerMinute: 50,
		Phases: []int{10, 100}, StepTimeout: time.Minute, TotalTimeout: time.Hour, HealthWindow: time.Minute, Settle: time.Second,
		RateIncrease: &firmware.RateIncrease{AfterSuccesses: 5, Factor: 2}, Window: &firmware.Window{Start: "22:00", End: "04:00"}},
		Status: firmware.RolloutRunning, Version: "1.4.2", DeviceType: "Sensor", CreatedAt: at(2), UpdatedAt: at(2)}
	ev, err := commit.NewEvent(events.Event{Type: events.RolloutStatusChanged, Time: at(2), Args: &events.RolloutStatus{RolloutID: "ro_1", Status: "running"}})
	if err != nil {
		t.Fatal(err)
	}
	started := at(3)
	us := []firmware.DeviceUpdate{
		{RolloutID: "ro_1", DeviceID: "d2", DeviceType: "Sensor", Order: 1, Phase: 1, State: firmware.Queued, StateSince: at(2), UpdatedAt: at(2)},
		{RolloutID: "ro_1", DeviceID: "d1", DeviceType: "Sensor", Order: 0, Phase: 0, State: firmware.Notified, StateSince: at(3), StartedAt: &started, UpdatedAt: at(3)},
	}
	mustCommit(t, b, &commit.Change{Ops: []commit.Op{&firmware.Op{Rollout: &r, CreateRollout: true, Updates: us}}, Events: []commit.Event{ev}})
	gr, err := b.GetRollout(ctx, "ro_1")
	if err != nil || !reflect.DeepEqual(*gr, r) {
		t.Fatalf("GetRollout = %+v, %v; want %+v", gr, err, r)
	}
	if _, err := b.GetRollout(ctx, "ro_x"); !errors.Is(err, firmware.ErrNotFound) {
		t.Fatalf("GetRollout of a missing id: %v", err)
	}
	ups, err := b.ListDeviceUpdates(ctx, "ro_1")
	if err != nil || len(ups) != 2 || !reflect.DeepEqual(ups[0], us[1]) || !reflect.DeepEqual(ups[1], us[0]) {
		t.Fatalf("ListDeviceUpdates = %+v, %v", ups, err)
	}

	// An update replaces the row; history is appended.
	reboot := at(5)
	u := us[1]
	u.State, u.Message, u.Progress, u.StateSince, u.RebootAt, u.Attempt, u.UpdatedAt = firmware.Rebooting, "ä restart", 100, at(5), &reboot, 1, at(5)
	hist := []firmware.HistoryEntry{
		{RolloutID: "ro_1", DeviceID: "d1", State: firmware.Notified, At: at(3)},
		{RolloutID: "ro_1", DeviceID: "d1", State: firmware.Rebooting, Attempt: 1, Message: "ä restart", At: at(5)},
	}
	mustCommit(t, b, &commit.Change{Ops: []commit.Op{&firmware.Op{Updates: []firmware.DeviceUpdate{u}, History: hist}}})
	ups, err = b.ListDeviceUpdates(ctx, "ro_1")
	if err != nil || !reflect.DeepEqual(ups[0], u) {
		t.Fatalf("after update: %+v, %v; want %+v", ups, err, u)
	}
	h, err := b.UpdateHistory(ctx, "d1", "")
	if err != nil || !reflect.DeepEqual(h, hist) {
		t.Fatalf("UpdateHistory = %+v, %v; want %+v", h, err, hist)
	}
	if h, err := b.UpdateHistory(ctx, "d1", "ro_other"); err != nil || len(h) != 0 {
		t.Fatalf("UpdateHistory of another rollout = %+v, %v", h, err)
	}

	// An artifact in use by an active rollout is not deleted.
	del := &commit.Change{Ops: []commit.Op{&firmware.Op{DeleteArtifact: "fw_1"}}}
	mustCommit(t, b, del)
	if !errors.Is(del.Err, firmware.ErrInUse) {
		t.Fatalf("delete of an artifact in use: Err = %v", del.Err)
	}
	act, err := b.ListRollouts(ctx, true)
	if err != nil || len(act) != 1 {
		t.Fatalf("ListRollouts(active) = %+v, %v", act, err)
	}
	r.Status, r.Reason, r.UpdatedAt, r.BaseFinished, r.BaseFailures = firmware.RolloutCompleted, "done", at(9), 3, 1
	mustCommit(t, b, &commit.Change{Ops: []commit.Op{&firmware.Op{Rollout: &r}}})
	if act, err := b.ListRollouts(ctx, true); err != nil || len(act) != 0 {
		t.Fatalf("ListRollouts(active) after completion = %+v, %v", act, err)
	}
	all, err := b.ListRollouts(ctx, false)
	if err != nil || len(all) != 1 || !reflect.DeepEqual(all[0], r) {
		t.Fatalf("ListRollouts = %+v, %v; want %+v", all, err, r)
	}
	del = &commit.Change{Ops: []commit.Op{&firmware.Op{DeleteArtifact: "fw_1"}}}
	mustCommit(t, b, del)
	if del.Err != nil {
		t.Fatalf("delete: %v", del.Err)
	}
	if _, err := b.GetArtifact(ctx, "fw_1"); !errors.Is(err, firmware.ErrNotFound) {
		t.Fatalf("artifact still there: %v", err)
	}
	del = &commit.Change{Ops: []commit.Op{&firmware.Op{DeleteArtifact: "fw_1"}}}
	mustCommit(t, b, del)
	if !errors.Is(del.Err, firmware.ErrNotFound) {
		t.Fatalf("delete of a missing artifact: Err = %v", del.Err)
	}
}
