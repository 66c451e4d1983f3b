package postgres

import (
	"cmp"
	"context"
	"fmt"
	"math/bits"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/retention"
)

// The message log and the event log are partitioned too (migrations 00720
// and 00730), so that retention drops them by whole partitions:
//
//   - messages by UTC day of received_at, like readings (messagesDays:
//     made ahead by EnsurePartitions, dropped by DropMessages); the msg_id
//     dedupe is the unpartitioned message_ids, whose entries go once
//     their record's day is dropped. Their payloads are in
//     message_payloads (00740), by day too (payloadsDays), dropped by
//     DropMessagePayloads once past the payload window, or with their
//     records' day.
//   - events by range of seq, the cursor every reader of the log walks:
//     events_sNNN holds the seqs from NNN (19 digits) to the next range's
//     first. Ranges are made ahead of the sequence by EnsureEventRanges,
//     each sized to about a day of events (at least eventRangeMin), and
//     dropped by DropEvents once their last event is past the window.
//
// Both use the readings' discipline (partitions.go): partitionLockID, a
// short lock_timeout with retries, and a default partition that takes
// any row no partition covers.

const (
	eventsRangePrefix = "events_s"
	// defaultEventRangeMin is the fewest seqs a new event range spans.
	defaultEventRangeMin = 1 << 16
	// eventRangeMax bounds a range sized from a burst.
	eventRangeMax = 1 << 34
	// eventRangesAhead is how many ranges of the current size must lie
	// ahead of the sequence after a check.
	eventRangesAhead = 2
	// defaultDeleteBatch is how many rows one delete of a default
	// partition (or of message_ids) takes.
	defaultDeleteBatch = 10000
)

var _ retention.LogPartitionStore = (*Store)(nil)

// querier is a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// seqRange is an event range partition: seqs from lo to hi, hi excluded.
type seqRange struct {
	name   string
	lo, hi int64
}

// eventRangeName is the name of the event range starting at lo.
func eventRangeName(lo int64) string {
	return fmt.Sprintf("%s%019d", eventsRangePrefix, lo)
}

var rangeBound = regexp.MustCompile(`FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)`)

