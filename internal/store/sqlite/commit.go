package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

func (s *Store) initStatements(ctx context.Context) error {
	s.inserts = map[string]*bulk{
		"messages": newBulk(s.w,
			`INSERT INTO messages (id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at) VALUES `,
			`(?,?,?,?,?,?,?,?,?,?,?)`, ``),
		// Messages with a device msg_id learn which rows were new from
		// RETURNING; a row not returned was a duplicate.
		"messages_dedup": newBulk(s.w,
			`INSERT INTO messages (id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at) VALUES `,
			`(?,?,?,?,?,?,?,?,?,?,?)`,
			` ON CONFLICT (device_id, msg_id) DO NOTHING RETURNING id`),
		"readings": newBulk(s.w,
			`INSERT INTO readings (dev, stream, ts, received_at, message_id, data) VALUES `,
			`(?,?,?,?,?,?)`, ``),
		"events": newBulk(s.w,
			`INSERT INTO events (seq, type, time, device_id, device_type, args) VALUES `,
			`(?,?,?,?,?,?)`, ``),
	}
	// One UPDATE for all devices patched in a batch.
	s.patch = newBulk(s.w,
		`WITH v(k, ls, st, cn, mt, up) AS (VALUES `,
		`(?,?,?,?,?,?)`,
		`) UPDATE devices SET
			last_seen = coalesce(v.ls, devices.last_seen),
			status = coalesce(v.st, devices.status),
			connected = coalesce(v.cn, devices.connected),
			metrics = coalesce(v.mt, devices.metrics),
			updated_at = v.up
		FROM v WHERE devices.key = v.k`)
	s.lookup = newBulk(s.w, `SELECT id, key FROM devices WHERE id IN (`, `?`, `)`)
	for _, b := range []*bulk{s.inserts["messages"], s.inserts["messages_dedup"], s.inserts["readings"], s.inserts["events"], s.patch, s.lookup} {
		if err := b.prepare(ctx); err != nil {
			return fmt.Errorf("sqlite statements: %w", err)
		}
	}
	return nil
}

