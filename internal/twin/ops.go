package twin

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

// twinDomain writes the twins of a batch (see commit.Op). Ranks: see
// docs/ARCHITECTURE.md, "Adding a domain".
var twinDomain = &commit.Domain{Name: "twin", Rank: 50, Write: writeTwins}

// TxStore is what twins need of a commit transaction. The transaction of
// every backend implements it.
type TxStore interface {
	// SetDesired stores the desired properties with version, if the stored
	// version is version-1 (0 when none is stored); false otherwise.
	SetDesired(ctx context.Context, deviceID string, desired []byte, version int64, at time.Time) (bool, error)
	// ReportedForUpdate returns the stored reported object (nil for none),
	// locked against concurrent writers until the transaction ends.
	ReportedForUpdate(ctx context.Context, deviceID string) ([]byte, error)
	// SetReported stores the reported object and counts its version up.
	SetReported(ctx context.Context, deviceID string, reported []byte, at time.Time) error
}

// Change writes a device's twin. Desired replaces the desired properties
// (a JSON object) with version DesiredVersion, which must be one above the
// stored version (0 when none is stored), else the change fails alone with
// commit.ErrConflict. Reported is a JSON merge patch (RFC 7396) applied to
// the reported properties, in batch order.
type Change struct {
	Desired        []byte
	DesiredVersion int64
	Reported       []byte
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
		if t.Desired != nil {
			ok, err := s.SetDesired(ctx, ch.DeviceID, t.Desired, t.DesiredVersion, t.At)
			if err != nil {
				return fmt.Errorf("store desired of %s: %w", ch.DeviceID, err)
			}
			if !ok {
				ch.Err = fmt.Errorf("desired version %d of %s: %w", t.DesiredVersion, ch.DeviceID, commit.ErrConflict)
				continue
			}
		}
		if t.Reported != nil {
			if err := writeReported(ctx, s, ch.DeviceID, t); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeReported merges the reported patch into the stored object.
func writeReported(ctx context.Context, s TxStore, deviceID string, t *Change) error {
	cur, err := s.ReportedForUpdate(ctx, deviceID)
	if err != nil {
		return fmt.Errorf("read reported of %s: %w", deviceID, err)
	}
	var target, p map[string]any
	if len(cur) > 0 {
		if err := json.Unmarshal(cur, &target); err != nil {
			return fmt.Errorf("decode reported of %s: %w", deviceID, err)
		}
	}
	if err := json.Unmarshal(t.Reported, &p); err != nil {
		return fmt.Errorf("decode reported patch of %s: %w", deviceID, err)
	}
	merged, err := json.Marshal(MergePatch(target, p))
	if err != nil {
		return fmt.Errorf("encode reported of %s: %w", deviceID, err)
	}
	if err := s.SetReported(ctx, deviceID, merged, t.At); err != nil {
		return fmt.Errorf("store reported of %s: %w", deviceID, err)
	}
	return nil
}
