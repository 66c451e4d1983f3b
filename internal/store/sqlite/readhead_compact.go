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
	"github.com/devicehub/devicehub/internal/readbatch"
)

// runReadings moves batch rows into blocks when Commit says the head
// passed its bounds, and every tick those past MaxAge. It returns when
// ctx is done; a failed compaction is logged and tried again at the next
// kick or tick.
func (s *Store) runReadings(ctx context.Context) {
	rh := &s.rh
	tick := time.NewTicker(rh.opts.MaxAge / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-rh.kick:
		case <-tick.C:
		}
		if _, err := s.compactReadingsDue(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("readings compaction failed", "err", err)
		}
	}
}

// compactReadingsDue compacts the oldest batch rows, a chunk a
// transaction, while the head holds more than half its bounds or a row
// older than MaxAge.
func (s *Store) compactReadingsDue(ctx context.Context) (int, error) {
	rh := &s.rh
	total := 0
	for ctx.Err() == nil {
		rh.hmu.RLock()
		h := &rh.head
		due := len(h.batches) > 0 && (h.n > rh.opts.MaxReadings/2 || h.bytes > rh.opts.MaxBytes/2 ||
			s.clock().Sub(h.batches[0].at) > rh.opts.MaxAge)
		rh.hmu.RUnlock()
		if !due {
			return total, nil
		}
		n, err := s.compactReadingsHead(ctx, readingsChunk, &pacer{})
		total += n
		if err != nil || n == 0 {
			return total, err
		}
	}
	return total, nil
}

// devStream is one stream of one device.
type devStream struct {
	dev, stream string
}

// CompactReadingsHead moves the oldest batch rows of the readings head,
// whole rows up to limit readings (at least one row), into the blocks of
// their devices' streams, in one transaction: the blocks written and the
// batch rows deleted together. Only once it committed are the rows
// dropped from the head. With ReadingsHeadOptions.Rollups it moves only
// rows the roller summed up. It returns how many readings it moved.
//
// The blocks are encoded before the writer is taken, as new blocks of
// their streams (planHeadBlocks). cmu, held throughout, keeps every other
// mover of readings out.
func (s *Store) CompactReadingsHead(ctx context.Context, limit int) (int, error) {
	return s.compactReadingsHead(ctx, limit, nil)
}

// pacer spreads the compaction's encoding (a few µs of CPU a reading,
// ~50 ms for a chunk) so that it takes at most a quarter of a CPU: after
// every paceEvery readings it sleeps paceRest times as long as they
// took (at half of a CPU the bursts were smaller, not gone). Back to back,
// the three chunks a compaction of 25,000 readings makes held a core for
// ~0.45 s, and on two shared cores that made a burst of late PUBACKs
// every time (docs/BENCHMARKS.md, "Readings without rows, landed").
type pacer struct {
	n    int
	from time.Time
}

const (
	paceEvery = 500
	paceRest  = 3
)

// tick counts one reading; ctx ending stops the pauses.
func (p *pacer) tick(ctx context.Context) {
	if p == nil {
		return
	}
	if p.n == 0 {
		p.from = time.Now()
	}
	p.n++
	if p.n < paceEvery {
		return
	}
	p.n = 0
	t := time.NewTimer(paceRest * time.Since(p.from))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (s *Store) compactReadingsHead(ctx context.Context, limit int, pace *pacer) (int, error) {
	rh := &s.rh
	rh.cmu.Lock()
	defer rh.cmu.Unlock()
	hold := int64(math.MaxInt64)
	if rh.opts.Rollups {
		hold = rh.rollup.Load()
	}
	type source struct {
		first int64
		data  []byte
	}
	var srcs []source
	moved := 0
	rh.hmu.RLock()
	for _, b := range rh.head.batches {
		if b.last > hold || (len(srcs) > 0 && (moved+b.n > limit || len(srcs) >= maxParams)) {
			break
		}
		srcs = append(srcs, source{b.first, b.data})
		moved += b.n
	}
	rh.hmu.RUnlock()
	if len(srcs) == 0 {
		return 0, nil
	}
	start := time.Now()
	groups := map[devStream][]blocks.Reading{}
	firsts := make([]int64, 0, len(srcs))
	n := 0
	for _, src := range srcs {
		err := readbatch.Each(src.data, func(r *readbatch.Record, _ int) error {
			pace.tick(ctx)
			br, err := blockReading(r)
			if err != nil {
				return err
			}
			k := devStream{r.DeviceID, r.Stream}
			groups[k] = append(groups[k], br)
			n++
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("compact readings head: reading batch %d: %w", src.first, err)
		}
		firsts = append(firsts, src.first)
	}
	if n != moved {
		return 0, fmt.Errorf("compact readings head: batches hold %d readings, the head %d", n, moved)
	}
	slices.Sort(firsts)
	ws, err := s.planHeadBlocks(ctx, groups, pace)
	if err != nil {
		return 0, fmt.Errorf("compact readings head: %w", err)
	}
	prep := time.Since(start)
	start = time.Now()
	moved, err = s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
		if err := s.execBlocks(ctx, tx, ws); err != nil {
			return 0, err
		}
		if err := execIn(ctx, tx, `DELETE FROM reading_batches WHERE first_id IN (`, firsts); err != nil {
			return 0, err
		}
		if err := keepReadingMax(ctx, tx, rh.max.Load()); err != nil {
			return 0, err
		}
		if rh.compactHook != nil {
			if err := rh.compactHook(); err != nil {
				return 0, err
			}
		}
		return n, nil
	}, func() {
		rh.hmu.Lock()
		rh.head.drop(firsts)
		rh.hmu.Unlock()
	})
	if err != nil {
		return 0, fmt.Errorf("compact readings head: %w", err)
	}
	rh.compacted.Add(int64(moved))
	rh.compactions.Add(1)
	s.log.Debug("readings head chunk compacted", "readings", moved, "rows", len(firsts), "blocks", len(ws),
		"prep", prep, "hold", time.Since(start))
	return moved, nil
}