// MaxMessageID returns the largest message id stored, 0 for none.
func (s *Store) MaxMessageID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.r.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM messages`).Scan(&id); err != nil {
		return 0, fmt.Errorf("max message id: %w", err)
	}
	return id, nil
}

// Commit writes batch in one transaction; see commit.Store.
func (s *Store) Commit(ctx context.Context, batch []*commit.Change) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for _, ch := range batch {
		ch.Err, ch.Duplicate = nil, false
	}
	w := writeState{s: s, known: map[string]int64{}, seq: s.seq}
	if err := w.commit(ctx, batch); err != nil {
		for _, ch := range batch {
			ch.Err, ch.Duplicate = nil, false
			for i := range ch.Events {
				ch.Events[i].Seq = 0
			}
		}
		return fmt.Errorf("sqlite commit: %w", err)
	}
	s.seq = w.seq
	for id, k := range w.known {
		s.keys[id] = k
	}
	s.committed(len(batch))
	return nil
}

// Columns of a row of the messages and events inserts.
const (
	messageCols = 11
	eventCols   = 6
)

// writeState is one Commit in progress.
type writeState struct {
	s     *Store
	tx    *sql.Tx
	known map[string]int64 // devices found or created in this batch
	seq   int64
}

func (w *writeState) key(id string) (int64, bool) {
	if k, ok := w.s.keys[id]; ok {
		return k, true
	}
	k, ok := w.known[id]
	return k, ok
}

// needsDevice reports whether a change writes something that requires its
// device to exist: a state patch or readings.
func needsDevice(ch *commit.Change) bool {
	return ch.Device != nil || (ch.Message != nil && ch.Message.Accepted && len(ch.Readings) > 0)
}

func (w *writeState) commit(ctx context.Context, batch []*commit.Change) (err error) {
	w.tx, err = w.s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			w.tx.Rollback()
		}
	}()
	if err := w.lookupDevices(ctx, batch); err != nil {
		return err
	}
	now := time.Now().UnixMicro()

	// Pass 1, in order: provisioning, device checks, duplicate msg_ids
	// within the batch, and the messages to insert.
	// Sized for the common batch (every change a message without msg_id,
	// one reading, one event) so that appending does not regrow them.
	plain := make([]any, 0, len(batch)*messageCols)
	var dedup []any
	var dedupChanges []int
	seen := map[[2]string]struct{}{}
	for i, ch := range batch {
		if nd := ch.NewDevice; nd != nil {
			_, exists := w.key(ch.DeviceID)
			switch {
			case exists && !nd.Replace:
				ch.Err = commit.ErrDeviceExists
				continue
			case !exists && nd.Replace:
				ch.Err = commit.ErrDeviceNotFound
				continue
			}
			if err := w.provision(ctx, ch.DeviceID, nd, now); err != nil {
				return err
			}
		}
		if _, ok := w.key(ch.DeviceID); !ok && needsDevice(ch) {
			ch.Err = commit.ErrDeviceNotFound
			continue
		}
		m := ch.Message
		if m == nil {
			continue
		}
		var msgID any
		if m.MsgID != "" {
			k := [2]string{ch.DeviceID, m.MsgID}
			if _, dup := seen[k]; dup {
				ch.Duplicate = true
				continue
			}
			seen[k] = struct{}{}
			msgID = m.MsgID
		}
		row := []any{m.ID, ch.DeviceID, m.Topic, m.Transport, int64(m.QoS), m.Payload, msgID,
			m.Accepted, m.Code, m.Reason, m.ReceivedAt.UnixMicro()}
		if msgID == nil {
			plain = append(plain, row...)
		} else {
			dedup = append(dedup, row...)
			dedupChanges = append(dedupChanges, i)
		}
	}
	if err := w.s.inserts["messages"].exec(ctx, w.tx, plain); err != nil {
		return fmt.Errorf("insert messages: %w", err)
	}
	if len(dedup) > 0 {
		inserted := make(map[int64]struct{}, len(dedupChanges))
		err := w.s.inserts["messages_dedup"].query(ctx, w.tx, dedup, func(r *sql.Rows) error {
			var id int64
			if err := r.Scan(&id); err != nil {
				return err
			}
			inserted[id] = struct{}{}
			return nil
		})
		if err != nil {
			return fmt.Errorf("insert messages: %w", err)
		}
		for _, i := range dedupChanges {
			if _, ok := inserted[batch[i].Message.ID]; !ok {
				batch[i].Duplicate = true
			}
		}
	}

	if err := w.commitRegistry(ctx, batch, now); err != nil { // registry.go
		return err
	}
	if err := w.commitDeviceCmd(ctx, batch); err != nil { // devicecmd.go
		return err
	}

	// Pass 2: what the surviving changes write besides their message.
	type readingRow struct {
		dev  int64
		msg  int64
		recv int64
		r    *commit.Reading
	}
	rds := make([]readingRow, 0, len(batch))
	evs := make([]any, 0, len(batch)*eventCols)
	patches := make(map[int64]*commit.DevicePatch, len(batch))
	var patchOrder []int64
	for _, ch := range batch {
		if ch.Err != nil || ch.Duplicate {
			continue
		}
		dev, _ := w.key(ch.DeviceID)
		if m := ch.Message; m != nil && m.Accepted {
			for i := range ch.Readings {
				rds = append(rds, readingRow{dev: dev, msg: m.ID, recv: m.ReceivedAt.UnixMicro(), r: &ch.Readings[i]})
			}
		}
		if p := ch.Device; p != nil {
			acc, ok := patches[dev]
			if !ok {
				acc = &commit.DevicePatch{}
				patches[dev] = acc
				patchOrder = append(patchOrder, dev)
			}
			mergePatch(acc, p)
		}
		for i := range ch.Events {
			e := &ch.Events[i]
			w.seq++
			e.Seq = w.seq
			evs = append(evs, e.Seq, string(e.Type), e.Time.UnixMicro(), e.DeviceID, e.DeviceType, jsonText(e.Args))
		}
	}

	if len(rds) > 0 {
		// Rows of one device next to each other touch each leaf of the
		// (dev, ts) index once per batch instead of once per row.
		slices.SortStableFunc(rds, func(a, b readingRow) int { return int(a.dev - b.dev) })
		args := make([]any, 0, len(rds)*6)
		for _, r := range rds {
			args = append(args, r.dev, r.r.Stream, r.r.Time.UnixMicro(), r.recv, r.msg, jsonObject(r.r.Values))
		}
		if err := w.s.inserts["readings"].exec(ctx, w.tx, args); err != nil {
			return fmt.Errorf("insert readings: %w", err)
		}
	}
	if len(patchOrder) > 0 {
		args := make([]any, 0, len(patchOrder)*6)
		for _, dev := range patchOrder {
			p := patches[dev]
			var ls, st, cn, mt any
			if p.LastSeen != nil {
				ls = p.LastSeen.UnixMicro()
			}
			if p.Status != nil {
				st = *p.Status
			}
			if p.Connected != nil {
				cn = *p.Connected
			}
			if p.Metrics != nil {
				mt = string(p.Metrics)
			}
			args = append(args, dev, ls, st, cn, mt, now)
		}
		if err := w.s.patch.exec(ctx, w.tx, args); err != nil {
			return fmt.Errorf("update devices: %w", err)
		}
	}
	if err := w.s.inserts["events"].exec(ctx, w.tx, evs); err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	if err := w.tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// lookupDevices finds the keys of the batch's devices that are not cached
// yet and that the batch needs to know about.
func (w *writeState) lookupDevices(ctx context.Context, batch []*commit.Change) error {
	var ids []any
	asked := map[string]struct{}{}
	for _, ch := range batch {
		if ch.NewDevice == nil && !needsDevice(ch) {
			continue
		}
		if _, ok := w.s.keys[ch.DeviceID]; ok {
			continue
		}
		if _, ok := asked[ch.DeviceID]; ok {
			continue
		}
		asked[ch.DeviceID] = struct{}{}
		ids = append(ids, ch.DeviceID)
	}
	err := w.s.lookup.query(ctx, w.tx, ids, func(r *sql.Rows) error {
		var id string
		var k int64
		if err := r.Scan(&id, &k); err != nil {
			return err
		}
		w.known[id] = k
		return nil
	})
	if err != nil {
		return fmt.Errorf("look up devices: %w", err)
	}
	return nil
}

// provision creates a device, or replaces the identity and credentials of
// an existing one.
func (w *writeState) provision(ctx context.Context, id string, nd *commit.NewDevice, now int64) error {
	tags := []byte("[]")
	if len(nd.Tags) > 0 {
		var err error
		if tags, err = json.Marshal(nd.Tags); err != nil {
			return fmt.Errorf("encode tags of %s: %w", id, err)
		}
	}
	created := nd.CreatedAt.UnixMicro()
	if k, ok := w.key(id); ok {
		_, err := w.tx.ExecContext(ctx, `UPDATE devices SET type = ?, name = ?, grp = ?, tags = ?, metadata = ?, updated_at = ? WHERE key = ?`,
			nd.Type, nd.Name, nd.Group, string(tags), jsonText(nd.Metadata), created, k)
		if err != nil {
			return fmt.Errorf("replace device %s: %w", id, err)
		}
	} else {
		var k int64
		err := w.tx.QueryRowContext(ctx, `INSERT INTO devices (id, type, name, grp, tags, metadata, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?) RETURNING key`,
			id, nd.Type, nd.Name, nd.Group, string(tags), jsonText(nd.Metadata), created, created).Scan(&k)
		if err != nil {
			return fmt.Errorf("insert device %s: %w", id, err)
		}
		w.known[id] = k
	}
	_, err := w.tx.ExecContext(ctx, `INSERT INTO credentials (device_id, mqtt_username, password_hash, api_key_hash, created_at) VALUES (?,?,?,?,?)
		ON CONFLICT (device_id) DO UPDATE SET mqtt_username = excluded.mqtt_username, password_hash = excluded.password_hash,
			api_key_hash = excluded.api_key_hash, created_at = excluded.created_at`,
		id, nd.MQTTUsername, nd.PasswordHash, nd.APIKeyHash, created)
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

// jsonText binds pre-encoded JSON as text (SQLite's json functions read a
// blob as JSONB), or NULL for none.
func jsonText(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// jsonObject is jsonText for a column that must hold an object.
func jsonObject(b []byte) string {
	if len(b) == 0 {
		return "{}"
	}
	return string(b)
}
