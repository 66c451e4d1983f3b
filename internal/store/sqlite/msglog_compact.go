package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unsafe"

	"github.com/devicehub/devicehub/internal/msgblock"
)

// runMessageLog moves batch rows into blocks when Commit says the head
// passed its bounds, and every tick those past HeadAge; it lets go of
// idle dedupe windows. It returns when ctx is done; a failed compaction
// is logged and tried again at the next kick or tick.
func (s *Store) runMessageLog(ctx context.Context) error {
	ml := &s.mlog
	tick := time.NewTicker(min(ml.opts.HeadAge, ml.opts.DedupeIdle) / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ml.kick:
		case <-tick.C:
			s.evictWindows()
		}
		if _, err := s.compactDue(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("message log compaction failed", "err", err)
		}
	}
}

// compactDue compacts the oldest batch rows, a chunk at a time, while
// the head holds more than half its bounds or a batch older than HeadAge.
//
// Between two of its transactions (of a chunk or not) it lets the writer
// go for compactPause times the last one's hold (at most
// maxCompactPause), unless the head is past its bounds: back to back, a
// round's chunks and the checkpoints they started held the writer about
// half the time for a quarter of a second, and the commits behind them
// fell behind for half a second more (docs/BENCHMARKS.md, "The message
// log's compaction under sustained load"). Paced, a round takes longer
// but still moves tens of thousands of messages a second, several times
// ingest's peak.
func (s *Store) compactDue(ctx context.Context) (int, error) {
	ml := &s.mlog
	total := 0
	state := func() (due, over bool) {
		ml.hmu.RLock()
		defer ml.hmu.RUnlock()
		h := &ml.head
		due = len(h.batches) > 0 && (h.msgs > ml.opts.HeadMessages/2 || h.bytes > ml.opts.HeadBytes/2 ||
			s.clock().Sub(h.batches[0].at) > ml.opts.HeadAge)
		over = h.msgs > ml.opts.HeadMessages || h.bytes > ml.opts.HeadBytes
		return due, over
	}
	// pace lets the writer go between two transactions, chunk's or not.
	pace := func(hold time.Duration) error {
		if _, over := state(); over {
			return nil
		}
		t := time.NewTimer(min(compactPause*hold, maxCompactPause))
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	}
	var last time.Duration
	for ctx.Err() == nil {
		if due, _ := state(); !due {
			return total, nil
		}
		if last > 0 {
			if err := pace(last); err != nil {
				return total, nil
			}
		}
		st, err := s.compactMessagesPaced(ctx, compactChunk, pace)
		total += st.moved
		s.log.Debug("message log chunk compacted", "messages", st.moved, "prep", st.prep,
			"txs", st.txs, "hold_max", st.hold, "deletes", st.deletes, "delete_hold_max", st.deleteHold)
		if err != nil || st.moved == 0 {
			if ctx.Err() != nil {
				return total, nil
			}
			return total, err
		}
		last = st.last
	}
	return total, nil
}

// compactPause and maxCompactPause pace a compaction round (compactDue):
// its transactions hold the writer at most about a fifth of the time.
const (
	compactPause    = 4
	maxCompactPause = 250 * time.Millisecond
)

// CompactMessages moves the oldest batch rows of the message log, whole
// rows up to limit messages (at least one row), into per-device blocks:
// the blocks written in transactions of at most compactTxBlocks blocks,
// the batch rows deleted with the last of them. Only once that committed
// are the rows dropped from the head. It returns how many messages it
// moved.
//
// The blocks are encoded before the writer is taken (the head's blocks
// are never changed in place), so that commits wait only for the
// transactions' statements; a row that retention expired or rewrote in
// between ends the round with nothing moved, the blocks written so far
// deleted (the next one starts over).
func (s *Store) CompactMessages(ctx context.Context, limit int) (int, error) {
	st, err := s.compactMessages(ctx, limit)
	return st.moved, err
}

