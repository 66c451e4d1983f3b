package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devicehub/devicehub/internal/readbatch"
	"github.com/devicehub/devicehub/internal/readings"
)

// Readings without a row per reading (migration 01000, docs/WRITE-PATH.md
// "Built: readings without rows"). The design is the message log's
// (msglog.go):
//
//   - A commit encodes its batch's readings (readbatch) into one row of
//     reading_batches, with reading ids of the store's own: one past the
//     largest ever stored, contiguous within the row.
//   - The head indexes the rows of reading_batches in memory: per device,
//     its readings' ids, times, streams, rows and offsets (the queries,
//     the rollups' roller, expiry). It is built from the table at open.
//   - runReadings (under Run) moves the oldest batch rows into
//     reading_blocks, per device and stream, in one transaction each
//     chunk, when the head passes its bounds or a row its age, and only
//     then drops them from the head.
//   - The readings table of an older database is read, compacted
//     (retention.Compactor) and expired as before; no row is added.
//
// Memory is changed only once the transaction that wrote it committed: a
// failed or retried Commit leaves the head and the largest id as they
// were. Lock order: cmu, then wmu, then hmu. Every change of the head
// holds wmu and hmu; readers copy from it under hmu (read). cmu
// serialises what moves readings between the head, rows and blocks
// (compaction, CompactDevices, expiry) and CountReadings, so that the
// blocks a compaction read before it took wmu are still the newest when
// it writes, and a count sees a reading once.

// ReadingsHeadOptions bound the readings head's memory (SQLite).
type ReadingsHeadOptions struct {
	// MaxReadings and MaxBytes bound the readings of reading_batches
	// (kept in memory as the head); past either, the oldest rows are
	// moved into blocks until half are left (default 50,000 readings,
	// 8 MiB of encoded batches: the hub's GOGC of 400 lets the heap grow
	// to five times what the head holds, and a larger head moves no more
	// readings a device per chunk).
	MaxReadings int
	MaxBytes    int64
	// MaxAge: rows older than this are moved into blocks even when the
	// head is within its bounds (default 10m).
	MaxAge time.Duration
	// Rollups: the rollups' roller reads the readings the head holds
	// (ReadingsAfter), so a row is moved into blocks only once the
	// roller summed all of it up (retention.rollups).
	Rollups bool
}

func (o *ReadingsHeadOptions) defaults() {
	if o.MaxReadings <= 0 {
		o.MaxReadings = 50_000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 8 << 20
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 10 * time.Minute
	}
}

// readingsChunk bounds the readings one compaction transaction moves: the
// writer (and so every commit) waits for it.
const readingsChunk = 10_000

// readHead is the store's readings head and what goes with it.
type readHead struct {
	opts ReadingsHeadOptions
	max  atomic.Int64 // the largest reading id stored, or ever stored
	// rollup is the rollups' cursor (the last id summed up), kept when
	// opts.Rollups: rows up to it may be moved.
	rollup atomic.Int64
	kick   chan struct{}

	cmu sync.Mutex // see the lock order above
	// hmu guards head; changing it also needs wmu.
	hmu  sync.RWMutex
	head rdHead

	// Under wmu.
	enc     readbatch.Encoder
	encBuf  []byte
	insert  *sql.Stmt
	streams map[string]string // interned stream names

	compactHook func() error // tests: runs at the end of a compaction's transaction
	compacted   atomic.Int64 // readings moved into blocks
	compactions atomic.Int64 // compaction transactions committed
}

// rdHead is reading_batches in memory: its rows' data, and an index of
// their readings by device. A row's data is never changed in place (a
// partial move replaces it), so that a reader may keep it.
type rdHead struct {
	devs    map[string][]rdEntry // in id order
	batches []rdBatch            // in id order
	data    map[int64][]byte     // the rows' data by first_id
	n       int
	bytes   int64
}

