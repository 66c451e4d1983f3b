package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/devicehub/devicehub/internal/retention"
)

// Readings are partitioned by UTC day of ts (migration 00710): the
// partition of day D is readings_pYYYYMMDD, and readings_default holds the
// rows of days without one. Partitions are created ahead of time by Run
// (and once by Open) and dropped by retention (DropReadings).
//
// Every partition change takes partitionLockID first, so that the nodes
// of a cluster make them one at a time, and runs with a short
// lock_timeout: attaching and dropping need locks that ingest's inserts
// would queue behind, so a change that cannot have them at once gives up
// and is retried, instead of holding ingest up while it waits.
const (
	partitionLockID = 0x6465767061727473 // "devparts"
	// partitionsAhead is how many days after today get their partition.
	partitionsAhead = 3
	// partitionInterval is how often Run checks the coming days.
	partitionInterval = time.Hour
	// partitionLockTimeout bounds how long a partition change waits for
	// a lock (and so how long an insert may queue behind it).
	partitionLockTimeout = "200ms"
	// partitionTries is how often a change that timed out is tried again,
	// with a growing pause, before the pass gives up until the next.
	partitionTries = 10
)

const readingsPartitionPrefix = "readings_p"

// day returns the UTC day of t.
func day(t time.Time) time.Time {
	return t.UTC().Truncate(24 * time.Hour)
}

// partitionName is the name of the readings partition of day d.
func partitionName(d time.Time) string {
	return readingsPartitionPrefix + d.Format("20060102")
}

// Run creates the readings and messages partitions of the coming days and
// the coming event ranges every hour until ctx ends: a node that cannot create them now (a lock it could not get)
// logs it and tries again at the next check; meanwhile their rows go to
// the default partition, from which creating the partition moves them.
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(partitionInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s.ensureAhead(ctx)
	}
}

// ensureAhead makes the partitions of the coming days (readings and
// messages) and the coming event ranges; a failure only logs, as their
// rows go to the default partitions meanwhile.
func (s *Store) ensureAhead(ctx context.Context) {
	now := time.Now()
	if err := s.EnsurePartitions(ctx, now, now.AddDate(0, 0, partitionsAhead)); err != nil && ctx.Err() == nil {
		s.log.Warn("create readings and messages partitions", "err", err)
	}
	if err := s.EnsureEventRanges(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("create event ranges", "err", err)
	}
}

// dayTable is a table partitioned by UTC day of a time column.
type dayTable struct {
	parent, prefix, column string
}

var (
	readingsDays = dayTable{parent: "readings", prefix: readingsPartitionPrefix, column: "ts"}
	messagesDays = dayTable{parent: "messages", prefix: "messages_p", column: "received_at"}
	payloadsDays = dayTable{parent: "message_payloads", prefix: "message_payloads_p", column: "received_at"}
)

// name is the name of the partition of day d.
func (t dayTable) name(d time.Time) string {
	return t.prefix + d.Format("20060102")
}

// day parses a partition's name; ok is false for other tables.
func (t dayTable) day(name string) (time.Time, bool) {
	s, ok := strings.CutPrefix(name, t.prefix)
	if !ok || len(s) != 8 {
		return time.Time{}, false
	}
	d, err := time.Parse("20060102", s)
	return d, err == nil
}

// EnsurePartitions creates the readings, messages and message payloads
// partitions of the UTC days from from to to (both included) that do not
// exist yet.
func (s *Store) EnsurePartitions(ctx context.Context, from, to time.Time) error {
	for _, t := range []dayTable{readingsDays, messagesDays, payloadsDays} {
		have, err := s.dayPartitions(ctx, t)
		if err != nil {
			return err
		}
		for d := day(from); !d.After(day(to)); d = d.AddDate(0, 0, 1) {
			if slices.Contains(have, d) {
				continue
			}
			if err := s.retryLocked(ctx, func(tx pgx.Tx) error { return createPartition(ctx, tx, t, d) }); err != nil {
				return fmt.Errorf("create %s partition %s: %w", t.parent, t.name(d), err)
			}
		}
	}
	return nil
}

