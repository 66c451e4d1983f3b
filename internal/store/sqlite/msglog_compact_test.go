package sqlite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
)

// sendBatch commits n messages of d1 in one batch, msg_ids prefix-0 …
func (m *msgTest) sendBatch(prefix string, n int) {
	m.t.Helper()
	var batch []*commit.Change
	for i := range n {
		m.id++
		batch = append(batch, &commit.Change{DeviceID: "d1", Ops: []commit.Op{&readings.Message{ID: m.id, Topic: "devices/d1/data",
			Transport: "mqtt", QoS: 1, Payload: []byte(`{"t":1}`), MsgID: fmt.Sprint(prefix, "-", i), Accepted: true, ReceivedAt: time.Now()}}})
	}
	if err := m.s.Commit(context.Background(), batch); err != nil {
		m.t.Fatal(err)
	}
}

// rows returns the rows of message_batches and message_blocks, and
// whether message_log_state holds 'compacting_from'.
func (m *msgTest) rows() (batches, blocks int, unfinished bool) {
	m.t.Helper()
	var marks int
	err := m.s.r.QueryRowContext(context.Background(), `SELECT (SELECT count(*) FROM message_batches), (SELECT count(*) FROM message_blocks),
		(SELECT count(*) FROM message_log_state WHERE name = 'compacting_from')`).Scan(&batches, &blocks, &marks)
	if err != nil {
		m.t.Fatal(err)
	}
	return batches, blocks, marks > 0
}

// TestCompactionInTransactions: a chunk's blocks are written a few a
// transaction (here one), its batch rows deleted with the last. Between
// two of them, the listing holds every message once and the msg_id
// dedupe still recognises the device's newest DedupeWindow msg_ids: the
// blocks written so far, which repeat messages of the head, do not count
// twice in a window loaded meanwhile.
func TestCompactionInTransactions(t *testing.T) {
	ctx := context.Background()
	m := newMsgTest(t, Options{MessageLog: MessageLogOptions{DedupeWindow: 700}})
	m.s.mlog.txBlocks = 1
	m.sendBatch("a", 300)
	m.compact() // 2 blocks: a-0 … a-299
	m.sendBatch("b", 300)
	m.sendBatch("c", 300) // 3 blocks once compacted
	want := m.msgIDsOf()

	txs := 0
	m.s.mlog.compactHook = func() error { txs++; return nil }
	paces := 0
	pace := func(time.Duration) error {
		paces++
		if got := m.msgIDsOf(); !slices.Equal(got, want) {
			t.Errorf("between transactions %d and %d: listing of %d messages, want %d", paces, paces+1, len(got), len(want))
		}
		if _, _, unfinished := m.rows(); unfinished != (paces <= 2) {
			t.Errorf("between transactions %d and %d: compacting_from %v, want %v", paces, paces+1, unfinished, paces <= 2)
		}
		if paces == 1 {
			// A window loaded now: the head's 600 msg_ids, then the
			// blocks' newest 100 (a-200 … a-299), not the pending
			// blocks' copies of the head's.
			m.s.wmu.Lock()
			delete(m.s.mlog.windows, "d1")
			m.s.wmu.Unlock()
			if dups := m.send("a-250", "c-0"); !slices.Equal(dups, []bool{true, true}) {
				t.Errorf("resent a-250, c-0 between transactions: duplicates %v, want [true true]", dups)
			}
		}
		return nil
	}
	st, err := m.s.compactMessagesPaced(ctx, 1<<30, pace)
	if err != nil || st.moved != 600 {
		t.Fatalf("compaction moved %d: %v", st.moved, err)
	}
	// Three of blocks, then one deleting the dead batch rows.
	if st.txs != 3 || txs != 3 || st.deletes != 1 || paces != 3 {
		t.Errorf("%d transactions of blocks (%d hook calls), %d of deletes, %d paces; want 3 (3), 1, 3", st.txs, txs, st.deletes, paces)
	}
	if batches, blocks, unfinished := m.rows(); batches != 0 || blocks != 5 || unfinished {
		t.Errorf("%d batch rows, %d blocks, compacting_from %v; want 0, 5, false", batches, blocks, unfinished)
	}
	if m.s.mlog.pendingFrom != 0 || m.s.mlog.head.msgs != 0 {
		t.Errorf("pendingFrom %d, head %d messages; want 0, 0", m.s.mlog.pendingFrom, m.s.mlog.head.msgs)
	}
	if got := m.msgIDsOf(); !slices.Equal(got, want) {
		t.Errorf("after: listing of %d messages, want %d", len(got), len(want))
	}
}