// rdEntry is one reading of a batch row: its id, time (Unix µs), stream,
// the row (first_id) and its record's offset in the row's data.
type rdEntry struct {
	id, ts, batch int64
	off           uint32
	stream        string
}

// rdBatch is one row of reading_batches. first is its key (the smallest
// id it was written with), last its largest id.
type rdBatch struct {
	first, last int64
	n, bytes    int
	devs        []string // distinct
	at          time.Time
	data        []byte
}

// rdPending is what a Commit's batch row adds to the head once
// committed.
type rdPending struct {
	b       rdBatch
	entries []rdDevEntry
}

type rdDevEntry struct {
	dev string
	e   rdEntry
}

// emptyObject is the values of a reading without any.
var emptyObject = []byte("{}")

// initReadingsHead finds the largest reading id and builds the head from
// reading_batches.
func (s *Store) initReadingsHead(ctx context.Context, opts ReadingsHeadOptions) error {
	opts.defaults()
	rh := &s.rh
	rh.opts = opts
	rh.kick = make(chan struct{}, 1)
	rh.streams = map[string]string{}
	rh.head.devs = map[string][]rdEntry{}
	rh.head.data = map[int64][]byte{}
	var err error
	rh.insert, err = s.w.PrepareContext(ctx, `INSERT INTO reading_batches (first_id, last_id, n, data) VALUES (?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("prepare reading batch insert: %w", err)
	}
	var top int64
	err = s.w.QueryRowContext(ctx, `SELECT max(
		coalesce((SELECT max(id) FROM readings), 0),
		coalesce((SELECT max(last_id) FROM reading_batches), 0),
		coalesce((SELECT value FROM reading_state WHERE name = 'max_id'), 0))`).Scan(&top)
	if err != nil {
		return fmt.Errorf("readings: largest id: %w", err)
	}
	rh.max.Store(top)
	if opts.Rollups {
		var cur int64
		err := s.w.QueryRowContext(ctx, `SELECT last_id FROM rollup_cursor WHERE name = 'readings'`).Scan(&cur)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("readings: rollup cursor: %w", err)
		}
		rh.rollup.Store(cur)
	}
	rows, err := s.w.QueryContext(ctx, `SELECT first_id, data FROM reading_batches ORDER BY first_id`)
	if err != nil {
		return fmt.Errorf("readings: read batches: %w", err)
	}
	defer rows.Close()
	now := time.Now()
	for rows.Next() {
		var first int64
		var data []byte
		if err := rows.Scan(&first, &data); err != nil {
			return fmt.Errorf("readings: read batches: %w", err)
		}
		pb, err := pendingOf(first, data)
		if err != nil {
			return fmt.Errorf("readings: batch %d: %w", first, err)
		}
		pb.b.at = now
		rh.head.add(pb, rh.intern)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("readings: read batches: %w", err)
	}
	return nil
}

// pendingOf indexes batch row first's data.
func pendingOf(first int64, data []byte) (*rdPending, error) {
	pb := &rdPending{b: rdBatch{first: first, bytes: len(data), data: data}}
	err := readbatch.Each(data, func(r *readbatch.Record, off int) error {
		pb.add(strings.Clone(r.DeviceID), rdEntry{id: r.ID, ts: r.Time, off: uint32(off), stream: r.Stream})
		return nil
	})
	if err != nil {
		return nil, err
	}
	pb.finish()
	return pb, nil
}

func (pb *rdPending) add(dev string, e rdEntry) {
	b := &pb.b
	if b.n == 0 || e.id > b.last {
		b.last = e.id
	}
	b.n++
	b.devs = append(b.devs, dev) // made distinct by finish
	pb.entries = append(pb.entries, rdDevEntry{dev, e})
}

func (pb *rdPending) finish() {
	slices.Sort(pb.b.devs)
	pb.b.devs = slices.Clip(slices.Compact(pb.b.devs))
}

// intern returns the stream name s as kept in the head (one string per
// name); the caller holds wmu.
func (rh *readHead) intern(s string) string {
	if v, ok := rh.streams[s]; ok {
		return v
	}
	if len(rh.streams) >= 1<<12 {
		return strings.Clone(s)
	}
	v := strings.Clone(s)
	rh.streams[v] = v
	return v
}

// add puts a committed batch row into the head; the caller holds wmu and
// hmu.
func (h *rdHead) add(pb *rdPending, intern func(string) string) {
	for _, de := range pb.entries {
		de.e.batch = pb.b.first
		de.e.stream = intern(de.e.stream)
		h.devs[de.dev] = append(h.devs[de.dev], de.e)
	}
	h.batches = append(h.batches, pb.b)
	h.data[pb.b.first] = pb.b.data
	h.n += pb.b.n
	h.bytes += int64(pb.b.bytes)
}

// drop removes the batch rows firsts (sorted) from the head; the caller
// holds wmu and hmu.
func (h *rdHead) drop(firsts []int64) {
	if len(firsts) == 0 {
		return
	}
	in := func(b int64) bool { _, ok := slices.BinarySearch(firsts, b); return ok }
	// The head's compaction drops its oldest rows: then a device's
	// entries of dropped rows are the front of its entries (they are in
	// row order), cut off without testing every entry.
	prefix := len(firsts) <= len(h.batches)
	for i := 0; prefix && i < len(firsts); i++ {
		prefix = h.batches[i].first == firsts[i]
	}
	devs := map[string]struct{}{}
	kept := h.batches[:0]
	for _, b := range h.batches {
		if !in(b.first) {
			kept = append(kept, b)
			continue
		}
		h.n -= b.n
		h.bytes -= int64(b.bytes)
		delete(h.data, b.first)
		for _, d := range b.devs {
			devs[d] = struct{}{}
		}
	}
	clear(h.batches[len(kept):])
	h.batches = kept
	for d := range devs {
		if prefix {
			h.trimFront(d, firsts[len(firsts)-1])
			continue
		}
		h.trim(d, func(e *rdEntry) bool { return in(e.batch) })
	}
}

// trimFront removes dev's entries of rows up to the row that begins at
// last, which are the front of its entries.
func (h *rdHead) trimFront(dev string, last int64) {
	es := h.devs[dev]
	i, _ := slices.BinarySearchFunc(es, last, func(e rdEntry, t int64) int { return cmp.Compare(e.batch, t+1) })
	h.keep(dev, es[i:])
}

// trim removes dev's entries for which gone is true.
func (h *rdHead) trim(dev string, gone func(e *rdEntry) bool) {
	h.keep(dev, slices.DeleteFunc(h.devs[dev], func(e rdEntry) bool { return gone(&e) }))
}

// keep makes es dev's entries, in a smaller array when es uses less
// than half of its own.
func (h *rdHead) keep(dev string, es []rdEntry) {
	switch {
	case len(es) == 0:
		delete(h.devs, dev)
	case cap(es) > 2*len(es)+16:
		h.devs[dev] = slices.Clip(slices.Clone(es))
	default:
		h.devs[dev] = es
	}
}

// rewrite gives batch row first the data left after some of its readings
// moved out (nil: the row was deleted); the caller holds wmu and hmu.
func (h *rdHead) rewrite(first int64, data []byte) {
	if data == nil {
		h.drop([]int64{first})
		return
	}
	offs := map[int64]uint32{}
	last := int64(0)
	readbatch.Each(data, func(r *readbatch.Record, off int) error {
		offs[r.ID] = uint32(off)
		last = max(last, r.ID)
		return nil
	})
	i := slices.IndexFunc(h.batches, func(b rdBatch) bool { return b.first == first })
	if i < 0 {
		return
	}
	b := &h.batches[i]
	var devs []string
	for _, d := range b.devs {
		h.trim(d, func(e *rdEntry) bool {
			_, ok := offs[e.id]
			return e.batch == first && !ok
		})
		es := h.devs[d]
		kept := false
		for j := range es {
			if es[j].batch == first {
				es[j].off = offs[es[j].id]
				kept = true
			}
		}
		if kept {
			devs = append(devs, d)
		}
	}
	h.n += len(offs) - b.n
	h.bytes += int64(len(data) - b.bytes)
	b.n, b.bytes, b.last, b.data, b.devs = len(offs), len(data), last, data, devs
	h.data[first] = data
}

// InsertReadings implements readings.TxStore: the batch's readings, as
// one row of reading_batches.
func (t *txn) InsertReadings(ctx context.Context, rows []readings.ReadingRow) error {
	if len(rows) == 0 {
		return nil
	}
	rh := &t.s.rh
	id := rh.max.Load()
	if n := len(t.rds); n > 0 {
		id = t.rds[n-1].b.last
	}
	rh.enc.Reset(rh.encBuf)
	pb := &rdPending{b: rdBatch{first: id + 1}, entries: make([]rdDevEntry, 0, len(rows))}
	for i := range rows {
		r := &rows[i]
		if _, ok := t.key(r.DeviceID); !ok {
			return fmt.Errorf("device %s of a reading is not known", r.DeviceID)
		}
		id++
		vals := r.Values
		if len(vals) == 0 {
			vals = emptyObject
		}
		ts := r.Time.UnixMicro()
		off := rh.enc.Add(&readbatch.Record{ID: id, DeviceID: r.DeviceID, Stream: r.Stream, Time: ts,
			ReceivedAt: r.ReceivedAt.UnixMicro(), MessageID: r.MessageID, Values: vals})
		pb.add(r.DeviceID, rdEntry{id: id, ts: ts, off: uint32(off), stream: r.Stream})
	}
	pb.finish()
	// The data is the head's from now on: the next batch gets a buffer
	// of its own, about as large.
	data := rh.enc.Bytes()
	rh.encBuf = make([]byte, 0, len(data)+len(data)/4)
	pb.b.bytes, pb.b.data = len(data), data
	if _, err := t.tx.StmtContext(ctx, rh.insert).ExecContext(ctx, pb.b.first, pb.b.last, pb.b.n, data); err != nil {
		return fmt.Errorf("insert reading batch: %w", err)
	}
	t.rds = append(t.rds, pb)
	return nil
}

// applyReadings puts what a committed transaction wrote into the head;
// the caller holds wmu.
func (s *Store) applyReadings(t *txn) {
	if len(t.rds) == 0 {
		return
	}
	rh := &s.rh
	now := s.clock()
	rh.hmu.Lock()
	for _, pb := range t.rds {
		pb.b.at = now
		rh.head.add(pb, rh.intern)
	}
	over := rh.head.n > rh.opts.MaxReadings || rh.head.bytes > rh.opts.MaxBytes
	rh.hmu.Unlock()
	rh.max.Store(t.rds[len(t.rds)-1].b.last)
	if over {
		select {
		case rh.kick <- struct{}{}:
		default:
		}
	}
}

// rdRef is a copy of a head entry with its row's data.
type rdRef struct {
	rdEntry
	data []byte
}

func (r *rdRef) decode() (readbatch.Record, error) {
	rec, _, err := readbatch.DecodeAt(r.data, int(r.off))
	if err != nil {
		return rec, fmt.Errorf("reading batch %d: %w", r.batch, err)
	}
	return rec, nil
}

// headRefs copies device dev's head entries that keep accepts; with
// top > 0 only the newest top of them (by time, then id), newest first,
// so that a page of a device with many readings in the head copies and
// sorts about a page.
func (s *Store) headRefs(dev string, keep func(e *rdEntry) bool, top int) []rdRef {
	rh := &s.rh
	rh.hmu.RLock()
	defer rh.hmu.RUnlock()
	var out []rdRef
	for _, e := range rh.head.devs[dev] {
		if keep(&e) {
			out = append(out, rdRef{e, rh.head.data[e.batch]})
			if top > 0 && len(out) >= 2*top+64 {
				sortRefsNewest(out)
				out = out[:top]
			}
		}
	}
	if top > 0 {
		sortRefsNewest(out)
		out = out[:min(top, len(out))]
	}
	return out
}

// sortRefsNewest sorts refs newest first: by time, then id, descending.
func sortRefsNewest(refs []rdRef) {
	slices.SortFunc(refs, func(a, b rdRef) int { return cmp.Or(cmp.Compare(b.ts, a.ts), cmp.Compare(b.id, a.id)) })
}

// headQuery returns up to need of the head's readings of q, newest first.
func (s *Store) headQuery(q readings.Query, need int) ([]readings.Record, error) {
	from, to := int64(math.MinInt64), int64(math.MaxInt64)
	if !q.From.IsZero() {
		from = q.From.UnixMicro()
	}
	if !q.To.IsZero() {
		to = q.To.UnixMicro()
	}
	var cts, cid int64
	cursor := q.Cursor != ""
	if cursor {
		var err error
		if cts, cid, err = readings.DecodeCursor(q.Cursor); err != nil {
			return nil, err
		}
	}
	// With a field, readings without it are skipped once decoded: every
	// match is copied. Without, the newest need are the page.
	top := need
	if q.Field != "" {
		top = 0
	}
	refs := s.headRefs(q.DeviceID, func(e *rdEntry) bool {
		return (q.Stream == "" || e.stream == q.Stream) && e.ts >= from && e.ts < to &&
			(!cursor || e.ts < cts || (e.ts == cts && e.id < cid))
	}, top)
	sortRefsNewest(refs)
	var out []readings.Record
	for i := range refs {
		if len(out) >= need {
			break
		}
		rec, err := refs[i].decode()
		if err != nil {
			return nil, err
		}
		var vals map[string]any
		if err := json.Unmarshal(rec.Values, &vals); err != nil {
			return nil, fmt.Errorf("decode reading %d: %w", rec.ID, err)
		}
		if q.Field != "" {
			v, ok := vals[q.Field]
			if !ok {
				continue
			}
			vals = map[string]any{q.Field: v}
		}
		out = append(out, readings.Record{ID: rec.ID, DeviceID: q.DeviceID, Stream: refs[i].stream,
			Time: micros(rec.Time), ReceivedAt: micros(rec.ReceivedAt), MessageID: rec.MessageID, Values: vals})
	}
	return out, nil
}

// dedupeNewest drops the records of rs (sorted newest first) that repeat
// the one before: a reading a compaction moved between the copy of the
// head and the read of the blocks is in both.
func dedupeNewest(rs []readings.Record) []readings.Record {
	return slices.CompactFunc(rs, func(a, b readings.Record) bool { return a.ID == b.ID })
}

// headCount returns how many readings the head holds of dev ("": all).
func (s *Store) headCount(dev string) int64 {
	rh := &s.rh
	rh.hmu.RLock()
	defer rh.hmu.RUnlock()
	if dev == "" {
		return int64(rh.head.n)
	}
	return int64(len(rh.head.devs[dev]))
}

// headAfter returns up to limit of the head's readings with an id after
// after, by id (the rollups' roller).
func (s *Store) headAfter(after int64, limit int) ([]rawRecord, error) {
	rh := &s.rh
	var datas [][]byte
	rh.hmu.RLock()
	for _, b := range rh.head.batches {
		if b.last > after {
			datas = append(datas, b.data)
		}
	}
	rh.hmu.RUnlock()
	var out []rawRecord
	for _, d := range datas {
		err := readbatch.Each(d, func(r *readbatch.Record, _ int) error {
			if r.ID > after {
				out = append(out, rawRecord(*r))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if len(out) >= limit {
			break
		}
	}
	slices.SortFunc(out, func(a, b rawRecord) int { return cmp.Compare(a.ID, b.ID) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

type rawRecord readbatch.Record
