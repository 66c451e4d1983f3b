package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/devicehub/devicehub/internal/blocks"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/retention"
)

var _ retention.CompactStore = (*Store)(nil)

// blockSize is the most readings a block holds: a block is decoded whole,
// so it bounds the work of a query that needs one reading of it (about
// 1 µs a reading), while a few hundred readings spread a block's field
// names and column headers thin.
const blockSize = 512

// CompactReadings implements retention.CompactStore: CompactDevices of
// one device.
func (s *Store) CompactReadings(ctx context.Context, deviceID string, before time.Time, maxID int64, limit int) (int, error) {
	n, _, err := s.CompactDevices(ctx, []string{deviceID}, before, maxID, limit)
	return n, err
}

// CompactDevices implements retention.CompactStore. In one transaction,
// device after device in the order given, it reads up to what is left of
// limit of the device's readings taken before before (rows of the
// readings table, then readings of the head; never the table's newest
// row nor the newest reading, so that ids are not reused, and with an id
// of at most maxID when maxID > 0), merges them per stream into the stream's newest
// block while that holds fewer than blockSize readings, writes the rest
// as new blocks, and deletes the rows. It returns how many readings it
// moved and how many of the leading devices have none left to move (it
// stops at the device that used up limit). A failure anywhere rolls all
// of it back: a reading is a row or in a block, never both, never
// neither. Head readings leave their batch rows, which are rewritten
// without them (or deleted) in the same transaction.
//
// Several devices in one transaction write each page of the readings
// table once where one transaction a device would write it once per
// device on it (rows are stored in arrival order, many devices a page),
// and commit (fsync) once.
func (s *Store) CompactDevices(ctx context.Context, deviceIDs []string, before time.Time, maxID int64, limit int) (moved, done int, err error) {
	if limit <= 0 {
		return 0, 0, fmt.Errorf("compact readings: limit %d", limit)
	}
	if maxID <= 0 {
		maxID = 1<<63 - 1
	}
	s.rh.cmu.Lock()
	defer s.rh.cmu.Unlock()
	hm := &headMove{}
	_, err = s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
		moved, done = 0, 0
		*hm = headMove{}
		for _, id := range deviceIDs {
			n, err := s.compactDevice(ctx, tx, hm, id, before, maxID, limit-moved)
			if err != nil {
				return 0, fmt.Errorf("compact readings of %s: %w", id, err)
			}
			moved += n
			if moved >= limit {
				break
			}
			done++
		}
		if err := s.rewriteRows(ctx, tx, hm); err != nil {
			return 0, fmt.Errorf("rewrite reading batches: %w", err)
		}
		if s.compactHook != nil {
			if err := s.compactHook(); err != nil {
				return 0, err
			}
		}
		return moved, nil
	}, func() { hm.apply(&s.rh) })
	if err != nil {
		return 0, 0, fmt.Errorf("compact readings: %w", err)
	}
	return moved, done, nil
}

// compactDevice moves up to limit of one device's due readings into its
// blocks within tx (moveDevice), then merges its small blocks that ended
// before before with what is left of limit (mergeSmallBlocks). It returns
// how many readings it wrote into blocks, both counted.
func (s *Store) compactDevice(ctx context.Context, tx *sql.Tx, hm *headMove, deviceID string, before time.Time, maxID int64, limit int) (int, error) {
	var key int64
	if err := tx.QueryRowContext(ctx, `SELECT key FROM devices WHERE id = ?`, deviceID).Scan(&key); err != nil {
		if err == sql.ErrNoRows {
			return 0, nil
		}
		return 0, err
	}
	n, err := s.moveDevice(ctx, tx, hm, key, deviceID, before, maxID, limit)
	if err != nil || n >= limit {
		return n, err
	}
	m, err := s.mergeSmallBlocks(ctx, tx, key, before, limit-n)
	if err != nil {
		return 0, fmt.Errorf("merge small blocks: %w", err)
	}
	return n + m, nil
}

// smallBlock is a block of fewer than blockSize/2 readings.
type smallBlock struct {
	id   int64
	n    int
	data []byte
}

