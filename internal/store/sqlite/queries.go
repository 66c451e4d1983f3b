package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/blocks"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// micros converts a stored time.
func micros(us int64) time.Time { return time.UnixMicro(us).UTC() }

const deviceColumns = `id, type, name, grp, tags, metadata, status, connected, last_seen, metrics, disabled, created_at, updated_at` + deviceRegistryColumns

func scanDevice(sc interface{ Scan(...any) error }) (registry.Device, error) {
	var d registry.Device
	var tags string
	var meta, metrics sql.NullString
	var lastSeen sql.NullInt64
	var created, updated int64
	var x deviceExtra
	if err := sc.Scan(append([]any{&d.ID, &d.Type, &d.Name, &d.Group, &tags, &meta, &d.Status, &d.Connected,
		&lastSeen, &metrics, &d.Disabled, &created, &updated}, x.dest()...)...); err != nil {
		return d, err
	}
	if err := x.apply(&d); err != nil {
		return d, err
	}
	if err := json.Unmarshal([]byte(tags), &d.Tags); err != nil {
		return d, fmt.Errorf("decode tags of %s: %w", d.ID, err)
	}
	if len(d.Tags) == 0 {
		d.Tags = nil
	}
	if meta.Valid && meta.String != "" && meta.String != "null" {
		if err := json.Unmarshal([]byte(meta.String), &d.Metadata); err != nil {
			return d, fmt.Errorf("decode metadata of %s: %w", d.ID, err)
		}
	}
	if metrics.Valid && metrics.String != "" && metrics.String != "null" {
		if err := json.Unmarshal([]byte(metrics.String), &d.Metrics); err != nil {
			return d, fmt.Errorf("decode metrics of %s: %w", d.ID, err)
		}
	}
	if lastSeen.Valid {
		t := micros(lastSeen.Int64)
		d.LastSeen = &t
	}
	d.CreatedAt, d.UpdatedAt = micros(created), micros(updated)
	return d, nil
}

