// Package twin keeps each device's twin: the desired properties an operator
// sets (with a version that grows by one at every change, published
// retained to devices/{id}/twin/desired as {"version": N, "values": {...}})
// and the reported properties the device sends as patches on
// devices/{id}/twin/reported, merged into what it reported before.
//
// Both go through the commit path (the Change op) so that
// twin_desired_changed and twin_reported_changed are stored with the
// change they describe. The store merges reported patches inside its
// transaction, so concurrent patches of one device never lose each other;
// desired writes are optimistic (the store refuses a version that is not
// the stored one plus one, and Service.SetDesired tries again).
package twin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// Errors of the twin service.
var (
	// ErrInvalid: the desired values are not a JSON object, or too large.
	ErrInvalid = errors.New("invalid twin")
	// ErrDeviceNotFound: the device does not exist.
	ErrDeviceNotFound = errors.New("device not found")
	// ErrBusy: the desired properties kept changing under SetDesired.
	ErrBusy = errors.New("desired properties changed concurrently")
	// ErrVersionConflict: the desired properties are no longer at the
	// version the caller read (SetDesiredIf).
	ErrVersionConflict = errors.New("desired properties changed since the version read")
)

// MaxValuesBytes bounds the encoded desired values.
const MaxValuesBytes = 64 << 10

// Twin is a device's twin. A device that never had one has version 0 and
// empty maps.
type Twin struct {
	DeviceID        string         `json:"device_id"`
	Desired         map[string]any `json:"desired"`
	DesiredVersion  int64          `json:"desired_version"`
	DesiredAt       *time.Time     `json:"desired_at,omitempty"`
	Reported        map[string]any `json:"reported"`
	ReportedVersion int64          `json:"reported_version"` // patches merged so far
	ReportedAt      *time.Time     `json:"reported_at,omitempty"`
}

// Store reads twins. GetTwin returns an empty twin (not an error) for a
// device without one; DesiredTwins returns every twin with desired
// properties (version > 0).
type Store interface {
	GetTwin(ctx context.Context, deviceID string) (*Twin, error)
	DesiredTwins(ctx context.Context) ([]Twin, error)
}

// Committer submits changes to the commit path.
type Committer interface {
	Submit(ctx context.Context, ch *commit.Change) error
	Enqueue(ctx context.Context, ch *commit.Change) (*commit.Ticket, error)
}

// Publisher sends messages to devices.
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// Devices tells the type of a known device.
type Devices interface {
	DeviceType(id string) (string, bool)
}

// Service sets desired properties and records reported ones.
type Service struct {
	st  Store
	c   Committer
	pub Publisher
	dev Devices
	log *slog.Logger
	now func() time.Time
}

// New returns a twin service.
func New(st Store, c Committer, pub Publisher, dev Devices, log *slog.Logger) *Service {
	return &Service{st: st, c: c, pub: pub, dev: dev, log: log, now: func() time.Time { return time.Now().UTC() }}
}

// Get returns a device's twin.
func (s *Service) Get(ctx context.Context, deviceID string) (*Twin, error) {
	if _, ok := s.dev.DeviceType(deviceID); !ok {
		return nil, fmt.Errorf("twin of %s: %w", deviceID, ErrDeviceNotFound)
	}
	t, err := s.st.GetTwin(ctx, deviceID)
	if err != nil {
		return nil, fmt.Errorf("twin of %s: %w", deviceID, err)
	}
	return t, nil
}

// Desired is what a device receives on devices/{id}/twin/desired.
type Desired struct {
	Version int64          `json:"version"`
	Values  map[string]any `json:"values"`
}

// SetDesired replaces the device's desired properties, stores them with
// the next version and publishes them retained to the device.
func (s *Service) SetDesired(ctx context.Context, deviceID string, values map[string]any) (*Twin, error) {
	return s.setDesired(ctx, deviceID, values, -1)
}

// SetDesiredIf is SetDesired only while the desired properties are at
// version expected (as the caller read them); otherwise it changes nothing
// and fails with ErrVersionConflict. An editor uses it so that two people
// cannot overwrite each other's change unseen.
func (s *Service) SetDesiredIf(ctx context.Context, deviceID string, values map[string]any, expected int64) (*Twin, error) {
	if expected < 0 {
		return nil, fmt.Errorf("%w: expected version must not be negative", ErrInvalid)
	}
	return s.setDesired(ctx, deviceID, values, expected)
}

