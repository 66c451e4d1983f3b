package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/msgblock"
	"github.com/devicehub/devicehub/internal/readings"
)

// The message log without a row per message (migration 00900,
// docs/WRITE-PATH.md "Built: the message log as blocks").
//
//   - A commit encodes its batch's messages (msgblock) into one row of
//     message_batches. Its msg_id dedupe answers from memory: a window of
//     each device's newest msg_ids, as 64-bit hashes, loaded at the
//     device's first message with a msg_id since open; a hash found in it
//     is verified against the stored message before the change is called
//     a duplicate, so that a collision never loses a reading.
//   - The head indexes the rows of message_batches in memory: per device,
//     its messages' ids, rows and msg_id hashes (ListMessages, the
//     dedupe's window loads and verifications). It is built from the table
//     at open.
//   - runMessageLog (under Run) moves the oldest batch rows into per
//     device rows of message_blocks, a chunk at a time, when the head
//     passes its bounds or a batch its age, and only then drops them from
//     the head. A chunk's blocks are written in transactions of at most
//     compactTxBlocks blocks or compactTxBytes, the last of them listing
//     its batch rows as dead (message_batches_dead), which later short
//     transactions delete (compactMessagesPaced, deleteDeadBatches); the
//     blocks of a chunk that did not finish, and the dead batch rows, are
//     deleted at open.
//
// Memory and what it holds are changed only once the transaction that
// wrote them committed: a failed or retried Commit leaves them as they
// were. Lock order: wmu, then hmu. Every change of the head holds both;
// ListMessages holds hmu (read) alone, and only to copy from the head.

// MessageLogOptions bound the message log's memory (SQLite).
type MessageLogOptions struct {
	// HeadMessages and HeadBytes bound the messages of message_batches
	// (kept in memory as the head); past half of either, the oldest are
	// moved into per-device blocks, a chunk (compactChunk) at a time,
	// until half are left (default 100,000 messages, 32 MiB of encoded
	// batches).
	HeadMessages int
	HeadBytes    int64
	// HeadAge: batches older than this are moved into blocks even when
	// the head is within its bounds (default 10m).
	HeadAge time.Duration
	// DedupeWindow is how many of a device's newest msg_ids the msg_id
	// dedupe recognises (default 1000): a msg_id sent again after that
	// many newer messages with a msg_id is stored again.
	DedupeWindow int
	// DedupeIdle: the window of a device that sent no message for this
	// long is let go (default 10m) and loaded again at its next message.
	DedupeIdle time.Duration
}

func (o *MessageLogOptions) defaults() {
	if o.HeadMessages <= 0 {
		o.HeadMessages = 100_000
	}
	if o.HeadBytes <= 0 {
		o.HeadBytes = 32 << 20
	}
	if o.HeadAge <= 0 {
		o.HeadAge = 10 * time.Minute
	}
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = 1000
	}
	if o.DedupeIdle <= 0 {
		o.DedupeIdle = 10 * time.Minute
	}
}

// compactChunk bounds the messages one compaction transaction moves: the
// writer (and so every commit) waits for it.
const compactChunk = 10_000

// msgLog is the store's message log state.
type msgLog struct {
	opts MessageLogOptions
	seed maphash.Seed
	max  atomic.Int64 // the largest message id stored, or ever stored
	kick chan struct{}

	// hmu guards head; changing it also needs wmu.
	hmu  sync.RWMutex
	head msgHead

	// Under wmu.
	windows map[string]*dedupeWindow
	// pendingFrom: the rowid of the first block of a compaction whose
	// batch rows are not deleted yet (0: none), message_log_state's
	// 'compacting_from'; txBlocks bounds a compaction transaction's
	// blocks (0: compactTxBlocks; tests).
	pendingFrom int64
	txBlocks    int
	// dead: the batch rows of finished compactions not deleted yet
	// (message_batches_dead), oldest compaction first: their messages
	// are in blocks and no longer in the head (deleteDeadBatches).
	dead       []deadBatches
	deadTxRows int // tests: deadTxRows
	enc        msgblock.Encoder
	encBuf     []byte
	insert     *sql.Stmt // one batch row

	hashFn      func(string) uint64  // tests: collisions
	compactHook func() error         // tests: runs at the end of a compaction's transaction
	compacted   atomic.Int64         // messages moved into blocks
	compactions atomic.Int64         // compaction transactions committed
	holdTime    prometheus.Histogram // a compaction transaction's hold of the writer
	loads       atomic.Int64         // dedupe windows loaded
	verifies    atomic.Int64         // hash hits verified against the store
}

