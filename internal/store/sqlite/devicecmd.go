package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/twin"
)

var (
	_ commands.Store = (*Store)(nil)
	_ twin.Store     = (*Store)(nil)
)

// InsertCommand implements commands.TxStore.
func (t *txn) InsertCommand(ctx context.Context, deviceID string, n *commands.Command) (bool, error) {
	res, err := t.tx.ExecContext(ctx, `INSERT INTO device_commands (id, device_id, command, payload, status, result, sends,
		created_at, expires_at, first_sent_at, sent_at, updated_at, job_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING`,
		n.ID, deviceID, n.Command, jsonText(n.Payload), n.Status, jsonText(n.Result), n.Sends,
		n.CreatedAt.UnixMicro(), n.ExpiresAt.UnixMicro(), microsPtr(n.FirstSentAt), microsPtr(n.SentAt), n.UpdatedAt.UnixMicro(), nullString(n.JobID))
	if err != nil {
		return false, err
	}
	k, err := res.RowsAffected()
	return k > 0, err
}

func microsPtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return t.UnixMicro()
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// UpdateCommand implements commands.TxStore.
func (t *txn) UpdateCommand(ctx context.Context, deviceID string, c *commands.Change, finished bool) (bool, error) {
	inc := 0
	if c.SentAt != nil {
		inc = 1
	}
	var fin any
	if finished {
		fin = c.At.UnixMicro()
	}
	sent := microsPtr(c.SentAt)
	q := `UPDATE device_commands SET status = ?, result = coalesce(?, result), sent_at = coalesce(?, sent_at),
		first_sent_at = coalesce(first_sent_at, ?), sends = sends + ?, delivered_at = coalesce(delivered_at, ?),
		finished_at = coalesce(?, finished_at), updated_at = ? WHERE id = ? AND device_id = ?
		AND status IN (?` + strings.Repeat(",?", len(c.From)-1) + `)`
	args := []any{c.Status, jsonText(c.Result), sent, sent, inc, microsPtr(c.DeliveredAt), fin, c.At.UnixMicro(), c.ID, deviceID}
	for _, f := range c.From {
		args = append(args, f)
	}
	res, err := t.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return false, err
	}
	k, err := res.RowsAffected()
	return k > 0, err
}

// SetDesired implements twin.TxStore.
func (t *txn) SetDesired(ctx context.Context, deviceID string, desired []byte, version int64, at time.Time) (bool, error) {
	var res sql.Result
	var err error
	if version == 1 {
		res, err = t.tx.ExecContext(ctx, `INSERT INTO device_twins (device_id, desired, desired_version, desired_at) VALUES (?,?,1,?)
			ON CONFLICT (device_id) DO UPDATE SET desired = excluded.desired, desired_version = 1, desired_at = excluded.desired_at
			WHERE device_twins.desired_version = 0`, deviceID, string(desired), at.UnixMicro())
	} else {
		res, err = t.tx.ExecContext(ctx, `UPDATE device_twins SET desired = ?, desired_version = ?, desired_at = ?
			WHERE device_id = ? AND desired_version = ?`, string(desired), version, at.UnixMicro(), deviceID, version-1)
	}
	if err != nil {
		return false, err
	}
	k, err := res.RowsAffected()
	return k > 0, err
}

// TwinForUpdate implements twin.TxStore; the single writer is the lock.
func (t *txn) TwinForUpdate(ctx context.Context, deviceID string) (*twin.Row, error) {
	var desired, reported, times string
	r := &twin.Row{}
	err := t.tx.QueryRowContext(ctx, `SELECT desired, desired_version, reported, reported_version, reported_times
		FROM device_twins WHERE device_id = ?`, deviceID).Scan(&desired, &r.DesiredVersion, &reported, &r.ReportedVersion, &times)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r.Desired, r.Reported, r.ReportedTimes = []byte(desired), []byte(reported), []byte(times)
	return r, nil
}

// SetReported implements twin.TxStore.
func (t *txn) SetReported(ctx context.Context, deviceID string, reported, times []byte, at time.Time) (int64, error) {
	var v int64
	err := t.tx.QueryRowContext(ctx, `INSERT INTO device_twins (device_id, reported, reported_version, reported_at, reported_times) VALUES (?,?,1,?,?)
		ON CONFLICT (device_id) DO UPDATE SET reported = excluded.reported, reported_times = excluded.reported_times,
			reported_version = device_twins.reported_version + 1, reported_at = excluded.reported_at
		RETURNING reported_version`,
		deviceID, string(reported), at.UnixMicro(), string(times)).Scan(&v)
	return v, err
}

const commandColumns = `id, device_id, command, payload, status, result, sends, created_at, expires_at,
	first_sent_at, sent_at, delivered_at, finished_at, updated_at, job_id`

