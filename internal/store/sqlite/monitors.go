package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/devicehub/devicehub/internal/monitors"
)

var _ monitors.Store = (*Store)(nil)

func optMicros(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMicro()
}

func fromMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := micros(v.Int64)
	return &t
}

// InsertMonitor stores a new monitor and its cursor.
func (s *Store) InsertMonitor(ctx context.Context, m *monitors.Monitor) error {
	spec, err := monitors.EncodeSpec(&m.Spec)
	if err != nil {
		return err
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("insert monitor: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO monitors (id, spec, status, status_reason, created_at, updated_at,
		last_connect, last_sent, failing_since, secret, prev_secret, prev_secret_until, token_hash)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		m.ID, string(spec), string(m.Status), m.StatusReason, m.CreatedAt.UnixMicro(), m.UpdatedAt.UnixMicro(),
		optMicros(m.LastConnect), optMicros(m.LastSent), optMicros(m.FailingSince),
		m.Secret, m.PrevSecret, optMicros(m.PrevSecretUntil), m.TokenHash); err != nil {
		return fmt.Errorf("insert monitor %s: %w", m.ID, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO monitor_cursors (monitor_id, seq, updated_at) VALUES (?,?,?)`,
		m.ID, m.Cursor, m.CreatedAt.UnixMicro()); err != nil {
		return fmt.Errorf("insert monitor %s cursor: %w", m.ID, err)
	}
	if err := tx.Commit(); err != nil {
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
	res, err := s.w.ExecContext(ctx, `UPDATE monitors SET spec = ?, status = ?, status_reason = ?, updated_at = ?,
		last_connect = ?, last_sent = ?, failing_since = ?, secret = ?, prev_secret = ?, prev_secret_until = ?, token_hash = ?
		WHERE id = ?`,
		string(spec), string(m.Status), m.StatusReason, m.UpdatedAt.UnixMicro(),
		optMicros(m.LastConnect), optMicros(m.LastSent), optMicros(m.FailingSince),
		m.Secret, m.PrevSecret, optMicros(m.PrevSecretUntil), m.TokenHash, m.ID)
	if err != nil {
		return fmt.Errorf("update monitor %s: %w", m.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("update monitor %s: %w", m.ID, monitors.ErrNotFound)
	}
	return nil
}

// DeleteMonitor removes a monitor and its cursor.
func (s *Store) DeleteMonitor(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM monitors WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete monitor %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("delete monitor %s: %w", id, monitors.ErrNotFound)
	}
	return nil
}

// ListMonitors returns every monitor with its cursor.
func (s *Store) ListMonitors(ctx context.Context) ([]monitors.Monitor, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT m.id, m.spec, m.status, m.status_reason, m.created_at, m.updated_at,
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
		var created, updated int64
		var lastConnect, lastSent, failing, prevUntil sql.NullInt64
		if err := rows.Scan(&m.ID, &spec, &status, &m.StatusReason, &created, &updated,
			&lastConnect, &lastSent, &failing, &m.Secret, &m.PrevSecret, &prevUntil, &m.TokenHash, &m.Cursor); err != nil {
			return nil, fmt.Errorf("list monitors: %w", err)
		}
		if err := monitors.DecodeSpec([]byte(spec), &m.Spec); err != nil {
			return nil, fmt.Errorf("monitor %s: %w", m.ID, err)
		}
		m.Status = monitors.Status(status)
		m.CreatedAt, m.UpdatedAt = micros(created), micros(updated)
		m.LastConnect, m.LastSent, m.FailingSince, m.PrevSecretUntil = fromMicros(lastConnect), fromMicros(lastSent), fromMicros(failing), fromMicros(prevUntil)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list monitors: %w", err)
	}
	return out, nil
}

// SaveCursor moves a monitor's cursor.
func (s *Store) SaveCursor(ctx context.Context, id string, seq int64) error {
	if _, err := s.w.ExecContext(ctx, `UPDATE monitor_cursors SET seq = ?, updated_at = ? WHERE monitor_id = ?`,
		seq, time.Now().UnixMicro(), id); err != nil {
		return fmt.Errorf("save monitor %s cursor: %w", id, err)
	}
	return nil
}

// SaveCursors moves several monitors' cursors in one transaction.
func (s *Store) SaveCursors(ctx context.Context, cursors map[string]int64) error {
	if len(cursors) == 0 {
		return nil
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("save monitor cursors: %w", err)
	}
	defer tx.Rollback()
	now := time.Now().UnixMicro()
	for id, seq := range cursors {
		if _, err := tx.ExecContext(ctx, `UPDATE monitor_cursors SET seq = ?, updated_at = ? WHERE monitor_id = ?`, seq, now, id); err != nil {
			return fmt.Errorf("save monitor %s cursor: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("save monitor cursors: %w", err)
	}
	return nil
}

var _ monitors.TxStore = (*txn)(nil)

// SetMonitorState writes a monitor's state in the commit transaction.
func (t *txn) SetMonitorState(ctx context.Context, m *monitors.Monitor) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `UPDATE monitors SET status = ?, status_reason = ?, updated_at = ?,
		last_connect = ?, last_sent = ?, failing_since = ? WHERE id = ?`,
		string(m.Status), m.StatusReason, m.UpdatedAt.UnixMicro(),
		optMicros(m.LastConnect), optMicros(m.LastSent), optMicros(m.FailingSince), m.ID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}