// compactStats is what one compaction did: the messages it moved, the
// time it took before taking the writer (reading the head, decoding the
// batches, encoding the blocks) and the time it held the writer (its
// transaction, from BEGIN to the head's drop after COMMIT).
type compactStats struct {
	moved      int
	prep, hold time.Duration
	// The hold's parts: the statements (blocks inserted, batch rows
	// deleted), then COMMIT, then the head's drop (the rest).
	stmts, commit time.Duration
	// hold and its parts are the longest of its transactions (txs of
	// them); last is the hold of the last one, of blocks or deletes.
	txs  int
	last time.Duration
	// deletes: the transactions that deleted dead batch rows
	// (deleteDeadBatches), the longest of them deleteHold.
	deletes    int
	deleteHold time.Duration
}

func (s *Store) compactMessages(ctx context.Context, limit int) (compactStats, error) {
	return s.compactMessagesPaced(ctx, limit, nil)
}

// compactMessagesPaced is compactMessages with pace called between two of
// its transactions with the last one's hold (nil: none).
//
// The blocks are written in transactions of at most compactTxBlocks
// blocks: a chunk is about one block per device of the fleet, and its
// thousand blocks in one transaction held the writer 16-32 ms under load
// (docs/BENCHMARKS.md, "The message log's compaction in transactions of
// 128 blocks"). Until the last transaction, which deletes the batch rows,
// the blocks written so far duplicate messages of the head: listings and
// the msg_id dedupe take a message found twice once. message_log_state
// keeps the rowid of the first of them ('compacting_from') from the first
// transaction to the last, so that a compaction that failed or was
// killed half way has its blocks deleted: by the next compaction's first
// transaction, or at open.
func (s *Store) compactMessagesPaced(ctx context.Context, limit int, pace func(hold time.Duration) error) (compactStats, error) {
	var st compactStats
	start := time.Now()
	ml := &s.mlog
	type source struct {
		first int64
		data  []byte
	}
	var srcs []source
	moved := 0
	ml.hmu.RLock()
	for _, b := range ml.head.batches {
		if len(srcs) > 0 && (moved+b.n > limit || len(srcs) >= maxParams) {
			break
		}
		srcs = append(srcs, source{b.first, b.data})
		moved += b.n
	}
	ml.hmu.RUnlock()
	if len(srcs) == 0 {
		return st, s.deleteDeadBatches(ctx, pace, &st)
	}
	// The records share the batches' bytes (AppendShared): a batch's
	// data in the head is never changed in place (retention's rewrite
	// replaces it, which the transactions below see as stale), and srcs
	// holds it until the blocks are written.
	recs := make([]msgblock.Record, 0, moved)
	firsts := make([]int64, 0, len(srcs))
	sizes := make([]int, 0, len(srcs))
	total := 0
	slices.SortFunc(srcs, func(a, b source) int { return cmp.Compare(a.first, b.first) })
	for _, src := range srcs {
		var err error
		if recs, err = msgblock.AppendShared(recs, src.data); err != nil {
			return st, fmt.Errorf("compact message log: message batch %d: %w", src.first, err)
		}
		firsts = append(firsts, src.first)
		sizes = append(sizes, len(src.data))
		total += len(src.data)
	}
	if len(recs) != moved {
		return st, fmt.Errorf("compact message log: message batches hold %d messages, the head %d", len(recs), moved)
	}
	blocks := encodeBlocksInto(make([]byte, 0, total), recs)
	st.prep = time.Since(start)
	per := ml.txBlocks
	if per <= 0 {
		per = compactTxBlocks
	}
	pending := false // blocks of this compaction committed, its batch rows not yet dead
	var from int64   // the rowid of its first block
	var deadID int64 // its row of message_batches_dead
	for len(blocks) > 0 {
		k, size := 0, 0
		for k < len(blocks) && k < per && (k == 0 || size+len(blocks[k].data) <= compactTxBytes) {
			size += len(blocks[k].data)
			k++
		}
		part := blocks[:k]
		blocks = blocks[len(part):]
		last := len(blocks) == 0
		if pending && pace != nil {
			if err := pace(st.last); err != nil {
				return st, s.abandonCompaction(ctx, err)
			}
		}
		stale := false
		var locked time.Time
		var stmts, commit time.Duration
		_, err := s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
			locked = time.Now()
			for _, src := range srcs {
				if d, ok := ml.head.data[src.first]; !ok || unsafe.SliceData(d) != unsafe.SliceData(src.data) {
					stale = true
					return 0, errStale
				}
			}
			if !pending {
				var err error
				if from, err = beginCompaction(ctx, tx); err != nil {
					return 0, err
				}
			}
			if err := s.writeMessageBlocks(ctx, tx, part); err != nil {
				return 0, err
			}
			if last {
				err := tx.QueryRowContext(ctx, `INSERT INTO message_batches_dead (firsts) VALUES (?) RETURNING id`,
					appendIDList(nil, firsts)).Scan(&deadID)
				if err != nil {
					return 0, err
				}
				if _, err := tx.ExecContext(ctx, `DELETE FROM message_log_state WHERE name = 'compacting_from'`); err != nil {
					return 0, err
				}
			}
			if ml.compactHook != nil {
				if err := ml.compactHook(); err != nil {
					return 0, err
				}
			}
			stmts = time.Since(locked)
			// Its blocks count toward the next checkpoint (writeTxThen), not
			// its messages: a block is about what a commit's change
			// writes, while counting 10,000 messages started a checkpoint
			// after every chunk.
			return len(part), nil
		}, func() {
			commit = time.Since(locked) - stmts
			ml.pendingFrom = from
			if last {
				ml.pendingFrom = 0
				ml.dead = append(ml.dead, deadBatches{id: deadID, firsts: firsts, bytes: sizes})
				ml.hmu.Lock()
				ml.head.drop(firsts)
				ml.hmu.Unlock()
			}
		})
		if err != nil {
			if stale {
				err = nil // the next round starts over
			} else {
				err = fmt.Errorf("compact message log: %w", err)
			}
			if pending {
				return st, s.abandonCompaction(ctx, err)
			}
			return st, err
		}
		pending = true
		hold := time.Since(locked)
		st.txs++
		st.last = hold
		if hold > st.hold {
			st.hold, st.stmts, st.commit = hold, stmts, commit
		}
		ml.compactions.Add(1)
		ml.observeHold(hold)
	}
	st.moved = moved
	ml.compacted.Add(int64(moved))
	if err := s.deleteDeadBatches(ctx, pace, &st); err != nil {
		return st, err
	}
	return st, nil
}

