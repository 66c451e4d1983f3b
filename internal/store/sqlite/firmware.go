package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/firmware"
)

var (
	_ firmware.Store   = (*Store)(nil)
	_ firmware.TxStore = (*txn)(nil)
)

const artifactCols = `id, version, type, hardware, size, sha256, signature, public_key, signed_by, filename, created_at`

// PutArtifact implements firmware.TxStore.
func (t *txn) PutArtifact(ctx context.Context, a *firmware.Artifact) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO firmware_artifacts (`+artifactCols+`) VALUES (?,?,?,?,?,?,?,?,?,?,?)`,
		a.ID, a.Version, a.Type, a.Hardware, a.Size, a.SHA256, a.Signature, a.PublicKey, a.SignedBy, a.Filename, a.CreatedAt.UnixMicro())
	return err
}

// DeleteArtifact implements firmware.TxStore.
func (t *txn) DeleteArtifact(ctx context.Context, id string) (found, inUse bool, err error) {
	var n int
	if err := t.tx.QueryRowContext(ctx, `SELECT count(*) FROM firmware_rollouts WHERE artifact_id = ? AND status NOT IN ('completed', 'canceled')`, id).Scan(&n); err != nil {
		return false, false, err
	}
	if n > 0 {
		var one int
		err := t.tx.QueryRowContext(ctx, `SELECT 1 FROM firmware_artifacts WHERE id = ?`, id).Scan(&one)
		return err == nil, true, nil
	}
	// Finished rollouts keep their history; they lose their artifact.
	if _, err := t.tx.ExecContext(ctx, `DELETE FROM firmware_updates WHERE rollout_id IN (SELECT id FROM firmware_rollouts WHERE artifact_id = ?)`, id); err != nil {
		return false, false, err
	}
	if _, err := t.tx.ExecContext(ctx, `DELETE FROM firmware_rollouts WHERE artifact_id = ?`, id); err != nil {
		return false, false, err
	}
	res, err := t.tx.ExecContext(ctx, `DELETE FROM firmware_artifacts WHERE id = ?`, id)
	if err != nil {
		return false, false, err
	}
	n64, _ := res.RowsAffected()
	return n64 > 0, false, nil
}

// PutRollout implements firmware.TxStore.
func (t *txn) PutRollout(ctx context.Context, r *firmware.Rollout, create bool) (bool, error) {
	spec, err := json.Marshal(r.Spec)
	if err != nil {
		return false, err
	}
	if create {
		res, err := t.tx.ExecContext(ctx, `INSERT INTO firmware_rollouts (id, artifact_id, spec, status, reason, version, device_type,
			base_finished, base_failures, created_at, updated_at, alive_at)
			SELECT ?,?,?,?,?,?,?,?,?,?,?,? WHERE EXISTS (SELECT 1 FROM firmware_artifacts WHERE id = ?)`,
			r.ID, r.Spec.ArtifactID, string(spec), string(r.Status), r.Reason, r.Version, r.DeviceType,
			r.BaseFinished, r.BaseFailures, r.CreatedAt.UnixMicro(), r.UpdatedAt.UnixMicro(), aliveMicros(r.AliveAt), r.Spec.ArtifactID)
		if err != nil {
			return false, err
		}
		n, _ := res.RowsAffected()
		return n > 0, nil
	}
	res, err := t.tx.ExecContext(ctx, `UPDATE firmware_rollouts SET spec = ?, status = ?, reason = ?, base_finished = ?, base_failures = ?, updated_at = ?,
		alive_at = ? WHERE id = ?`, string(spec), string(r.Status), r.Reason, r.BaseFinished, r.BaseFailures, r.UpdatedAt.UnixMicro(), aliveMicros(r.AliveAt), r.ID)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// PutDeviceUpdates implements firmware.TxStore.
func (t *txn) PutDeviceUpdates(ctx context.Context, us []firmware.DeviceUpdate) error {
	st, err := t.tx.PrepareContext(ctx, `INSERT INTO firmware_updates (rollout_id, device_id, device_type, ord, phase, state, attempt,
		message, progress, state_since, started_at, reboot_at, confirmed_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (rollout_id, device_id) DO UPDATE SET state = excluded.state, attempt = excluded.attempt, message = excluded.message,
		progress = excluded.progress, state_since = excluded.state_since, started_at = excluded.started_at, reboot_at = excluded.reboot_at,
		confirmed_at = excluded.confirmed_at, updated_at = excluded.updated_at`)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, u := range us {
		if _, err := st.ExecContext(ctx, u.RolloutID, u.DeviceID, u.DeviceType, u.Order, u.Phase, string(u.State), u.Attempt,
			u.Message, u.Progress, u.StateSince.UnixMicro(), optMicros(u.StartedAt), optMicros(u.RebootAt), optMicros(u.ConfirmedAt),
			u.UpdatedAt.UnixMicro()); err != nil {
			return err
		}
	}
	return nil
}

// AddUpdateHistory implements firmware.TxStore.
func (t *txn) AddUpdateHistory(ctx context.Context, hs []firmware.HistoryEntry) error {
	for _, h := range hs {
		if _, err := t.tx.ExecContext(ctx, `INSERT INTO firmware_update_history (rollout_id, device_id, state, attempt, message, at)
			VALUES (?,?,?,?,?,?)`, h.RolloutID, h.DeviceID, string(h.State), h.Attempt, h.Message, h.At.UnixMicro()); err != nil {
			return err
		}
	}
	return nil
}

func scanArtifact(sc interface{ Scan(...any) error }) (*firmware.Artifact, error) {
	var a firmware.Artifact
	var created int64
	if err := sc.Scan(&a.ID, &a.Version, &a.Type, &a.Hardware, &a.Size, &a.SHA256, &a.Signature, &a.PublicKey, &a.SignedBy, &a.Filename, &created); err != nil {
		return nil, err
	}
	a.CreatedAt = micros(created)
	return &a, nil
}

// ListArtifacts implements firmware.Store.
func (s *Store) ListArtifacts(ctx context.Context) ([]firmware.Artifact, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+artifactCols+` FROM firmware_artifacts ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list artifacts: %w", err)
	}
	defer rows.Close()
	var out []firmware.Artifact
	for rows.Next() {
		a, err := scanArtifact(rows)
		if err != nil {
			return nil, fmt.Errorf("list artifacts: %w", err)
		}
		out = append(out, *a)
	}
	return out, rows.Err()
}

