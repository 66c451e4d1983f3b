package registry

import (
	"context"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

// The registry's operations on the write path (see commit.Op), and the
// transaction-scoped store that applies them (TxStore). Ranks: see
// docs/ARCHITECTURE.md, "Adding a domain".
var (
	// newDeviceDomain has no Write: NewDevice does its work as a
	// commit.DeviceCreator, in batch order.
	newDeviceDomain = &commit.Domain{Name: "registry/new-device", Rank: 10}
	updateDomain    = &commit.Domain{Name: "registry/update", Rank: 30, Write: writeUpdates}
	stateDomain     = &commit.Domain{Name: "registry/state", Rank: 70, Write: writeStates}
)

// TxStore is what the registry's operations need of a commit transaction.
// The transaction of every backend implements it.
type TxStore interface {
	// InsertDevice creates a device with its credentials; false if it
	// exists (created by another node since the lookup).
	InsertDevice(ctx context.Context, id string, nd *NewDevice) (bool, error)
	// ReplaceDevice re-provisions an existing device: its identity, new
	// credentials, and the end of any overlap or revocation; false if it
	// does not exist.
	ReplaceDevice(ctx context.Context, id string, nd *NewDevice) (bool, error)
	// ImportDevices creates every device of devs, or none: then it returns
	// the id of one that exists already.
	ImportDevices(ctx context.Context, devs []ImportedDevice) (exists string, err error)
	// CreateGroups creates the groups that do not exist yet.
	CreateGroups(ctx context.Context, groups []NewGroup) error
	// UpdateDevice sets the fields of f that are not nil.
	UpdateDevice(ctx context.Context, id string, f *DeviceFields) error
	// ChangeCredentials replaces or revokes the device's credentials.
	ChangeCredentials(ctx context.Context, id string, c *CredentialChange) error
	// RetireOldCredentials ends the overlap of a rotation.
	RetireOldCredentials(ctx context.Context, id string) error
	// PinCertificate pins fp to the device; nil unpins.
	PinCertificate(ctx context.Context, id string, fp []byte) error
	// PatchDevices updates the state columns of existing devices, one
	// merged patch per device.
	PatchDevices(ctx context.Context, ids []string, patches []DevicePatch) error
	// DeviceSessions returns the stored session generation of each of
	// ids (0 for none), which exist, and keeps them from changing until
	// the transaction ends (PostgreSQL locks the rows, in id order, as
	// PatchDevices does). It is asked only for batches with a patch that
	// carries a Session, with every device the batch patches.
	DeviceSessions(ctx context.Context, ids []string) ([]uint64, error)
}

// NewDevice creates (or, with Replace, re-provisions) a device with its
// credentials. Only hashes of secrets are ever stored. A NewDevice without
// Replace for an existing device fails its change with
// commit.ErrDeviceExists, one with Replace for a missing device with
// commit.ErrDeviceNotFound.
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

func (*NewDevice) Domain() *commit.Domain { return newDeviceDomain }

// CreateDevice implements commit.DeviceCreator.
func (nd *NewDevice) CreateDevice(ctx context.Context, tx commit.Tx, ch *commit.Change) error {
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	exists, err := tx.DeviceExists(ctx, ch.DeviceID)
	if err != nil {
		return err
	}
	switch {
	case exists && !nd.Replace:
		ch.Err = commit.ErrDeviceExists
		return nil
	case !exists && nd.Replace:
		ch.Err = commit.ErrDeviceNotFound
		return nil
	}
	var ok bool
	if nd.Replace {
		ok, err = s.ReplaceDevice(ctx, ch.DeviceID, nd)
	} else {
		ok, err = s.InsertDevice(ctx, ch.DeviceID, nd)
	}
	switch {
	case err != nil:
		return fmt.Errorf("provision %s: %w", ch.DeviceID, err)
	case !ok && nd.Replace:
		ch.Err = commit.ErrDeviceNotFound
	case !ok:
		ch.Err = commit.ErrDeviceExists
	}
	return nil
}

// Update changes a device's registry record: its fields, group, or
// credentials, or creates devices by import. It is applied after the
// batch's new devices and messages, in batch order; an Update whose
// Fields, Credentials, RetireOld or Cert name a device that does not exist
// fails its change alone with commit.ErrDeviceNotFound. Every part is
// optional.
type Update struct {
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
	// Groups are created if they do not exist yet.
	Groups []NewGroup
	// Import creates many devices in this one change: all of them, or
	// none when one exists already (Err wraps commit.ErrDeviceExists and
	// names it).
	Import []ImportedDevice
}

func (*Update) Domain() *commit.Domain { return updateDomain }

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

// NewGroup is a device group to create if missing.
type NewGroup struct {
	ID   string
	Name string
}

// ImportedDevice is one device of an import.
type ImportedDevice struct {
	ID string
	NewDevice
	Fields *DeviceFields // the fields NewDevice does not carry, or nil
}

func writeUpdates(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	for _, p := range ops {
		if !p.Change.Live() {
			continue
		}
		if err := applyUpdate(ctx, tx, s, p.Change, p.Op.(*Update)); err != nil {
			return err
		}
	}
	return nil
}

// applyUpdate applies one Update: the device check, the import, the
// groups, then each part in the order of the struct.
func applyUpdate(ctx context.Context, tx commit.Tx, s TxStore, ch *commit.Change, u *Update) error {
	id := ch.DeviceID
	if u.Fields != nil || u.Credentials != nil || u.RetireOld || u.Cert != nil {
		ok, err := tx.DeviceExists(ctx, id)
		if err != nil {
			return err
		}
		if !ok {
			ch.Err = commit.ErrDeviceNotFound
			return nil
		}
	}
	if len(u.Import) > 0 {
		exists, err := s.ImportDevices(ctx, u.Import)
		if err != nil {
			return fmt.Errorf("import: %w", err)
		}
		if exists != "" {
			ch.Err = fmt.Errorf("%w: %s", commit.ErrDeviceExists, exists)
			return nil
		}
	}
	if len(u.Groups) > 0 {
		if err := s.CreateGroups(ctx, u.Groups); err != nil {
			return err
		}
	}
	if u.Fields != nil {
		if err := s.UpdateDevice(ctx, id, u.Fields); err != nil {
			return err
		}
	}
	if u.Credentials != nil {
		if err := s.ChangeCredentials(ctx, id, u.Credentials); err != nil {
			return err
		}
	}
	if u.RetireOld {
		if err := s.RetireOldCredentials(ctx, id); err != nil {
			return err
		}
	}
	if u.Cert != nil {
		var fp []byte
		if len(u.Cert.Fingerprint) > 0 {
			fp = u.Cert.Fingerprint
		}
		if err := s.PinCertificate(ctx, id, fp); err != nil {
			return err
		}
	}
	return nil
}

// DevicePatch updates the state columns of an existing device; its change
// fails with commit.ErrDeviceNotFound otherwise. Nil fields are left
// alone. Within a batch, the patches of one device are merged in order
// (later values win), and written last, in one statement.
type DevicePatch struct {
	LastSeen  *time.Time
	Status    *string
	Connected *bool
	Metrics   []byte // JSON object of the latest heartbeat metrics
	// Session is the generation of the MQTT session the change is about
	// (cluster mode, 0 otherwise). A patch with a Session older than the
	// device's stored one (or than a newer one earlier in the batch) is
	// not applied, and its change is Superseded: its events are not
	// written either, so a node that had not yet heard of a device's
	// takeover by another node cannot report a stale disconnect. A
	// patch that applies stores its Session as the device's. Node is the
	// node that holds a new session (kept by PostgreSQL only).
	Session uint64
	Node    *string
}

func (*DevicePatch) Domain() *commit.Domain { return stateDomain }

// NeedsDevice implements commit.DeviceNeeder.
func (*DevicePatch) NeedsDevice() bool { return true }

// merge applies p over acc: later values win, nil fields are kept.
func (acc *DevicePatch) merge(p *DevicePatch) {
	if p.LastSeen != nil {
		acc.LastSeen = p.LastSeen
	}
	if p.Status != nil {
		acc.Status = p.Status
	}
	if p.Connected != nil {
		acc.Connected = p.Connected
	}
	if p.Metrics != nil {
		acc.Metrics = p.Metrics
	}
	if p.Session != 0 {
		acc.Session = p.Session
	}
	if p.Node != nil {
		acc.Node = p.Node
	}
}

// writeStates merges the batch's patches per device, in the order each
// device first appears, and writes them. If a patch carries a Session,
// the batch goes through supersede first. A batch without one (readings,
// heartbeats, presence outside cluster mode) does what it did before
// sessions were checked, plus one test per patch.
func writeStates(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	ids := make([]string, 0, len(ops))
	patches := make([]DevicePatch, 0, len(ops))
	at := make(map[string]int, len(ops))
	guarded := false
	for _, p := range ops {
		if !p.Change.Live() {
			continue
		}
		i, ok := at[p.Change.DeviceID]
		if !ok {
			i = len(ids)
			at[p.Change.DeviceID] = i
			ids = append(ids, p.Change.DeviceID)
			patches = append(patches, DevicePatch{})
		}
		dp := p.Op.(*DevicePatch)
		guarded = guarded || dp.Session != 0
		patches[i].merge(dp)
	}
	if len(ids) == 0 {
		return nil
	}
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	if guarded {
		if ids, patches, err = supersede(ctx, s, ops, ids, at); err != nil || len(ids) == 0 {
			return err
		}
	}
	if err := s.PatchDevices(ctx, ids, patches); err != nil {
		return fmt.Errorf("update devices: %w", err)
	}
	return nil
}

// supersede merges the patches again, leaving out those whose Session is
// older than the device's stored one, or than a newer one earlier in the
// batch: their changes are Superseded, so that, the events being written
// after every domain, neither their patch nor their events are written.
// The stored sessions are read (and held to the commit) for every device
// of ids, which at maps to its index. It returns the devices with a patch
// left, and their patches.
func supersede(ctx context.Context, s TxStore, ops []commit.Pending, ids []string, at map[string]int) ([]string, []DevicePatch, error) {
	sessions, err := s.DeviceSessions(ctx, ids) // the newest session of each device so far
	if err != nil {
		return nil, nil, fmt.Errorf("read device sessions: %w", err)
	}
	patches := make([]DevicePatch, len(ids))
	kept := make([]bool, len(ids))
	for _, p := range ops {
		if !p.Change.Live() {
			continue
		}
		i := at[p.Change.DeviceID]
		dp := p.Op.(*DevicePatch)
		if dp.Session != 0 && dp.Session < sessions[i] {
			p.Change.Superseded = true
			continue
		}
		sessions[i] = max(sessions[i], dp.Session)
		kept[i] = true
		patches[i].merge(dp)
	}
	n := 0
	for i := range ids {
		if kept[i] {
			ids[n], patches[n] = ids[i], patches[i]
			n++
		}
	}
	return ids[:n], patches[:n], nil
}
