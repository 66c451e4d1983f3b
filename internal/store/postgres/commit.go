package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/commit"
)

// eventLockID is the transaction advisory lock that orders event writers:
// held from the moment a batch takes its seqs until it commits, so that
// seqs become visible in increasing order even with several hub nodes.
const eventLockID = 0x6465766963656875 // "devicehu"

// MaxMessageID returns the largest message id stored, 0 for none.
func (s *Store) MaxMessageID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM messages`).Scan(&id); err != nil {
		return 0, fmt.Errorf("max message id: %w", err)
	}
	return id, nil
}

// Commit writes batch in one transaction; see commit.Store.
func (s *Store) Commit(ctx context.Context, batch []*commit.Change) error {
	for _, ch := range batch {
		ch.Err, ch.Duplicate = nil, false
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return commitTx(ctx, tx, batch) })
	if err != nil {
		for _, ch := range batch {
			ch.Err, ch.Duplicate = nil, false
			for i := range ch.Events {
				ch.Events[i].Seq = 0
			}
		}
		return fmt.Errorf("postgres commit: %w", err)
	}
	return nil
}

func needsDevice(ch *commit.Change) bool {
	return ch.Device != nil || (ch.Message != nil && ch.Message.Accepted && len(ch.Readings) > 0)
}

// messageRows holds the messages of a batch as columns, for unnest.
type messageRows struct {
	id        []int64
	device    []string
	topic     []string
	transport []string
	qos       []int16
	payload   [][]byte
	msgID     []*string
	accepted  []bool
	code      []string
	reason    []string
	received  []time.Time
}

func (m *messageRows) add(dev string, msg *commit.Message) {
	var msgID *string
	if msg.MsgID != "" {
		msgID = &msg.MsgID
	}
	m.id = append(m.id, msg.ID)
	m.device = append(m.device, dev)
	m.topic = append(m.topic, msg.Topic)
	m.transport = append(m.transport, msg.Transport)
	m.qos = append(m.qos, int16(msg.QoS))
	m.payload = append(m.payload, msg.Payload)
	m.msgID = append(m.msgID, msgID)
	m.accepted = append(m.accepted, msg.Accepted)
	m.code = append(m.code, msg.Code)
	m.reason = append(m.reason, msg.Reason)
	m.received = append(m.received, msg.ReceivedAt)
}

func commitTx(ctx context.Context, tx pgx.Tx, batch []*commit.Change) error {
	exists, err := lookupDevices(ctx, tx, batch)
	if err != nil {
		return err
	}

	// Pass 1, in order: provisioning, device checks, duplicate msg_ids
	// within the batch, and the messages to insert.
	var msgs messageRows
	var msgChanges []int
	seen := map[[2]string]struct{}{}
	for i, ch := range batch {
		if nd := ch.NewDevice; nd != nil {
			switch {
			case exists[ch.DeviceID] && !nd.Replace:
				ch.Err = commit.ErrDeviceExists
				continue
			case !exists[ch.DeviceID] && nd.Replace:
				ch.Err = commit.ErrDeviceNotFound
				continue
			}
			if err := provision(ctx, tx, ch); err != nil {
				return err
			}
			if ch.Err != nil {
				continue
			}
			exists[ch.DeviceID] = true
		}
		if !exists[ch.DeviceID] && needsDevice(ch) {
			ch.Err = commit.ErrDeviceNotFound
			continue
		}
		m := ch.Message
		if m == nil {
			continue
		}
		if m.MsgID != "" {
			k := [2]string{ch.DeviceID, m.MsgID}
			if _, dup := seen[k]; dup {
				ch.Duplicate = true
				continue
			}
			seen[k] = struct{}{}
		}
		msgs.add(ch.DeviceID, m)
		msgChanges = append(msgChanges, i)
	}
	if len(msgChanges) > 0 {
		rows, err := tx.Query(ctx, `INSERT INTO messages (id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at)
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::bytea[], $7::text[], $8::bool[], $9::text[], $10::text[], $11::timestamptz[])
			ON CONFLICT (device_id, msg_id) WHERE msg_id IS NOT NULL DO NOTHING
			RETURNING id`,
			msgs.id, msgs.device, msgs.topic, msgs.transport, msgs.qos, msgs.payload, msgs.msgID, msgs.accepted, msgs.code, msgs.reason, msgs.received)
		if err != nil {
			return fmt.Errorf("insert messages: %w", err)
		}
		inserted := make(map[int64]struct{}, len(msgChanges))
		var id int64
		if _, err := pgx.ForEachRow(rows, []any{&id}, func() error {
			inserted[id] = struct{}{}
			return nil
		}); err != nil {
			return fmt.Errorf("insert messages: %w", err)
		}
		for _, i := range msgChanges {
			if _, ok := inserted[batch[i].Message.ID]; !ok {
				batch[i].Duplicate = true
			}
		}
	}

	if err := commitRegistry(ctx, tx, batch, exists); err != nil { // registry.go
		return err
	}
	if err := commitDeviceCmd(ctx, tx, batch); err != nil { // devicecmd.go
		return err
	}

	// Pass 2: what the surviving changes write besides their message.
	var rds [][]any
	patches := map[string]*commit.DevicePatch{}
	var ev struct {
		typ, device, devType []string
		time                 []time.Time
		args                 []*string
		refs                 []*commit.Event
	}
	for _, ch := range batch {
		if ch.Err != nil || ch.Duplicate {
			continue
		}
		if m := ch.Message; m != nil && m.Accepted {
			for _, r := range ch.Readings {
				vals := r.Values
				if len(vals) == 0 {
					vals = []byte("{}")
				}
				rds = append(rds, []any{ch.DeviceID, r.Stream, r.Time, m.ReceivedAt, m.ID, vals})
			}
		}
		if p := ch.Device; p != nil {
			acc, ok := patches[ch.DeviceID]
			if !ok {
				acc = &commit.DevicePatch{}
				patches[ch.DeviceID] = acc
			}
			mergePatch(acc, p)
		}
		for i := range ch.Events {
			e := &ch.Events[i]
			var args *string
			if e.Args != nil {
				a := string(e.Args)
				args = &a
			}
			ev.typ = append(ev.typ, string(e.Type))
			ev.time = append(ev.time, e.Time)
			ev.device = append(ev.device, e.DeviceID)
			ev.devType = append(ev.devType, e.DeviceType)
			ev.args = append(ev.args, args)
			ev.refs = append(ev.refs, e)
		}
	}

	if len(rds) > 0 {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"readings"},
			[]string{"device_id", "stream", "ts", "received_at", "message_id", "data"}, pgx.CopyFromRows(rds)); err != nil {
			return fmt.Errorf("insert readings: %w", err)
		}
	}

	b := &pgx.Batch{}
	if len(patches) > 0 {
		// Devices are updated in id order so that concurrent nodes lock
		// rows in the same order and cannot deadlock.
		ids := make([]string, 0, len(patches))
		for id := range patches {
			ids = append(ids, id)
		}
		slices.Sort(ids)
		ls := make([]*time.Time, len(ids))
		st := make([]*string, len(ids))
		cn := make([]*bool, len(ids))
		mt := make([]*string, len(ids))
		for i, id := range ids {
			p := patches[id]
			ls[i], st[i], cn[i] = p.LastSeen, p.Status, p.Connected
			if p.Metrics != nil {
				m := string(p.Metrics)
				mt[i] = &m
			}
		}
		b.Queue(`UPDATE devices d SET
				last_seen = coalesce(u.ls, d.last_seen),
				status = coalesce(u.st, d.status),
				connected = coalesce(u.cn, d.connected),
				metrics = coalesce(u.mt::jsonb, d.metrics),
				updated_at = now()
			FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bool[], $5::text[]) AS u(id, ls, st, cn, mt)
			WHERE d.id = u.id`, ids, ls, st, cn, mt)
	}
	var seqs []int64
	if len(ev.refs) > 0 {
		b.Queue(`SELECT pg_advisory_xact_lock($1)`, int64(eventLockID))
		ord := make([]int32, len(ev.refs))
		for i := range ord {
			ord[i] = int32(i)
		}
		b.Queue(`INSERT INTO events (type, time, device_id, device_type, args)
			SELECT u.type, u.time, u.device_id, u.device_type, u.args::json
			FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::int4[]) AS u(type, time, device_id, device_type, args, ord)
			ORDER BY u.ord
			RETURNING seq`, ev.typ, ev.time, ev.device, ev.devType, ev.args, ord).Query(func(rows pgx.Rows) error {
			var seq int64
			_, err := pgx.ForEachRow(rows, []any{&seq}, func() error {
				seqs = append(seqs, seq)
				return nil
			})
			return err
		})
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("update devices and insert events: %w", err)
		}
	}
	if len(seqs) != len(ev.refs) {
		return fmt.Errorf("insert events: %d seqs for %d events", len(seqs), len(ev.refs))
	}
	// Identity values were drawn in ord order; RETURNING order is not
	// promised, so hand them out sorted.
	slices.Sort(seqs)
	for i, e := range ev.refs {
		e.Seq = seqs[i]
	}
	return nil
}

// lookupDevices reports which of the devices the batch needs to know
// about exist.
func lookupDevices(ctx context.Context, tx pgx.Tx, batch []*commit.Change) (map[string]bool, error) {
	exists := map[string]bool{}
	var ids []string
	for _, ch := range batch {
		if ch.NewDevice == nil && !needsDevice(ch) {
			continue
		}
		if _, ok := exists[ch.DeviceID]; !ok {
			exists[ch.DeviceID] = false
			ids = append(ids, ch.DeviceID)
		}
	}
	if len(ids) == 0 {
		return exists, nil
	}
	rows, err := tx.Query(ctx, `SELECT id FROM devices WHERE id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("look up devices: %w", err)
	}
	var id string
	if _, err := pgx.ForEachRow(rows, []any{&id}, func() error {
		exists[id] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("look up devices: %w", err)
	}
	return exists, nil
}

