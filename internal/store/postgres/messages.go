package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/readings"
)

// MaxMessageID returns the largest message id stored, 0 for none.
func (s *Store) MaxMessageID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.pool.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM messages`).Scan(&id); err != nil {
		return 0, fmt.Errorf("max message id: %w", err)
	}
	return id, nil
}

// InsertMessages implements readings.TxStore: one statement from column
// arrays, which returns the ids of the messages that were new.
func (t *txn) InsertMessages(ctx context.Context, msgs []readings.MessageRow) error {
	n := len(msgs)
	var (
		id        = make([]int64, n)
		device    = make([]string, n)
		topic     = make([]string, n)
		transport = make([]string, n)
		qos       = make([]int16, n)
		payload   = make([][]byte, n)
		msgID     = make([]*string, n)
		accepted  = make([]bool, n)
		code      = make([]string, n)
		reason    = make([]string, n)
		received  = make([]time.Time, n)
	)
	for i := range msgs {
		m := msgs[i].Message
		if m.MsgID != "" {
			msgID[i] = &m.MsgID
		}
		id[i], device[i], topic[i], transport[i], qos[i] = m.ID, msgs[i].DeviceID, m.Topic, m.Transport, int16(m.QoS)
		payload[i], accepted[i], code[i], reason[i], received[i] = m.Payload, m.Accepted, m.Code, m.Reason, m.ReceivedAt
	}
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	// A message with a msg_id is new when its message_ids row is: the
	// dedupe of a partitioned messages table (migration 00720), in the
	// same statement, so in the same transaction and round trip. A new
	// message's payload goes to message_payloads (00740), in the same
	// statement too.
	rows, err := tx.Query(ctx, `WITH m AS (
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::bytea[], $7::text[], $8::bool[], $9::text[], $10::text[], $11::timestamptz[])
				AS u(id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at)
		), fresh AS (
			INSERT INTO message_ids (device_id, msg_id, id, received_at)
			SELECT device_id, msg_id, id, received_at FROM m WHERE msg_id IS NOT NULL
			ON CONFLICT (device_id, msg_id) DO NOTHING
			RETURNING id
		), ins AS (
			INSERT INTO messages (id, device_id, topic, transport, qos, msg_id, accepted, code, reason, received_at)
			SELECT id, device_id, topic, transport, qos, msg_id, accepted, code, reason, received_at FROM m
			WHERE msg_id IS NULL OR id IN (SELECT id FROM fresh)
			RETURNING id
		), pl AS (
			INSERT INTO message_payloads (id, received_at, payload)
			SELECT m.id, m.received_at, m.payload FROM m JOIN ins ON ins.id = m.id WHERE m.payload IS NOT NULL
		)
		SELECT id FROM ins`,
		id, device, topic, transport, qos, payload, msgID, accepted, code, reason, received)
	if err != nil {
		return err
	}
	inserted := make(map[int64]struct{}, n)
	var got int64
	if _, err := pgx.ForEachRow(rows, []any{&got}, func() error {
		inserted[got] = struct{}{}
		return nil
	}); err != nil {
		return err
	}
	for i := range msgs {
		if _, ok := inserted[msgs[i].Message.ID]; !ok {
			msgs[i].Duplicate = true
		}
	}
	return nil
}

// InsertReadings implements readings.TxStore with COPY.
func (t *txn) InsertReadings(ctx context.Context, rows []readings.ReadingRow) error {
	rds := make([][]any, len(rows))
	for i := range rows {
		r := &rows[i]
		vals := r.Values
		if len(vals) == 0 {
			vals = []byte("{}")
		}
		rds[i] = []any{r.DeviceID, r.Stream, r.Time, r.ReceivedAt, r.MessageID, vals}
	}
	tx, err := t.db(ctx)
	if err != nil {
		return err
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"readings"},
		[]string{"device_id", "stream", "ts", "received_at", "message_id", "data"}, pgx.CopyFromRows(rds))
	return err
}
