// Package commit is the single write path of the hub: every change that a
// signal describes (a message and its readings, a presence transition, a
// provisioning) is a Change, and the Committer writes changes in group
// commits, one transaction per batch shared by all devices, with their
// events in the same transaction. Events reach in-process subscribers only
// after the transaction committed.
package commit

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/events"
)

// Message is one record of the message audit log: what a device sent, and
// whether the hub accepted it.
type Message struct {
	ID         int64 // assigned by the hub before commit (see IDs)
	Topic      string
	Transport  string // "mqtt" or "http"
	QoS        byte
	Payload    []byte
	MsgID      string // the device's idempotence key, "" for none
	Accepted   bool
	Code       string // rejection code, "" when accepted
	Reason     string // rejection reason, "" when accepted
	ReceivedAt time.Time
}

// Reading is one reading row: values encoded as a JSON object.
type Reading struct {
	Stream string
	Time   time.Time
	Values []byte // JSON object
}

// DevicePatch updates the state columns of an existing device. Nil fields
// are left alone. Within a batch, patches to one device are applied in
// order, so a store may coalesce them.
type DevicePatch struct {
	LastSeen  *time.Time
	Status    *string
	Connected *bool
	Metrics   []byte // JSON object of the latest heartbeat metrics
}

// NewDevice creates (or, with Replace, re-provisions) a device with its
// credentials. Only hashes of secrets are ever stored.
type NewDevice struct {
	Type         string
	Name         string
	Group        string
	Tags         []string
	Metadata     []byte // JSON object or nil
	MQTTUsername string
	PasswordHash []byte // SHA-256 of the MQTT password
	APIKeyHash   []byte // SHA-256 of the API key
	Replace      bool   // re-provision: replace the credentials of an existing device
	CreatedAt    time.Time
}

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

// Change is one unit of the write path, about one device.
//
// The store writes, in one transaction with the rest of its batch: the
// NewDevice, the Message (if MsgID is set and a message with the same
// device and MsgID exists, the change is a duplicate: nothing of it is
// written and Duplicate is set), the Readings (only if Message is set and
// accepted and not a duplicate), the DevicePatch, and the Events, whose
// Seq it sets in order.
type Change struct {
	DeviceID  string
	NewDevice *NewDevice
	Message   *Message
	Readings  []Reading
	Device    *DevicePatch
	// Registry changes the device's registry record (fields, group,
	// credentials, registration), or records something in the same
	// transaction as its NewDevice (see RegistryChange).
	Registry *RegistryChange
	// Command creates or updates one of the device's commands, Twin its
	// desired or reported properties (see CommandChange, TwinChange).
	Command *CommandChange
	Twin    *TwinChange
	Events  []Event

	// Set by the store.
	Duplicate bool  // the message was stored before; nothing was written
	Err       error // this change alone failed (ErrDeviceExists, ErrDeviceNotFound)
}

// RegistryChange is the registry part of a change. The store applies it
// after the batch's NewDevices, in batch order; a change whose Fields,
// Credentials, RetireOld or Cert name a device that does not exist fails
// alone with ErrDeviceNotFound. Every part is optional.
type RegistryChange struct {
	// Fields sets registry fields of an existing device.
	Fields *DeviceFields
	// Credentials replaces (or revokes) the device's credentials.
	Credentials *CredentialChange
	// RetireOld ends the overlap of a rotation: the old credentials stop
	// working.
	RetireOld bool
	// Cert pins a client certificate's SHA-256 fingerprint to the device;
	// a Cert with an empty Fingerprint removes the pin.
	Cert *CertPin
	// RegistrationKey binds the SHA-256 hash of a hardware key to the
	// device, for self-registration. A key already bound stays bound to
	// its device.
	RegistrationKey []byte
	// Groups are created if they do not exist yet.
	Groups []Group
	// Operation records the approval of a provisioning operation, in the
	// same transaction as the NewDevice it provisions.
	Operation *OperationApproval
	// Import creates many devices in this one change: all of them, or
	// none when one exists already (Err wraps ErrDeviceExists and names
	// it).
	Import []ImportDevice
}