// mergeSmallBlocks merges, stream by stream, the device's blocks of fewer
// than blockSize/2 readings that ended before before (the readings head's
// compaction writes them: planHeadBlocks) into blocks of up to blockSize
// readings, in tx, the old blocks deleted in the same transaction. It
// reads small blocks, stream by stream and oldest first, until they hold
// budget readings and the last stream read has two (so a budget smaller
// than one block still merges); a stream with one small block keeps it,
// so every merge leaves fewer small blocks than it found. It returns how many readings it wrote.
func (s *Store) mergeSmallBlocks(ctx context.Context, tx *sql.Tx, key int64, before time.Time, budget int) (int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, stream, n, data FROM reading_blocks
		WHERE dev = ? AND t1 < ? AND n < ? ORDER BY stream, t0, id`, key, before.UnixMicro(), blockSize/2)
	if err != nil {
		return 0, err
	}
	var streams []string
	byStream := map[string][]smallBlock{}
	total := 0
	for rows.Next() {
		var b smallBlock
		var stream string
		if err := rows.Scan(&b.id, &stream, &b.n, &b.data); err != nil {
			rows.Close()
			return 0, err
		}
		if _, ok := byStream[stream]; !ok {
			streams = append(streams, stream)
		}
		byStream[stream] = append(byStream[stream], b)
		total += b.n
		if total >= budget && len(byStream[stream]) >= 2 {
			break
		}
	}
	if err := rows.Close(); err != nil {
		return 0, err
	}
	merged := 0
	for _, st := range streams {
		bs := byStream[st]
		if len(bs) < 2 {
			continue
		}
		var rs []blocks.Reading
		ids := make([]int64, len(bs))
		for i, b := range bs {
			part, err := blocks.Decode(b.data)
			if err != nil {
				return 0, fmt.Errorf("block %d: %w", b.id, err)
			}
			rs = append(rs, part...)
			ids[i] = b.id
		}
		ws, err := planBlocks(key, st, rs, 0, 0, nil)
		if err != nil {
			return 0, fmt.Errorf("stream %q: %w", st, err)
		}
		if err := execIn(ctx, tx, `DELETE FROM reading_blocks WHERE id IN (`, ids); err != nil {
			return 0, err
		}
		if err := s.execBlocks(ctx, tx, ws); err != nil {
			return 0, err
		}
		merged += len(rs)
	}
	return merged, nil
}

// moveDevice moves up to limit of one device's due readings into its
// blocks within tx: rows of the readings table (an older database's)
// first, then readings of the head, whose batch rows hm rewrites.
func (s *Store) moveDevice(ctx context.Context, tx *sql.Tx, hm *headMove, key int64, deviceID string, before time.Time, maxID int64, limit int) (int, error) {
	rows, err := tx.QueryContext(ctx, `SELECT id, stream, ts, received_at, message_id, data FROM readings
		WHERE dev = ? AND ts < ? AND id < (SELECT max(id) FROM readings) AND id <= ? ORDER BY ts, id LIMIT ?`,
		key, before.UnixMicro(), maxID, limit)
	if err != nil {
		return 0, err
	}
	byStream := map[string][]blocks.Reading{}
	var ids []any
	for rows.Next() {
		var r blocks.Reading
		var stream, data string
		if err := rows.Scan(&r.ID, &stream, &r.Time, &r.ReceivedAt, &r.MessageID, &data); err != nil {
			rows.Close()
			return 0, err
		}
		if err := json.Unmarshal([]byte(data), &r.Values); err != nil {
			rows.Close()
			return 0, fmt.Errorf("reading %d: %w", r.ID, err)
		}
		byStream[stream] = append(byStream[stream], r)
		ids = append(ids, r.ID)
	}
	if err := rows.Close(); err != nil {
		return 0, err
	}
	n := len(ids)
	if n == 0 {
		return s.compactHeadDevice(ctx, tx, hm, key, deviceID, before, maxID, limit)
	}
	streams := make([]string, 0, len(byStream))
	for st := range byStream {
		streams = append(streams, st)
	}
	slices.Sort(streams)
	for _, st := range streams {
		if err := s.writeBlocks(ctx, tx, key, st, byStream[st]); err != nil {
			return 0, fmt.Errorf("stream %q: %w", st, err)
		}
	}
	for len(ids) > 0 {
		k := min(len(ids), 500)
		q := `DELETE FROM readings WHERE id IN (?` + strings.Repeat(",?", k-1) + `)`
		res, err := tx.ExecContext(ctx, q, ids[:k]...)
		if err != nil {
			return 0, err
		}
		if d, _ := res.RowsAffected(); d != int64(k) {
			return 0, fmt.Errorf("deleted %d of %d compacted readings", d, k)
		}
		ids = ids[k:]
	}
	h, err := s.compactHeadDevice(ctx, tx, hm, key, deviceID, before, maxID, limit-n)
	return n + h, err
}

// writeBlocks merges rs into the stream's newest block if it is not full
// and writes the rest as new blocks of at most blockSize readings.
func (s *Store) writeBlocks(ctx context.Context, tx *sql.Tx, key int64, stream string, rs []blocks.Reading) error {
	last, n, data, err := newestBlock(ctx, tx, key, stream)
	if err != nil {
		return err
	}
	ws, err := planBlocks(key, stream, rs, last, n, data)
	if err != nil {
		return err
	}
	return s.execBlocks(ctx, tx, ws)
}

// newestBlock returns the id, count and data of the stream's newest block
// (by its end), id 0 when it has none.
func newestBlock(ctx context.Context, q querier, key int64, stream string) (id int64, n int, data []byte, err error) {
	err = q.QueryRowContext(ctx, `SELECT id, n, data FROM reading_blocks WHERE dev = ? AND stream = ? ORDER BY t1 DESC LIMIT 1`,
		key, stream).Scan(&id, &n, &data)
	if err == sql.ErrNoRows {
		return 0, 0, nil, nil
	}
	return id, n, data, err
}

// blockWrite is one block to write: the update of block id, or a new
// block (id 0).
type blockWrite struct {
	id     int64
	key    int64
	stream string
	t0, t1 int64
	n      int
	data   []byte
}

// planBlocks encodes rs, merged into the stream's newest block (id last,
// n readings, data) while that holds fewer than blockSize, as the blocks
// to write: the newest block's update and new blocks of at most
// blockSize readings.
func planBlocks(key int64, stream string, rs []blocks.Reading, last int64, n int, data []byte) ([]blockWrite, error) {
	switch {
	case last == 0:
	case n < blockSize:
		old, err := blocks.Decode(data)
		if err != nil {
			return nil, fmt.Errorf("block %d: %w", last, err)
		}
		rs = append(old, rs...)
	default:
		last = 0
	}
	blocks.Sort(rs)
	// Even chunks: 513 readings make blocks of 257 and 256, not 512 and 1.
	chunks := (len(rs) + blockSize - 1) / blockSize
	ws := make([]blockWrite, 0, chunks)
	for c := range chunks {
		part := rs[c*len(rs)/chunks : (c+1)*len(rs)/chunks]
		b, err := blocks.Encode(part)
		if err != nil {
			return nil, err
		}
		w := blockWrite{key: key, stream: stream, t0: part[0].Time, t1: part[len(part)-1].Time, n: len(part), data: b}
		if c == 0 {
			w.id = last
		}
		ws = append(ws, w)
	}
	return ws, nil
}

// execBlocks writes ws: the updates one by one, the new blocks in
// multi-row inserts.
func (s *Store) execBlocks(ctx context.Context, tx *sql.Tx, ws []blockWrite) error {
	var args []any
	for _, w := range ws {
		if w.id == 0 {
			args = append(args, w.key, w.stream, w.t0, w.t1, w.n, w.data)
			continue
		}
		if _, err := tx.ExecContext(ctx, `UPDATE reading_blocks SET t0 = ?, t1 = ?, n = ?, data = ? WHERE id = ?`, w.t0, w.t1, w.n, w.data, w.id); err != nil {
			return err
		}
	}
	return s.inserts["reading_blocks"].execTx(ctx, tx, args)
}

// blockScan reads a device's blocks that may hold readings of a query,
// newest end first, and collects the matching readings until need of
// them are certain to be the newest (a block whose end is before the
// need-th newest collected cannot hold a newer one). It returns them
// newest first (by time, then id).
type blockScan struct {
	stream     string
	from, to   int64 // [from, to); to 0: no bound
	afterTS    int64 // with afterID: only readings before (afterTS, afterID) in the newest-first order
	afterID    int64
	cursor     bool
	need       int    // 0: every reading
	field      string // only this field's values are decoded ("": every field's)
	keep       func(r *blocks.Reading) bool
	deviceID   string
	collected  []readings.Record
	blocksRead int
}

func (s *Store) scanBlocks(ctx context.Context, b *blockScan) error {
	q := `SELECT stream, t0, t1, data FROM reading_blocks WHERE dev = (SELECT key FROM devices WHERE id = ?) AND t1 >= ?`
	args := []any{b.deviceID, b.from}
	if b.to != 0 {
		q += ` AND t0 < ?`
		args = append(args, b.to)
	}
	if b.cursor {
		q += ` AND t0 <= ?`
		args = append(args, b.afterTS)
	}
	if b.stream != "" {
		q += ` AND stream = ?`
		args = append(args, b.stream)
	}
	rows, err := s.r.QueryContext(ctx, q+` ORDER BY t1 DESC`, args...)
	if err != nil {
		return fmt.Errorf("read blocks: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var stream string
		var t0, t1 int64
		var data []byte
		if err := rows.Scan(&stream, &t0, &t1, &data); err != nil {
			return fmt.Errorf("read blocks: %w", err)
		}
		if b.need > 0 && len(b.collected) >= b.need && t1 < b.collected[b.need-1].Time.UnixMicro() {
			break
		}
		// Only the readings of the range (and before the cursor) and the
		// field asked for are decoded.
		sel := blocks.Select{From: b.from, To: b.to, Field: b.field}
		if b.cursor && b.afterTS < math.MaxInt64 && (sel.To == 0 || b.afterTS+1 < sel.To) {
			sel.To = b.afterTS + 1
		}
		rs, err := blocks.DecodeSelect(data, sel)
		if err != nil {
			return fmt.Errorf("block of %s at %d: %w", b.deviceID, t1, err)
		}
		b.blocksRead++
		for i := range rs {
			r := &rs[i]
			if r.Time < b.from || (b.to != 0 && r.Time >= b.to) {
				continue
			}
			if b.cursor && (r.Time > b.afterTS || (r.Time == b.afterTS && r.ID >= b.afterID)) {
				continue
			}
			if b.keep != nil && !b.keep(r) {
				continue
			}
			b.collected = append(b.collected, readings.Record{ID: r.ID, DeviceID: b.deviceID, Stream: stream,
				Time: micros(r.Time), ReceivedAt: micros(r.ReceivedAt), MessageID: r.MessageID, Values: r.Values})
		}
		sortNewest(b.collected)
		if b.need > 0 && len(b.collected) > b.need {
			b.collected = b.collected[:b.need]
		}
	}
	return rows.Err()
}

// sortNewest sorts records newest first: by time, then id, descending.
func sortNewest(rs []readings.Record) {
	slices.SortFunc(rs, func(a, b readings.Record) int {
		return cmp.Or(b.Time.Compare(a.Time), cmp.Compare(b.ID, a.ID))
	})
}

// ReadingsSpace returns the bytes of the database's pages in use (the
// file less its free pages) and, of those, the pages of the readings:
// their rows, blocks and indexes (from the dbstat table).
func (s *Store) ReadingsSpace(ctx context.Context) (used, readingsBytes int64, err error) {
	var pages, free, size int64
	for q, v := range map[string]*int64{`PRAGMA page_count`: &pages, `PRAGMA freelist_count`: &free, `PRAGMA page_size`: &size} {
		if err := s.r.QueryRowContext(ctx, q).Scan(v); err != nil {
			return 0, 0, fmt.Errorf("readings space: %w", err)
		}
	}
	err = s.r.QueryRowContext(ctx, `SELECT coalesce(sum(pgsize), 0) FROM dbstat
		WHERE name IN ('readings', 'readings_dev_ts', 'reading_blocks', 'reading_blocks_dev_t1', 'reading_batches')`).Scan(&readingsBytes)
	if err != nil {
		return 0, 0, fmt.Errorf("readings space: %w", err)
	}
	return (pages - free) * size, readingsBytes, nil
}
