// Package commit is the single write path of the hub. Every write is a
// Change: the operations of one or more domains about one device, and the
// events they cause. The Committer writes changes in group commits, one
// transaction per batch shared by all devices, with their events in the
// same transaction. Events reach in-process subscribers only after the
// transaction committed.
//
// The package knows no domain: an operation (Op) names the Domain that
// writes it, and each domain declares the transaction-scoped store it
// needs, which every backend's transaction implements. See Write for the
// order in which a batch is applied, and docs/ARCHITECTURE.md ("Adding a
// domain") for how to add one.
package commit

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/devicehub/devicehub/events"
)

// Event is an event waiting to be written: the event (Seq zero until
// commit) and its arguments already encoded, so that the encoding happens
// in the caller's goroutine and not in the single commit loop.
type Event struct {
	events.Event
	Args []byte
}

// NewEvent encodes e's arguments.
func NewEvent(e events.Event) (Event, error) {
	b, err := json.Marshal(e.Args)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s args: %w", e.Type, err)
	}
	return Event{Event: e, Args: b}, nil
}

// Change is one unit of the write path, about one device: its operations
// and its events, written in one transaction with the rest of its batch.
//
// An operation may fail its change alone (Err), find it a duplicate of
// one stored before (Duplicate) or find it superseded by a newer state
// stored before (Superseded); then the operations of later domains are
// not applied to it and its events are not written. What earlier domains
// wrote for it stays (a rejected message is still audited, for example).
type Change struct {
	DeviceID string
	Ops      []Op
	Events   []Event
	// Fence, if set, makes the change conditional on a lease (see Fence);
	// Enqueue sets it from the context (WithFence) when it is nil.
	Fence *Fence

	// Set by the store.
	Duplicate bool  // the change was stored before; its events are not written
	Err       error // this change alone failed (ErrDeviceExists, ErrDeviceNotFound, ErrConflict, ErrFenced)
	// Superseded: the change is about a device's MQTT session older than
	// the one stored (a disconnect reported by a node that had not heard
	// of the device's takeover by another node, see registry.DevicePatch).
	// Its state and its events are not written. Not an error: the stored
	// state is the newer one.
	Superseded bool
}

// Live reports whether nothing failed, duplicated or superseded the
// change so far.
func (ch *Change) Live() bool { return ch.Err == nil && !ch.Duplicate && !ch.Superseded }

// Errors an operation reports for a single change without failing its
// batch.
var (
	// ErrDeviceExists: a device to create exists already.
	ErrDeviceExists = errors.New("device already exists")
	// ErrDeviceNotFound: an operation needs a device that does not exist.
	ErrDeviceNotFound = errors.New("device not found")
	// ErrConflict: an operation whose precondition (a command's status, a
	// twin's version) did not hold.
	ErrConflict = errors.New("conflicting change")
)
