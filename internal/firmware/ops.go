package firmware

import (
	"context"
	"fmt"

	"github.com/devicehub/devicehub/internal/commit"
)

// firmwareDomain writes artifacts, rollouts and device updates through the
// write path. Ranks: docs/ARCHITECTURE.md, "Adding a domain".
var firmwareDomain = &commit.Domain{Name: "firmware", Rank: 44, Write: writeOps}

// TxStore is what firmware's ops need of a commit transaction. The
// transaction of every backend implements it.
type TxStore interface {
	PutArtifact(ctx context.Context, a *Artifact) error
	// DeleteArtifact removes an artifact unless a rollout that is not
	// completed or canceled uses it: found is false when there is no such
	// artifact, inUse true when a rollout holds it (nothing deleted).
	DeleteArtifact(ctx context.Context, id string) (found, inUse bool, err error)
	// PutRollout inserts (create) or updates a rollout; a created rollout
	// whose artifact does not exist is not stored (false).
	PutRollout(ctx context.Context, r *Rollout, create bool) (bool, error)
	// PutDeviceUpdates inserts or replaces device updates.
	PutDeviceUpdates(ctx context.Context, us []DeviceUpdate) error
	AddUpdateHistory(ctx context.Context, hs []HistoryEntry) error
}

// Op is one write of the firmware domain; every part is optional and
// applied in the order of the struct.
type Op struct {
	Artifact       *Artifact
	DeleteArtifact string
	Rollout        *Rollout
	CreateRollout  bool
	Updates        []DeviceUpdate
	History        []HistoryEntry
	// Cursor > 0 stores how far the owner followed the event log
	// (cluster mode; the backend's transaction implements CursorTxStore).
	Cursor int64
}

// Domain implements commit.Op.
func (*Op) Domain() *commit.Domain { return firmwareDomain }

func writeOps(ctx context.Context, tx commit.Tx, ops []commit.Pending) error {
	s, err := commit.StoreOf[TxStore](tx)
	if err != nil {
		return err
	}
	for _, p := range ops {
		if !p.Change.Live() {
			continue
		}
		o := p.Op.(*Op)
		if o.Artifact != nil {
			if err := s.PutArtifact(ctx, o.Artifact); err != nil {
				return fmt.Errorf("put artifact %s: %w", o.Artifact.ID, err)
			}
		}
		if o.DeleteArtifact != "" {
			found, inUse, err := s.DeleteArtifact(ctx, o.DeleteArtifact)
			if err != nil {
				return fmt.Errorf("delete artifact %s: %w", o.DeleteArtifact, err)
			}
			switch {
			case !found:
				p.Change.Err = fmt.Errorf("artifact %s: %w", o.DeleteArtifact, ErrNotFound)
				continue
			case inUse:
				p.Change.Err = fmt.Errorf("artifact %s: %w", o.DeleteArtifact, ErrInUse)
				continue
			}
		}
		if o.Rollout != nil {
			ok, err := s.PutRollout(ctx, o.Rollout, o.CreateRollout)
			if err != nil {
				return fmt.Errorf("put rollout %s: %w", o.Rollout.ID, err)
			}
			if !ok {
				p.Change.Err = fmt.Errorf("rollout %s: artifact %s: %w", o.Rollout.ID, o.Rollout.Spec.ArtifactID, ErrNotFound)
				continue
			}
		}
		if len(o.Updates) > 0 {
			if err := s.PutDeviceUpdates(ctx, o.Updates); err != nil {
				return fmt.Errorf("put device updates: %w", err)
			}
		}
		if len(o.History) > 0 {
			if err := s.AddUpdateHistory(ctx, o.History); err != nil {
				return fmt.Errorf("add update history: %w", err)
			}
		}
		if o.Cursor > 0 {
			cs, err := commit.StoreOf[CursorTxStore](tx)
			if err != nil {
				return err
			}
			if err := cs.SetFirmwareCursor(ctx, o.Cursor); err != nil {
				return fmt.Errorf("set firmware cursor: %w", err)
			}
		}
	}
	return nil
}

// Store is what the firmware domain reads. Writes go through the commit
// path (TxStore).
type Store interface {
	ListArtifacts(ctx context.Context) ([]Artifact, error)
	GetArtifact(ctx context.Context, id string) (*Artifact, error) // ErrNotFound
	// ListRollouts lists rollouts, newest first; active: only those not
	// completed or canceled.
	ListRollouts(ctx context.Context, active bool) ([]Rollout, error)
	GetRollout(ctx context.Context, id string) (*Rollout, error) // ErrNotFound
	// ListDeviceUpdates lists a rollout's device updates in rollout order.
	ListDeviceUpdates(ctx context.Context, rolloutID string) ([]DeviceUpdate, error)
	// UpdateHistory lists the states of a device's updates, oldest first;
	// rolloutID "" means every rollout.
	UpdateHistory(ctx context.Context, deviceID, rolloutID string) ([]HistoryEntry, error)
}