// GetDevice returns one device, or registry.ErrNotFound.
func (s *Store) GetDevice(ctx context.Context, id string) (*registry.Device, error) {
	d, err := scanDevice(s.r.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("get device %s: %w", id, registry.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get device %s: %w", id, err)
	}
	return &d, nil
}

// ListDevices lists devices by id, or by last seen (opts.Order).
func (s *Store) ListDevices(ctx context.Context, opts registry.ListOptions) ([]registry.Device, error) {
	q := `SELECT ` + deviceColumns + ` FROM devices WHERE 1`
	var args []any
	switch {
	case opts.Order != registry.OrderLastSeen:
		q += ` AND id > ?`
		args = append(args, opts.After)
	case opts.After == "":
	case opts.AfterSeen == nil:
		q += ` AND last_seen IS NULL AND id > ?`
		args = append(args, opts.After)
	default:
		// Keyset on (last_seen DESC, id): no index, the store sorts the
		// filtered rows (an index on last_seen would be rewritten with
		// every message a device sends).
		us := opts.AfterSeen.UnixMicro()
		q += ` AND (last_seen < ? OR (last_seen = ? AND id > ?) OR last_seen IS NULL)`
		args = append(args, us, us, opts.After)
	}
	if opts.Type != "" {
		q += ` AND type = ?`
		args = append(args, opts.Type)
	}
	if opts.Group != "" {
		q += ` AND grp = ?`
		args = append(args, opts.Group)
	}
	if opts.Status != "" {
		q += ` AND status = ?`
		args = append(args, opts.Status)
	}
	if opts.Connected != nil {
		q += ` AND connected = ?`
		args = append(args, *opts.Connected)
	}
	if opts.Tag != "" {
		q += ` AND EXISTS (SELECT 1 FROM json_each(devices.tags) WHERE json_each.value = ?)`
		args = append(args, opts.Tag)
	}
	if opts.Text != "" {
		// Ids are ASCII (SQLite's lower folds them); names may not be, so
		// they are folded as Go folds the text (see foldFunc).
		t := strings.ToLower(opts.Text)
		q += ` AND (instr(lower(id), ?) > 0 OR instr(` + foldFunc + `(name), ?) > 0)`
		args = append(args, t, t)
	}
	limit := opts.Limit
	if limit <= 0 {
		limit = 100
	}
	if opts.Order == registry.OrderLastSeen {
		q += ` ORDER BY last_seen IS NULL, last_seen DESC, id LIMIT ?`
	} else {
		q += ` ORDER BY id LIMIT ?`
	}
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []registry.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// AllCredentials returns the credentials of every device.
func (s *Store) AllCredentials(ctx context.Context) ([]registry.Credentials, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT d.id, d.type, c.mqtt_username, c.password_hash, c.api_key_hash, d.disabled`+credentialColumns+`
		FROM devices d JOIN credentials c ON c.device_id = d.id ORDER BY d.id`)
	if err != nil {
		return nil, fmt.Errorf("all credentials: %w", err)
	}
	defer rows.Close()
	var out []registry.Credentials
	for rows.Next() {
		var c registry.Credentials
		var x credentialExtra
		if err := rows.Scan(append([]any{&c.DeviceID, &c.DeviceType, &c.MQTTUsername, &c.PasswordHash, &c.APIKeyHash, &c.Disabled}, x.dest(&c)...)...); err != nil {
			return nil, fmt.Errorf("all credentials: %w", err)
		}
		x.apply(&c)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("all credentials: %w", err)
	}
	return out, nil
}

// QueryReadings returns a page of one device's readings, newest first.
func (s *Store) QueryReadings(ctx context.Context, q readings.Query) (readings.Page, error) {
	limit := q.PageSize()
	// The device key is looked up in a subquery so that the whole query
	// is one range scan of the (dev, ts) index.
	sqlq := `SELECT id, stream, ts, received_at, message_id, data FROM readings
		WHERE dev = (SELECT key FROM devices WHERE id = ?)`
	args := []any{q.DeviceID}
	if q.Stream != "" {
		sqlq += ` AND stream = ?`
		args = append(args, q.Stream)
	}
	if !q.From.IsZero() {
		sqlq += ` AND ts >= ?`
		args = append(args, q.From.UnixMicro())
	}
	if !q.To.IsZero() {
		sqlq += ` AND ts < ?`
		args = append(args, q.To.UnixMicro())
	}
	if q.Cursor != "" {
		ts, id, err := readings.DecodeCursor(q.Cursor)
		if err != nil {
			return readings.Page{}, fmt.Errorf("query readings: %w", err)
		}
		sqlq += ` AND (ts < ? OR (ts = ? AND id < ?))`
		args = append(args, ts, ts, id)
	}
	if q.Field != "" {
		sqlq += ` AND EXISTS (SELECT 1 FROM json_each(data) WHERE key = ?)`
		args = append(args, q.Field)
	}
	sqlq += ` ORDER BY ts DESC, id DESC LIMIT ?`
	args = append(args, limit+1)
	rows, err := s.r.QueryContext(ctx, sqlq, args...)
	if err != nil {
		return readings.Page{}, fmt.Errorf("query readings: %w", err)
	}
	defer rows.Close()
	var raw []readings.Record
	for rows.Next() {
		var r readings.Record
		var ts, recv int64
		var data string
		if err := rows.Scan(&r.ID, &r.Stream, &ts, &recv, &r.MessageID, &data); err != nil {
			return readings.Page{}, fmt.Errorf("query readings: %w", err)
		}
		if err := json.Unmarshal([]byte(data), &r.Values); err != nil {
			return readings.Page{}, fmt.Errorf("decode reading %d: %w", r.ID, err)
		}
		if q.Field != "" {
			r.Values = map[string]any{q.Field: r.Values[q.Field]}
		}
		r.DeviceID, r.Time, r.ReceivedAt = q.DeviceID, micros(ts), micros(recv)
		raw = append(raw, r)
	}
	if err := rows.Err(); err != nil {
		return readings.Page{}, fmt.Errorf("query readings: %w", err)
	}
	// The compacted readings: the blocks' newest limit+1 that match.
	b := &blockScan{deviceID: q.DeviceID, stream: q.Stream, from: math.MinInt64, need: limit + 1}
	if !q.From.IsZero() {
		b.from = q.From.UnixMicro()
	}
	if !q.To.IsZero() {
		b.to = q.To.UnixMicro()
	}
	if q.Cursor != "" {
		b.afterTS, b.afterID, _ = readings.DecodeCursor(q.Cursor)
		b.cursor = true
	}
	if q.Field != "" {
		// The blocks decode the field's values only.
		b.field = q.Field
		b.keep = func(r *blocks.Reading) bool {
			_, ok := r.Values[q.Field]
			return ok
		}
	}
	// The head is copied before the blocks are read: a reading that a
	// compaction moves in between is then in both (and deduplicated),
	// never in neither.
	head, err := s.headQuery(q, limit+1)
	if err != nil {
		return readings.Page{}, fmt.Errorf("query readings: %w", err)
	}
	if err := s.scanBlocks(ctx, b); err != nil {
		return readings.Page{}, fmt.Errorf("query readings: %w", err)
	}
	all := raw
	if len(b.collected) > 0 || len(head) > 0 {
		all = append(append(raw, head...), b.collected...)
		sortNewest(all)
		all = dedupeNewest(all)
	}
	page := readings.Page{Readings: []readings.Record{}}
	if len(all) > limit {
		last := all[limit-1]
		page.Next = readings.EncodeCursor(last.Time.UnixMicro(), last.ID)
		all = all[:limit]
	}
	page.Readings = append(page.Readings, all...)
	return page, nil
}

// CountReadings counts one device's readings, or all with deviceID "":
// rows, blocks and the head, under cmu so that no reading moves between
// them meanwhile.
func (s *Store) CountReadings(ctx context.Context, deviceID string) (int64, error) {
	s.rh.cmu.Lock()
	defer s.rh.cmu.Unlock()
	var n int64
	var err error
	if deviceID == "" {
		err = s.r.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM readings) + (SELECT coalesce(sum(n), 0) FROM reading_blocks)`).Scan(&n)
	} else {
		err = s.r.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM readings WHERE dev = (SELECT key FROM devices WHERE id = ?1))
			+ (SELECT coalesce(sum(n), 0) FROM reading_blocks WHERE dev = (SELECT key FROM devices WHERE id = ?1))`, deviceID).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("count readings: %w", err)
	}
	return n + s.headCount(deviceID), nil
}

// ReadEvents returns up to limit events with Seq > after, in Seq order.
func (s *Store) ReadEvents(ctx context.Context, after int64, limit int) ([]events.Event, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.r.QueryContext(ctx, `SELECT seq, type, time, device_id, device_type, args FROM events WHERE seq > ? ORDER BY seq LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []events.Event
	for rows.Next() {
		var e events.Event
		var t int64
		var args sql.NullString
		if err := rows.Scan(&e.Seq, &e.Type, &t, &e.DeviceID, &e.DeviceType, &args); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		e.Time = micros(t)
		if e.Args, err = events.DecodeArgs(e.Type, []byte(args.String)); err != nil {
			return nil, fmt.Errorf("read event %d: %w", e.Seq, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// LastSeq returns the highest event Seq stored, 0 for none.
func (s *Store) LastSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.r.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM events`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("last event seq: %w", err)
	}
	return seq, nil
}

// CreateToken stores a new token.
func (s *Store) CreateToken(ctx context.Context, t access.Token) error {
	var revoked any
	if t.RevokedAt != nil {
		revoked = t.RevokedAt.UnixMicro()
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO tokens (id, name, role, hash, created_at, revoked_at) VALUES (?,?,?,?,?,?)`,
		t.ID, t.Name, string(t.Role), t.Hash, t.CreatedAt.UnixMicro(), revoked)
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

const tokenColumns = `id, name, role, hash, created_at, revoked_at`

func scanToken(sc interface{ Scan(...any) error }) (access.Token, error) {
	var t access.Token
	var created int64
	var revoked sql.NullInt64
	if err := sc.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &created, &revoked); err != nil {
		return t, err
	}
	t.CreatedAt = micros(created)
	if revoked.Valid {
		r := micros(revoked.Int64)
		t.RevokedAt = &r
	}
	return t, nil
}

// TokenByHash returns the token with this hash, or access.ErrNotFound.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (*access.Token, error) {
	t, err := scanToken(s.r.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = ?`, hash))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("token by hash: %w", access.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("token by hash: %w", err)
	}
	return &t, nil
}

// ListTokens lists every token, oldest first.
func (s *Store) ListTokens(ctx context.Context) ([]access.Token, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []access.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// RevokeToken marks a token revoked at at; revoking twice keeps the first
// time.
func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time) error {
	res, err := s.w.ExecContext(ctx, `UPDATE tokens SET revoked_at = coalesce(revoked_at, ?) WHERE id = ?`, at.UnixMicro(), id)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("revoke token %s: %w", id, access.ErrNotFound)
	}
	return nil
}
