package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"math"
	"slices"

	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/msgblock"
)

// ListMessages lists the message log newest first: the batch rows the
// head knows and the blocks, merged by id.
//
// The head is copied first, then one read transaction reads the rows: a
// batch row the head names that a compaction moved meanwhile is missing
// from the transaction's snapshot, and its messages are in the snapshot's
// blocks, so that every message is listed once. (A batch committed after
// the copy is not listed: its messages were not acknowledged before the
// listing began.)
//
// A device's listing reads only its own head entries, the batch rows
// that hold its newest, and its blocks by (device_id, last_id): its cost
// does not grow with the fleet.
func (s *Store) ListMessages(ctx context.Context, q messagelog.Query) ([]messagelog.Message, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 100
	}
	before := q.Before
	if before <= 0 {
		before = math.MaxInt64
	}
	l := &lister{q: q, limit: limit, before: before}
	ml := &s.mlog
	// The batch rows to read, by last_id descending (all devices) or the
	// rows of the device's newest messages.
	var batches []headBatch
	ml.hmu.RLock()
	if q.DeviceID != "" {
		var ids []headEntry
		for _, e := range ml.head.devs[q.DeviceID] {
			if e.id < before && (!q.Rejected || e.rejected) {
				ids = append(ids, e)
			}
		}
		slices.SortFunc(ids, func(a, b headEntry) int { return cmp.Compare(b.id, a.id) })
		ids = ids[:min(len(ids), limit)]
		l.want = make(map[int64]struct{}, len(ids))
		for _, e := range ids {
			l.want[e.id] = struct{}{}
			if !slices.ContainsFunc(batches, func(b headBatch) bool { return b.first == e.batch }) {
				batches = append(batches, headBatch{first: e.batch, last: e.id})
			}
		}
	} else {
		for _, b := range ml.head.batches {
			if b.first < before && (!q.Rejected || b.rejected > 0) {
				batches = append(batches, headBatch{first: b.first, last: b.last})
			}
		}
	}
	ml.hmu.RUnlock()
	slices.SortFunc(batches, func(a, b headBatch) int { return cmp.Compare(b.last, a.last) })

	tx, err := s.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	defer tx.Rollback()
	if err := l.run(ctx, tx, batches); err != nil {
		return nil, fmt.Errorf("list messages: %w", err)
	}
	return l.out, nil
}

// lister merges batch rows and blocks, newest last_id first, until no
// row left can hold a message newer than the limit-th found.
type lister struct {
	q      messagelog.Query
	limit  int
	before int64
	want   map[int64]struct{} // a device's listing: the head's ids to take from batch rows
	out    []messagelog.Message
}

func (l *lister) run(ctx context.Context, tx *sql.Tx, batches []headBatch) error {
	bq := `SELECT last_id, data FROM message_blocks WHERE first_id < ?`
	args := []any{l.before}
	if l.q.DeviceID != "" {
		bq += ` AND device_id = ?`
		args = append(args, l.q.DeviceID)
	}
	if l.q.Rejected {
		bq += ` AND rejected > 0`
	}
	bq += ` ORDER BY last_id DESC`
	rows, err := tx.QueryContext(ctx, bq, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	var blockLast int64 = -1 // the pending block's last_id, -1 for none
	var blockData []byte
	nextBlock := func() error {
		blockLast = -1
		if !rows.Next() {
			return rows.Err()
		}
		return rows.Scan(&blockLast, &blockData)
	}
	if err := nextBlock(); err != nil {
		return err
	}
	getBatch, err := tx.PrepareContext(ctx, `SELECT data FROM message_batches WHERE first_id = ?`)
	if err != nil {
		return err
	}
	defer getBatch.Close()
	for {
		var batchLast int64 = -1
		if len(batches) > 0 {
			batchLast = batches[0].last
		}
		next := max(batchLast, blockLast)
		if next < 0 || (len(l.out) >= l.limit && next < l.out[l.limit-1].ID) {
			return nil
		}
		if batchLast >= blockLast {
			var data []byte
			err := getBatch.QueryRowContext(ctx, batches[0].first).Scan(&data)
			switch {
			case err == sql.ErrNoRows:
				// Compacted (or expired) since the head was copied:
				// its messages are in the snapshot's blocks.
			case err != nil:
				return err
			default:
				if err := l.add(data, true); err != nil {
					return fmt.Errorf("message batch %d: %w", batches[0].first, err)
				}
			}
			batches = batches[1:]
		} else {
			if err := l.add(blockData, false); err != nil {
				return fmt.Errorf("message block: %w", err)
			}
			if err := nextBlock(); err != nil {
				return err
			}
		}
	}
}

// add takes the records of one row that the query selects, and keeps the
// limit newest found so far.
func (l *lister) add(data []byte, batch bool) error {
	err := msgblock.Each(data, func(r *msgblock.Record) error {
		if r.ID >= l.before || (l.q.Rejected && r.Accepted) || (l.q.DeviceID != "" && r.DeviceID != l.q.DeviceID) {
			return nil
		}
		if batch && l.want != nil {
			if _, ok := l.want[r.ID]; !ok {
				return nil
			}
		}
		m := messagelog.Message{ID: r.ID, DeviceID: r.DeviceID, Topic: r.Topic, Transport: r.Transport, QoS: r.QoS,
			MsgID: r.MsgID, Accepted: r.Accepted, Code: r.Code, Reason: r.Reason, ReceivedAt: micros(r.ReceivedAt)}
		if r.Payload != nil {
			m.Payload = append([]byte{}, r.Payload...)
		}
		l.out = append(l.out, m)
		return nil
	})
	if err != nil {
		return err
	}
	slices.SortFunc(l.out, func(a, b messagelog.Message) int { return cmp.Compare(b.ID, a.ID) })
	if len(l.out) > l.limit {
		clear(l.out[l.limit:])
		l.out = l.out[:l.limit]
	}
	return nil
}