// deadBatches is one finished compaction's batch rows not deleted yet
// (its row id of message_batches_dead), with their sizes: ascending.
type deadBatches struct {
	id     int64
	firsts []int64
	bytes  []int
}

// Bounds of one transaction of deleteDeadBatches: a chunk of a 100-device
// fleet at ~5 messages a commit is 2,000 batch rows, whose deletion in
// the compaction's last transaction held the writer about as long as its
// blocks did (BenchmarkCompactMessagesChunk).
const (
	deadTxRows  = 256
	deadTxBytes = 1 << 20
)

// deleteDeadBatches deletes the dead batch rows, at most deadTxRows rows
// or deadTxBytes of them a transaction, with pace (nil: none) called
// before each with the last transaction's hold; a compaction's row of
// message_batches_dead goes with its last batch rows.
func (s *Store) deleteDeadBatches(ctx context.Context, pace func(hold time.Duration) error, st *compactStats) error {
	ml := &s.mlog
	for {
		s.wmu.Lock()
		left := len(ml.dead)
		s.wmu.Unlock()
		if left == 0 {
			return nil
		}
		if pace != nil {
			if err := pace(st.last); err != nil {
				return nil // the next round, or the next open, deletes them
			}
		}
		var locked time.Time
		var k int
		_, err := s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
			locked = time.Now()
			d := &ml.dead[0]
			size := 0
			rows := cmp.Or(ml.deadTxRows, deadTxRows)
			for k = 0; k < len(d.firsts) && k < rows && (k == 0 || size+d.bytes[k] <= deadTxBytes); k++ {
				size += d.bytes[k]
			}
			if err := execIn(ctx, tx, `DELETE FROM message_batches WHERE first_id IN (`, d.firsts[:k]); err != nil {
				return 0, err
			}
			if k == len(d.firsts) {
				if _, err := tx.ExecContext(ctx, `DELETE FROM message_batches_dead WHERE id = ?`, d.id); err != nil {
					return 0, err
				}
			}
			return 1 + size/(64<<10), nil
		}, func() {
			d := &ml.dead[0]
			d.firsts, d.bytes = d.firsts[k:], d.bytes[k:]
			if len(d.firsts) == 0 {
				ml.dead[0] = deadBatches{}
				ml.dead = ml.dead[1:]
			}
		})
		if err != nil {
			return fmt.Errorf("compact message log: delete compacted batch rows: %w", err)
		}
		hold := time.Since(locked)
		st.deletes++
		st.last = hold
		st.deleteHold = max(st.deleteHold, hold)
		ml.observeHold(hold)
	}
}