// eventRanges returns the event ranges, lowest first (not the default).
func eventRanges(ctx context.Context, q querier) ([]seqRange, error) {
	rows, err := q.Query(ctx, `SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'events'::regclass`)
	if err != nil {
		return nil, fmt.Errorf("event ranges: %w", err)
	}
	var out []seqRange
	var name, bound string
	if _, err := pgx.ForEachRow(rows, []any{&name, &bound}, func() error {
		m := rangeBound.FindStringSubmatch(bound)
		if m == nil {
			return nil // the default
		}
		r := seqRange{name: name}
		var err error
		if r.lo, err = strconv.ParseInt(m[1], 10, 64); err != nil {
			return fmt.Errorf("range %s: %w", name, err)
		}
		if r.hi, err = strconv.ParseInt(m[2], 10, 64); err != nil {
			return fmt.Errorf("range %s: %w", name, err)
		}
		out = append(out, r)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("event ranges: %w", err)
	}
	slices.SortFunc(out, func(a, b seqRange) int { return cmp.Compare(a.lo, b.lo) })
	return out, nil
}

// drawnSeq returns the last seq the sequence handed out, 0 for none.
func drawnSeq(ctx context.Context, q querier) (int64, error) {
	var n int64
	if err := q.QueryRow(ctx, `SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM event_seqs`).Scan(&n); err != nil {
		return 0, fmt.Errorf("event sequence: %w", err)
	}
	return n, nil
}

// EnsureEventRanges makes event ranges until eventRangesAhead ranges of
// the current size lie ahead of the sequence. The size is about a day of
// events at the rate of the range being filled (measured once it has
// been filled for an hour), a power of two of at least eventRangeMin.
func (s *Store) EnsureEventRanges(ctx context.Context) error {
	ranges, err := eventRanges(ctx, s.pool)
	if err != nil {
		return err
	}
	cur, err := drawnSeq(ctx, s.pool)
	if err != nil {
		return err
	}
	size := s.eventRangeSize(ctx, ranges, cur)
	target := cur + 1 + eventRangesAhead*size
	if len(ranges) > 0 && ranges[len(ranges)-1].hi >= target {
		return nil
	}
	err = s.retryLocked(ctx, func(tx pgx.Tx) error {
		ranges, err := eventRanges(ctx, tx) // another node may have made some
		if err != nil {
			return err
		}
		top := int64(1)
		if len(ranges) > 0 {
			top = ranges[len(ranges)-1].hi
		}
		for ; top < target; top += size {
			if err := attachPartition(ctx, tx, "events", eventRangeName(top), "seq", strconv.FormatInt(top, 10), strconv.FormatInt(top+size, 10)); err != nil {
				return fmt.Errorf("range %s: %w", eventRangeName(top), err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create event ranges: %w", err)
	}
	return nil
}

// eventRangeSize sizes the next ranges: about a day of events at the
// rate of the range holding cur.
func (s *Store) eventRangeSize(ctx context.Context, ranges []seqRange, cur int64) int64 {
	size := s.eventRangeMin
	for _, r := range ranges {
		if r.lo > cur || cur >= r.hi {
			continue
		}
		var first int64
		var at time.Time
		err := s.pool.QueryRow(ctx, `SELECT seq, time FROM events WHERE seq >= $1 AND seq < $2 ORDER BY seq LIMIT 1`, r.lo, r.hi).Scan(&first, &at)
		if err != nil {
			break // none yet: the least size
		}
		if elapsed := time.Since(at); elapsed >= time.Hour {
			perDay := float64(cur-first+1) * float64(24*time.Hour) / float64(elapsed)
			if perDay < eventRangeMax {
				size = max(size, int64(1)<<bits.Len64(uint64(perDay)))
			} else {
				size = eventRangeMax
			}
		}
		break
	}
	return min(size, eventRangeMax)
}

// DropEvents implements retention.LogPartitionStore: it drops, lowest
// first, the event ranges whose last event happened before before, and
// deletes the events before before from the default partition. It stops
// at the first range still kept (later ranges hold later events), at a
// range the sequence has not passed yet (seqs of it may still come), and
// at the range holding the newest event, which loses its other events
// only (seqs must not go back). It returns the events removed, counted
// from the planner's estimate for a dropped range. An event so outlives
// its window by up to a range's span (about a day).
//
// A crash in the middle loses nothing that is kept: each range goes in a
// transaction of its own, and a dropped range held only expired events.
func (s *Store) DropEvents(ctx context.Context, before time.Time) (int, error) {
	ranges, err := eventRanges(ctx, s.pool)
	if err != nil {
		return 0, fmt.Errorf("drop events: %w", err)
	}
	done := 0
	for _, r := range ranges {
		var n int
		stop := false
		err := s.retryLocked(ctx, func(tx pgx.Tx) error {
			n, stop = 0, false
			return dropEventRange(ctx, tx, r, before, &n, &stop)
		})
		if err != nil {
			return done, fmt.Errorf("drop event range %s: %w", r.name, err)
		}
		done += n
		if stop {
			break
		}
	}
	n, err := s.deleteBatches(ctx, `DELETE FROM events_default WHERE ctid = ANY(ARRAY(
		SELECT ctid FROM events_default WHERE time < $1 AND seq < (SELECT max(seq) FROM events) LIMIT $2))`, before)
	done += n
	if err != nil {
		return done, fmt.Errorf("drop events: default partition: %w", err)
	}
	return done, nil
}

// dropEventRange drops r if it is done with and its last event happened
// before before; see DropEvents. It sets stop when r stays.
func dropEventRange(ctx context.Context, tx pgx.Tx, r seqRange, before time.Time, n *int, stop *bool) error {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, r.name).Scan(&exists); err != nil || !exists {
		return err // dropped by another node meanwhile
	}
	ident := pgx.Identifier{r.name}.Sanitize()
	// Without a lock first: a range that stays (the usual answer once the
	// expired ones are gone) does not hold ingest up at every pass.
	var lastAt *time.Time
	var drawn int64
	if err := tx.QueryRow(ctx, `SELECT (SELECT time FROM `+ident+` ORDER BY seq DESC LIMIT 1),
		(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM event_seqs)`).Scan(&lastAt, &drawn); err != nil {
		return err
	}
	if (lastAt != nil && !lastAt.Before(before)) || (lastAt == nil && drawn < r.hi-1) {
		*stop = true
		return nil
	}
	// Writers hold their lock on events from drawing a seq (the insert's
	// default) to their commit: once this lock is held, no seq of r is in
	// flight, and the checks below see every event r will ever hold.
	if _, err := tx.Exec(ctx, `LOCK TABLE events IN ACCESS EXCLUSIVE MODE`); err != nil {
		return err
	}
	var last, newest *int64
	var estimate float64
	if err := tx.QueryRow(ctx, `SELECT (SELECT seq FROM `+ident+` ORDER BY seq DESC LIMIT 1), (SELECT time FROM `+ident+` ORDER BY seq DESC LIMIT 1),
		(SELECT max(seq) FROM events), (SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM event_seqs),
		(SELECT reltuples FROM pg_class WHERE oid = $1::regclass)`, r.name).Scan(&last, &lastAt, &newest, &drawn, &estimate); err != nil {
		return err
	}
	switch {
	case last != nil && !lastAt.Before(before):
		*stop = true
		return nil
	case last != nil && newest != nil && *last == *newest:
		// The whole log expired (a quiet hub): the one range with
		// events loses all but the newest.
		*stop = true
		tag, err := tx.Exec(ctx, `DELETE FROM `+ident+` WHERE seq < $1`, *last)
		*n = int(tag.RowsAffected())
		return err
	case drawn < r.hi-1: // seqs of r may still come
		*stop = true
		return nil
	}
	// Done with, and empty (its events rolled back) or expired.
	var err error
	*n, err = dropTable(ctx, tx, ident, estimate)
	return err
}

// DropMessages implements retention.LogPartitionStore: it drops, oldest
// first, the messages partitions whose whole day is before before, and
// deletes the messages received before before from the default partition,
// sparing the newest message (ids restart above it) and its partition
// (which loses its other records only). Then it deletes the message_ids
// entries older than the oldest day still partitioned: a msg_id is a
// duplicate at least as long as its original's record is kept, and at
// most until that record's day is dropped. A message arriving later with
// the msg_id of one whose record went is stored as new (as on SQLite,
// where the record is the dedupe). It returns the records removed,
// counted from the planner's estimate for a dropped partition; a record
// so outlives its window by up to a day.
func (s *Store) DropMessages(ctx context.Context, before time.Time) (int, error) {
	days, err := s.dayPartitions(ctx, messagesDays)
	if err != nil {
		return 0, fmt.Errorf("drop messages: %w", err)
	}
	keepFrom := day(before) // message_ids entries before it go
	done := 0
	for _, d := range days {
		if d.AddDate(0, 0, 1).After(before) {
			break // d and later are kept: not before keepFrom
		}
		var n int
		stop := false
		err := s.retryLocked(ctx, func(tx pgx.Tx) error {
			n, stop = 0, false
			return dropMessagesPartition(ctx, tx, d, &n, &stop)
		})
		if err != nil {
			return done, fmt.Errorf("drop messages partition %s: %w", messagesDays.name(d), err)
		}
		done += n
		if stop {
			keepFrom = d
			break
		}
	}
	// The default partition is small: a row delete, with the records'
	// message_ids entries.
	n, err := s.deleteBatches(ctx, `WITH gone AS (DELETE FROM messages_default WHERE ctid = ANY(ARRAY(
			SELECT ctid FROM messages_default WHERE received_at < $1 AND id < (SELECT max(id) FROM messages) LIMIT $2))
			RETURNING id, device_id, msg_id, received_at),
		ids AS (DELETE FROM message_ids m USING gone WHERE m.device_id = gone.device_id AND m.msg_id = gone.msg_id AND m.id = gone.id),
		pl AS (DELETE FROM message_payloads p USING gone WHERE p.id = gone.id AND p.received_at = gone.received_at)
		SELECT count(*) FROM gone`, before)
	done += n
	if err != nil {
		return done, fmt.Errorf("drop messages: default partition: %w", err)
	}
	if _, err := s.deleteBatches(ctx, `DELETE FROM message_ids WHERE ctid = ANY(ARRAY(
		SELECT ctid FROM message_ids WHERE received_at < $1 AND id < (SELECT max(id) FROM messages) LIMIT $2))`, keepFrom); err != nil {
		return done, fmt.Errorf("drop messages: message ids: %w", err)
	}
	return done, nil
}

// dropMessagesPartition drops the messages partition of day d and its
// payloads' partition, or when it holds the newest message deletes its
// other records (and their payloads) and sets stop.
func dropMessagesPartition(ctx context.Context, tx pgx.Tx, d time.Time, n *int, stop *bool) error {
	name := messagesDays.name(d)
	ident := pgx.Identifier{name}.Sanitize()
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil || !exists {
		return err // dropped by another node meanwhile
	}
	var top, newest *int64
	var estimate float64
	if err := tx.QueryRow(ctx, `SELECT (SELECT max(id) FROM `+ident+`), (SELECT max(id) FROM messages), (SELECT reltuples FROM pg_class WHERE oid = $1::regclass)`, name).
		Scan(&top, &newest, &estimate); err != nil {
		return err
	}
	if top != nil && newest != nil && *top == *newest {
		*stop = true
		var k int
		err := tx.QueryRow(ctx, `WITH gone AS (DELETE FROM `+ident+` WHERE id < $1 RETURNING id, device_id, msg_id, received_at),
			ids AS (DELETE FROM message_ids m USING gone WHERE m.device_id = gone.device_id AND m.msg_id = gone.msg_id AND m.id = gone.id),
			pl AS (DELETE FROM message_payloads p USING gone WHERE p.id = gone.id AND p.received_at = gone.received_at)
			SELECT count(*) FROM gone`, *top).Scan(&k)
		*n = k
		return err
	}
	k, err := dropTable(ctx, tx, ident, estimate)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{payloadsDays.name(d)}.Sanitize()); err != nil {
		return err
	}
	*n = k
	return nil
}

// DropMessagePayloads implements retention.LogPartitionStore: it drops,
// oldest first, the message_payloads partitions whose whole day is before
// before, and deletes the payloads received before before from the
// default partition. The records stay (their metadata is kept for the
// messages window); a payload so outlives its window by up to a day. It
// returns the payloads removed, counted from the planner's estimate for a
// dropped partition.
func (s *Store) DropMessagePayloads(ctx context.Context, before time.Time) (int, error) {
	days, err := s.dayPartitions(ctx, payloadsDays)
	if err != nil {
		return 0, fmt.Errorf("drop message payloads: %w", err)
	}
	done := 0
	for _, d := range days {
		if d.AddDate(0, 0, 1).After(before) {
			break
		}
		name := payloadsDays.name(d)
		var n int
		err := s.retryLocked(ctx, func(tx pgx.Tx) error {
			n = 0
			var estimate *float64
			if err := tx.QueryRow(ctx, `SELECT (SELECT reltuples FROM pg_class WHERE oid = to_regclass($1))`, name).Scan(&estimate); err != nil || estimate == nil {
				return err // dropped by another node meanwhile
			}
			var err error
			n, err = dropTable(ctx, tx, pgx.Identifier{name}.Sanitize(), *estimate)
			return err
		})
		if err != nil {
			return done, fmt.Errorf("drop message payloads partition %s: %w", name, err)
		}
		done += n
	}
	n, err := s.deleteBatches(ctx, `DELETE FROM message_payloads_default WHERE ctid = ANY(ARRAY(
		SELECT ctid FROM message_payloads_default WHERE received_at < $1 LIMIT $2))`, before)
	done += n
	if err != nil {
		return done, fmt.Errorf("drop message payloads: default partition: %w", err)
	}
	return done, nil
}

// deleteBatches runs a delete of at most defaultDeleteBatch rows (its $2;
// $1 is arg) until one deletes fewer, each its own transaction. The
// statement either returns a count (a SELECT count(*) at its end) or
// nothing (its command tag counts).
func (s *Store) deleteBatches(ctx context.Context, sql string, arg any) (int, error) {
	done := 0
	for {
		var k int
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			rows, err := tx.Query(ctx, sql, arg, defaultDeleteBatch)
			if err != nil {
				return err
			}
			counted := false
			for rows.Next() {
				if err := rows.Scan(&k); err != nil {
					rows.Close()
					return err
				}
				counted = true
			}
			rows.Close()
			if !counted {
				k = int(rows.CommandTag().RowsAffected())
			}
			return rows.Err()
		})
		if err != nil {
			return done, err
		}
		done += k
		if k < defaultDeleteBatch {
			return done, nil
		}
	}
}
