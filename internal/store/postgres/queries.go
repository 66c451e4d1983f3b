package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

const deviceColumns = `id, type, name, grp, tags, metadata, status, connected, last_seen, metrics, disabled, created_at, updated_at` + deviceRegistryColumns

func scanDevice(row pgx.Row) (registry.Device, error) {
	var d registry.Device
	var tags, meta, metrics []byte
	var lastSeen *time.Time
	var x deviceExtra
	if err := row.Scan(append([]any{&d.ID, &d.Type, &d.Name, &d.Group, &tags, &meta, &d.Status, &d.Connected,
		&lastSeen, &metrics, &d.Disabled, &d.CreatedAt, &d.UpdatedAt}, x.dest()...)...); err != nil {
		return d, err
	}
	if err := x.apply(&d); err != nil {
		return d, err
	}
	if err := json.Unmarshal(tags, &d.Tags); err != nil {
		return d, fmt.Errorf("decode tags of %s: %w", d.ID, err)
	}
	if len(d.Tags) == 0 {
		d.Tags = nil
	}
	for _, f := range []struct {
		raw []byte
		dst *map[string]any
	}{{meta, &d.Metadata}, {metrics, &d.Metrics}} {
		if len(f.raw) > 0 {
			if err := json.Unmarshal(f.raw, f.dst); err != nil {
				return d, fmt.Errorf("decode device %s: %w", d.ID, err)
			}
		}
	}
	if lastSeen != nil {
		t := lastSeen.UTC()
		d.LastSeen = &t
	}
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	return d, nil
}