// setDesired sets the desired properties; expected >= 0 asks for that
// current version.
func (s *Service) setDesired(ctx context.Context, deviceID string, values map[string]any, expected int64) (*Twin, error) {
	typ, ok := s.dev.DeviceType(deviceID)
	if !ok {
		return nil, fmt.Errorf("set desired of %s: %w", deviceID, ErrDeviceNotFound)
	}
	if values == nil {
		values = map[string]any{}
	}
	vb, err := json.Marshal(values)
	if err != nil {
		return nil, fmt.Errorf("%w: values: %v", ErrInvalid, err)
	}
	if len(vb) > MaxValuesBytes {
		return nil, fmt.Errorf("%w: values larger than %d bytes", ErrInvalid, MaxValuesBytes)
	}
	for range 5 {
		cur, err := s.st.GetTwin(ctx, deviceID)
		if err != nil {
			return nil, fmt.Errorf("set desired of %s: %w", deviceID, err)
		}
		if expected >= 0 && cur.DesiredVersion != expected {
			return nil, fmt.Errorf("set desired of %s: %w (at version %d, not %d)", deviceID, ErrVersionConflict, cur.DesiredVersion, expected)
		}
		version := cur.DesiredVersion + 1
		now := s.now()
		ev, err := commit.NewEvent(events.Event{
			Type: events.TwinDesiredChanged, Time: now, DeviceID: deviceID, DeviceType: typ,
			Args: &events.TwinDesired{Version: version, Values: values},
		})
		if err != nil {
			return nil, err
		}
		ch := &commit.Change{
			DeviceID: deviceID,
			Ops:      []commit.Op{&Change{Desired: vb, DesiredVersion: version, At: now}},
			Events:   []commit.Event{ev},
		}
		err = s.c.Submit(ctx, ch)
		if errors.Is(err, commit.ErrConflict) {
			continue // another writer took the version: read again
		}
		if err != nil {
			return nil, fmt.Errorf("set desired of %s: %w", deviceID, err)
		}
		s.publish(deviceID, version, values)
		cur.Desired, cur.DesiredVersion, cur.DesiredAt = values, version, &now
		return cur, nil
	}
	return nil, fmt.Errorf("set desired of %s: %w", deviceID, ErrBusy)
}

func (s *Service) publish(deviceID string, version int64, values map[string]any) {
	b, err := json.Marshal(Desired{Version: version, Values: values})
	if err != nil {
		s.log.Error("encode desired properties", "device_id", deviceID, "err", err)
		return
	}
	// Retained: a device that subscribes later, or again, gets the latest.
	if err := s.pub.Publish("devices/"+deviceID+"/twin/desired", b, true, 1); err != nil {
		s.log.Warn("publish desired properties", "device_id", deviceID, "err", err)
	}
}

// Restore publishes every device's desired properties again, retained: the
// broker keeps retained messages in memory only, so the hub calls it once
// its broker serves after a start.
func (s *Service) Restore(ctx context.Context) error {
	ts, err := s.st.DesiredTwins(ctx)
	if err != nil {
		return fmt.Errorf("restore desired properties: %w", err)
	}
	for _, t := range ts {
		s.publish(t.DeviceID, t.DesiredVersion, t.Desired)
	}
	if len(ts) > 0 {
		s.log.Info("desired properties published again", "devices", len(ts))
	}
	return nil
}

// RecordReported queues a reported patch (msg is its message log record) and
// returns the ticket of its change. The ingest pipeline calls it.
func (s *Service) RecordReported(ctx context.Context, deviceID, deviceType string, patch map[string]any, msg *readings.Message) (*commit.Ticket, error) {
	pb, err := json.Marshal(patch)
	if err != nil {
		return nil, fmt.Errorf("%w: patch: %v", ErrInvalid, err)
	}
	ev, err := commit.NewEvent(events.Event{
		Type: events.TwinReportedChanged, Time: msg.ReceivedAt, DeviceID: deviceID, DeviceType: deviceType,
		Args: &events.TwinReported{Patch: patch, MessageID: msg.ID},
	})
	if err != nil {
		return nil, err
	}
	seen := msg.ReceivedAt
	ch := &commit.Change{
		DeviceID: deviceID,
		Ops:      []commit.Op{msg, &registry.DevicePatch{LastSeen: &seen}, &Change{Reported: pb, At: msg.ReceivedAt}},
		Events:   []commit.Event{ev},
	}
	t, err := s.c.Enqueue(ctx, ch)
	if err != nil {
		return nil, fmt.Errorf("record reported of %s: %w", deviceID, err)
	}
	return t, nil
}

// MergePatch applies patch to target as a JSON merge patch (RFC 7396): a
// null removes a property, an object merges into an object, anything else
// replaces. target is modified and returned (a new map when nil).
func MergePatch(target, patch map[string]any) map[string]any {
	if target == nil {
		target = map[string]any{}
	}
	for k, v := range patch {
		switch pv := v.(type) {
		case nil:
			delete(target, k)
		case map[string]any:
			tv, _ := target[k].(map[string]any)
			target[k] = MergePatch(tv, pv)
		default:
			target[k] = v
		}
	}
	return target
}
