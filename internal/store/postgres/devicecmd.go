package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/twin"
)

var (
	_ commands.Store = (*Store)(nil)
	_ twin.Store     = (*Store)(nil)
)

// jsonArg binds pre-encoded JSON for a jsonb column, or NULL.
func jsonArg(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// InsertCommand implements commands.TxStore.
func (t *txn) InsertCommand(ctx context.Context, deviceID string, n *commands.Command) (bool, error) {
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	var job *string
	if n.JobID != "" {
		job = &n.JobID
	}
	tag, err := tx.Exec(ctx, `INSERT INTO device_commands (id, device_id, command, payload, status, result, sends,
		created_at, expires_at, first_sent_at, sent_at, updated_at, job_id)
		VALUES ($1,$2,$3,$4::jsonb,$5,$6::jsonb,$7,$8,$9,$10,$11,$12,$13) ON CONFLICT (id) DO NOTHING`,
		n.ID, deviceID, n.Command, jsonArg(n.Payload), n.Status, jsonArg(n.Result), n.Sends,
		n.CreatedAt, n.ExpiresAt, n.FirstSentAt, n.SentAt, n.UpdatedAt, job)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// UpdateCommand implements commands.TxStore.
func (t *txn) UpdateCommand(ctx context.Context, deviceID string, c *commands.Change, finished bool) (bool, error) {
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	inc := 0
	if c.SentAt != nil {
		inc = 1
	}
	var fin *time.Time
	if finished {
		at := c.At
		fin = &at
	}
	q := `UPDATE device_commands SET status = $1, result = coalesce($2::jsonb, result), sent_at = coalesce($3, sent_at),
		first_sent_at = coalesce(first_sent_at, $3), sends = sends + $4, delivered_at = coalesce(delivered_at, $5),
		finished_at = coalesce($6, finished_at), updated_at = $7 WHERE id = $8 AND device_id = $9`
	args := []any{c.Status, jsonArg(c.Result), c.SentAt, inc, c.DeliveredAt, fin, c.At, c.ID, deviceID}
	ph := make([]string, len(c.From))
	for i, f := range c.From {
		args = append(args, f)
		ph[i] = "$" + strconv.Itoa(len(args))
	}
	q += ` AND status IN (` + strings.Join(ph, ",") + `)`
	tag, err := tx.Exec(ctx, q, args...)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// SetDesired implements twin.TxStore.
func (t *txn) SetDesired(ctx context.Context, deviceID string, desired []byte, version int64, at time.Time) (bool, error) {
	tx, err := t.db(ctx)
	if err != nil {
		return false, err
	}
	var q string
	args := []any{deviceID, string(desired), at}
	if version == 1 {
		q = `INSERT INTO device_twins (device_id, desired, desired_version, desired_at) VALUES ($1, $2::jsonb, 1, $3)
			ON CONFLICT (device_id) DO UPDATE SET desired = excluded.desired, desired_version = 1, desired_at = excluded.desired_at
			WHERE device_twins.desired_version = 0`
	} else {
		q = `UPDATE device_twins SET desired = $2::jsonb, desired_version = $4, desired_at = $3
			WHERE device_id = $1 AND desired_version = $4 - 1`
		args = append(args, version)
	}
	tag, err := tx.Exec(ctx, q, args...)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// TwinForUpdate implements twin.TxStore. FOR UPDATE: another node's
// transaction must not merge into the same version at the same time.
func (t *txn) TwinForUpdate(ctx context.Context, deviceID string) (*twin.Row, error) {
	tx, err := t.db(ctx)
	if err != nil {
		return nil, err
	}
	r := &twin.Row{}
	var desired, reported, times string
	err = tx.QueryRow(ctx, `SELECT desired::text, desired_version, reported::text, reported_version, reported_times::text
		FROM device_twins WHERE device_id = $1 FOR UPDATE`, deviceID).Scan(&desired, &r.DesiredVersion, &reported, &r.ReportedVersion, &times)
	if errNoRows(err) {
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
	tx, err := t.db(ctx)
	if err != nil {
		return 0, err
	}
	var v int64
	err = tx.QueryRow(ctx, `INSERT INTO device_twins (device_id, reported, reported_version, reported_at, reported_times) VALUES ($1, $2::jsonb, 1, $3, $4::jsonb)
		ON CONFLICT (device_id) DO UPDATE SET reported = excluded.reported, reported_times = excluded.reported_times,
			reported_version = device_twins.reported_version + 1, reported_at = excluded.reported_at
		RETURNING reported_version`,
		deviceID, string(reported), at, string(times)).Scan(&v)
	return v, err
}

const commandColumns = `id, device_id, command, payload::text, status, result::text, sends, created_at, expires_at,
	first_sent_at, sent_at, delivered_at, finished_at, updated_at, coalesce(job_id, '')`

func scanCommand(sc interface{ Scan(...any) error }) (commands.Command, error) {
	var c commands.Command
	var payload, result *string
	if err := sc.Scan(&c.ID, &c.DeviceID, &c.Command, &payload, &c.Status, &result, &c.Sends,
		&c.CreatedAt, &c.ExpiresAt, &c.FirstSentAt, &c.SentAt, &c.DeliveredAt, &c.FinishedAt, &c.UpdatedAt, &c.JobID); err != nil {
		return c, err
	}
	if payload != nil {
		c.Payload = []byte(*payload)
	}
	if result != nil {
		c.Result = []byte(*result)
	}
	c.CreatedAt, c.ExpiresAt, c.UpdatedAt = c.CreatedAt.UTC(), c.ExpiresAt.UTC(), c.UpdatedAt.UTC()
	for _, p := range []*time.Time{c.FirstSentAt, c.SentAt, c.DeliveredAt, c.FinishedAt} {
		if p != nil {
			*p = p.UTC()
		}
	}
	return c, nil
}

// GetCommand returns a command; see commands.Store.
func (s *Store) GetCommand(ctx context.Context, id string) (*commands.Command, error) {
	c, err := scanCommand(s.pool.QueryRow(ctx, `SELECT `+commandColumns+` FROM device_commands WHERE id = $1`, id))
	if errNoRows(err) {
		return nil, fmt.Errorf("command %s: %w", id, commands.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get command %s: %w", id, err)
	}
	return &c, nil
}

// ListCommands lists a device's commands, newest first.
func (s *Store) ListCommands(ctx context.Context, o commands.ListOptions) ([]commands.Command, error) {
	q := `SELECT ` + commandColumns + ` FROM device_commands WHERE device_id = $1`
	args := []any{o.DeviceID}
	if o.Status != "" {
		args = append(args, o.Status)
		q += ` AND status = $2`
	}
	args = append(args, max(o.Limit, 1))
	q += ` ORDER BY created_at DESC, id DESC LIMIT $` + strconv.Itoa(len(args))
	return s.queryCommands(ctx, q, args...)
}

// OpenCommands returns every unfinished command, oldest first.
func (s *Store) OpenCommands(ctx context.Context) ([]commands.Command, error) {
	return s.queryCommands(ctx, `SELECT `+commandColumns+` FROM device_commands WHERE status IN ('queued', 'sent', 'delivered') ORDER BY created_at, id`)
}

func (s *Store) queryCommands(ctx context.Context, q string, args ...any) ([]commands.Command, error) {
	rows, err := s.pool.Query(ctx, q, args...)
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
	var desired, reported, times []byte
	err := s.pool.QueryRow(ctx, `SELECT desired::text, desired_version, desired_at, reported::text, reported_version, reported_at, reported_times::text
		FROM device_twins WHERE device_id = $1`, deviceID).Scan(&desired, &t.DesiredVersion, &t.DesiredAt, &reported, &t.ReportedVersion, &t.ReportedAt, &times)
	if errNoRows(err) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get twin %s: %w", deviceID, err)
	}
	if err := json.Unmarshal(desired, &t.Desired); err != nil {
		return nil, fmt.Errorf("decode desired of %s: %w", deviceID, err)
	}
	if err := json.Unmarshal(reported, &t.Reported); err != nil {
		return nil, fmt.Errorf("decode reported of %s: %w", deviceID, err)
	}
	if err := json.Unmarshal(times, &t.ReportedTimes); err != nil {
		return nil, fmt.Errorf("decode reported times of %s: %w", deviceID, err)
	}
	for _, p := range []*time.Time{t.DesiredAt, t.ReportedAt} {
		if p != nil {
			*p = p.UTC()
		}
	}
	return t, nil
}

// DesiredTwins returns the twins with desired properties (reported ones
// are left empty).
func (s *Store) DesiredTwins(ctx context.Context) ([]twin.Twin, error) {
	rows, err := s.pool.Query(ctx, `SELECT device_id, desired::text, desired_version, desired_at FROM device_twins WHERE desired_version > 0 ORDER BY device_id`)
	if err != nil {
		return nil, fmt.Errorf("list desired twins: %w", err)
	}
	defer rows.Close()
	out := []twin.Twin{}
	for rows.Next() {
		var t twin.Twin
		var desired []byte
		if err := rows.Scan(&t.DeviceID, &desired, &t.DesiredVersion, &t.DesiredAt); err != nil {
			return nil, fmt.Errorf("list desired twins: %w", err)
		}
		if err := json.Unmarshal(desired, &t.Desired); err != nil {
			return nil, fmt.Errorf("decode desired of %s: %w", t.DeviceID, err)
		}
		if t.DesiredAt != nil {
			*t.DesiredAt = t.DesiredAt.UTC()
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list desired twins: %w", err)
	}
	return out, nil
}
