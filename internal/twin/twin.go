// Package twin keeps each device's twin: the desired properties an operator
// sets (with a version that grows by one at every change, published
// retained to devices/{id}/twin/desired as {"version": N, "values": {...}})
// and the reported properties the device sends as patches on
// devices/{id}/twin/reported, merged into what it reported before, with
// the time each top-level key was last reported. The delta is the desired
// keys the reported properties do not match: a different value, or never
// reported.
//
// Both go through the commit path (the Change op) so that
// twin_desired_changed, twin_reported_changed and twin_delta_changed are
// stored with the change they describe. The store merges reported patches
// inside its transaction, so concurrent patches of one device never lose
// each other. Operators change desired properties against the version
// they read (SetDesiredIf, PatchDesired): the store refuses a version that
// is not the stored one plus one, and a stale writer gets
// ErrVersionConflict with the current version, so no change is lost
// unseen.
package twin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sort"
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
	// version the caller read (SetDesiredIf, PatchDesired); the error is
	// a *VersionError with the current version.
	ErrVersionConflict = errors.New("desired properties changed since the version read")
)

// VersionError is a stale write: the desired properties are at Current,
// not at the version the writer read. It wraps ErrVersionConflict.
type VersionError struct {
	DeviceID        string
	Current, Stated int64
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("desired properties of %s are at version %d, not %d: read them again", e.DeviceID, e.Current, e.Stated)
}

func (e *VersionError) Unwrap() error { return ErrVersionConflict }

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
	// ReportedTimes is when each top-level reported key was last
	// reported.
	ReportedTimes map[string]time.Time `json:"reported_times,omitempty"`
}

// Delta returns the desired keys the reported properties do not match
// (see DeltaKeys).
func (t *Twin) Delta() []string { return DeltaKeys(t.Desired, t.Reported) }

// DeltaKeys returns, sorted, the top-level desired keys whose reported
// value differs or was never reported. Values compare as decoded JSON.
func DeltaKeys(desired, reported map[string]any) []string {
	var out []string
	for k, v := range desired {
		r, ok := reported[k]
		if !ok || !reflect.DeepEqual(normalize(v), normalize(r)) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// normalize makes decoded JSON comparable whatever decoded it (numbers as
// float64).
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[k] = normalize(e)
		}
		return m
	case []any:
		a := make([]any, len(x))
		for i, e := range x {
			a[i] = normalize(e)
		}
		return a
	case json.Number:
		f, _ := x.Float64()
		return f
	case int:
		return float64(x)
	case int64:
		return float64(x)
	}
	return v
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

// SetDesired replaces the device's desired properties whatever their
// version (last writer wins), stores them with the next version and
// publishes them retained to the device. Operators' writes go through
// SetDesiredIf or PatchDesired instead.
func (s *Service) SetDesired(ctx context.Context, deviceID string, values map[string]any) (*Twin, error) {
	return s.write(ctx, deviceID, -1, func(map[string]any) (map[string]any, error) { return values, nil })
}

// SetDesiredIf is SetDesired only while the desired properties are at
// version expected (as the caller read them); otherwise it changes nothing
// and fails with a *VersionError (ErrVersionConflict).
func (s *Service) SetDesiredIf(ctx context.Context, deviceID string, values map[string]any, expected int64) (*Twin, error) {
	if expected < 0 {
		return nil, fmt.Errorf("%w: the version must not be negative", ErrInvalid)
	}
	return s.write(ctx, deviceID, expected, func(map[string]any) (map[string]any, error) { return values, nil })
}

// PatchDesired applies a JSON merge patch (RFC 7396) to the desired
// properties at version expected (as the caller read them); otherwise it
// changes nothing and fails with a *VersionError.
func (s *Service) PatchDesired(ctx context.Context, deviceID string, patch map[string]any, expected int64) (*Twin, error) {
	if expected < 0 {
		return nil, fmt.Errorf("%w: the version must not be negative", ErrInvalid)
	}
	if len(patch) == 0 {
		return nil, fmt.Errorf("%w: the patch changes nothing", ErrInvalid)
	}
	return s.write(ctx, deviceID, expected, func(cur map[string]any) (map[string]any, error) {
		return MergePatch(deepCopy(cur), patch), nil
	})
}

