package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/firmware"
)

var (
	_ firmware.Store         = (*Store)(nil)
	_ firmware.TxStore       = (*txn)(nil)
	_ firmware.CursorTxStore = (*txn)(nil)
)

// SetFirmwareCursor implements firmware.CursorTxStore (cluster mode).
func (t *txn) SetFirmwareCursor(ctx context.Context, seq int64) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO firmware_cursor (id, seq) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET seq = GREATEST(firmware_cursor.seq, excluded.seq)`, seq)
	return err
}

// FirmwareCursor returns how far the rollout scheduler's node followed the
// event log (false: never stored).
func (s *Store) FirmwareCursor(ctx context.Context) (int64, bool, error) {
	var seq int64
	err := s.pool.QueryRow(ctx, `SELECT seq FROM firmware_cursor WHERE id = 1`).Scan(&seq)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("firmware cursor: %w", err)
	}
	return seq, true, nil
}

const artifactCols = `id, version, type, hardware, size, sha256, signature, public_key, signed_by, filename, created_at`

// PutArtifact implements firmware.TxStore.
func (t *txn) PutArtifact(ctx context.Context, a *firmware.Artifact) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO firmware_artifacts (`+artifactCols+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)`,
		a.ID, a.Version, a.Type, a.Hardware, a.Size, a.SHA256, a.Signature, a.PublicKey, a.SignedBy, a.Filename, a.CreatedAt)
	return err
}

// DeleteArtifact implements firmware.TxStore.
func (t *txn) DeleteArtifact(ctx context.Context, id string) (found, inUse bool, err error) {
	tx, err := t.db(ctx)
	if err != nil {
		return false, false, err
	}
	var n int
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM firmware_rollouts WHERE artifact_id = $1 AND status NOT IN ('completed', 'canceled')`, id).Scan(&n); err != nil {
		return false, false, err
	}
	if n > 0 {
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM firmware_artifacts WHERE id = $1`, id).Scan(&one)
		return err == nil, true, nil
	}
	// Finished rollouts keep their history; they lose their artifact.
	if _, err := tx.Exec(ctx, `DELETE FROM firmware_updates WHERE rollout_id IN (SELECT id FROM firmware_rollouts WHERE artifact_id = $1)`, id); err != nil {
		return false, false, err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM firmware_rollouts WHERE artifact_id = $1`, id); err != nil {
		return false, false, err
	}
	res, err := tx.Exec(ctx, `DELETE FROM firmware_artifacts WHERE id = $1`, id)
	if err != nil {
		return false, false, err
	}
	return res.RowsAffected() > 0, false, nil
}

// PutRollout implements firmware.TxStore.
func (t *txn) PutRollout(ctx context.Context, r *firmware.Rollout, create bool) (bool, error) {
	spec, err := json.Marshal(r.Spec)
	if err != nil {
		return false, err
	}
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	if create {
		res, err := tx.Exec(ctx, `INSERT INTO firmware_rollouts (id, artifact_id, spec, status, reason, version, device_type,
			base_finished, base_failures, created_at, updated_at, alive_at)
			SELECT $1::text,$2::text,$3::jsonb,$4::text,$5::text,$6::text,$7::text,$8::int,$9::int,$10::timestamptz,$11::timestamptz,$13::timestamptz
			WHERE EXISTS (SELECT 1 FROM firmware_artifacts WHERE id = $12)`,
			r.ID, r.Spec.ArtifactID, string(spec), string(r.Status), r.Reason, r.Version, r.DeviceType,
			r.BaseFinished, r.BaseFailures, r.CreatedAt, r.UpdatedAt, r.Spec.ArtifactID, aliveTime(r.AliveAt))
		if err != nil {
			return false, err
		}
		return res.RowsAffected() > 0, nil
	}
	res, err := tx.Exec(ctx, `UPDATE firmware_rollouts SET spec = $1::jsonb, status = $2, reason = $3, base_finished = $4, base_failures = $5, updated_at = $6,
		alive_at = $8 WHERE id = $7`, string(spec), string(r.Status), r.Reason, r.BaseFinished, r.BaseFailures, r.UpdatedAt, r.ID, aliveTime(r.AliveAt))
	if err != nil {
		return false, err
	}
	return res.RowsAffected() > 0, nil
}

// PutDeviceUpdates implements firmware.TxStore.
func (t *txn) PutDeviceUpdates(ctx context.Context, us []firmware.DeviceUpdate) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	var b pgx.Batch
	for _, u := range us {
		b.Queue(`INSERT INTO firmware_updates (rollout_id, device_id, device_type, ord, phase, state, attempt,
		message, progress, state_since, started_at, reboot_at, confirmed_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)
		ON CONFLICT (rollout_id, device_id) DO UPDATE SET state = excluded.state, attempt = excluded.attempt, message = excluded.message,
		progress = excluded.progress, state_since = excluded.state_since, started_at = excluded.started_at, reboot_at = excluded.reboot_at,
		confirmed_at = excluded.confirmed_at, updated_at = excluded.updated_at`,
			u.RolloutID, u.DeviceID, u.DeviceType, u.Order, u.Phase, string(u.State), u.Attempt,
			u.Message, u.Progress, u.StateSince, u.StartedAt, u.RebootAt, u.ConfirmedAt, u.UpdatedAt)
	}
	return tx.SendBatch(ctx, &b).Close()
}