// dropDeadBatches, at open, deletes the batch rows that finished
// compactions left listed in message_batches_dead.
func (s *Store) dropDeadBatches(ctx context.Context) error {
	rows, err := s.w.QueryContext(ctx, `SELECT id, firsts FROM message_batches_dead ORDER BY id`)
	if err != nil {
		return fmt.Errorf("read dead batch rows: %w", err)
	}
	type list struct {
		id     int64
		firsts []int64
	}
	var lists []list
	for rows.Next() {
		var l list
		var b []byte
		if err := rows.Scan(&l.id, &b); err != nil {
			rows.Close()
			return fmt.Errorf("read dead batch rows: %w", err)
		}
		if l.firsts, err = decodeIDList(b); err != nil {
			rows.Close()
			return fmt.Errorf("dead batch rows %d: %w", l.id, err)
		}
		lists = append(lists, l)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("read dead batch rows: %w", err)
	}
	for _, l := range lists {
		_, err := s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
			if err := execIn(ctx, tx, `DELETE FROM message_batches WHERE first_id IN (`, l.firsts); err != nil {
				return 0, err
			}
			_, err := tx.ExecContext(ctx, `DELETE FROM message_batches_dead WHERE id = ?`, l.id)
			return 0, err
		}, nil)
		if err != nil {
			return fmt.Errorf("delete dead batch rows %d: %w", l.id, err)
		}
	}
	return nil
}

// compactTxBlocks and compactTxBytes bound the blocks of one compaction
// transaction (compactMessagesPaced; at least one block): at 100 devices
// a chunk is 100 blocks of about 100 messages each, written in one
// transaction by the count alone.
const (
	compactTxBlocks = 128
	compactTxBytes  = 256 << 10
)

// beginCompaction, in a compaction's first transaction, deletes the
// blocks of one that did not finish (it is the only writer of new
// blocks) and records where this one's begin: the rowid it returns.
func beginCompaction(ctx context.Context, tx *sql.Tx) (int64, error) {
	if err := dropUnfinishedBlocks(ctx, tx); err != nil {
		return 0, err
	}
	var from int64
	err := tx.QueryRowContext(ctx, `INSERT INTO message_log_state (name, value)
		VALUES ('compacting_from', (SELECT coalesce(max(id), 0) + 1 FROM message_blocks))
		ON CONFLICT (name) DO UPDATE SET value = excluded.value RETURNING value`).Scan(&from)
	return from, err
}

// dropUnfinishedBlocks deletes the blocks of a compaction that did not
// delete its batch rows: their messages are still in message_batches.
// New blocks take rowids above every block's, so they are the blocks
// from 'compacting_from' on.
func dropUnfinishedBlocks(ctx context.Context, q interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}) error {
	_, err := q.ExecContext(ctx, `DELETE FROM message_blocks WHERE id >= (SELECT value FROM message_log_state WHERE name = 'compacting_from')`)
	if err != nil {
		return fmt.Errorf("delete the blocks of an unfinished compaction: %w", err)
	}
	_, err = q.ExecContext(ctx, `DELETE FROM message_log_state WHERE name = 'compacting_from'`)
	return err
}

// abandonCompaction deletes the blocks a compaction committed before it
// failed with err (nil: its batch rows changed meanwhile); if that fails
// too, the next compaction or the next open deletes them.
func (s *Store) abandonCompaction(ctx context.Context, err error) error {
	_, derr := s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
		return 0, dropUnfinishedBlocks(ctx, tx)
	}, func() { s.mlog.pendingFrom = 0 })
	if derr != nil {
		return errors.Join(err, fmt.Errorf("compact message log: %w", derr))
	}
	return err
}