// readingsPartitions returns the days that have a readings partition,
// oldest first.
func (s *Store) readingsPartitions(ctx context.Context) ([]time.Time, error) {
	return s.dayPartitions(ctx, readingsDays)
}

// dayPartitions returns the days of t that have a partition, oldest first.
func (s *Store) dayPartitions(ctx context.Context, t dayTable) ([]time.Time, error) {
	rows, err := s.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass`, t.parent)
	if err != nil {
		return nil, fmt.Errorf("%s partitions: %w", t.parent, err)
	}
	var out []time.Time
	var name string
	if _, err := pgx.ForEachRow(rows, []any{&name}, func() error {
		if d, ok := t.day(name); ok {
			out = append(out, d)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("%s partitions: %w", t.parent, err)
	}
	slices.SortFunc(out, time.Time.Compare)
	return out, nil
}

// createPartition creates day d's partition of t unless another node did:
// a table of its own first, filled with the day's rows from the default
// partition, then attached. Inserts wait for the transaction (a SHARE
// lock on the parent: a row routed to the default partition by an insert
// that overlapped the attach would fail the insert); queries do not,
// except those that read the default partition, which the attach scans
// for rows of the new day under an ACCESS EXCLUSIVE lock (CREATE TABLE
// ... PARTITION OF would lock out queries of every partition). Made days
// ahead, the new partition is empty and the default nearly so: the
// transaction takes milliseconds, once a day.
func createPartition(ctx context.Context, tx pgx.Tx, t dayTable, d time.Time) error {
	return attachPartition(ctx, tx, t.parent, t.name(d), t.column, pgLiteral(d), pgLiteral(d.AddDate(0, 0, 1)))
}

// attachPartition creates the partition name of parent for the values of
// column from from to to (SQL literals), moving its rows out of the
// default partition, unless it exists; see createPartition.
func attachPartition(ctx context.Context, tx pgx.Tx, parent, name, column, from, to string) error {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil || exists {
		return err
	}
	ident, par, col := pgx.Identifier{name}.Sanitize(), pgx.Identifier{parent}.Sanitize(), pgx.Identifier{column}.Sanitize()
	for _, q := range []string{
		// Writers wait from the move to the attach: an insert that routed
		// a row of the new range to the default partition before the
		// attach would fail after it (the default's constraint changed
		// under it).
		`LOCK TABLE ` + par + ` IN SHARE MODE`,
		`CREATE TABLE ` + ident + ` (LIKE ` + par + ` INCLUDING DEFAULTS)`,
		// Lets ATTACH skip its scan of the new table.
		`ALTER TABLE ` + ident + ` ADD CONSTRAINT ` + pgx.Identifier{name + "_range"}.Sanitize() + ` CHECK (` + col + ` >= ` + from + ` AND ` + col + ` < ` + to + `)`,
		`WITH moved AS (DELETE FROM ` + pgx.Identifier{parent + "_default"}.Sanitize() + ` WHERE ` + col + ` >= ` + from + ` AND ` + col + ` < ` + to + ` RETURNING *)
			INSERT INTO ` + ident + ` SELECT * FROM moved`,
		`ALTER TABLE ` + par + ` ATTACH PARTITION ` + ident + ` FOR VALUES FROM (` + from + `) TO (` + to + `)`,
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

// pgLiteral is t as a timestamptz literal (DDL takes no parameters).
func pgLiteral(t time.Time) string {
	return `'` + t.UTC().Format("2006-01-02 15:04:05.999999Z07:00") + `'::timestamptz`
}

// retryLocked runs fn in a transaction that holds partitionLockID and
// waits at most partitionLockTimeout for any lock; a transaction that
// timed out on a lock is tried again after a pause, up to partitionTries
// times.
func (s *Store) retryLocked(ctx context.Context, fn func(tx pgx.Tx) error) error {
	pause := 20 * time.Millisecond
	for try := 1; ; try++ {
		err := s.inTx(ctx, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+partitionLockTimeout+`'`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(partitionLockID)); err != nil {
				return err
			}
			return fn(tx)
		})
		var pgErr *pgconn.PgError
		if err == nil || !errors.As(err, &pgErr) || pgErr.Code != "55P03" || try == partitionTries {
			return err
		}
		s.log.Debug("partition change waited too long for a lock; trying again", "try", try, "err", err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, time.Second)
	}
}