// provision creates a device, or replaces the identity and credentials of
// an existing one. A device created or removed by another node since the
// lookup sets ch.Err.
func provision(ctx context.Context, tx pgx.Tx, ch *commit.Change) error {
	nd, id := ch.NewDevice, ch.DeviceID
	tags := []byte("[]")
	if len(nd.Tags) > 0 {
		var err error
		if tags, err = json.Marshal(nd.Tags); err != nil {
			return fmt.Errorf("encode tags of %s: %w", id, err)
		}
	}
	var meta []byte
	if len(nd.Metadata) > 0 {
		meta = nd.Metadata
	}
	var q string
	if nd.Replace {
		q = `UPDATE devices SET type = $2, name = $3, grp = $4, tags = $5, metadata = $6, updated_at = $7 WHERE id = $1`
	} else {
		q = `INSERT INTO devices (id, type, name, grp, tags, metadata, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
			ON CONFLICT (id) DO NOTHING`
	}
	tag, err := tx.Exec(ctx, q, id, nd.Type, nd.Name, nd.Group, tags, meta, nd.CreatedAt)
	if err != nil {
		return fmt.Errorf("provision %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		if nd.Replace {
			ch.Err = commit.ErrDeviceNotFound
		} else {
			ch.Err = commit.ErrDeviceExists
		}
		return nil
	}
	_, err = tx.Exec(ctx, `INSERT INTO credentials (device_id, mqtt_username, password_hash, api_key_hash, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (device_id) DO UPDATE SET mqtt_username = excluded.mqtt_username, password_hash = excluded.password_hash,
			api_key_hash = excluded.api_key_hash, created_at = excluded.created_at`,
		id, nd.MQTTUsername, nd.PasswordHash, nd.APIKeyHash, nd.CreatedAt)
	if err != nil {
		return fmt.Errorf("store credentials of %s: %w", id, err)
	}
	return nil
}

// mergePatch applies p over acc: later values win, nil fields are kept.
func mergePatch(acc, p *commit.DevicePatch) {
	if p.LastSeen != nil {
		acc.LastSeen = p.LastSeen
	}
	if p.Status != nil {
		acc.Status = p.Status
	}
	if p.Connected != nil {
		acc.Connected = p.Connected
	}
	if p.Metrics != nil {
		acc.Metrics = p.Metrics
	}
}
