package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/monitors"
)

var _ monitors.Store = (*Store)(nil)

// InsertMonitor stores a new monitor and its cursor.
func (s *Store) InsertMonitor(ctx context.Context, m *monitors.Monitor) error {
	spec, err := monitors.EncodeSpec(&m.Spec)
	if err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("insert monitor: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO monitors (id, spec, status, status_reason, created_at, updated_at,
		last_connect, last_sent, failing_since, secret, prev_secret, prev_secret_until, token_hash)
		VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)`,
		m.ID, string(spec), string(m.Status), m.StatusReason, m.CreatedAt, m.UpdatedAt,
		m.LastConnect, m.LastSent, m.FailingSince, m.Secret, m.PrevSecret, m.PrevSecretUntil, m.TokenHash); err != nil {
		return fmt.Errorf("insert monitor %s: %w", m.ID, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO monitor_cursors (monitor_id, seq, updated_at) VALUES ($1,$2,$3)`,
		m.ID, m.Cursor, m.CreatedAt); err != nil {
		return fmt.Errorf("insert monitor %s cursor: %w", m.ID, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("insert monitor %s: %w", m.ID, err)
	}
	return nil
}

// UpdateMonitor replaces a monitor's definition and state.
func (s *Store) UpdateMonitor(ctx context.Context, m *monitors.Monitor) error {
	spec, err := monitors.EncodeSpec(&m.Spec)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, `UPDATE monitors SET spec = $1, status = $2, status_reason = $3, updated_at = $4,
		last_connect = $5, last_sent = $6, failing_since = $7, secret = $8, prev_secret = $9, prev_secret_until = $10, token_hash = $11
		WHERE id = $12`,
		string(spec), string(m.Status), m.StatusReason, m.UpdatedAt,
		m.LastConnect, m.LastSent, m.FailingSince, m.Secret, m.PrevSecret, m.PrevSecretUntil, m.TokenHash, m.ID)
	if err != nil {
		return fmt.Errorf("update monitor %s: %w", m.ID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("update monitor %s: %w", m.ID, monitors.ErrNotFound)
	}
	return nil
}

// DeleteMonitor removes a monitor and its cursor.
func (s *Store) DeleteMonitor(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM monitors WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete monitor %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("delete monitor %s: %w", id, monitors.ErrNotFound)
	}
	return nil
}

// ListMonitors returns every monitor with its cursor.
func (s *Store) ListMonitors(ctx context.Context) ([]monitors.Monitor, error) {
	rows, err := s.pool.Query(ctx, `SELECT m.id, m.spec::text, m.status, m.status_reason, m.created_at, m.updated_at,
		m.last_connect, m.last_sent, m.failing_since, m.secret, m.prev_secret, m.prev_secret_until, m.token_hash,
		COALESCE(c.seq, 0)
		FROM monitors m LEFT JOIN monitor_cursors c ON c.monitor_id = m.id ORDER BY m.id`)
	if err != nil {
		return nil, fmt.Errorf("list monitors: %w", err)
	}
	defer rows.Close()
	var out []monitors.Monitor
	for rows.Next() {
		var m monitors.Monitor
		var spec, status string
		if err := rows.Scan(&m.ID, &spec, &status, &m.StatusReason, &m.CreatedAt, &m.UpdatedAt,
			&m.LastConnect, &m.LastSent, &m.FailingSince, &m.Secret, &m.PrevSecret, &m.PrevSecretUntil, &m.TokenHash, &m.Cursor); err != nil {
			return nil, fmt.Errorf("list monitors: %w", err)
		}
		if err := monitors.DecodeSpec([]byte(spec), &m.Spec); err != nil {
			return nil, fmt.Errorf("monitor %s: %w", m.ID, err)
		}
		m.Status = monitors.Status(status)
		m.CreatedAt, m.UpdatedAt = m.CreatedAt.UTC(), m.UpdatedAt.UTC()
		for _, t := range []*time.Time{m.LastConnect, m.LastSent, m.FailingSince, m.PrevSecretUntil} {
			if t != nil {
				*t = t.UTC()
			}
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list monitors: %w", err)
	}
	return out, nil
}

// SaveCursor moves a monitor's cursor.
func (s *Store) SaveCursor(ctx context.Context, id string, seq int64) error {
	if _, err := s.exec(ctx, `UPDATE monitor_cursors SET seq = $1, updated_at = $2 WHERE monitor_id = $3`,
		seq, time.Now(), id); err != nil {
		return fmt.Errorf("save monitor %s cursor: %w", id, err)
	}
	return nil
}

// SaveCursors moves several monitors' cursors in one transaction.
func (s *Store) SaveCursors(ctx context.Context, cursors map[string]int64) error {
	if len(cursors) == 0 {
		return nil
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("save monitor cursors: %w", err)
	}
	defer tx.Rollback(ctx)
	if err := checkFence(ctx, tx); err != nil {
		return fmt.Errorf("save monitor cursors: %w", err)
	}
	now := time.Now()
	for id, seq := range cursors {
		if _, err := tx.Exec(ctx, `UPDATE monitor_cursors SET seq = $1, updated_at = $2 WHERE monitor_id = $3`, seq, now, id); err != nil {
			return fmt.Errorf("save monitor %s cursor: %w", id, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("save monitor cursors: %w", err)
	}
	return nil
}

var _ monitors.TxStore = (*txn)(nil)

// SetMonitorState writes a monitor's state in the commit transaction.
func (t *txn) SetMonitorState(ctx context.Context, m *monitors.Monitor) (bool, error) {
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, `UPDATE monitors SET status = $1, status_reason = $2, updated_at = $3,
		last_connect = $4, last_sent = $5, failing_since = $6 WHERE id = $7`,
		string(m.Status), m.StatusReason, m.UpdatedAt, m.LastConnect, m.LastSent, m.FailingSince, m.ID)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}