// msgHead is message_batches in memory: its rows' blocks, and an index
// of their messages by device. A row's block is never changed in place
// (payload retention replaces it), so that a reader may keep it.
type msgHead struct {
	devs    map[string][]headEntry // in commit order
	batches []headBatch            // in commit order
	data    map[int64][]byte       // the rows' blocks by first_id
	msgs    int
	bytes   int64
}

// headEntry is one message of a batch row: its id, the row (first_id),
// the hash of its msg_id (0: none), its record's offset in the row's
// block (standalone: msgblock.DecodeAt) and whether it was rejected.
type headEntry struct {
	id, batch int64
	hash      uint64
	off       uint32
	rejected  bool
}

// headBatch is one row of message_batches.
type headBatch struct {
	first, last int64
	n, rejected int
	maxReceived int64
	bytes       int
	devs        []string // distinct
	at          time.Time
	data        []byte // the row's block
}

// dedupeWindow holds the hashes of a device's newest msg_ids, a ring once
// full. 8 bytes a msg_id: 8 KiB for the default window.
type dedupeWindow struct {
	h    []uint64
	next int
	used int64 // Unix seconds of the last message
}

func (w *dedupeWindow) has(h uint64) bool {
	return slices.Contains(w.h, h)
}

func (w *dedupeWindow) add(h uint64, n int) {
	if len(w.h) < n {
		w.h = append(w.h, h)
		return
	}
	w.h[w.next] = h
	w.next = (w.next + 1) % n
}

// pendingBatch is what a Commit's batch row adds to the head and the
// windows once committed.
type pendingBatch struct {
	hb      headBatch
	entries []devEntry
}

type devEntry struct {
	dev string
	e   headEntry
}

func (ml *msgLog) hash(msgID string) uint64 {
	var h uint64
	if ml.hashFn != nil {
		h = ml.hashFn(msgID)
	} else {
		h = maphash.String(ml.seed, msgID)
	}
	if h == 0 {
		h = 1 // 0 means no msg_id in the head
	}
	return h
}