// errStale: a batch row changed between the encoding of its blocks and
// the compaction's transaction.
var errStale = errors.New("message batch changed meanwhile")

// maxParams bounds the parameters of one IN list.
const maxParams = 10_000

// execIn runs prefix + "?,?,...)" with ids.
func execIn(ctx context.Context, tx *sql.Tx, prefix string, ids []int64) error {
	for len(ids) > 0 {
		part := ids[:min(len(ids), maxParams)]
		ids = ids[len(part):]
		if _, err := tx.ExecContext(ctx, prefix+placeholders(len(part))+")", int64Args(part)...); err != nil {
			return err
		}
	}
	return nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?,", n), ",")
}

func int64Args(ids []int64) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// messageBlockSize bounds the messages of a block: a listing decodes
// whole blocks, so it bounds the work of a page of one message (about
// 0.1 ms for 256 messages of ~100 bytes).
const messageBlockSize = 256

// blockRow is one row of message_blocks, encoded.
type blockRow struct {
	dev         string
	first, last int64
	n           int
	m           meta
	data        []byte
}

// encodeBlocks encodes recs as blocks of up to messageBlockSize messages
// of one device, ordered by id.
func encodeBlocks(recs []msgblock.Record) []blockRow {
	return encodeBlocksInto(nil, recs)
}

// encodeBlocksInto is encodeBlocks with the blocks' bytes in buf's
// spare capacity, one after the other, while they fit: a compaction's
// chunk encodes about as many bytes as its batches hold, and a buffer
// per block, grown by appends, allocated several times that (and made
// the GC run sooner while ingest runs).
func encodeBlocksInto(buf []byte, recs []msgblock.Record) []blockRow {
	// Sorted through indices: a Record is ~150 bytes to move.
	order := make([]int32, len(recs))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(a, b int32) int {
		ra, rb := &recs[a], &recs[b]
		return cmp.Or(strings.Compare(ra.DeviceID, rb.DeviceID), cmp.Compare(ra.ID, rb.ID), cmp.Compare(a, b))
	})
	runs := 0
	for i := range order {
		if i == 0 || recs[order[i]].DeviceID != recs[order[i-1]].DeviceID {
			runs++
		}
	}
	out := make([]blockRow, 0, runs+len(recs)/messageBlockSize)
	run := make([]msgblock.Record, 0, min(len(recs), messageBlockSize))
	var enc msgblock.Encoder
	for i := 0; i < len(order); {
		run = run[:0]
		dev := recs[order[i]].DeviceID
		for ; i < len(order) && len(run) < messageBlockSize && recs[order[i]].DeviceID == dev; i++ {
			run = append(run, recs[order[i]])
		}
		rest := buf[len(buf):]
		enc.Reset(rest)
		for k := range run {
			enc.Add(&run[k])
		}
		data := enc.Bytes()
		if cap(rest) >= len(data) && &rest[:1][0] == &data[0] {
			buf = buf[:len(buf)+len(data)]
		}
		out = append(out, blockRow{dev: dev, first: run[0].ID, last: run[len(run)-1].ID, n: len(run), m: blockMeta(run),
			data: data[:len(data):len(data)]})
	}
	return out
}

// writeMessageBlocks inserts blocks, several rows a statement (bulk): a
// compaction writes about a block per device of its chunk with the
// writer held, and a statement per block made its statements a fifth
// slower (BenchmarkCompactMessagesChunk).
func (s *Store) writeMessageBlocks(ctx context.Context, tx *sql.Tx, blocks []blockRow) error {
	if len(blocks) == 0 {
		return nil
	}
	args := make([]any, 0, 8*len(blocks))
	for _, b := range blocks {
		args = append(args, b.dev, b.first, b.last, b.n, b.m.rejected, b.m.maxReceived, b.m.payloadFrom, b.data)
	}
	if err := s.inserts["message_blocks"].execTx(ctx, tx, args); err != nil {
		return fmt.Errorf("insert message blocks of %s to %s: %w", blocks[0].dev, blocks[len(blocks)-1].dev, err)
	}
	return nil
}

