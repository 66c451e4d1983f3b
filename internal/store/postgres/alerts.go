package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
	return []any{a.ID, a.Rule, a.DeviceID, a.DeviceType, a.Severity, a.State, a.Message, jsonArg(labels), jsonArg(value), a.Count,
		a.StartedAt, a.RaisedAt, a.LastAt, a.AckAt, a.AckBy, a.AckNote, a.ClearedAt, a.ClearedBy, a.ClearNote, a.UpdatedAt}, nil
}

func scanAlert(r pgx.Row) (alerts.Alert, error) {
	var a alerts.Alert
	var labels, value []byte
	if err := r.Scan(&a.ID, &a.Rule, &a.DeviceID, &a.DeviceType, &a.Severity, &a.State, &a.Message, &labels, &value, &a.Count,
		&a.StartedAt, &a.RaisedAt, &a.LastAt, &a.AckAt, &a.AckBy, &a.AckNote, &a.ClearedAt, &a.ClearedBy, &a.ClearNote, &a.UpdatedAt); err != nil {
		return a, err
	}
	if err := alerts.DecodeValue(labels, &a.Labels); err != nil {
		return a, err
	}
	if err := alerts.DecodeValue(value, &a.Value); err != nil {
		return a, err
	}
	a.StartedAt, a.LastAt, a.UpdatedAt = a.StartedAt.UTC(), a.LastAt.UTC(), a.UpdatedAt.UTC()
	for _, p := range []**time.Time{&a.RaisedAt, &a.AckAt, &a.ClearedAt} {
		if *p != nil {
			t := (*p).UTC()
			*p = &t
		}
	}
	return a, nil
}

// InsertAlert adds an open alert; false if its (rule, device) has one.
func (t *txn) InsertAlert(ctx context.Context, a *alerts.Alert) (bool, error) {
	args, err := alertArgs(a)
	if err != nil {
		return false, err
	}
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO alerts (`+alertColumns+`) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20)
		ON CONFLICT DO NOTHING`, args...)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// UpdateAlert writes an open alert.
func (t *txn) UpdateAlert(ctx context.Context, a *alerts.Alert) (bool, error) {
	args, err := alertArgs(a)
	if err != nil {
		return false, err
	}
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, `UPDATE alerts SET severity = $1, state = $2, message = $3, labels = $4, value = $5, count = $6,
		started_at = $7, raised_at = $8, last_at = $9, ack_at = $10, ack_by = $11, ack_note = $12, cleared_at = $13, cleared_by = $14,
		clear_note = $15, updated_at = $16 WHERE id = $17 AND state <> 'cleared'`, append(args[4:], a.ID)...)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// DeletePendingAlert removes a pending alert.
func (t *txn) DeletePendingAlert(ctx context.Context, id string) (bool, error) {
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	tag, err := tx.Exec(ctx, `DELETE FROM alerts WHERE id = $1 AND state = 'pending'`, id)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// SaveAlertCursor stores the evaluator's cursor.
func (t *txn) SaveAlertCursor(ctx context.Context, seq int64) error {
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `INSERT INTO alert_cursor (id, seq, updated_at) VALUES (1, $1, $2)
		ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at`, seq, t.now)
	return err
}

// ListAlerts returns the alerts q selects, newest first.
func (s *Store) ListAlerts(ctx context.Context, q alerts.Query) ([]alerts.Alert, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if len(q.States) > 0 {
		where = append(where, "state = ANY("+arg(q.States)+")")
	}
	for _, f := range []struct{ col, v string }{{"severity", q.Severity}, {"device_id", q.DeviceID}, {"device_type", q.DeviceType}, {"rule", q.Rule}} {
		if f.v != "" {
			where = append(where, f.col+" = "+arg(f.v))
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
	query += " ORDER BY started_at DESC, id DESC LIMIT " + arg(limit)
	return s.queryAlerts(ctx, query, args...)
}

func (s *Store) queryAlerts(ctx context.Context, query string, args ...any) ([]alerts.Alert, error) {
	rows, err := s.pool.Query(ctx, query, args...)
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
	a, err := scanAlert(s.pool.QueryRow(ctx, `SELECT `+alertColumns+` FROM alerts WHERE id = $1`, id))
	if errNoRows(err) {
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
	err := s.pool.QueryRow(ctx, `SELECT seq FROM alert_cursor WHERE id = 1`).Scan(&seq)
	if errNoRows(err) {
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
	tag, err := s.pool.Exec(ctx, `INSERT INTO alert_rules (name, spec, created_at, created_by) VALUES ($1,$2,$3,$4)
		ON CONFLICT DO NOTHING`, r.Spec.Name, string(spec), r.CreatedAt, r.CreatedBy)
	if err != nil {
		return fmt.Errorf("insert alert rule %s: %w", r.Spec.Name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("alert rule %s: %w", r.Spec.Name, alerts.ErrExists)
	}
	return nil
}

// DeleteAlertRule removes a rule created over the API.
func (s *Store) DeleteAlertRule(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM alert_rules WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("delete alert rule %s: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("alert rule %s: %w", name, alerts.ErrNotFound)
	}
	return nil
}

// ListAlertRules returns the rules created over the API, by name.
func (s *Store) ListAlertRules(ctx context.Context) ([]alerts.StoredRule, error) {
	rows, err := s.pool.Query(ctx, `SELECT spec, created_at, created_by FROM alert_rules ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list alert rules: %w", err)
	}
	defer rows.Close()
	var out []alerts.StoredRule
	for rows.Next() {
		var r alerts.StoredRule
		var spec []byte
		if err := rows.Scan(&spec, &r.CreatedAt, &r.CreatedBy); err != nil {
			return nil, fmt.Errorf("list alert rules: %w", err)
		}
		if err := alerts.DecodeValue(spec, &r.Spec); err != nil {
			return nil, err
		}
		r.CreatedAt = r.CreatedAt.UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// InsertSilence stores a silence.
func (s *Store) InsertSilence(ctx context.Context, sl alerts.Silence) error {
	if _, err := s.pool.Exec(ctx, `INSERT INTO alert_silences (id, rule, device_id, until, note, created_by, created_at)
		VALUES ($1,$2,$3,$4,$5,$6,$7)`, sl.ID, sl.Rule, sl.DeviceID, sl.Until, sl.Note, sl.CreatedBy, sl.CreatedAt); err != nil {
		return fmt.Errorf("insert silence: %w", err)
	}
	return nil
}

// DeleteSilence removes a silence.
func (s *Store) DeleteSilence(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM alert_silences WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete silence %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("silence %s: %w", id, alerts.ErrNotFound)
	}
	return nil
}

// ListSilences returns the silences that end after now.
func (s *Store) ListSilences(ctx context.Context, now time.Time) ([]alerts.Silence, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, rule, device_id, until, note, created_by, created_at FROM alert_silences
		WHERE until > $1 ORDER BY until`, now)
	if err != nil {
		return nil, fmt.Errorf("list silences: %w", err)
	}
	defer rows.Close()
	var out []alerts.Silence
	for rows.Next() {
		var sl alerts.Silence
		if err := rows.Scan(&sl.ID, &sl.Rule, &sl.DeviceID, &sl.Until, &sl.Note, &sl.CreatedBy, &sl.CreatedAt); err != nil {
			return nil, fmt.Errorf("list silences: %w", err)
		}
		sl.Until, sl.CreatedAt = sl.Until.UTC(), sl.CreatedAt.UTC()
		out = append(out, sl)
	}
	return out, rows.Err()
}
