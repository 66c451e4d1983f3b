package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/twin"
)

var (
	_ commands.Store = (*Store)(nil)
	_ twin.Store     = (*Store)(nil)
)

// commitDeviceCmd writes the command and twin parts of a batch (migration
// 00030), in batch order, after its registry part.
func (w *writeState) commitDeviceCmd(ctx context.Context, batch []*commit.Change) error {
	for _, ch := range batch {
		if ch.Err != nil || ch.Duplicate {
			continue
		}
		if ch.Command != nil {
			if err := w.commandChange(ctx, ch); err != nil {
				return err
			}
		}
		if ch.Err == nil && ch.Twin != nil {
			if err := w.twinChange(ctx, ch); err != nil {
				return err
			}
		}
	}
	return nil
}

func finalStatus(s string) bool {
	return s == commands.StatusSucceeded || s == commands.StatusFailed || s == commands.StatusExpired
}

func (w *writeState) commandChange(ctx context.Context, ch *commit.Change) error {
	c := ch.Command
	if n := c.Create; n != nil {
		var sent any
		if n.SentAt != nil {
			sent = n.SentAt.UnixMicro()
		}
		res, err := w.tx.ExecContext(ctx, `INSERT INTO device_commands (id, device_id, command, payload, status, result, sends,
			created_at, expires_at, sent_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING`,
			n.ID, ch.DeviceID, n.Command, jsonText(n.Payload), n.Status, jsonText(n.Result), n.Sends,
			n.CreatedAt.UnixMicro(), n.ExpiresAt.UnixMicro(), sent, n.UpdatedAt.UnixMicro())
		if err != nil {
			return fmt.Errorf("insert command %s: %w", n.ID, err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			ch.Err = fmt.Errorf("command %s exists: %w", n.ID, commit.ErrConflict)
		}
		return nil
	}
	var sent, inc, fin any = nil, 0, nil
	if c.SentAt != nil {
		sent, inc = c.SentAt.UnixMicro(), 1
	}
	if finalStatus(c.Status) {
		fin = c.At.UnixMicro()
	}
	q := `UPDATE device_commands SET status = ?, result = coalesce(?, result), sent_at = coalesce(?, sent_at),
		sends = sends + ?, finished_at = coalesce(?, finished_at), updated_at = ? WHERE id = ? AND device_id = ?`
	args := []any{c.Status, jsonText(c.Result), sent, inc, fin, c.At.UnixMicro(), c.ID, ch.DeviceID}
	if len(c.From) > 0 {
		q += ` AND status IN (?` + strings.Repeat(",?", len(c.From)-1) + `)`
		for _, f := range c.From {
			args = append(args, f)
		}
	}
	res, err := w.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("update command %s: %w", c.ID, err)
	}
	if k, _ := res.RowsAffected(); k == 0 {
		ch.Err = fmt.Errorf("command %s: %w", c.ID, commit.ErrConflict)
	}
	return nil
}

func (w *writeState) twinChange(ctx context.Context, ch *commit.Change) error {
	t, at := ch.Twin, ch.Twin.At.UnixMicro()
	if t.Desired != nil {
		var res sql.Result
		var err error
		if t.DesiredVersion == 1 {
			res, err = w.tx.ExecContext(ctx, `INSERT INTO device_twins (device_id, desired, desired_version, desired_at) VALUES (?,?,1,?)
				ON CONFLICT (device_id) DO UPDATE SET desired = excluded.desired, desired_version = 1, desired_at = excluded.desired_at
				WHERE device_twins.desired_version = 0`, ch.DeviceID, string(t.Desired), at)
		} else {
			res, err = w.tx.ExecContext(ctx, `UPDATE device_twins SET desired = ?, desired_version = ?, desired_at = ?
				WHERE device_id = ? AND desired_version = ?`, string(t.Desired), t.DesiredVersion, at, ch.DeviceID, t.DesiredVersion-1)
		}
		if err != nil {
			return fmt.Errorf("store desired of %s: %w", ch.DeviceID, err)
		}
		if k, _ := res.RowsAffected(); k == 0 {
			ch.Err = fmt.Errorf("desired version %d of %s: %w", t.DesiredVersion, ch.DeviceID, commit.ErrConflict)
			return nil
		}
	}
	if t.Reported != nil {
		var cur string
		err := w.tx.QueryRowContext(ctx, `SELECT reported FROM device_twins WHERE device_id = ?`, ch.DeviceID).Scan(&cur)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read reported of %s: %w", ch.DeviceID, err)
		}
		merged, err := mergeReported(cur, t.Reported)
		if err != nil {
			return fmt.Errorf("merge reported of %s: %w", ch.DeviceID, err)
		}
		if _, err := w.tx.ExecContext(ctx, `INSERT INTO device_twins (device_id, reported, reported_version, reported_at) VALUES (?,?,1,?)
			ON CONFLICT (device_id) DO UPDATE SET reported = excluded.reported,
				reported_version = device_twins.reported_version + 1, reported_at = excluded.reported_at`,
			ch.DeviceID, string(merged), at); err != nil {
			return fmt.Errorf("store reported of %s: %w", ch.DeviceID, err)
		}
	}
	return nil
}

// mergeReported applies a reported patch to the stored reported object.
func mergeReported(cur string, patch []byte) ([]byte, error) {
	var target, p map[string]any
	if cur != "" {
		if err := json.Unmarshal([]byte(cur), &target); err != nil {
			return nil, err
		}
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, err
	}
	return json.Marshal(twin.MergePatch(target, p))
}

const commandColumns = `id, device_id, command, payload, status, result, sends, created_at, expires_at, sent_at, finished_at, updated_at`

func scanCommand(sc interface{ Scan(...any) error }) (commands.Command, error) {
	var c commands.Command
	var payload, result sql.NullString
	var created, expires, updated int64
	var sent, fin sql.NullInt64
	if err := sc.Scan(&c.ID, &c.DeviceID, &c.Command, &payload, &c.Status, &result, &c.Sends, &created, &expires, &sent, &fin, &updated); err != nil {
		return c, err
	}
	if payload.Valid {
		c.Payload = []byte(payload.String)
	}
	if result.Valid {
		c.Result = []byte(result.String)
	}
	c.CreatedAt, c.ExpiresAt, c.UpdatedAt = micros(created), micros(expires), micros(updated)
	if sent.Valid {
		t := micros(sent.Int64)
		c.SentAt = &t
	}
	if fin.Valid {
		t := micros(fin.Int64)
		c.FinishedAt = &t
	}
	return c, nil
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

// OpenCommands returns every pending or sent command.
func (s *Store) OpenCommands(ctx context.Context) ([]commands.Command, error) {
	return s.queryCommands(ctx, `SELECT `+commandColumns+` FROM device_commands WHERE status IN ('pending', 'sent') ORDER BY created_at, id`)
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
	var desired, reported string
	var dAt, rAt sql.NullInt64
	err := s.r.QueryRowContext(ctx, `SELECT desired, desired_version, desired_at, reported, reported_version, reported_at
		FROM device_twins WHERE device_id = ?`, deviceID).Scan(&desired, &t.DesiredVersion, &dAt, &reported, &t.ReportedVersion, &rAt)
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
