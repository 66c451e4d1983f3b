package commit

import (
	"context"
	"fmt"
)

// Store writes batches of changes. Commit writes all changes of the batch in
// one transaction (with Write) and returns an error only if the
// transaction failed as a whole (then nothing of the batch is stored, and
// ResetOutcomes cleared what Write had set). Per-change outcomes are set on
// the changes (Duplicate, Superseded, Err, and the Seq of each written event).
type Store interface {
	Commit(ctx context.Context, batch []*Change) error
}

// Op is one domain's operation inside a Change. The committer does not look
// inside an op: it hands the ops of a batch to their Domain.
type Op interface {
	Domain() *Domain
}

// A DeviceNeeder is an op that requires its change's device to exist:
// unless it does (or an op earlier in the batch created it), the change
// fails with ErrDeviceNotFound before any domain writes a part of it.
type DeviceNeeder interface {
	NeedsDevice() bool
}

// A DeviceCreator is an op that creates its change's device. Creators run
// first, one change after the other in batch order, so that a later change
// of the batch finds the device.
type DeviceCreator interface {
	CreateDevice(ctx context.Context, tx Tx, ch *Change) error
}

// Domain writes the ops of one kind. Each domain declares its Domain once,
// as a package variable that its ops return from their Domain method.
type Domain struct {
	// Name is for errors and logs.
	Name string
	// Rank orders the domains within a batch: lower ranks write first.
	// Ranks are listed in docs/ARCHITECTURE.md; a domain whose ops can
	// fail a change ranks before the domains that must not write for a
	// failed change.
	Rank int
	// Write applies the batch's ops of this domain, in batch order, inside
	// tx. It skips the ops whose change is no longer Live, and sets Err or
	// Duplicate on a change that fails alone. An error fails the whole
	// batch. Nil for a domain whose ops do all their work as a
	// DeviceCreator.
	Write func(ctx context.Context, tx Tx, ops []Pending) error
}

// Pending is an op of a batch with its change.
type Pending struct {
	Change *Change
	Op     Op
}

// Tx is a batch's transaction as a backend hands it to the domains. Besides
// these methods, the transaction of every backend implements the
// transaction-scoped store of every domain (registry.TxStore,
// readings.TxStore, ...): a domain gets its store with StoreOf.
type Tx interface {
	// LookupDevices learns, in one round trip, which of ids exist, so that
	// DeviceExists answers them without one.
	LookupDevices(ctx context.Context, ids []string) error
	// DeviceExists reports whether a device exists in this transaction,
	// devices created earlier in the batch included.
	DeviceExists(ctx context.Context, id string) (bool, error)
	// WriteEvents appends evs to the event log, in order, and sets their
	// Seq.
	WriteEvents(ctx context.Context, evs []*Event) error
}

// StoreOf returns the store S (a domain's TxStore) of tx. Every backend
// declares that its transaction implements every domain's TxStore, so this
// fails only for a backend outside the tree.
func StoreOf[S any](tx Tx) (S, error) {
	s, ok := tx.(S)
	if !ok {
		return s, fmt.Errorf("backend transaction %T does not implement %T", tx, (*S)(nil))
	}
	return s, nil
}

// ResetOutcomes clears what Write set on the changes of a batch; a backend
// calls it before Write and after a failed transaction.
func ResetOutcomes(batch []*Change) {
	for _, ch := range batch {
		ch.Err, ch.Duplicate, ch.Superseded = nil, false, false
		for i := range ch.Events {
			ch.Events[i].Seq = 0
		}
	}
}

// Find returns the first op of ch of type T, and whether there is one.
func Find[T Op](ch *Change) (T, bool) {
	for _, op := range ch.Ops {
		if t, ok := op.(T); ok {
			return t, true
		}
	}
	var zero T
	return zero, false
}