// initMessageLog moves the rows of the old messages table into blocks,
// builds the head from message_batches and finds the largest id.
func (s *Store) initMessageLog(ctx context.Context, opts MessageLogOptions) error {
	opts.defaults()
	ml := &s.mlog
	ml.opts = opts
	ml.seed = maphash.MakeSeed()
	ml.holdTime = newHoldHistogram()
	ml.kick = make(chan struct{}, 1)
	ml.windows = map[string]*dedupeWindow{}
	ml.head.devs = map[string][]headEntry{}
	ml.head.data = map[int64][]byte{}
	var err error
	ml.insert, err = s.w.PrepareContext(ctx, `INSERT INTO message_batches (first_id, last_id, n, rejected, max_received, payload_from, data) VALUES (?,?,?,?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("prepare message batch insert: %w", err)
	}
	if err := s.migrateMessages(ctx); err != nil {
		return err
	}
	if err := dropUnfinishedBlocks(ctx, s.w); err != nil {
		return fmt.Errorf("message log: %w", err)
	}
	if err := s.dropDeadBatches(ctx); err != nil {
		return fmt.Errorf("message log: %w", err)
	}
	var top int64
	err = s.w.QueryRowContext(ctx, `SELECT max(
		coalesce((SELECT max(last_id) FROM message_blocks), 0),
		coalesce((SELECT value FROM message_log_state WHERE name = 'max_id'), 0),
		coalesce((SELECT max(id) FROM messages), 0))`).Scan(&top)
	if err != nil {
		return fmt.Errorf("message log: largest id: %w", err)
	}
	rows, err := s.w.QueryContext(ctx, `SELECT first_id, data FROM message_batches ORDER BY first_id`)
	if err != nil {
		return fmt.Errorf("message log: read batches: %w", err)
	}
	defer rows.Close()
	now := time.Now()
	for rows.Next() {
		var first int64
		var data []byte
		if err := rows.Scan(&first, &data); err != nil {
			return fmt.Errorf("message log: read batches: %w", err)
		}
		pb := &pendingBatch{hb: headBatch{first: first, bytes: len(data), at: now, data: data}}
		err := msgblock.EachAt(data, func(r *msgblock.Record, off int) error {
			var h uint64
			if r.MsgID != "" {
				h = ml.hash(r.MsgID)
			}
			pb.add(strings.Clone(r.DeviceID), headEntry{id: r.ID, batch: first, hash: h, off: uint32(off), rejected: !r.Accepted}, r.ReceivedAt)
			return nil
		})
		if err != nil {
			return fmt.Errorf("message log: batch %d: %w", first, err)
		}
		top = max(top, pb.hb.last)
		pb.finish()
		ml.head.add(pb)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("message log: read batches: %w", err)
	}
	ml.max.Store(top)
	return nil
}

// add adds a message to the pending batch row.
func (pb *pendingBatch) add(dev string, e headEntry, receivedAt int64) {
	hb := &pb.hb
	if hb.n == 0 || e.id < hb.first {
		hb.first = e.id
	}
	if hb.n == 0 || e.id > hb.last {
		hb.last = e.id
	}
	if hb.n == 0 || receivedAt > hb.maxReceived {
		hb.maxReceived = receivedAt
	}
	hb.n++
	if e.rejected {
		hb.rejected++
	}
	hb.devs = append(hb.devs, dev) // made distinct by finish
	pb.entries = append(pb.entries, devEntry{dev, e})
}

// finish makes the batch's device list distinct (a sort: a batch holds up
// to thousands of devices).
func (pb *pendingBatch) finish() {
	slices.Sort(pb.hb.devs)
	pb.hb.devs = slices.Clip(slices.Compact(pb.hb.devs))
}

// add puts a committed batch row into the head; the caller holds hmu.
func (h *msgHead) add(pb *pendingBatch) {
	for _, de := range pb.entries {
		de.e.batch = pb.hb.first
		h.devs[de.dev] = append(h.devs[de.dev], de.e)
	}
	h.batches = append(h.batches, pb.hb)
	h.data[pb.hb.first] = pb.hb.data
	h.msgs += pb.hb.n
	h.bytes += int64(pb.hb.bytes)
}

// drop removes the batch rows firsts (sorted) from the head; the caller
// holds hmu.
//
// When firsts are the head's oldest rows in commit order, as a
// compaction's are, each device's entries of them are its oldest entries:
// they are cut off the front of its list without going through the rest
// of it (the search of every entry held the writer ~1 ms longer for a
// chunk of a 100-device fleet), and the other rows are not copied.
func (h *msgHead) drop(firsts []int64) {
	k := len(firsts)
	if k == 0 {
		return
	}
	in := func(b int64) bool { _, ok := slices.BinarySearch(firsts, b); return ok }
	oldest := k <= len(h.batches)
	for i := 0; oldest && i < k; i++ {
		oldest = in(h.batches[i].first)
	}
	devs := map[string]struct{}{}
	kept := h.batches[:0]
	for i, b := range h.batches {
		if oldest && i == k {
			break
		}
		if !in(b.first) {
			kept = append(kept, b)
			continue
		}
		h.msgs -= b.n
		h.bytes -= int64(b.bytes)
		delete(h.data, b.first)
		for _, d := range b.devs {
			devs[d] = struct{}{}
		}
	}
	if oldest {
		clear(h.batches[:k])
		h.batches = h.batches[k:]
	} else {
		clear(h.batches[len(kept):])
		h.batches = kept
	}
	for d := range devs {
		es := h.devs[d]
		if oldest {
			cut := 0
			for cut < len(es) && in(es[cut].batch) {
				cut++
			}
			es = es[cut:]
		} else {
			es = slices.DeleteFunc(es, func(e headEntry) bool { return in(e.batch) })
		}
		switch {
		case len(es) == 0:
			delete(h.devs, d)
		case cap(es) > 2*len(es)+16:
			h.devs[d] = slices.Clip(slices.Clone(es))
		default:
			h.devs[d] = es
		}
	}
}

// replace gives batch row first a new block (payload retention rewrote
// it), with the offsets of its records in it; the caller holds hmu.
func (h *msgHead) replace(first int64, data []byte) {
	offs := map[int64]uint32{}
	msgblock.EachAt(data, func(r *msgblock.Record, off int) error {
		offs[r.ID] = uint32(off)
		return nil
	})
	h.data[first] = data
	for i := range h.batches {
		b := &h.batches[i]
		if b.first != first {
			continue
		}
		h.bytes += int64(len(data) - b.bytes)
		b.bytes, b.data = len(data), data
		for _, d := range b.devs {
			es := h.devs[d]
			for j := range es {
				if es[j].batch == first {
					es[j].off = offs[es[j].id]
				}
			}
		}
	}
}

// MaxMessageID returns the largest message id stored, or ever stored
// (message_log_state keeps it once the rows that held it expired): ids
// never go back after a restart.
func (s *Store) MaxMessageID(ctx context.Context) (int64, error) {
	return s.mlog.max.Load(), nil
}

// InsertMessages implements readings.TxStore: the msg_id dedupe in
// memory (verified on a hit), then one batch row for every message of
// the batch that is not a duplicate.
func (t *txn) InsertMessages(ctx context.Context, msgs []readings.MessageRow) error {
	ml := &t.s.mlog
	ml.enc.Standalone = true
	ml.enc.Reset(ml.encBuf)
	pb := &pendingBatch{entries: make([]devEntry, 0, len(msgs))}
	payloadFrom := int64(0)
	hasPayload := false
	for i := range msgs {
		r := &msgs[i]
		m := r.Message
		var h uint64
		if m.MsgID != "" {
			h = ml.hash(m.MsgID)
			dup, err := t.duplicate(ctx, r.DeviceID, m.MsgID, h)
			if err != nil {
				return fmt.Errorf("msg_id dedupe of %s: %w", r.DeviceID, err)
			}
			if dup {
				r.Duplicate = true
				continue
			}
		}
		at := m.ReceivedAt.UnixMicro()
		off := ml.enc.Add(&msgblock.Record{ID: m.ID, DeviceID: r.DeviceID, Topic: m.Topic, Transport: m.Transport, QoS: m.QoS,
			Payload: m.Payload, MsgID: m.MsgID, Accepted: m.Accepted, Code: m.Code, Reason: m.Reason, ReceivedAt: at})
		if m.Payload != nil && (!hasPayload || at < payloadFrom) {
			payloadFrom, hasPayload = at, true
		}
		pb.add(r.DeviceID, headEntry{id: m.ID, hash: h, off: uint32(off), rejected: !m.Accepted}, at)
	}
	if pb.hb.n == 0 {
		return nil
	}
	pb.finish()
	// The block is the head's from now on: the next batch gets a
	// buffer of its own, about as large.
	data := ml.enc.Bytes()
	ml.encBuf = make([]byte, 0, len(data)+len(data)/4)
	pb.hb.bytes, pb.hb.data = len(data), data
	var pf any
	if hasPayload {
		pf = payloadFrom
	}
	hb := &pb.hb
	if _, err := t.tx.StmtContext(ctx, ml.insert).ExecContext(ctx, hb.first, hb.last, hb.n, hb.rejected, hb.maxReceived, pf, data); err != nil {
		return fmt.Errorf("insert message batch: %w", err)
	}
	t.msgs = pb
	return nil
}

// duplicate reports whether device dev stored a message with msgID
// among its newest DedupeWindow ones.
func (t *txn) duplicate(ctx context.Context, dev, msgID string, h uint64) (bool, error) {
	ml := &t.s.mlog
	w := ml.windows[dev]
	if w == nil {
		w = t.loaded[dev]
	}
	if w == nil {
		var err error
		if w, err = t.loadWindow(ctx, dev); err != nil {
			return false, err
		}
		if t.loaded == nil {
			t.loaded = map[string]*dedupeWindow{}
		}
		t.loaded[dev] = w
	}
	if !w.has(h) {
		return false, nil
	}
	ml.verifies.Add(1)
	return t.s.stored(ctx, t.tx, dev, msgID, h)
}

// loadWindow reads the hashes of dev's newest DedupeWindow msg_ids.
func (t *txn) loadWindow(ctx context.Context, dev string) (*dedupeWindow, error) {
	t.s.mlog.loads.Add(1)
	var hs []uint64
	err := t.s.eachRecentHash(ctx, t.tx, dev, func(h uint64) bool {
		hs = append(hs, h)
		return true
	})
	if err != nil {
		return nil, err
	}
	slices.Reverse(hs) // oldest first, as the ring adds them
	n := t.s.mlog.opts.DedupeWindow
	w := &dedupeWindow{h: make([]uint64, len(hs), min(n, len(hs)+16))}
	copy(w.h, hs)
	return w, nil
}

// eachRecentHash calls fn with the msg_id hashes of dev's newest
// DedupeWindow messages with a msg_id, newest first (the head, then the
// device's blocks), until fn returns false. The caller holds wmu.
func (s *Store) eachRecentHash(ctx context.Context, q querier, dev string, fn func(h uint64) bool) error {
	ml := &s.mlog
	left := ml.opts.DedupeWindow
	es := ml.head.devs[dev]
	for i := len(es) - 1; i >= 0 && left > 0; i-- {
		if es[i].hash != 0 {
			left--
			if !fn(es[i].hash) {
				return nil
			}
		}
	}
	if left == 0 {
		return nil
	}
	return s.eachBlockRecord(ctx, q, dev, func(r *msgblock.Record) bool {
		if r.MsgID == "" {
			return true
		}
		left--
		return fn(ml.hash(r.MsgID)) && left > 0
	})
}

// stored reports whether dev's newest DedupeWindow messages with a
// msg_id hold msgID (whose hash is h): the verification of a hash found
// in the window. The head's records are decoded only where an entry has
// hash h; then the device's blocks newest first. The caller holds wmu.
func (s *Store) stored(ctx context.Context, q querier, dev, msgID string, h uint64) (bool, error) {
	ml := &s.mlog
	left := ml.opts.DedupeWindow
	es := ml.head.devs[dev]
	for i := len(es) - 1; i >= 0 && left > 0; i-- {
		if es[i].hash == 0 {
			continue
		}
		left--
		if es[i].hash != h {
			continue
		}
		r, err := msgblock.DecodeAt(ml.head.data[es[i].batch], int(es[i].off))
		if err != nil {
			return false, fmt.Errorf("message batch %d: %w", es[i].batch, err)
		}
		if r.DeviceID == dev && r.MsgID == msgID {
			return true, nil
		}
	}
	if left == 0 {
		return false, nil
	}
	found := false
	err := s.eachBlockRecord(ctx, q, dev, func(r *msgblock.Record) bool {
		if r.MsgID == "" {
			return true
		}
		left--
		if r.MsgID == msgID {
			found = true
			return false
		}
		return left > 0
	})
	return found, err
}

// querier is a transaction or a connection pool.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// eachBlockRecord calls fn with the records of dev's blocks, newest
// first, until fn returns false. The blocks of a compaction under way are
// left out: their messages are still in the head, which the callers read
// first, and counted twice they would shorten the dedupe's window. The
// caller holds wmu.
func (s *Store) eachBlockRecord(ctx context.Context, q querier, dev string, fn func(r *msgblock.Record) bool) error {
	below := int64(math.MaxInt64)
	if s.mlog.pendingFrom > 0 {
		below = s.mlog.pendingFrom
	}
	rows, err := q.QueryContext(ctx, `SELECT id, data FROM message_blocks WHERE device_id = ? AND id < ? ORDER BY last_id DESC`, dev, below)
	if err != nil {
		return fmt.Errorf("read message blocks of %s: %w", dev, err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			return fmt.Errorf("read message blocks of %s: %w", dev, err)
		}
		recs, err := msgblock.Decode(data)
		if err != nil {
			return fmt.Errorf("message block %d: %w", id, err)
		}
		slices.SortFunc(recs, func(a, b msgblock.Record) int { return int(b.ID - a.ID) })
		for i := range recs {
			if !fn(&recs[i]) {
				return nil
			}
		}
	}
	return rows.Err()
}

// applyMessages takes what a committed transaction wrote into memory: the
// windows it loaded, its batch's msg_id hashes and its batch row. The
// caller holds wmu.
func (s *Store) applyMessages(t *txn) {
	ml := &s.mlog
	now := s.clock().Unix()
	for dev, w := range t.loaded {
		if ml.windows[dev] == nil {
			w.used = now
			ml.windows[dev] = w
		}
	}
	pb := t.msgs
	if pb == nil {
		return
	}
	for _, de := range pb.entries {
		if de.e.hash == 0 {
			continue
		}
		if w := ml.windows[de.dev]; w != nil {
			w.add(de.e.hash, ml.opts.DedupeWindow)
			w.used = now
		}
	}
	pb.hb.at = s.clock()
	ml.hmu.Lock()
	ml.head.add(pb)
	// Compaction starts as soon as the head passes half its bounds (and
	// moves a chunk), not once it passes them (and moves half the head,
	// several chunks back to back): the same work, spread in rounds of
	// one chunk instead of a burst that took the two cores from the
	// commits for most of a second (docs/BENCHMARKS.md, "Compaction a
	// chunk at a time").
	due := ml.head.msgs > ml.opts.HeadMessages/2 || ml.head.bytes > ml.opts.HeadBytes/2
	ml.hmu.Unlock()
	if pb.hb.last > ml.max.Load() {
		ml.max.Store(pb.hb.last)
	}
	if due {
		select {
		case ml.kick <- struct{}{}:
		default:
		}
	}
}

// evictWindows lets go of the windows of devices idle for DedupeIdle.
func (s *Store) evictWindows() {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ml := &s.mlog
	cut := s.clock().Add(-ml.opts.DedupeIdle).Unix()
	for dev, w := range ml.windows {
		if w.used < cut {
			delete(ml.windows, dev)
		}
	}
}
