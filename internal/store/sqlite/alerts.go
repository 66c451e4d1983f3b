package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/devicehub/devicehub/internal/alerts"
)

var (
	_ alerts.Store   = (*Store)(nil)
	_ alerts.TxStore = (*txn)(nil)
)

const alertColumns = `id, rule, device_id, device_type, severity, state, message, labels, value, count,
	started_at, raised_at, last_at, ack_at, ack_by, ack_note, cleared_at, cleared_by, clear_note, updated_at`

func alertArgs(a *alerts.Alert) ([]any, error) {
	var labels, value []byte
	var err error
	if len(a.Labels) > 0 {
		if labels, err = alerts.EncodeValue(a.Labels); err != nil {
			return nil, err
		}
	}
	if a.Value != nil {
		if value, err = alerts.EncodeValue(a.Value); err != nil {
			return nil, err
		}
	}
	return []any{a.ID, a.Rule, a.DeviceID, a.DeviceType, a.Severity, a.State, a.Message, jsonText(labels), jsonText(value), a.Count,
		a.StartedAt.UnixMicro(), optMicros(a.RaisedAt), a.LastAt.UnixMicro(), optMicros(a.AckAt), a.AckBy, a.AckNote,
		optMicros(a.ClearedAt), a.ClearedBy, a.ClearNote, a.UpdatedAt.UnixMicro()}, nil
}

type rowScanner interface{ Scan(dest ...any) error }

func scanAlert(r rowScanner) (alerts.Alert, error) {
	var a alerts.Alert
	var labels, value sql.NullString
	var started, last, updated int64
	var raised, ack, cleared sql.NullInt64
	if err := r.Scan(&a.ID, &a.Rule, &a.DeviceID, &a.DeviceType, &a.Severity, &a.State, &a.Message, &labels, &value, &a.Count,
		&started, &raised, &last, &ack, &a.AckBy, &a.AckNote, &cleared, &a.ClearedBy, &a.ClearNote, &updated); err != nil {
		return a, err
	}
	if err := alerts.DecodeValue([]byte(labels.String), &a.Labels); err != nil {
		return a, err
	}
	if err := alerts.DecodeValue([]byte(value.String), &a.Value); err != nil {
		return a, err
	}
	a.StartedAt, a.LastAt, a.UpdatedAt = micros(started), micros(last), micros(updated)
	a.RaisedAt, a.AckAt, a.ClearedAt = fromMicros(raised), fromMicros(ack), fromMicros(cleared)
	return a, nil
}

// InsertAlert adds an open alert; false if its (rule, device) has one.
func (t *txn) InsertAlert(ctx context.Context, a *alerts.Alert) (bool, error) {
	args, err := alertArgs(a)
	if err != nil {
		return false, err
	}
	res, err := t.tx.ExecContext(ctx, `INSERT INTO alerts (`+alertColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT DO NOTHING`, args...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// UpdateAlert writes an open alert.
func (t *txn) UpdateAlert(ctx context.Context, a *alerts.Alert) (bool, error) {
	args, err := alertArgs(a)
	if err != nil {
		return false, err
	}
	res, err := t.tx.ExecContext(ctx, `UPDATE alerts SET severity = ?, state = ?, message = ?, labels = ?, value = ?, count = ?,
		started_at = ?, raised_at = ?, last_at = ?, ack_at = ?, ack_by = ?, ack_note = ?, cleared_at = ?, cleared_by = ?,
		clear_note = ?, updated_at = ? WHERE id = ? AND state <> 'cleared'`, append(args[4:], a.ID)...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// DeletePendingAlert removes a pending alert.
func (t *txn) DeletePendingAlert(ctx context.Context, id string) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `DELETE FROM alerts WHERE id = ? AND state = 'pending'`, id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// SaveAlertCursor stores the evaluator's cursor.
func (t *txn) SaveAlertCursor(ctx context.Context, seq int64) error {
	_, err := t.tx.ExecContext(ctx, `INSERT INTO alert_cursor (id, seq, updated_at) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at`, seq, t.now)
	return err
}

// ListAlerts returns the alerts q selects, newest first.
func (s *Store) ListAlerts(ctx context.Context, q alerts.Query) ([]alerts.Alert, error) {
	var where []string
	var args []any
	if len(q.States) > 0 {
		where = append(where, "state IN (?"+strings.Repeat(",?", len(q.States)-1)+")")
		for _, st := range q.States {
			args = append(args, st)
		}
	}
	for _, f := range []struct{ col, v string }{{"severity", q.Severity}, {"device_id", q.DeviceID}, {"device_type", q.DeviceType}, {"rule", q.Rule}} {
		if f.v != "" {
			where = append(where, f.col+" = ?")
			args = append(args, f.v)
		}
	}
	query := `SELECT ` + alertColumns + ` FROM alerts`
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	query += " ORDER BY started_at DESC, id DESC LIMIT ?"
	args = append(args, limit)
	return s.queryAlerts(ctx, query, args...)
}

func (s *Store) queryAlerts(ctx context.Context, query string, args ...any) ([]alerts.Alert, error) {
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	defer rows.Close()
	out := []alerts.Alert{}
	for rows.Next() {
		a, err := scanAlert(rows)
		if err != nil {
			return nil, fmt.Errorf("list alerts: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list alerts: %w", err)
	}
	return out, nil
}

// GetAlert returns one alert.
func (s *Store) GetAlert(ctx context.Context, id string) (*alerts.Alert, error) {
	a, err := scanAlert(s.r.QueryRowContext(ctx, `SELECT `+alertColumns+` FROM alerts WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("alert %s: %w", id, alerts.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get alert %s: %w", id, err)
	}
	return &a, nil
}

// OpenAlerts returns every alert not cleared.
func (s *Store) OpenAlerts(ctx context.Context) ([]alerts.Alert, error) {
	return s.queryAlerts(ctx, `SELECT `+alertColumns+` FROM alerts WHERE state <> 'cleared' ORDER BY id`)
}

// AlertCursor returns the evaluator's cursor.
func (s *Store) AlertCursor(ctx context.Context) (int64, bool, error) {
	var seq int64
	err := s.r.QueryRowContext(ctx, `SELECT seq FROM alert_cursor WHERE id = 1`).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read alert cursor: %w", err)
	}
	return seq, true, nil
}