// planHeadBlocks encodes the blocks of groups as new blocks, none merged
// into its stream's newest block: at 1,000 devices a chunk holds ~10
// readings a device, and merging re-encoded the newest block whole at
// every move (22-42 µs a reading moved, sixteenth session). The small
// blocks this leaves are merged once, when retention.Compactor passes
// the device (compactDevice, mergeSmallBlocks).
func (s *Store) planHeadBlocks(ctx context.Context, groups map[devStream][]blocks.Reading, pace *pacer) ([]blockWrite, error) {
	keys := make([]devStream, 0, len(groups))
	var devs []string
	for k := range groups {
		keys = append(keys, k)
		devs = append(devs, k.dev)
	}
	slices.SortFunc(keys, func(a, b devStream) int {
		return cmp.Or(strings.Compare(a.dev, b.dev), strings.Compare(a.stream, b.stream))
	})
	devKeys, err := s.deviceKeys(ctx, devs)
	if err != nil {
		return nil, err
	}
	var ws []blockWrite
	for _, k := range keys {
		key, ok := devKeys[k.dev]
		if !ok {
			return nil, fmt.Errorf("device %s of readings not found", k.dev)
		}
		for range groups[k] {
			pace.tick(ctx)
		}
		w, err := planBlocks(key, k.stream, groups[k], 0, 0, nil)
		if err != nil {
			return nil, fmt.Errorf("blocks of %s: %w", k.dev, err)
		}
		ws = append(ws, w...)
	}
	return ws, nil
}

// deviceKeys returns the devices.key of the devices ids.
func (s *Store) deviceKeys(ctx context.Context, ids []string) (map[string]int64, error) {
	slices.Sort(ids)
	ids = slices.Compact(ids)
	out := make(map[string]int64, len(ids))
	for len(ids) > 0 {
		part := ids[:min(len(ids), 500)]
		ids = ids[len(part):]
		args := make([]any, len(part))
		for i, id := range part {
			args[i] = id
		}
		rows, err := s.r.QueryContext(ctx, `SELECT id, key FROM devices WHERE id IN (`+placeholders(len(part))+`)`, args...)
		if err != nil {
			return nil, fmt.Errorf("device keys: %w", err)
		}
		for rows.Next() {
			var id string
			var k int64
			if err := rows.Scan(&id, &k); err != nil {
				rows.Close()
				return nil, fmt.Errorf("device keys: %w", err)
			}
			out[id] = k
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("device keys: %w", err)
		}
	}
	return out, nil
}

// blockReading is r as a block's reading: its values decoded as the
// readings table's rows were.
func blockReading(r *readbatch.Record) (blocks.Reading, error) {
	br := blocks.Reading{ID: r.ID, MessageID: r.MessageID, Time: r.Time, ReceivedAt: r.ReceivedAt}
	if err := json.Unmarshal(r.Values, &br.Values); err != nil {
		return br, fmt.Errorf("reading %d: %w", r.ID, err)
	}
	return br, nil
}