func scanCommand(sc interface{ Scan(...any) error }) (commands.Command, error) {
	var c commands.Command
	var payload, result, job sql.NullString
	var created, expires, updated int64
	var first, sent, delivered, fin sql.NullInt64
	if err := sc.Scan(&c.ID, &c.DeviceID, &c.Command, &payload, &c.Status, &result, &c.Sends, &created, &expires,
		&first, &sent, &delivered, &fin, &updated, &job); err != nil {
		return c, err
	}
	if payload.Valid {
		c.Payload = []byte(payload.String)
	}
	if result.Valid {
		c.Result = []byte(result.String)
	}
	c.JobID = job.String
	c.CreatedAt, c.ExpiresAt, c.UpdatedAt = micros(created), micros(expires), micros(updated)
	c.FirstSentAt, c.SentAt, c.DeliveredAt, c.FinishedAt = nullMicros(first), nullMicros(sent), nullMicros(delivered), nullMicros(fin)
	return c, nil
}

func nullMicros(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := micros(v.Int64)
	return &t
}

// GetCommand returns a command; see commands.Store.
func (s *Store) GetCommand(ctx context.Context, id string) (*commands.Command, error) {
	c, err := scanCommand(s.r.QueryRowContext(ctx, `SELECT `+commandColumns+` FROM device_commands WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("command %s: %w", id, commands.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get command %s: %w", id, err)
	}
	return &c, nil
}

// ListCommands lists a device's commands, newest first.
func (s *Store) ListCommands(ctx context.Context, o commands.ListOptions) ([]commands.Command, error) {
	q := `SELECT ` + commandColumns + ` FROM device_commands WHERE device_id = ?`
	args := []any{o.DeviceID}
	if o.Status != "" {
		q += ` AND status = ?`
		args = append(args, o.Status)
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, max(o.Limit, 1))
	return s.queryCommands(ctx, q, args...)
}

// OpenCommands returns every unfinished command, oldest first.
func (s *Store) OpenCommands(ctx context.Context) ([]commands.Command, error) {
	return s.queryCommands(ctx, `SELECT `+commandColumns+` FROM device_commands WHERE status IN ('queued', 'sent', 'delivered') ORDER BY created_at, id`)
}

func (s *Store) queryCommands(ctx context.Context, q string, args ...any) ([]commands.Command, error) {
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list commands: %w", err)
	}
	defer rows.Close()
	out := []commands.Command{}
	for rows.Next() {
		c, err := scanCommand(rows)
		if err != nil {
			return nil, fmt.Errorf("list commands: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list commands: %w", err)
	}
	return out, nil
}

// GetTwin returns a device's twin, empty if it has none.
func (s *Store) GetTwin(ctx context.Context, deviceID string) (*twin.Twin, error) {
	t := &twin.Twin{DeviceID: deviceID, Desired: map[string]any{}, Reported: map[string]any{}}
	var desired, reported, times string
	var dAt, rAt sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT desired, desired_version, desired_at, reported, reported_version, reported_at, reported_times
		FROM device_twins WHERE device_id = ?`, deviceID).Scan(&desired, &t.DesiredVersion, &dAt, &reported, &t.ReportedVersion, &rAt, &times)
	if errors.Is(err, sql.ErrNoRows) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get twin %s: %w", deviceID, err)
	}
	if err := json.Unmarshal([]byte(desired), &t.Desired); err != nil {
		return nil, fmt.Errorf("decode desired of %s: %w", deviceID, err)
	}
	if err := json.Unmarshal([]byte(reported), &t.Reported); err != nil {
		return nil, fmt.Errorf("decode reported of %s: %w", deviceID, err)
	}
	if err := json.Unmarshal([]byte(times), &t.ReportedTimes); err != nil {
		return nil, fmt.Errorf("decode reported times of %s: %w", deviceID, err)
	}
	if dAt.Valid {
		v := micros(dAt.Int64)
		t.DesiredAt = &v
	}
	if rAt.Valid {
		v := micros(rAt.Int64)
		t.ReportedAt = &v
	}
	return t, nil
}

// DesiredTwins returns the twins with desired properties (reported ones
// are left empty).
func (s *Store) DesiredTwins(ctx context.Context) ([]twin.Twin, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT device_id, desired, desired_version, desired_at FROM device_twins WHERE desired_version > 0 ORDER BY device_id`)
	if err != nil {
		return nil, fmt.Errorf("list desired twins: %w", err)
	}
	defer rows.Close()
	out := []twin.Twin{}
	for rows.Next() {
		var t twin.Twin
		var desired string
		var at sql.NullInt64
		if err := rows.Scan(&t.DeviceID, &desired, &t.DesiredVersion, &at); err != nil {
			return nil, fmt.Errorf("list desired twins: %w", err)
		}
		if err := json.Unmarshal([]byte(desired), &t.Desired); err != nil {
			return nil, fmt.Errorf("decode desired of %s: %w", t.DeviceID, err)
		}
		if at.Valid {
			v := micros(at.Int64)
			t.DesiredAt = &v
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list desired twins: %w", err)
	}
	return out, nil
}