// GetDevice returns one device, or registry.ErrNotFound.
func (s *Store) GetDevice(ctx context.Context, id string) (*registry.Device, error) {
	d, err := scanDevice(s.pool.QueryRow(ctx, `SELECT `+deviceColumns+` FROM devices WHERE id = $1`, id))
	if errNoRows(err) {
		return nil, fmt.Errorf("get device %s: %w", id, registry.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get device %s: %w", id, err)
	}
	return &d, nil
}

// ListDevices lists devices by id, or by last seen (opts.Order).
func (s *Store) ListDevices(ctx context.Context, opts registry.ListOptions) ([]registry.Device, error) {
	q := `SELECT ` + deviceColumns + ` FROM devices WHERE true`
	var args []any
	add := func(cond string, v any) {
		args = append(args, v)
		q += fmt.Sprintf(" AND %s = $%d", cond, len(args))
	}
	switch {
	case opts.Order != registry.OrderLastSeen:
		args = append(args, opts.After)
		q += fmt.Sprintf(" AND id > $%d", len(args))
	case opts.After == "":
	case opts.AfterSeen == nil:
		args = append(args, opts.After)
		q += fmt.Sprintf(` AND last_seen IS NULL AND id COLLATE "C" > $%d`, len(args))
	default:
		// Keyset on (last_seen DESC, id); see the SQLite store.
		args = append(args, opts.AfterSeen.UTC(), opts.After)
		q += fmt.Sprintf(` AND (last_seen < $%[1]d OR (last_seen = $%[1]d AND id COLLATE "C" > $%[2]d) OR last_seen IS NULL)`, len(args)-1, len(args))
	}
	if opts.Type != "" {
		add("type", opts.Type)
	}
	if opts.Group != "" {
		add("grp", opts.Group)
	}
	if opts.Status != "" {
		add("status", opts.Status)
	}
	if opts.Connected != nil {
		add("connected", *opts.Connected)
	}
	if opts.Tag != "" {
		args = append(args, opts.Tag)
		q += fmt.Sprintf(" AND tags @> jsonb_build_array($%d::text)", len(args))
	}
	if opts.Text != "" {
		args = append(args, strings.ToLower(opts.Text))
		q += fmt.Sprintf(" AND (strpos(lower(id), $%[1]d) > 0 OR strpos(lower(name), $%[1]d) > 0)", len(args))
	}
	limit := opts.Limit
	if limit <= 0 {
		limit = 100
	}
	args = append(args, limit)
	if opts.Order == registry.OrderLastSeen {
		q += fmt.Sprintf(` ORDER BY last_seen DESC NULLS LAST, id COLLATE "C" LIMIT $%d`, len(args))
	} else {
		q += fmt.Sprintf(" ORDER BY id COLLATE \"C\" LIMIT $%d", len(args))
	}
	rows, err := s.pool.Query(ctx, q, args...)
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
	rows, err := s.pool.Query(ctx, `SELECT d.id, d.type, c.mqtt_username, c.password_hash, c.api_key_hash, d.disabled`+credentialColumns+`
		FROM devices d JOIN credentials c ON c.device_id = d.id ORDER BY d.id`)
	if err != nil {
		return nil, fmt.Errorf("all credentials: %w", err)
	}
	var c registry.Credentials
	var out []registry.Credentials
	if _, err := pgx.ForEachRow(rows, append([]any{&c.DeviceID, &c.DeviceType, &c.MQTTUsername, &c.PasswordHash, &c.APIKeyHash, &c.Disabled}, credentialDest(&c)...), func() error {
		if c.PrevUntil != nil {
			t := c.PrevUntil.UTC()
			c.PrevUntil = &t
		}
		out = append(out, c)
		c = registry.Credentials{}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("all credentials: %w", err)
	}
	return out, nil
}

// DeviceCredentials returns one device's credentials (ok false: no such
// device, or none): a cluster node refreshes its credential view with it
// when another node changed them.
func (s *Store) DeviceCredentials(ctx context.Context, id string) (registry.Credentials, bool, error) {
	var c registry.Credentials
	err := s.pool.QueryRow(ctx, `SELECT d.id, d.type, c.mqtt_username, c.password_hash, c.api_key_hash, d.disabled`+credentialColumns+`
		FROM devices d JOIN credentials c ON c.device_id = d.id WHERE d.id = $1`, id).
		Scan(append([]any{&c.DeviceID, &c.DeviceType, &c.MQTTUsername, &c.PasswordHash, &c.APIKeyHash, &c.Disabled}, credentialDest(&c)...)...)
	if errNoRows(err) {
		return registry.Credentials{}, false, nil
	}
	if err != nil {
		return registry.Credentials{}, false, fmt.Errorf("credentials of %s: %w", id, err)
	}
	if c.PrevUntil != nil {
		t := c.PrevUntil.UTC()
		c.PrevUntil = &t
	}
	return c, true, nil
}

// DeviceByAPIKey implements registry.KeyReader: the device whose current
// or previous API key hashes to hash.
func (s *Store) DeviceByAPIKey(ctx context.Context, hash []byte) (string, bool, error) {
	var id string
	err := s.pool.QueryRow(ctx, `SELECT device_id FROM credentials WHERE api_key_hash = $1 OR prev_api_key_hash = $1 LIMIT 1`, hash).Scan(&id)
	if errNoRows(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("device by api key: %w", err)
	}
	return id, true, nil
}

// A page of readings is read in time windows, newest first, until it is
// full, the rest of the history last. readings is partitioned by day: a
// query without a time range plans and starts a scan of every partition
// (with a year of days, 40-150 ms of planning alone), one with a range
// only the days in it. The first window is a day; the next is sized from
// the rate the windows so far found (a quarter more than the page still
// needs at that rate, at least a day; eight times the span so far when
// they found none), so a device that reports steadily fills its page in
// one or two queries. A window that would reach further back than
// readingWindowMax is the rest.
const (
	readingWindowFirst = 24 * time.Hour
	readingWindowMax   = 400 * 24 * time.Hour
)

// nextReadingWindow is the span of the next window after covered, in
// which found readings were found, when need more are needed.
func nextReadingWindow(covered time.Duration, found, need int) time.Duration {
	if found == 0 {
		return 8 * covered
	}
	return max(time.Duration(float64(covered)/float64(found)*float64(need)*1.25), readingWindowFirst)
}

// QueryReadings returns a page of one device's readings, newest first.
func (s *Store) QueryReadings(ctx context.Context, q readings.Query) (readings.Page, error) {
	limit := q.PageSize()
	sqlq := `SELECT id, stream, ts, received_at, message_id, data FROM readings WHERE device_id = $1`
	args := []any{q.DeviceID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.Stream != "" {
		sqlq += ` AND stream = ` + arg(q.Stream)
	}
	// anchor is the newest time the page can hold (now for no bound:
	// readings from the future are in the first window too).
	anchor := time.Now()
	if !q.To.IsZero() {
		sqlq += ` AND ts < ` + arg(q.To)
		anchor = q.To
	}
	if q.Cursor != "" {
		ts, id, err := readings.DecodeCursor(q.Cursor)
		if err != nil {
			return readings.Page{}, fmt.Errorf("query readings: %w", err)
		}
		at := time.UnixMicro(ts)
		sqlq += ` AND (ts, id) < (` + arg(at) + `, ` + arg(id) + `)`
		if at.Before(anchor) {
			anchor = at
		}
	}
	if q.Field != "" {
		sqlq += ` AND jsonb_exists(data, ` + arg(q.Field) + `)`
	}
	var out []readings.Record
	var upper time.Time // the previous window's start; zero: none
	var covered time.Duration
	for span := readingWindowFirst; len(out) <= limit; span = nextReadingWindow(covered, len(out), limit+1-len(out)) {
		covered += span
		lower, last := anchor.Add(-covered), covered > readingWindowMax
		if last || !q.From.IsZero() && !lower.After(q.From) {
			lower, last = q.From, true
		}
		wq, wargs := sqlq, slices.Clone(args)
		warg := func(v any) string {
			wargs = append(wargs, v)
			return "$" + strconv.Itoa(len(wargs))
		}
		if !lower.IsZero() {
			wq += ` AND ts >= ` + warg(lower)
		}
		if !upper.IsZero() {
			wq += ` AND ts < ` + warg(upper)
		}
		wq += ` ORDER BY ts DESC, id DESC LIMIT ` + warg(limit+1-len(out))
		var err error
		if out, err = s.appendReadings(ctx, out, q, wq, wargs); err != nil {
			return readings.Page{}, fmt.Errorf("query readings: %w", err)
		}
		if last {
			break
		}
		upper = lower
	}
	page := readings.Page{Readings: out}
	if len(out) > limit {
		page.Readings = out[:limit]
		last := page.Readings[limit-1]
		page.Next = readings.EncodeCursor(last.Time.UnixMicro(), last.ID)
	}
	if page.Readings == nil {
		page.Readings = []readings.Record{}
	}
	return page, nil
}

// appendReadings appends the readings that sqlq selects to out.
func (s *Store) appendReadings(ctx context.Context, out []readings.Record, q readings.Query, sqlq string, args []any) ([]readings.Record, error) {
	rows, err := s.pool.Query(ctx, sqlq, args...)
	if err != nil {
		return out, err
	}
	defer rows.Close()
	for rows.Next() {
		var r readings.Record
		var data []byte
		if err := rows.Scan(&r.ID, &r.Stream, &r.Time, &r.ReceivedAt, &r.MessageID, &data); err != nil {
			return out, err
		}
		if err := json.Unmarshal(data, &r.Values); err != nil {
			return out, fmt.Errorf("decode reading %d: %w", r.ID, err)
		}
		if q.Field != "" {
			r.Values = map[string]any{q.Field: r.Values[q.Field]}
		}
		r.DeviceID, r.Time, r.ReceivedAt = q.DeviceID, r.Time.UTC(), r.ReceivedAt.UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}

// CountReadings counts one device's readings, or all with deviceID "".
func (s *Store) CountReadings(ctx context.Context, deviceID string) (int64, error) {
	var n int64
	var err error
	if deviceID == "" {
		err = s.pool.QueryRow(ctx, `SELECT count(*) FROM readings`).Scan(&n)
	} else {
		err = s.pool.QueryRow(ctx, `SELECT count(*) FROM readings WHERE device_id = $1`, deviceID).Scan(&n)
	}
	if err != nil {
		return 0, fmt.Errorf("count readings: %w", err)
	}
	return n, nil
}

// ReadEvents returns up to limit events with Seq > after, in Seq order.
func (s *Store) ReadEvents(ctx context.Context, after int64, limit int) ([]events.Event, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.pool.Query(ctx, `SELECT seq, type, time, device_id, device_type, args::text FROM events WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []events.Event
	for rows.Next() {
		var e events.Event
		var args *string
		if err := rows.Scan(&e.Seq, &e.Type, &e.Time, &e.DeviceID, &e.DeviceType, &args); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		e.Time = e.Time.UTC()
		var raw []byte
		if args != nil {
			raw = []byte(*args)
		}
		if e.Args, err = events.DecodeArgs(e.Type, raw); err != nil {
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
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(seq), 0) FROM events`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("last event seq: %w", err)
	}
	return seq, nil
}

// CreateToken stores a new token.
func (s *Store) CreateToken(ctx context.Context, t access.Token) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO tokens (id, name, role, hash, created_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6)`,
		t.ID, t.Name, string(t.Role), t.Hash, t.CreatedAt, t.RevokedAt)
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.ID, err)
	}
	return nil
}

const tokenColumns = `id, name, role, hash, created_at, revoked_at`

func scanToken(row pgx.Row) (access.Token, error) {
	var t access.Token
	var role string
	if err := row.Scan(&t.ID, &t.Name, &role, &t.Hash, &t.CreatedAt, &t.RevokedAt); err != nil {
		return t, err
	}
	t.Role = access.Role(role)
	t.CreatedAt = t.CreatedAt.UTC()
	if t.RevokedAt != nil {
		r := t.RevokedAt.UTC()
		t.RevokedAt = &r
	}
	return t, nil
}

// TokenByHash returns the token with this hash, or access.ErrNotFound.
func (s *Store) TokenByHash(ctx context.Context, hash []byte) (*access.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE hash = $1`, hash))
	if errNoRows(err) {
		return nil, fmt.Errorf("token by hash: %w", access.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("token by hash: %w", err)
	}
	return &t, nil
}

// ListTokens lists every token, oldest first.
func (s *Store) ListTokens(ctx context.Context) ([]access.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY created_at, id`)
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
	tag, err := s.pool.Exec(ctx, `UPDATE tokens SET revoked_at = coalesce(revoked_at, $1) WHERE id = $2`, at, id)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("revoke token %s: %w", id, access.ErrNotFound)
	}
	return nil
}

// ListMessages lists the message log newest first.
func (s *Store) ListMessages(ctx context.Context, q messagelog.Query) ([]messagelog.Message, error) {
	// A payload is in message_payloads (migration 00740) until its day
	// passes the payload window.
	sqlq := `SELECT m.id, m.device_id, m.topic, m.transport, m.qos, p.payload, m.msg_id, m.accepted, m.code, m.reason, m.received_at
		FROM messages m LEFT JOIN message_payloads p ON p.id = m.id AND p.received_at = m.received_at WHERE true`
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if q.DeviceID != "" {
		sqlq += ` AND m.device_id = ` + arg(q.DeviceID)
	}
	if q.Rejected {
		sqlq += ` AND NOT m.accepted`
	}
	if q.Before > 0 {
		sqlq += ` AND m.id < ` + arg(q.Before)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	sqlq += ` ORDER BY m.id DESC LIMIT ` + arg(limit)
	rows, err := s.pool.Query(ctx, sqlq, args...)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	defer rows.Close()
	var out []messagelog.Message
	for rows.Next() {
		var m messagelog.Message
		var qos int16
		var msgID *string
		if err := rows.Scan(&m.ID, &m.DeviceID, &m.Topic, &m.Transport, &qos, &m.Payload, &msgID,
			&m.Accepted, &m.Code, &m.Reason, &m.ReceivedAt); err != nil {
			return nil, fmt.Errorf("list messages: %w", err)
		}
		m.QoS, m.ReceivedAt = byte(qos), m.ReceivedAt.UTC()
		if msgID != nil {
			m.MsgID = *msgID
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	return out, nil
}