// insertBlocks writes recs as blocks (encodeBlocks).
func (s *Store) insertBlocks(ctx context.Context, tx *sql.Tx, recs []msgblock.Record) error {
	return s.writeMessageBlocks(ctx, tx, encodeBlocks(recs))
}

type meta struct {
	rejected    int
	maxReceived int64
	payloadFrom any // NULL: no payload left
}

func blockMeta(recs []msgblock.Record) meta {
	var m meta
	var pf int64
	for i, r := range recs {
		if !r.Accepted {
			m.rejected++
		}
		if i == 0 || r.ReceivedAt > m.maxReceived {
			m.maxReceived = r.ReceivedAt
		}
		if r.Payload != nil && (m.payloadFrom == nil || r.ReceivedAt < pf) {
			pf = r.ReceivedAt
			m.payloadFrom = pf
		}
	}
	return m
}

// writeTxThen is writeTx that runs after, still under wmu, once the
// transaction committed.
func (s *Store) writeTxThen(ctx context.Context, fn func(tx *sql.Tx) (int, error), after func()) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	n, err := fn(tx)
	if err != nil {
		tx.Rollback()
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	s.committed(n)
	if after != nil {
		after()
	}
	return n, nil
}

// migrateChunk is how many rows of the old messages table one
// transaction moves into blocks at open.
const migrateChunk = 10_000

// migrateMessages moves the rows of the messages table (the message log
// before migration 00900) into blocks, migrateChunk rows a transaction,
// oldest first: a start killed half way goes on where the last committed
// chunk ended. The table stays, empty.
func (s *Store) migrateMessages(ctx context.Context) error {
	total := 0
	for {
		n, err := s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
			rows, err := tx.QueryContext(ctx, `SELECT id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at
				FROM messages ORDER BY id LIMIT ?`, migrateChunk)
			if err != nil {
				return 0, err
			}
			var recs []msgblock.Record
			for rows.Next() {
				var r msgblock.Record
				var qos int64
				var msgID sql.NullString
				if err := rows.Scan(&r.ID, &r.DeviceID, &r.Topic, &r.Transport, &qos, &r.Payload, &msgID, &r.Accepted, &r.Code, &r.Reason, &r.ReceivedAt); err != nil {
					rows.Close()
					return 0, err
				}
				r.QoS, r.MsgID = byte(qos), msgID.String
				recs = append(recs, r)
			}
			if err := rows.Close(); err != nil {
				return 0, err
			}
			if len(recs) == 0 {
				return 0, nil
			}
			last := recs[len(recs)-1].ID
			if err := s.insertBlocks(ctx, tx, recs); err != nil {
				return 0, err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE id <= ?`, last); err != nil {
				return 0, err
			}
			if err := keepMaxID(ctx, tx, last); err != nil {
				return 0, err
			}
			return len(recs), nil
		}, nil)
		if err != nil {
			return fmt.Errorf("move the messages table into blocks: %w", err)
		}
		total += n
		if n < migrateChunk {
			break
		}
	}
	if total > 0 {
		s.log.Info("message log moved into blocks", "messages", total)
	}
	return nil
}

// keepMaxID records id as the largest message id ever stored, if it is.
func keepMaxID(ctx context.Context, tx *sql.Tx, id int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO message_log_state (name, value) VALUES ('max_id', ?)
		ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)`, id)
	return err
}

// StripMessagePayloads implements retention.Store: the rows (batches and
// blocks) that hold a payload received before before are rewritten
// without those payloads. after is not used: a row whose payloads are all
// gone has no payload_from and is not read again. It returns how many
// payloads it dropped now (the Expirer stops when fewer than limit).
func (s *Store) StripMessagePayloads(ctx context.Context, before time.Time, after int64, limit int) (int, int64, error) {
	cut := before.UnixMicro()
	ml := &s.mlog
	type rewritten struct {
		first int64
		data  []byte
	}
	var batches []rewritten
	n, err := s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
		batches = batches[:0]
		done := 0
		for _, tbl := range []struct{ table, key string }{{"message_batches", "first_id"}, {"message_blocks", "id"}} {
			if done >= limit {
				break
			}
			type row struct {
				key  int64
				data []byte
			}
			var rs []row
			// Dead batch rows (deleteDeadBatches) are skipped, not
			// rewritten: asking for as many more keeps them from filling
			// the limit.
			dead := 0
			if tbl.table == "message_batches" {
				for _, d := range ml.dead {
					dead += len(d.firsts)
				}
			}
			rows, err := tx.QueryContext(ctx, `SELECT `+tbl.key+`, data FROM `+tbl.table+` WHERE payload_from < ? LIMIT ?`, cut, limit-done+dead)
			if err != nil {
				return 0, err
			}
			for rows.Next() {
				var r row
				if err := rows.Scan(&r.key, &r.data); err != nil {
					rows.Close()
					return 0, err
				}
				rs = append(rs, r)
			}
			if err := rows.Close(); err != nil {
				return 0, err
			}
			for _, r := range rs {
				if tbl.table == "message_batches" {
					if _, live := ml.head.data[r.key]; !live {
						continue
					}
				}
				recs, err := msgblock.Decode(r.data)
				if err != nil {
					return 0, fmt.Errorf("%s %d: %w", tbl.table, r.key, err)
				}
				for i := range recs {
					if recs[i].Payload != nil && recs[i].ReceivedAt < cut {
						recs[i].Payload = nil
						done++
					}
				}
				m := blockMeta(recs)
				var data []byte
				if tbl.table == "message_batches" {
					e := msgblock.Encoder{Standalone: true}
					e.Reset(nil)
					for i := range recs {
						e.Add(&recs[i])
					}
					data = e.Bytes()
					batches = append(batches, rewritten{r.key, data})
				} else {
					data = msgblock.Encode(recs)
				}
				if _, err := tx.ExecContext(ctx, `UPDATE `+tbl.table+` SET data = ?, payload_from = ? WHERE `+tbl.key+` = ?`,
					data, m.payloadFrom, r.key); err != nil {
					return 0, err
				}
				if done >= limit {
					break
				}
			}
		}
		return done, nil
	}, func() {
		// The head's blocks are replaced, not changed: a listing may
		// hold the old one. The records keep their offsets: a record
		// without its payload is shorter, so the head's offsets are
		// those of the new block, taken again.
		ml.hmu.Lock()
		defer ml.hmu.Unlock()
		for _, b := range batches {
			ml.head.replace(b.first, b.data)
		}
	})
	if err != nil {
		return 0, after, fmt.Errorf("strip message payloads: %w", err)
	}
	return n, after, nil
}