// InsertAlertRule stores a rule created over the API.
func (s *Store) InsertAlertRule(ctx context.Context, r alerts.StoredRule) error {
	spec, err := alerts.EncodeValue(r.Spec)
	if err != nil {
		return err
	}
	res, err := s.w.ExecContext(ctx, `INSERT INTO alert_rules (name, spec, created_at, created_by) VALUES (?,?,?,?)
		ON CONFLICT DO NOTHING`, r.Spec.Name, string(spec), r.CreatedAt.UnixMicro(), r.CreatedBy)
	if err != nil {
		return fmt.Errorf("insert alert rule %s: %w", r.Spec.Name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("alert rule %s: %w", r.Spec.Name, alerts.ErrExists)
	}
	return nil
}

// DeleteAlertRule removes a rule created over the API.
func (s *Store) DeleteAlertRule(ctx context.Context, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM alert_rules WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete alert rule %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("alert rule %s: %w", name, alerts.ErrNotFound)
	}
	return nil
}

// ListAlertRules returns the rules created over the API, by name.
func (s *Store) ListAlertRules(ctx context.Context) ([]alerts.StoredRule, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT spec, created_at, created_by FROM alert_rules ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list alert rules: %w", err)
	}
	defer rows.Close()
	var out []alerts.StoredRule
	for rows.Next() {
		var r alerts.StoredRule
		var spec string
		var created int64
		if err := rows.Scan(&spec, &created, &r.CreatedBy); err != nil {
			return nil, fmt.Errorf("list alert rules: %w", err)
		}
		if err := alerts.DecodeValue([]byte(spec), &r.Spec); err != nil {
			return nil, err
		}
		r.CreatedAt = micros(created)
		out = append(out, r)
	}
	return out, rows.Err()
}

// InsertSilence stores a silence.
func (s *Store) InsertSilence(ctx context.Context, sl alerts.Silence) error {
	if _, err := s.w.ExecContext(ctx, `INSERT INTO alert_silences (id, rule, device_id, until, note, created_by, created_at)
		VALUES (?,?,?,?,?,?,?)`, sl.ID, sl.Rule, sl.DeviceID, sl.Until.UnixMicro(), sl.Note, sl.CreatedBy, sl.CreatedAt.UnixMicro()); err != nil {
		return fmt.Errorf("insert silence: %w", err)
	}
	return nil
}

// DeleteSilence removes a silence.
func (s *Store) DeleteSilence(ctx context.Context, id string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM alert_silences WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete silence %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("silence %s: %w", id, alerts.ErrNotFound)
	}
	return nil
}

// ListSilences returns the silences that end after now.
func (s *Store) ListSilences(ctx context.Context, now time.Time) ([]alerts.Silence, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, rule, device_id, until, note, created_by, created_at FROM alert_silences
		WHERE until > ? ORDER BY until`, now.UnixMicro())
	if err != nil {
		return nil, fmt.Errorf("list silences: %w", err)
	}
	defer rows.Close()
	var out []alerts.Silence
	for rows.Next() {
		var sl alerts.Silence
		var until, created int64
		if err := rows.Scan(&sl.ID, &sl.Rule, &sl.DeviceID, &until, &sl.Note, &sl.CreatedBy, &created); err != nil {
			return nil, fmt.Errorf("list silences: %w", err)
		}
		sl.Until, sl.CreatedAt = micros(until), micros(created)
		out = append(out, sl)
	}
	return out, rows.Err()
}
