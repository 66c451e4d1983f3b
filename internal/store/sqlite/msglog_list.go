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

// ListMessages lists the message log newest first: the head's batch
// blocks (in memory) and the blocks table, merged by id.
//
// The head is copied first (its entries and references to its blocks,
// which are never changed in place), then one read transaction reads the
// blocks table: a message that a compaction moved in between is in both,
// and is listed once (ids are unique), as is one whose compaction wrote
// its block but has not deleted its batch row yet (it is in the head and
// in a block); one moved before the copy is in the snapshot's blocks. (A batch committed after the copy is not listed:
// its messages were not acknowledged before the listing began.)
//
// A device's listing decodes only its own records of the head (from their
// offsets) and its blocks by (device_id, last_id): its cost does not grow
// with the fleet.
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
		for _, e := range ml.head.devs[q.DeviceID] {
			if e.id < before && (!q.Rejected || e.rejected) {
				l.head = append(l.head, e)
			}
		}
		slices.SortFunc(l.head, func(a, b headEntry) int { return cmp.Compare(b.id, a.id) })
		l.head = l.head[:min(len(l.head), limit)]
		l.data = make([][]byte, len(l.head))
		for i, e := range l.head {
			l.data[i] = ml.head.data[e.batch]
		}
	} else {
		for _, b := range ml.head.batches {
			if b.first < before && (!q.Rejected || b.rejected > 0) {
				batches = append(batches, headBatch{first: b.first, last: b.last, data: b.data})
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
	head   []headEntry // a device's listing: its newest in the head
	data   [][]byte    // and their batches' blocks
	out    []messagelog.Message
	seen   map[int64]struct{} // the ids taken
	ids    []int64            // add's room
}

// wanted reports whether r matches the query.
func (l *lister) wanted(r *msgblock.Record) bool {
	return r.ID < l.before && (!l.q.Rejected || !r.Accepted) && (l.q.DeviceID == "" || r.DeviceID == l.q.DeviceID)
}

// resolveHead decodes a device's head entries from their offsets.
func (l *lister) resolveHead() error {
	l.seen = make(map[int64]struct{}, len(l.head))
	for i, e := range l.head {
		r, err := msgblock.DecodeAt(l.data[i], int(e.off))
		if err != nil {
			return fmt.Errorf("message batch %d: %w", e.batch, err)
		}
		if r.ID != e.id || r.DeviceID != l.q.DeviceID {
			return fmt.Errorf("message batch %d: record at byte %d is message %d of %s, the head says %d of %s",
				e.batch, e.off, r.ID, r.DeviceID, e.id, l.q.DeviceID)
		}
		l.out = append(l.out, message(&r))
		l.seen[r.ID] = struct{}{}
	}
	slices.SortFunc(l.out, func(a, b messagelog.Message) int { return cmp.Compare(b.ID, a.ID) })
	return nil
}

// message is r as the listing returns it, sharing nothing with its block.
func message(r *msgblock.Record) messagelog.Message {
	c := r.Clone()
	return messagelog.Message{ID: c.ID, DeviceID: c.DeviceID, Topic: c.Topic, Transport: c.Transport, QoS: c.QoS, Payload: c.Payload,
		MsgID: c.MsgID, Accepted: c.Accepted, Code: c.Code, Reason: c.Reason, ReceivedAt: micros(c.ReceivedAt)}
}

func (l *lister) run(ctx context.Context, tx *sql.Tx, batches []headBatch) error {
	if err := l.resolveHead(); err != nil {
		return err
	}
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
			if err := l.add(batches[0].data); err != nil {
				return fmt.Errorf("message batch %d: %w", batches[0].first, err)
			}
			batches = batches[1:]
		} else {
			if err := l.add(blockData); err != nil {
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
func (l *lister) add(data []byte) error {
	// A first pass finds the ids the row could add (decoding copies
	// nothing); only those that can be among the limit newest are
	// copied in the second (a batch row of 1,000 devices' messages holds
	// 1,000 candidates for a page of 100).
	ids := l.ids[:0]
	for _, m := range l.out {
		ids = append(ids, m.ID)
	}
	err := msgblock.Each(data, func(r *msgblock.Record) error {
		if _, dup := l.seen[r.ID]; !dup && l.wanted(r) {
			ids = append(ids, r.ID)
		}
		return nil
	})
	l.ids = ids
	if err != nil {
		return err
	}
	floor := int64(math.MinInt64)
	if len(ids) > l.limit {
		slices.SortFunc(ids, func(a, b int64) int { return cmp.Compare(b, a) })
		floor = ids[l.limit-1]
	}
	err = msgblock.Each(data, func(r *msgblock.Record) error {
		if r.ID < floor || !l.wanted(r) {
			return nil
		}
		if _, dup := l.seen[r.ID]; dup {
			return nil // in a block too: moved after the head was copied
		}
		if l.seen == nil {
			l.seen = map[int64]struct{}{}
		}
		l.seen[r.ID] = struct{}{}
		l.out = append(l.out, message(r))
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