var _ retention.PartitionStore = (*Store)(nil)

// DropReadings implements retention.PartitionStore: it drops the readings
// partitions whose whole day is before before, oldest first, and deletes
// the readings before before from the default partition. Like the row
// deletes, it spares the readings with an id above maxID (when not 0; not
// summed up into rollups yet: a partition that holds one stays, and so do
// the newer ones) and the newest reading of the table (its partition, if
// all of it expired, loses every row but that one). It returns the
// readings removed, counted from the planner's estimate for a dropped
// partition.
//
// A crash in the middle loses nothing that is kept: each partition goes
// in a transaction of its own, and a dropped partition held only expired
// readings.
func (s *Store) DropReadings(ctx context.Context, before time.Time, maxID int64) (int, error) {
	days, err := s.readingsPartitions(ctx)
	if err != nil {
		return 0, fmt.Errorf("drop readings: %w", err)
	}
	if maxID <= 0 {
		maxID = 1<<63 - 1
	}
	done := 0
	for _, d := range days {
		if d.AddDate(0, 0, 1).After(before) {
			break
		}
		var n int
		stop := false
		err := s.retryLocked(ctx, func(tx pgx.Tx) error {
			n, stop = 0, false
			return dropPartition(ctx, tx, partitionName(d), maxID, &n, &stop)
		})
		if err != nil {
			return done, fmt.Errorf("drop readings partition %s: %w", partitionName(d), err)
		}
		done += n
		if stop {
			return done, nil
		}
	}
	// The default partition is small (rows of days without a partition):
	// a row delete, in batches.
	for {
		tag, err := s.exec(ctx, `DELETE FROM readings_default WHERE ctid = ANY(ARRAY(
			SELECT ctid FROM readings_default WHERE ts < $1 AND id <= $2
			AND id < (SELECT max(id) FROM readings) LIMIT 10000))`, before, maxID)
		if err != nil {
			return done, fmt.Errorf("drop readings: default partition: %w", err)
		}
		done += int(tag.RowsAffected())
		if tag.RowsAffected() < 10000 {
			return done, nil
		}
	}
}

// dropPartition drops the partition name, or when it holds the newest
// reading deletes the rest of its rows; it sets stop when the partition
// holds a reading above maxID.
func dropPartition(ctx context.Context, tx pgx.Tx, name string, maxID int64, n *int, stop *bool) error {
	ident := pgx.Identifier{name}.Sanitize()
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil || !exists {
		return err // dropped by another node meanwhile
	}
	var top, newest *int64
	var estimate float64
	if err := tx.QueryRow(ctx, `SELECT (SELECT max(id) FROM `+ident+`), (SELECT max(id) FROM readings), (SELECT reltuples FROM pg_class WHERE oid = $1::regclass)`, name).
		Scan(&top, &newest, &estimate); err != nil {
		return err
	}
	switch {
	case top != nil && *top > maxID:
		*stop = true
		return nil
	case top != nil && newest != nil && *top == *newest:
		tag, err := tx.Exec(ctx, `DELETE FROM `+ident+` WHERE id < $1`, *top)
		*n = int(tag.RowsAffected())
		return err
	}
	var err error
	*n, err = dropTable(ctx, tx, ident, estimate)
	return err
}

// dropTable drops the partition ident (quoted) and returns how many rows
// it held: estimate, the planner's reltuples, or a count when the table
// was never analysed (estimate < 0). Every partition drop of retention
// (readings, events, messages, payloads) ends here.
func dropTable(ctx context.Context, tx pgx.Tx, ident string, estimate float64) (int, error) {
	if estimate < 0 {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+ident).Scan(&estimate); err != nil {
			return 0, fmt.Errorf("count %s: %w", ident, err)
		}
	}
	if _, err := tx.Exec(ctx, `DROP TABLE `+ident); err != nil {
		return 0, fmt.Errorf("drop %s: %w", ident, err)
	}
	return int(estimate), nil
}
