package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"

	"github.com/devicehub/devicehub/internal/readings"
)

// messageCols are the columns of a row of the messages insert.
const messageCols = 11

// MaxMessageID returns the largest message id stored, 0 for none.
func (s *Store) MaxMessageID(ctx context.Context) (int64, error) {
	var id int64
	if err := s.r.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) FROM messages`).Scan(&id); err != nil {
		return 0, fmt.Errorf("max message id: %w", err)
	}
	return id, nil
}

// InsertMessages implements readings.TxStore: messages without a msg_id
// in one multi-row insert, those with one in another that skips the
// duplicates; only when it skipped some are the new ones looked up.
func (t *txn) InsertMessages(ctx context.Context, msgs []readings.MessageRow) error {
	withID := 0
	for i := range msgs {
		if msgs[i].Message.MsgID != "" {
			withID++
		}
	}
	plain := t.s.args.take((len(msgs) - withID) * messageCols)
	dedup := t.s.args.take(withID * messageCols)
	var dedupRows []int
	if withID > 0 {
		dedupRows = make([]int, 0, withID)
	}
	for i := range msgs {
		r := &msgs[i]
		m := r.Message
		var msgID any
		if m.MsgID != "" {
			msgID = m.MsgID
		}
		row := []any{m.ID, r.DeviceID, m.Topic, m.Transport, int64(m.QoS), m.Payload, msgID,
			m.Accepted, m.Code, m.Reason, m.ReceivedAt.UnixMicro()}
		if msgID == nil {
			plain = append(plain, row...)
		} else {
			dedup = append(dedup, row...)
			dedupRows = append(dedupRows, i)
		}
	}
	if err := t.s.inserts["messages"].exec(ctx, t, plain); err != nil {
		return err
	}
	if len(dedup) == 0 {
		return nil
	}
	n, err := t.s.inserts["messages_dedup"].execCount(ctx, t, dedup)
	if err != nil {
		return err
	}
	if n == int64(len(dedupRows)) {
		return nil // no duplicate: the common case costs no read
	}
	// Some were duplicates: the rows written are those whose (new) id
	// is now stored.
	ids := t.s.args.take(len(dedupRows))
	for _, i := range dedupRows {
		ids = append(ids, msgs[i].Message.ID)
	}
	inserted := make(map[int64]struct{}, n)
	err = t.s.inserts["message_ids"].query(ctx, t.tx, ids, func(r *sql.Rows) error {
		var id int64
		if err := r.Scan(&id); err != nil {
			return err
		}
		inserted[id] = struct{}{}
		return nil
	})
	if err != nil {
		return err
	}
	for _, i := range dedupRows {
		if _, ok := inserted[msgs[i].Message.ID]; !ok {
			msgs[i].Duplicate = true
		}
	}
	return nil
}

// InsertReadings implements readings.TxStore.
func (t *txn) InsertReadings(ctx context.Context, rows []readings.ReadingRow) error {
	type keyed struct {
		dev int64
		r   *readings.ReadingRow
	}
	rds := make([]keyed, len(rows))
	for i := range rows {
		k, ok := t.key(rows[i].DeviceID)
		if !ok {
			return fmt.Errorf("device %s of a reading is not known", rows[i].DeviceID)
		}
		rds[i] = keyed{k, &rows[i]}
	}
	// Rows of one device next to each other touch each leaf of the
	// (dev, ts) index once per batch instead of once per row.
	slices.SortStableFunc(rds, func(a, b keyed) int { return int(a.dev - b.dev) })
	args := t.s.args.take(len(rds) * 6)
	for _, r := range rds {
		args = append(args, r.dev, r.r.Stream, r.r.Time.UnixMicro(), r.r.ReceivedAt.UnixMicro(), r.r.MessageID, jsonObject(r.r.Values))
	}
	return t.s.inserts["readings"].exec(ctx, t, args)
}