// DeviceFields are the registry fields of a device; nil fields are left
// alone.
type DeviceFields struct {
	Name            *string
	Group           *string
	Tags            *[]string
	Location        []byte // JSON object; "null" clears it
	Metadata        []byte // JSON object; "null" clears it
	FirmwareVersion *string
	HardwareVersion *string
	ManagementIP    *string
	Disabled        *bool
}

// CredentialChange replaces a device's credentials. Only hashes are stored.
type CredentialChange struct {
	MQTTUsername string
	PasswordHash []byte // SHA-256 of the new MQTT password
	APIKeyHash   []byte // SHA-256 of the new API key
	// OldUntil, if not zero, keeps the current credentials valid until
	// then (a rotation with an overlap); otherwise they stop at once.
	OldUntil time.Time
	// Revoke removes the credentials instead: nothing authenticates as the
	// device until it is provisioned again. The other fields are ignored.
	Revoke bool
}

// CertPin is a pinned client certificate fingerprint.
type CertPin struct {
	Fingerprint []byte // SHA-256 of the DER certificate; empty: unpin
}

// Group is a device group to create if missing.
type Group struct {
	ID   string
	Name string
}

// OperationApproval marks a claimed provisioning operation approved.
type OperationApproval struct {
	ID        string
	DeviceID  string
	Sealed    []byte    // the credentials, encrypted for the device
	DeliverBy time.Time // the device must fetch them before this
	At        time.Time
}

// ImportDevice is one device of an import.
type ImportDevice struct {
	ID string
	NewDevice
	Fields *DeviceFields // the fields NewDevice does not carry, or nil
}

// CommandChange creates a device command (Create) or moves an existing
// one (ID) to Status. The store applies it after the registry part of the
// batch. An update whose command does not exist for the change's device,
// or whose current status is not one of From (when From is set), changes
// nothing and fails alone with ErrConflict; so does a Create whose ID
// exists.
type CommandChange struct {
	Create *DeviceCommand
	ID     string
	Status string
	From   []string // the statuses the update applies to; empty: any
	Result []byte   // JSON, or nil to keep
	SentAt *time.Time
	At     time.Time // the update's time
}

// DeviceCommand is a stored command (table device_commands).
type DeviceCommand struct {
	ID         string
	DeviceID   string
	Command    string
	Payload    []byte // JSON, or nil
	Status     string // pending, sent, succeeded, failed, expired
	Result     []byte // JSON, or nil
	Sends      int    // how often it was published
	CreatedAt  time.Time
	ExpiresAt  time.Time
	SentAt     *time.Time // the last publish
	FinishedAt *time.Time // succeeded, failed or expired
	UpdatedAt  time.Time
}

// TwinChange writes a device's twin. Desired replaces the desired
// properties (a JSON object) with version DesiredVersion, which must be
// one above the stored version (0 when none is stored), else the change
// fails alone with ErrConflict. Reported is a JSON merge patch (RFC 7396)
// the store applies to the reported properties, in batch order.
type TwinChange struct {
	Desired        []byte
	DesiredVersion int64
	Reported       []byte
	At             time.Time
}

// Errors a store reports for a single change without failing its batch.
var (
	// ErrDeviceExists: NewDevice without Replace for an existing device.
	ErrDeviceExists = errors.New("device already exists")
	// ErrDeviceNotFound: NewDevice with Replace, or a DevicePatch, for a
	// device that does not exist.
	ErrDeviceNotFound = errors.New("device not found")
	// ErrConflict: a CommandChange or TwinChange whose precondition (the
	// command's status, the twin's version) did not hold.
	ErrConflict = errors.New("conflicting change")
)