// write sets the desired properties to next(current); expected >= 0 asks
// for that current version, < 0 takes whatever is current (and tries
// again when another writer got in between).
func (s *Service) write(ctx context.Context, deviceID string, expected int64, next func(map[string]any) (map[string]any, error)) (*Twin, error) {
	typ, ok := s.dev.DeviceType(deviceID)
	if !ok {
		return nil, fmt.Errorf("set desired of %s: %w", deviceID, ErrDeviceNotFound)
	}
	for range 5 {
		cur, err := s.st.GetTwin(ctx, deviceID)
		if err != nil {
			return nil, fmt.Errorf("set desired of %s: %w", deviceID, err)
		}
		if expected >= 0 && cur.DesiredVersion != expected {
			return nil, fmt.Errorf("set desired: %w", &VersionError{DeviceID: deviceID, Current: cur.DesiredVersion, Stated: expected})
		}
		values, err := next(cur.Desired)
		if err != nil {
			return nil, err
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
		version := cur.DesiredVersion + 1
		now := s.now()
		ev, err := commit.NewEvent(events.Event{
			Type: events.TwinDesiredChanged, Time: now, DeviceID: deviceID, DeviceType: typ,
			Args: &events.TwinDesired{Version: version, Patch: Diff(cur.Desired, values), Values: values},
		})
		if err != nil {
			return nil, err
		}
		ch := &commit.Change{
			DeviceID: deviceID,
			Ops:      []commit.Op{&Change{Desired: vb, DesiredVersion: version, DeviceType: typ, At: now}},
			Events:   []commit.Event{ev},
		}
		err = s.c.Submit(ctx, ch)
		if errors.Is(err, commit.ErrConflict) {
			if expected >= 0 {
				// Another writer took the version this one read.
				latest, gerr := s.st.GetTwin(ctx, deviceID)
				if gerr != nil {
					return nil, fmt.Errorf("set desired of %s: %w", deviceID, gerr)
				}
				return nil, fmt.Errorf("set desired: %w", &VersionError{DeviceID: deviceID, Current: latest.DesiredVersion, Stated: expected})
			}
			continue // read again
		}
		if err != nil {
			return nil, fmt.Errorf("set desired of %s: %w", deviceID, err)
		}
		s.publish(deviceID, version, values)
		return s.st.GetTwin(ctx, deviceID)
	}
	return nil, fmt.Errorf("set desired of %s: %w", deviceID, ErrBusy)
}

// Diff returns the JSON merge patch (RFC 7396) that turns from into to.
func Diff(from, to map[string]any) map[string]any {
	out := map[string]any{}
	for k := range from {
		if _, ok := to[k]; !ok {
			out[k] = nil
		}
	}
	for k, v := range to {
		old, ok := from[k]
		switch {
		case !ok:
			out[k] = v
		case reflect.DeepEqual(normalize(old), normalize(v)):
		default:
			om, ok1 := old.(map[string]any)
			nm, ok2 := v.(map[string]any)
			if ok1 && ok2 {
				out[k] = Diff(om, nm)
			} else {
				out[k] = v
			}
		}
	}
	return out
}

func deepCopy(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	b, _ := json.Marshal(m)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	return out
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

// Republish publishes a device's desired properties, retained, on this
// node's broker: in a cluster, after another node changed them, so that
// the device gets them on whichever node it is or will be connected to.
func (s *Service) Republish(deviceID string, version int64, values map[string]any) {
	s.publish(deviceID, version, values)
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
	// The twin_reported_changed event is written with the merge, which
	// knows the version it makes (see Change).
	seen := msg.ReceivedAt
	ch := &commit.Change{
		DeviceID: deviceID,
		Ops: []commit.Op{msg, &registry.DevicePatch{LastSeen: &seen},
			&Change{Reported: pb, MessageID: msg.ID, DeviceType: deviceType, At: msg.ReceivedAt}},
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