// TestCompactionUnfinished: a compaction killed after some of its
// transactions committed, its blocks not deleted (here its context ended
// in its second transaction): the listing and the dedupe take each
// message once, and the next compaction, or the next open, deletes those
// blocks, so that every message ends in exactly one block.
func TestCompactionUnfinished(t *testing.T) {
	for _, next := range []string{"compaction", "open"} {
		t.Run(next, func(t *testing.T) {
			ctx := context.Background()
			m := newMsgTest(t, Options{})
			m.s.mlog.txBlocks = 1
			m.sendBatch("a", 600)
			want := m.msgIDsOf()
			cctx, cancel := context.WithCancel(ctx)
			defer cancel()
			calls := 0
			killed := errors.New("killed")
			m.s.mlog.compactHook = func() error {
				if calls++; calls == 2 {
					cancel()
					return killed
				}
				return nil
			}
			if _, err := m.s.CompactMessages(cctx, 1<<30); !errors.Is(err, killed) {
				t.Fatalf("CompactMessages killed half way: %v", err)
			}
			m.s.mlog.compactHook = nil
			if batches, blocks, unfinished := m.rows(); batches != 1 || blocks != 1 || !unfinished {
				t.Fatalf("%d batch rows, %d blocks, compacting_from %v; want 1, 1, true", batches, blocks, unfinished)
			}
			if got := m.msgIDsOf(); !slices.Equal(got, want) {
				t.Fatalf("listing of %d messages, want %d", len(got), len(want))
			}
			if dups := m.send("a-0", "a-599", "new"); !slices.Equal(dups, []bool{true, true, false}) {
				t.Errorf("duplicates %v, want [true true false]", dups)
			}
			want = append([]string{"new"}, want...)
			if next == "open" {
				m.reopen()
				m.s.mlog.txBlocks = 1
				if batches, blocks, unfinished := m.rows(); batches != 2 || blocks != 0 || unfinished {
					t.Fatalf("after open: %d batch rows, %d blocks, compacting_from %v; want 2, 0, false", batches, blocks, unfinished)
				}
			}
			m.compact()
			if batches, blocks, unfinished := m.rows(); batches != 0 || blocks != 3 || unfinished {
				t.Errorf("%d batch rows, %d blocks, compacting_from %v; want 0, 3, false", batches, blocks, unfinished)
			}
			var n int
			if err := m.s.r.QueryRowContext(ctx, `SELECT sum(n) FROM message_blocks`).Scan(&n); err != nil || n != 601 {
				t.Errorf("blocks hold %d messages, want 601: %v", n, err)
			}
			if got := m.msgIDsOf(); !slices.Equal(got, want) {
				t.Errorf("listing of %d messages, want %d", len(got), len(want))
			}
		})
	}
}

// TestCompactionStaleBetweenTransactions: payload retention rewrites the
// batch rows between two of a compaction's transactions: the compaction
// moves nothing and deletes the blocks it wrote; the next moves every
// message once.
func TestCompactionStaleBetweenTransactions(t *testing.T) {
	ctx := context.Background()
	m := newMsgTest(t, Options{})
	m.s.mlog.txBlocks = 1
	m.sendBatch("a", 600)
	want := m.msgIDsOf()
	pace := func(time.Duration) error {
		if n, _, err := m.s.StripMessagePayloads(ctx, time.Now().Add(time.Hour), 0, 1<<20); err != nil || n == 0 {
			t.Errorf("StripMessagePayloads = %d, %v", n, err)
		}
		return nil
	}
	st, err := m.s.compactMessagesPaced(ctx, 1<<30, pace)
	if err != nil || st.moved != 0 {
		t.Fatalf("compaction with its rows rewritten meanwhile moved %d: %v", st.moved, err)
	}
	if batches, blocks, unfinished := m.rows(); batches != 1 || blocks != 0 || unfinished {
		t.Fatalf("%d batch rows, %d blocks, compacting_from %v; want 1, 0, false", batches, blocks, unfinished)
	}
	m.compact()
	if batches, blocks, unfinished := m.rows(); batches != 0 || blocks != 3 || unfinished {
		t.Errorf("%d batch rows, %d blocks, compacting_from %v; want 0, 3, false", batches, blocks, unfinished)
	}
	if got := m.msgIDsOf(); !slices.Equal(got, want) {
		t.Errorf("listing of %d messages, want %d", len(got), len(want))
	}
}

