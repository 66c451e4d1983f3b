package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/twin"
)

// txn is one Commit in progress: the transaction every domain's
// operations are written in. It implements commit.Tx and the TxStore of
// every domain; the SQL of each domain is in the file of that domain
// (registry.go, msglog.go, readhead.go, provisioning.go, devicecmd.go).
type txn struct {
	s *Store
	// conn is the writer's connection, held for the whole Commit; tx is
	// the transaction begun on it. The multi-row writes run as driver
	// statements on conn (bulk.execCount), every other statement in tx.
	conn  *sql.Conn
	tx    *sql.Tx
	known map[string]int64 // devices found or created in this batch
	seq   int64
	now   int64 // Unix microseconds, for updated_at columns
	// latest holds the latest values of the devices UpsertLatest read or
	// wrote, by devices.key; the store caches them once committed.
	latest map[int64][]readings.LatestValue
	// snapUpd holds the latest values this transaction wrote, by device
	// id, and types the types ReplaceDevice set: what the snapshot takes
	// once committed (latest.go). Both stay nil without a snapshot.
	snapUpd map[string]latestEntry
	types   map[string]string
	// seen is the last_seen values PatchDevices wrote, remembered by
	// s.seen once committed.
	seen []registry.SeenWrite
	// msgs is the batch row InsertMessages wrote, loaded the dedupe
	// windows it loaded: the message log's memory takes them once
	// committed (applyMessages).
	msgs   *pendingBatch
	loaded map[string]*dedupeWindow
	// rds are the reading batch rows InsertReadings wrote: the readings
	// head takes them once committed (applyReadings).
	rds []*rdPending
	// written and committed are when the batch's statements were done
	// and when COMMIT returned (slowCommit).
	written, committed time.Time
}

// slowCommit: a Commit that took this long is logged with its phases (the
// wait for the writer, which a checkpoint's blocking round or a
// retention transaction holds; the statements; COMMIT, with its fsync).
const slowCommit = 100 * time.Millisecond

// slowLogEvery: under sustained overload every Commit is slow (ten lines
// a second); the line is logged at most once per slowLogEvery, with how
// many slow Commits were not logged since the last one (suppressed).
const slowLogEvery = 10 * time.Second

var (
	_ commit.Tx            = (*txn)(nil)
	_ registry.TxStore     = (*txn)(nil)
	_ readings.TxStore     = (*txn)(nil)
	_ provisioning.TxStore = (*txn)(nil)
	_ commands.TxStore     = (*txn)(nil)
	_ twin.TxStore         = (*txn)(nil)
)