// ExpireMessages implements retention.Store: whole rows (blocks, then
// batches) whose newest message was received before before, up to about
// limit messages. The row that holds the largest id stays, so that the
// log keeps its newest message, and message_log_state keeps that id.
func (s *Store) ExpireMessages(ctx context.Context, before time.Time, limit int) (int, error) {
	ml := &s.mlog
	cut := before.UnixMicro()
	var firsts []int64
	n, err := s.writeTxThen(ctx, func(tx *sql.Tx) (int, error) {
		firsts = firsts[:0]
		maxID := ml.max.Load()
		done := 0
		rows, err := tx.QueryContext(ctx, `DELETE FROM message_blocks WHERE id IN (
			SELECT id FROM message_blocks WHERE max_received < ? AND last_id < ? LIMIT ?) RETURNING n`, cut, maxID, limit)
		if err != nil {
			return 0, err
		}
		for rows.Next() {
			var k int
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return 0, err
			}
			done += k
		}
		if err := rows.Close(); err != nil {
			return 0, err
		}
		for _, b := range ml.head.batches {
			if done >= limit {
				break
			}
			if b.maxReceived < cut && b.last < maxID {
				firsts = append(firsts, b.first)
				done += b.n
			}
		}
		slices.Sort(firsts)
		if err := execIn(ctx, tx, `DELETE FROM message_batches WHERE first_id IN (`, firsts); err != nil {
			return 0, err
		}
		if done > 0 {
			if err := keepMaxID(ctx, tx, maxID); err != nil {
				return 0, err
			}
		}
		return done, nil
	}, func() {
		ml.hmu.Lock()
		ml.head.drop(firsts)
		ml.hmu.Unlock()
	})
	if err != nil {
		return 0, fmt.Errorf("expire messages: %w", err)
	}
	return n, nil
}