// keepReadingMax records id as the largest reading id ever stored, if it
// is: the row that held it may be gone.
func keepReadingMax(ctx context.Context, tx *sql.Tx, id int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO reading_state (name, value) VALUES ('max_id', ?)
		ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)`, id)
	return err
}

// headMove collects, within one transaction under wmu, head readings
// that leave their batch rows one by one (CompactDevices, expiry), and
// rewrites those rows without them.
type headMove struct {
	ids      map[int64]struct{}
	byBatch  map[int64]int // readings leaving, per row
	rewrites map[int64][]byte
}

// take selects for moving up to limit of dev's head readings that keep
// accepts, oldest (by time, then id) first, never the newest reading
// stored (as the readings table's newest row stays: ids never go back),
// and returns them. The caller holds wmu.
func (s *Store) take(hm *headMove, dev string, limit int, keep func(e *rdEntry) bool) []rdRef {
	if limit <= 0 {
		return nil
	}
	rh := &s.rh
	newest := rh.max.Load()
	var refs []rdRef
	for _, e := range rh.head.devs[dev] {
		if _, gone := hm.ids[e.id]; gone || e.id == newest || !keep(&e) {
			continue
		}
		refs = append(refs, rdRef{e, rh.head.data[e.batch]})
	}
	slices.SortFunc(refs, func(a, b rdRef) int { return cmp.Or(cmp.Compare(a.ts, b.ts), cmp.Compare(a.id, b.id)) })
	if len(refs) > limit {
		refs = refs[:limit]
	}
	if hm.ids == nil {
		hm.ids, hm.byBatch = map[int64]struct{}{}, map[int64]int{}
	}
	for _, r := range refs {
		hm.ids[r.id] = struct{}{}
		hm.byBatch[r.batch]++
	}
	return refs
}

// rewrite deletes the rows all of whose readings leave and rewrites the
// others without them, within tx; the caller holds wmu. apply puts the
// result into the head once tx committed.
func (s *Store) rewriteRows(ctx context.Context, tx *sql.Tx, hm *headMove) error {
	if len(hm.byBatch) == 0 {
		return nil
	}
	rh := &s.rh
	hm.rewrites = map[int64][]byte{}
	var gone []int64
	for first := range hm.byBatch {
		data := rh.head.data[first]
		var e readbatch.Encoder
		e.Reset(nil)
		left, last := 0, int64(0)
		err := readbatch.Each(data, func(r *readbatch.Record, _ int) error {
			if _, out := hm.ids[r.ID]; !out {
				e.Add(r)
				left++
				last = max(last, r.ID)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("reading batch %d: %w", first, err)
		}
		if left == 0 {
			gone = append(gone, first)
			hm.rewrites[first] = nil
			continue
		}
		nd := e.Bytes()
		if _, err := tx.ExecContext(ctx, `UPDATE reading_batches SET last_id = ?, n = ?, data = ? WHERE first_id = ?`, last, left, nd, first); err != nil {
			return err
		}
		hm.rewrites[first] = nd
	}
	slices.Sort(gone)
	if err := execIn(ctx, tx, `DELETE FROM reading_batches WHERE first_id IN (`, gone); err != nil {
		return err
	}
	return keepReadingMax(ctx, tx, rh.max.Load())
}

// apply puts the rewritten rows into the head; the caller holds wmu.
func (hm *headMove) apply(rh *readHead) {
	if len(hm.rewrites) == 0 {
		return
	}
	rh.hmu.Lock()
	defer rh.hmu.Unlock()
	for first, data := range hm.rewrites {
		rh.head.rewrite(first, data)
	}
}

// compactHeadDevice moves up to limit of device dev's head readings taken
// before before (with an id of at most maxID) into its blocks within tx;
// the caller holds cmu and wmu.
func (s *Store) compactHeadDevice(ctx context.Context, tx *sql.Tx, hm *headMove, key int64, dev string, before time.Time, maxID int64, limit int) (int, error) {
	cut := before.UnixMicro()
	refs := s.take(hm, dev, limit, func(e *rdEntry) bool { return e.ts < cut && e.id <= maxID })
	if len(refs) == 0 {
		return 0, nil
	}
	byStream := map[string][]blocks.Reading{}
	for i := range refs {
		rec, err := refs[i].decode()
		if err != nil {
			return 0, err
		}
		br, err := blockReading(&rec)
		if err != nil {
			return 0, err
		}
		byStream[rec.Stream] = append(byStream[rec.Stream], br)
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
	return len(refs), nil
}