// GetArtifact implements firmware.Store.
func (s *Store) GetArtifact(ctx context.Context, id string) (*firmware.Artifact, error) {
	a, err := scanArtifact(s.r.QueryRowContext(ctx, `SELECT `+artifactCols+` FROM firmware_artifacts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("artifact %s: %w", id, firmware.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get artifact %s: %w", id, err)
	}
	return a, nil
}

const rolloutCols = `id, spec, status, reason, version, device_type, base_finished, base_failures, created_at, updated_at, alive_at`

// aliveMicros stores a rollout's AliveAt (0 for none).
func aliveMicros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func scanRollout(sc interface{ Scan(...any) error }) (*firmware.Rollout, error) {
	var r firmware.Rollout
	var spec, status string
	var created, updated, alive int64
	if err := sc.Scan(&r.ID, &spec, &status, &r.Reason, &r.Version, &r.DeviceType, &r.BaseFinished, &r.BaseFailures, &created, &updated, &alive); err != nil {
		return nil, err
	}
	if alive != 0 {
		r.AliveAt = micros(alive)
	}
	if err := json.Unmarshal([]byte(spec), &r.Spec); err != nil {
		return nil, fmt.Errorf("rollout %s spec: %w", r.ID, err)
	}
	r.Status, r.CreatedAt, r.UpdatedAt = firmware.RolloutStatus(status), micros(created), micros(updated)
	return &r, nil
}

// ListRollouts implements firmware.Store.
func (s *Store) ListRollouts(ctx context.Context, active bool) ([]firmware.Rollout, error) {
	q := `SELECT ` + rolloutCols + ` FROM firmware_rollouts`
	if active {
		q += ` WHERE status NOT IN ('completed', 'canceled')`
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY created_at DESC, id`)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	defer rows.Close()
	var out []firmware.Rollout
	for rows.Next() {
		r, err := scanRollout(rows)
		if err != nil {
			return nil, fmt.Errorf("list rollouts: %w", err)
		}
		out = append(out, *r)
	}
	return out, rows.Err()
}

// GetRollout implements firmware.Store.
func (s *Store) GetRollout(ctx context.Context, id string) (*firmware.Rollout, error) {
	r, err := scanRollout(s.r.QueryRowContext(ctx, `SELECT `+rolloutCols+` FROM firmware_rollouts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("rollout %s: %w", id, firmware.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get rollout %s: %w", id, err)
	}
	return r, nil
}

// ListDeviceUpdates implements firmware.Store.
func (s *Store) ListDeviceUpdates(ctx context.Context, rolloutID string) ([]firmware.DeviceUpdate, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT rollout_id, device_id, device_type, ord, phase, state, attempt, message, progress,
		state_since, started_at, reboot_at, confirmed_at, updated_at FROM firmware_updates WHERE rollout_id = ? ORDER BY ord`, rolloutID)
	if err != nil {
		return nil, fmt.Errorf("list device updates: %w", err)
	}
	defer rows.Close()
	var out []firmware.DeviceUpdate
	for rows.Next() {
		var u firmware.DeviceUpdate
		var state string
		var since, updated int64
		var started, reboot, confirmed sql.NullInt64
		if err := rows.Scan(&u.RolloutID, &u.DeviceID, &u.DeviceType, &u.Order, &u.Phase, &state, &u.Attempt, &u.Message, &u.Progress,
			&since, &started, &reboot, &confirmed, &updated); err != nil {
			return nil, fmt.Errorf("list device updates: %w", err)
		}
		u.State, u.StateSince, u.UpdatedAt = firmware.State(state), micros(since), micros(updated)
		u.StartedAt, u.RebootAt, u.ConfirmedAt = fromMicros(started), fromMicros(reboot), fromMicros(confirmed)
		out = append(out, u)
	}
	return out, rows.Err()
}

// UpdateHistory implements firmware.Store.
func (s *Store) UpdateHistory(ctx context.Context, deviceID, rolloutID string) ([]firmware.HistoryEntry, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT rollout_id, device_id, state, attempt, message, at FROM firmware_update_history
		WHERE device_id = ? AND (? = '' OR rollout_id = ?) ORDER BY id`, deviceID, rolloutID, rolloutID)
	if err != nil {
		return nil, fmt.Errorf("update history: %w", err)
	}
	defer rows.Close()
	var out []firmware.HistoryEntry
	for rows.Next() {
		var h firmware.HistoryEntry
		var state string
		var at int64
		if err := rows.Scan(&h.RolloutID, &h.DeviceID, &state, &h.Attempt, &h.Message, &at); err != nil {
			return nil, fmt.Errorf("update history: %w", err)
		}
		h.State, h.At = firmware.State(state), micros(at)
		out = append(out, h)
	}
	return out, rows.Err()
}
