package commit_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// fakeTx is a transaction that records what the domains did.
type fakeTx struct {
	devices map[string]bool
	lookups [][]string
	log     []string
	seq     int64
}

func (f *fakeTx) LookupDevices(_ context.Context, ids []string) error {
	f.lookups = append(f.lookups, ids)
	return nil
}

func (f *fakeTx) DeviceExists(_ context.Context, id string) (bool, error) { return f.devices[id], nil }

func (f *fakeTx) WriteEvents(_ context.Context, evs []*commit.Event) error {
	for _, e := range evs {
		f.seq++
		e.Seq = f.seq
		f.log = append(f.log, "event "+e.DeviceID)
	}
	return nil
}

// The test domains: "create" makes its device, "need" requires it, "fail"
// fails its change (rank 20), "late" records (rank 30).
type createOp struct{}
type needOp struct{}
type failOp struct{}
type lateOp struct{}

var (
	createDomain = &commit.Domain{Name: "create", Rank: 1}
	needDomain   = &commit.Domain{Name: "need", Rank: 10, Write: record("need")}
	failDomain   = &commit.Domain{Name: "fail", Rank: 20, Write: func(_ context.Context, tx commit.Tx, ops []commit.Pending) error {
		for _, p := range ops {
			if p.Change.Live() {
				tx.(*fakeTx).log = append(tx.(*fakeTx).log, "fail "+p.Change.DeviceID)
				p.Change.Err = commit.ErrConflict
			}
		}
		return nil
	}}
	lateDomain = &commit.Domain{Name: "late", Rank: 30, Write: record("late")}
)

func record(name string) func(context.Context, commit.Tx, []commit.Pending) error {
	return func(_ context.Context, tx commit.Tx, ops []commit.Pending) error {
		for _, p := range ops {
			if p.Change.Live() {
				tx.(*fakeTx).log = append(tx.(*fakeTx).log, name+" "+p.Change.DeviceID)
			}
		}
		return nil
	}
}

func (createOp) Domain() *commit.Domain { return createDomain }
func (needOp) Domain() *commit.Domain   { return needDomain }
func (needOp) NeedsDevice() bool        { return true }
func (failOp) Domain() *commit.Domain   { return failDomain }
func (lateOp) Domain() *commit.Domain   { return lateDomain }

func (createOp) CreateDevice(_ context.Context, tx commit.Tx, ch *commit.Change) error {
	f := tx.(*fakeTx)
	if f.devices[ch.DeviceID] {
		ch.Err = commit.ErrDeviceExists
		return nil
	}
	f.devices[ch.DeviceID] = true
	f.log = append(f.log, "create "+ch.DeviceID)
	return nil
}

func opChange(dev string, ops ...commit.Op) *commit.Change {
	return &commit.Change{DeviceID: dev, Ops: ops, Events: []commit.Event{{Event: events.Event{Type: events.DeviceDataReceived, DeviceID: dev}}}}
}

func TestWriteOrder(t *testing.T) {
	tx := &fakeTx{devices: map[string]bool{"old": true}}
	missing := opChange("missing", needOp{}, lateOp{})      // its device never exists
	early := opChange("new", needOp{})                      // before the creation of its device
	create := opChange("new", createOp{})                   // creates it
	again := opChange("new", createOp{})                    // exists now
	later := opChange("new", lateOp{}, needOp{})            // after: finds it; ops listed out of rank order
	failed := opChange("old", failOp{}, lateOp{}, needOp{}) // fails at rank 20: no late, no event
	batch := []*commit.Change{missing, early, create, again, later, failed}
	if err := commit.Write(context.Background(), tx, batch); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ch   *commit.Change
		want error
	}{
		{"missing device", missing, commit.ErrDeviceNotFound},
		{"device created later in the batch", early, commit.ErrDeviceNotFound},
		{"create", create, nil},
		{"create twice", again, commit.ErrDeviceExists},
		{"after the creation", later, nil},
		{"failed at rank 20", failed, commit.ErrConflict},
	} {
		if !errors.Is(tc.ch.Err, tc.want) || (tc.want == nil && tc.ch.Err != nil) {
			t.Errorf("%s: Err = %v, want %v", tc.name, tc.ch.Err, tc.want)
		}
	}
	want := []string{"create new", "need new", "need old", "fail old", "late new", "event new", "event new"}
	if !slices.Equal(tx.log, want) {
		t.Errorf("log:\n %q\nwant\n %q", tx.log, want)
	}
	if len(tx.lookups) != 1 || !slices.Equal(tx.lookups[0], []string{"missing", "new", "old"}) {
		t.Errorf("lookups = %q, want one of missing, new, old", tx.lookups)
	}
	if create.Events[0].Seq != 1 || later.Events[0].Seq != 2 || failed.Events[0].Seq != 0 || missing.Events[0].Seq != 0 {
		t.Errorf("seqs: create %d, later %d, failed %d, missing %d", create.Events[0].Seq, later.Events[0].Seq, failed.Events[0].Seq, missing.Events[0].Seq)
	}

	commit.ResetOutcomes(batch)
	for _, ch := range batch {
		if ch.Err != nil || ch.Duplicate || ch.Events[0].Seq != 0 {
			t.Errorf("%s after ResetOutcomes: %v %v %d", ch.DeviceID, ch.Err, ch.Duplicate, ch.Events[0].Seq)
		}
	}
}

func TestWriteFailsBatchOnDomainError(t *testing.T) {
	boom := &commit.Domain{Name: "boom", Rank: 5, Write: func(context.Context, commit.Tx, []commit.Pending) error {
		return errors.New("disk full")
	}}
	tx := &fakeTx{devices: map[string]bool{}}
	err := commit.Write(context.Background(), tx, []*commit.Change{opChange("d", boomOp{boom})})
	if err == nil || err.Error() != "boom: disk full" {
		t.Fatalf("err = %v, want the domain's error named", err)
	}
	if len(tx.log) != 0 {
		t.Errorf("events written after a failed domain: %q", tx.log)
	}
}

type boomOp struct{ d *commit.Domain }

func (o boomOp) Domain() *commit.Domain { return o.d }

type missingStore interface{ Nothing() }

func TestStoreOfNamesTheMissingStore(t *testing.T) {
	_, err := commit.StoreOf[missingStore](&fakeTx{})
	if err == nil || err.Error() != fmt.Sprintf("backend transaction %T does not implement %T", &fakeTx{}, (*missingStore)(nil)) {
		t.Fatalf("err = %v", err)
	}
	if _, ok := commit.Find[needOp](opChange("d", lateOp{}, needOp{})); !ok {
		t.Error("Find did not find the op")
	}
}