// AddUpdateHistory implements firmware.TxStore.
func (t *txn) AddUpdateHistory(ctx context.Context, hs []firmware.HistoryEntry) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	for _, h := range hs {
		if _, err := tx.Exec(ctx, `INSERT INTO firmware_update_history (rollout_id, device_id, state, attempt, message, at)
			VALUES ($1,$2,$3,$4,$5,$6)`, h.RolloutID, h.DeviceID, string(h.State), h.Attempt, h.Message, h.At); err != nil {
			return err
		}
	}
	return nil
}

func scanArtifact(sc interface{ Scan(...any) error }) (*firmware.Artifact, error) {
	var a firmware.Artifact
	var created time.Time
	if err := sc.Scan(&a.ID, &a.Version, &a.Type, &a.Hardware, &a.Size, &a.SHA256, &a.Signature, &a.PublicKey, &a.SignedBy, &a.Filename, &created); err != nil {
		return nil, err
	}
	a.CreatedAt = created.UTC()
	return &a, nil
}

// ListArtifacts implements firmware.Store.
func (s *Store) ListArtifacts(ctx context.Context) ([]firmware.Artifact, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+artifactCols+` FROM firmware_artifacts ORDER BY created_at DESC, id`)
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
	a, err := scanArtifact(s.pool.QueryRow(ctx, `SELECT `+artifactCols+` FROM firmware_artifacts WHERE id = $1`, id))
	if errNoRows(err) {
		return nil, fmt.Errorf("artifact %s: %w", id, firmware.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get artifact %s: %w", id, err)
	}
	return a, nil
}

const rolloutCols = `id, spec, status, reason, version, device_type, base_finished, base_failures, created_at, updated_at, alive_at`

// aliveTime stores a rollout's AliveAt (NULL for none).
func aliveTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func scanRollout(sc interface{ Scan(...any) error }) (*firmware.Rollout, error) {
	var r firmware.Rollout
	var spec, status string
	var created, updated time.Time
	var alive *time.Time
	if err := sc.Scan(&r.ID, &spec, &status, &r.Reason, &r.Version, &r.DeviceType, &r.BaseFinished, &r.BaseFailures, &created, &updated, &alive); err != nil {
		return nil, err
	}
	if alive != nil {
		r.AliveAt = alive.UTC()
	}
	if err := json.Unmarshal([]byte(spec), &r.Spec); err != nil {
		return nil, fmt.Errorf("rollout %s spec: %w", r.ID, err)
	}
	r.Status, r.CreatedAt, r.UpdatedAt = firmware.RolloutStatus(status), created.UTC(), updated.UTC()
	return &r, nil
}

// ListRollouts implements firmware.Store.
func (s *Store) ListRollouts(ctx context.Context, active bool) ([]firmware.Rollout, error) {
	q := `SELECT ` + rolloutCols + ` FROM firmware_rollouts`
	if active {
		q += ` WHERE status NOT IN ('completed', 'canceled')`
	}
	rows, err := s.pool.Query(ctx, q+` ORDER BY created_at DESC, id`)
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
	r, err := scanRollout(s.pool.QueryRow(ctx, `SELECT `+rolloutCols+` FROM firmware_rollouts WHERE id = $1`, id))
	if errNoRows(err) {
		return nil, fmt.Errorf("rollout %s: %w", id, firmware.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get rollout %s: %w", id, err)
	}
	return r, nil
}

// ListDeviceUpdates implements firmware.Store.
func (s *Store) ListDeviceUpdates(ctx context.Context, rolloutID string) ([]firmware.DeviceUpdate, error) {
	rows, err := s.pool.Query(ctx, `SELECT rollout_id, device_id, device_type, ord, phase, state, attempt, message, progress,
		state_since, started_at, reboot_at, confirmed_at, updated_at FROM firmware_updates WHERE rollout_id = $1 ORDER BY ord`, rolloutID)
	if err != nil {
		return nil, fmt.Errorf("list device updates: %w", err)
	}
	defer rows.Close()
	var out []firmware.DeviceUpdate
	for rows.Next() {
		var u firmware.DeviceUpdate
		var state string
		var since, updated time.Time
		if err := rows.Scan(&u.RolloutID, &u.DeviceID, &u.DeviceType, &u.Order, &u.Phase, &state, &u.Attempt, &u.Message, &u.Progress,
			&since, &u.StartedAt, &u.RebootAt, &u.ConfirmedAt, &updated); err != nil {
			return nil, fmt.Errorf("list device updates: %w", err)
		}
		u.State, u.StateSince, u.UpdatedAt = firmware.State(state), since.UTC(), updated.UTC()
		for _, p := range []**time.Time{&u.StartedAt, &u.RebootAt, &u.ConfirmedAt} {
			if *p != nil {
				t := (*p).UTC()
				*p = &t
			}
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

// UpdateHistory implements firmware.Store.
func (s *Store) UpdateHistory(ctx context.Context, deviceID, rolloutID string) ([]firmware.HistoryEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT rollout_id, device_id, state, attempt, message, at FROM firmware_update_history
		WHERE device_id = $1 AND ($2::text = '' OR rollout_id = $3) ORDER BY id`, deviceID, rolloutID, rolloutID)
	if err != nil {
		return nil, fmt.Errorf("update history: %w", err)
	}
	defer rows.Close()
	var out []firmware.HistoryEntry
	for rows.Next() {
		var h firmware.HistoryEntry
		var state string
		var at time.Time
		if err := rows.Scan(&h.RolloutID, &h.DeviceID, &state, &h.Attempt, &h.Message, &at); err != nil {
			return nil, fmt.Errorf("update history: %w", err)
		}
		h.State, h.At = firmware.State(state), at.UTC()
		out = append(out, h)
	}
	return out, rows.Err()
}
