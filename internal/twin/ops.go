package twin

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// twinDomain writes the twins of a batch (see commit.Op). Ranks: see
// docs/ARCHITECTURE.md, "Adding a domain".
var twinDomain = &commit.Domain{Name: "twin", Rank: 50, Write: writeTwins}

// Row is a device's stored twin as its transaction reads it; nil slices
// when the device has no twin row.
type Row struct {
	Desired         []byte // JSON object
	DesiredVersion  int64
	Reported        []byte // JSON object
	ReportedVersion int64
	ReportedTimes   []byte // JSON object: top-level reported key → RFC 3339 time
}

// TxStore is what twins need of a commit transaction. The transaction of
// every backend implements it.
type TxStore interface {
	// TwinForUpdate returns the device's stored twin (nil for none),
	// locked against concurrent writers until the transaction ends.
	TwinForUpdate(ctx context.Context, deviceID string) (*Row, error)
	// SetDesired stores the desired properties with version, if the stored
	// version is version-1 (0 when none is stored); false otherwise.
	SetDesired(ctx context.Context, deviceID string, desired []byte, version int64, at time.Time) (bool, error)
	// SetReported stores the reported object and the time of each of its
	// keys, counts its version up and returns the new version.
	SetReported(ctx context.Context, deviceID string, reported, times []byte, at time.Time) (int64, error)
}

// Change writes a device's twin. Desired replaces the desired properties
// (a JSON object) with version DesiredVersion, which must be one above the
// stored version (0 when none is stored), else the change fails alone with
// commit.ErrConflict. Reported is a JSON merge patch (RFC 7396) applied to
// the reported properties, in batch order; its twin_reported_changed
// event (with the version the merge makes) is written here, as is a
// twin_delta_changed when the set of out-of-step keys changes.
type Change struct {
	Desired        []byte
	DesiredVersion int64
	Reported       []byte
	MessageID      int64  // the message that carried Reported
	DeviceType     string // for the events written here
	At             time.Time
}

func (*Change) Domain() *commit.Domain { return twinDomain }

func writeTwins(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	for _, p := range ops {
		ch := p.Change
		if !ch.Live() {
			continue
		}
		t := p.Op.(*Change)
		row, err := s.TwinForUpdate(ctx, ch.DeviceID)
		if err != nil {
			return fmt.Errorf("read twin of %s: %w", ch.DeviceID, err)
		}
		st, err := decodeRow(row)
		if err != nil {
			return fmt.Errorf("twin of %s: %w", ch.DeviceID, err)
		}
		before := DeltaKeys(st.desired, st.reported)
		if t.Desired != nil {
			ok, err := s.SetDesired(ctx, ch.DeviceID, t.Desired, t.DesiredVersion, t.At)
			if err != nil {
				return fmt.Errorf("store desired of %s: %w", ch.DeviceID, err)
			}
			if !ok {
				ch.Err = fmt.Errorf("desired version %d of %s: %w", t.DesiredVersion, ch.DeviceID, commit.ErrConflict)
				continue
			}
			st.desired = nil
			if err := json.Unmarshal(t.Desired, &st.desired); err != nil {
				return fmt.Errorf("decode desired of %s: %w", ch.DeviceID, err)
			}
		}
		if t.Reported != nil {
			ev, err := writeReported(ctx, s, ch.DeviceID, t, &st)
			if err != nil {
				return err
			}
			ch.Events = append(ch.Events, ev)
		}
		if after := DeltaKeys(st.desired, st.reported); !slices.Equal(before, after) {
			ev, err := commit.NewEvent(events.Event{
				Type: events.TwinDeltaChanged, Time: t.At, DeviceID: ch.DeviceID, DeviceType: t.DeviceType,
				Args: &events.TwinDelta{Keys: append([]string{}, after...), InStep: len(after) == 0},
			})
			if err != nil {
				return err
			}
			ch.Events = append(ch.Events, ev)
		}
	}
	return nil
}

// rowState is a decoded Row.
type rowState struct {
	desired, reported map[string]any
	times             map[string]time.Time
}

func decodeRow(r *Row) (rowState, error) {
	st := rowState{times: map[string]time.Time{}}
	if r == nil {
		return st, nil
	}
	for _, f := range []struct {
		b   []byte
		out any
	}{{r.Desired, &st.desired}, {r.Reported, &st.reported}, {r.ReportedTimes, &st.times}} {
		if len(f.b) == 0 {
			continue
		}
		if err := json.Unmarshal(f.b, f.out); err != nil {
			return st, err
		}
	}
	if st.times == nil {
		st.times = map[string]time.Time{}
	}
	return st, nil
}

// writeReported merges the reported patch into the stored object, notes
// the time of each key it names, and returns its twin_reported_changed.
func writeReported(ctx context.Context, s TxStore, deviceID string, t *Change, st *rowState) (commit.Event, error) {
	var p map[string]any
	if err := json.Unmarshal(t.Reported, &p); err != nil {
		return commit.Event{}, fmt.Errorf("decode reported patch of %s: %w", deviceID, err)
	}
	st.reported = MergePatch(st.reported, p)
	for k, v := range p {
		if v == nil {
			delete(st.times, k)
		} else {
			st.times[k] = t.At
		}
	}
	merged, err := json.Marshal(st.reported)
	if err != nil {
		return commit.Event{}, fmt.Errorf("encode reported of %s: %w", deviceID, err)
	}
	times, err := json.Marshal(st.times)
	if err != nil {
		return commit.Event{}, fmt.Errorf("encode reported times of %s: %w", deviceID, err)
	}
	version, err := s.SetReported(ctx, deviceID, merged, times, t.At)
	if err != nil {
		return commit.Event{}, fmt.Errorf("store reported of %s: %w", deviceID, err)
	}
	return commit.NewEvent(events.Event{
		Type: events.TwinReportedChanged, Time: t.At, DeviceID: deviceID, DeviceType: t.DeviceType,
		Args: &events.TwinReported{Version: version, Patch: p, MessageID: t.MessageID},
	})
}