// deadRows returns the batch rows and the rows of message_batches_dead.
func (m *msgTest) deadRows() (batches, lists int) {
	m.t.Helper()
	err := m.s.r.QueryRowContext(context.Background(), `SELECT (SELECT count(*) FROM message_batches),
		(SELECT count(*) FROM message_batches_dead)`).Scan(&batches, &lists)
	if err != nil {
		m.t.Fatal(err)
	}
	return batches, lists
}

// TestCompactionDeletesDeadBatchesLater: a compaction's last transaction
// lists its batch rows as dead instead of deleting them, and short
// transactions (here of 3 rows) delete them after it. Until they are
// deleted, the listing and the dedupe take each message once (from its
// block), payload retention leaves them alone, and a compaction stopped
// there has them deleted by the next compaction or the next open.
func TestCompactionDeletesDeadBatchesLater(t *testing.T) {
	for _, next := range []string{"none", "compaction", "open"} {
		t.Run(next, func(t *testing.T) {
			ctx := context.Background()
			m := newMsgTest(t, Options{})
			m.s.mlog.deadTxRows = 3
			for i := range 10 {
				m.sendBatch(fmt.Sprint("b", i), 30)
			}
			want := m.msgIDsOf()
			paces := 0
			stopped := errors.New("stopped")
			pace := func(time.Duration) error {
				paces++
				batches, lists := m.deadRows()
				// Before delete transaction k (paces = k), 10 - 3(k-1) rows are left.
				if wantRows := 10 - 3*(paces-1); batches != wantRows || lists != 1 {
					t.Errorf("before delete transaction %d: %d batch rows, %d dead lists; want %d, 1", paces, batches, lists, wantRows)
				}
				if got := m.msgIDsOf(); !slices.Equal(got, want) {
					t.Errorf("before delete transaction %d: listing of %d messages, want %d", paces, len(got), len(want))
				}
				if paces == 2 {
					m.s.wmu.Lock()
					delete(m.s.mlog.windows, "d1")
					m.s.wmu.Unlock()
					if dups := m.send("b9-29", "b5-0"); !slices.Equal(dups, []bool{true, true}) {
						t.Errorf("resent b9-29, b5-0 before delete transaction 2: duplicates %v, want [true true]", dups)
					}
					// Every payload is older than an hour from now: only the
					// blocks' are stripped (the two resent were duplicates,
					// and the dead batch rows are left alone).
					n, _, err := m.s.StripMessagePayloads(ctx, time.Now().Add(time.Hour), 0, 1000)
					if err != nil || n != 300 {
						t.Errorf("StripMessagePayloads = %d, %v; want 300 (the blocks' payloads)", n, err)
					}
					if next != "none" {
						return stopped
					}
				}
				return nil
			}
			st, err := m.s.compactMessagesPaced(ctx, 1<<30, pace)
			if err != nil || st.moved != 300 {
				t.Fatalf("compaction moved %d: %v", st.moved, err)
			}
			switch next {
			case "none":
				if st.deletes != 4 {
					t.Errorf("%d delete transactions, want 4", st.deletes)
				}
			case "compaction":
				m.compact()
			case "open":
				if batches, lists := m.deadRows(); batches != 7 || lists != 1 {
					t.Fatalf("stopped: %d batch rows, %d dead lists; want 7, 1", batches, lists)
				}
				m.reopen()
			}
			if batches, lists := m.deadRows(); batches != 0 || lists != 0 {
				t.Errorf("after: %d batch rows, %d dead lists; want 0, 0", batches, lists)
			}
			if len(m.s.mlog.dead) != 0 {
				t.Errorf("after: %d dead lists in memory", len(m.s.mlog.dead))
			}
			if got := m.msgIDsOf(); !slices.Equal(got, want) {
				t.Errorf("after: listing of %d messages, want %d", len(got), len(want))
			}
			var n int
			if err := m.s.r.QueryRowContext(ctx, `SELECT sum(n) FROM message_blocks`).Scan(&n); err != nil || n != 300 {
				t.Errorf("blocks hold %d messages, want 300: %v", n, err)
			}
		})
	}
}