// The commit's inserts are INSERT OR ROLLBACK: a statement that fails
// ends the whole transaction, which Commit rolls back on any error anyway,
// so SQLite needs no statement journal to undo that statement alone (a
// copy of every page a multi-row INSERT changes, 3–4 % of the hub's CPU
// under ingest). Some keep one all the same (measured in the fourteenth
// session, docs/BENCHMARKS.md, "The messages insert without SQLite's
// statement journal"): a multi-row insert that gives the INTEGER PRIMARY
// KEY (messages, events), since SQLite checks each given key is an
// integer and that check may abort half way, whatever the conflict
// clause; the latest_fields upsert; and the devices patch. One-row
// messages inserts journal nothing, but cost more in per-statement
// overhead than they saved, end to end.
func (s *Store) initStatements(ctx context.Context) error {
	s.inserts = map[string]*bulk{
		// The devices' latest values, merged by UpsertLatest.
		"latest_fields": newBulk(s.w,
			`INSERT OR ROLLBACK INTO latest_fields (dev, vals) VALUES `,
			`(?,?)`,
			` ON CONFLICT (dev) DO UPDATE SET vals = excluded.vals`),
		"latest_lookup": newBulk(s.w, `SELECT dev, vals FROM latest_fields WHERE dev IN (`, `?`, `)`),
		"device_types":  newBulk(s.w, `SELECT key, type FROM devices WHERE key IN (`, `?`, `)`),
		"events": newBulk(s.w,
			`INSERT OR ROLLBACK INTO events (seq, type, time, device_id, device_type, args) VALUES `,
			`(?,?,?,?,?,?)`, ``),
		// The readings head's compaction (execTx).
		"reading_blocks": newBulk(s.w,
			`INSERT INTO reading_blocks (dev, stream, t0, t1, n, data) VALUES `,
			`(?,?,?,?,?,?)`, ``),
		// The message log's compaction and payload expiry (execTx).
		"message_blocks": newBulk(s.w,
			`INSERT INTO message_blocks (device_id, first_id, last_id, n, rejected, max_received, payload_from, data) VALUES `,
			`(?,?,?,?,?,?,?,?)`, ``),
	}
	// The last_seen the patches wrote, so that PatchDevices leaves out a
	// patch that only moves it within its resolution.
	s.seen = registry.NewSeenCache(registry.SeenResolution)
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
	for _, b := range s.queryBulks() {
		if err := b.prepare(ctx); err != nil {
			return fmt.Errorf("sqlite statements: %w", err)
		}
	}
	// The writes are prepared on the writer's connection now, not by the
	// first commit.
	err := s.onWriter(ctx, func(dc any) error {
		for _, b := range s.writeBulks() {
			if err := b.prepareRaw(ctx, dc); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite statements: %w", err)
	}
	return nil
}

// queryBulks are the multi-row statements that read (bulk.query) or
// write in a database/sql transaction (bulk.execTx), writeBulks those
// that write in the commit (bulk.exec).
func (s *Store) queryBulks() []*bulk {
	return []*bulk{s.inserts["latest_lookup"], s.inserts["device_types"], s.lookup, s.inserts["message_blocks"], s.inserts["reading_blocks"]}
}

func (s *Store) writeBulks() []*bulk {
	return []*bulk{s.inserts["latest_fields"], s.inserts["events"], s.patch}
}

// onWriter calls fn with the writer's driver connection, outside any
// transaction.
func (s *Store) onWriter(ctx context.Context, fn func(dc any) error) error {
	c, err := s.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("writer connection: %w", err)
	}
	defer c.Close()
	return c.Raw(fn)
}

// Commit writes batch in one transaction; see commit.Store.
func (s *Store) Commit(ctx context.Context, batch []*commit.Change) error {
	start := time.Now()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	locked := time.Now()
	commit.ResetOutcomes(batch)
	if s.snapStale && !s.snapOff {
		if err := s.loadLatest(ctx, s.w); err != nil {
			s.log.Warn("latest values answered from the database until the next commit", "err", err)
		}
	}
	t := &txn{s: s, known: map[string]int64{}, seq: s.seq, now: time.Now().UnixMicro()}
	defer s.args.reset()
	defer func() {
		if d := time.Since(start); d >= s.slowCommit && !t.committed.IsZero() {
			if n, ok := s.slowLogs.Tick(s.clock()); ok {
				s.log.Info("slow commit", "duration", d, "writer_wait", locked.Sub(start),
					"statements", t.written.Sub(locked), "commit", t.committed.Sub(t.written), "changes", len(batch),
					"suppressed", n-1)
			}
		}
	}()
	if err := t.run(ctx, batch); err != nil {
		commit.ResetOutcomes(batch)
		// Whether a failed COMMIT left anything behind is not known
		// here: the cached latest values are read again.
		s.latest = nil
		if s.snap.Swap(nil) != nil {
			s.snapStale = true
		}
		return fmt.Errorf("sqlite commit: %w", err)
	}
	s.seq = t.seq
	s.seen.Committed(t.seen)
	for id, k := range t.known {
		s.keys[id] = k
	}
	s.cacheLatest(t.latest)
	s.publishLatest(t)
	s.applyMessages(t)
	s.applyReadings(t)
	s.committed(len(batch))
	return nil
}

// run begins the transaction, writes the batch and commits.
func (t *txn) run(ctx context.Context, batch []*commit.Change) (err error) {
	t.conn, err = t.s.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("writer connection: %w", err)
	}
	defer t.conn.Close()
	t.tx, err = t.conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			t.tx.Rollback()
		}
	}()
	if err := commit.Write(ctx, t, batch); err != nil {
		return err
	}
	t.written = time.Now()
	if err := t.tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	t.committed = time.Now()
	return nil
}

// key returns the devices.key of a device known to exist.
func (t *txn) key(id string) (int64, bool) {
	if k, ok := t.s.keys[id]; ok {
		return k, true
	}
	k, ok := t.known[id]
	return k, ok
}

// LookupDevices implements commit.Tx: it finds the keys of the devices
// that are not cached yet.
func (t *txn) LookupDevices(ctx context.Context, ids []string) error {
	args := t.s.args.take(len(ids))
	for _, id := range ids {
		if _, ok := t.key(id); !ok {
			args = append(args, id)
		}
	}
	return t.s.lookup.query(ctx, t.tx, args, func(r *sql.Rows) error {
		var id string
		var k int64
		if err := r.Scan(&id, &k); err != nil {
			return err
		}
		t.known[id] = k
		return nil
	})
}

// DeviceExists implements commit.Tx.
func (t *txn) DeviceExists(ctx context.Context, id string) (bool, error) {
	if _, ok := t.key(id); ok {
		return true, nil
	}
	var k int64
	err := t.tx.QueryRowContext(ctx, `SELECT key FROM devices WHERE id = ?`, id).Scan(&k)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up device %s: %w", id, err)
	}
	t.known[id] = k
	return true, nil
}

// eventCols are the columns of a row of the events insert.
const eventCols = 6

// WriteEvents implements commit.Tx: seqs are counted here, under wmu.
func (t *txn) WriteEvents(ctx context.Context, evs []*commit.Event) error {
	args := t.s.args.take(len(evs) * eventCols)
	for _, e := range evs {
		t.seq++
		e.Seq = t.seq
		var evArgs any
		if e.Args != nil {
			evArgs = sharedText(e.Args)
		}
		args = append(args, e.Seq, string(e.Type), e.Time.UnixMicro(), e.DeviceID, e.DeviceType, evArgs)
	}
	return t.s.inserts["events"].exec(ctx, t, args)
}

// jsonText binds pre-encoded JSON as text (SQLite's json functions read a
// blob as JSONB), or NULL for none.
func jsonText(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// sharedText is b as a string without a copy, for the arguments of the
// commit's multi-row writes only (bulk.execCount): the driver copies a
// text value into SQLite when it binds it and keeps no reference once
// the statement returns, and b (an event's encoded arguments, the
// latest values' encoding for the snapshot) is not written once its
// change was built. A copy of each was ~4 % of the
// hub's allocated bytes under ingest.
func sharedText(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}
