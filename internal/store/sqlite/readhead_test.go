package sqlite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/retention"
)

// sendReadings commits one message of d1 with one reading per time (in
// seconds after t0), each message in a batch of its own.
func (m *msgTest) sendReadings(t0 time.Time, secs ...int) {
	m.t.Helper()
	for _, s := range secs {
		m.id++
		msg := &readings.Message{ID: m.id, Topic: "devices/d1/data", Transport: "mqtt", Accepted: true, ReceivedAt: t0}
		ch := &commit.Change{DeviceID: "d1", Ops: withReadings(msg, []readings.Reading{{Time: t0.Add(time.Duration(s) * time.Second), Values: fmt.Appendf(nil, `{"t":%d}`, s)}})}
		if err := m.s.Commit(context.Background(), []*commit.Change{ch}); err != nil {
			m.t.Fatal(err)
		}
	}
}

// readingSecs returns d1's readings as "id@second", newest first.
func (m *msgTest) readingSecs(t0 time.Time) []string {
	m.t.Helper()
	p, err := m.s.QueryReadings(context.Background(), readings.Query{DeviceID: "d1", Limit: 1000})
	if err != nil {
		m.t.Fatal(err)
	}
	var out []string
	for _, r := range p.Readings {
		out = append(out, fmt.Sprintf("%d@%d", r.ID, int(r.Time.Sub(t0)/time.Second)))
	}
	return out
}

// TestReadingsHeadFailuresLeaveMemory: a compaction that fails at its
// last step, and a commit that fails, leave the head and the largest id
// as they were; the ids of a failed commit are given again.
func TestReadingsHeadFailuresLeaveMemory(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := newMsgTest(t, Options{})
	m.sendReadings(t0, 1, 2, 3, 4)
	want := m.readingSecs(t0)
	boom := errors.New("boom")
	m.s.rh.compactHook = func() error { return boom }
	if _, err := m.s.CompactReadingsHead(ctx, 100); !errors.Is(err, boom) {
		t.Fatalf("CompactReadingsHead with a failing hook: %v", err)
	}
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after a failed compaction: %v, want %v", got, want)
	}
	if m.s.rh.head.n != 4 {
		t.Fatalf("head holds %d readings after a failed compaction, want 4", m.s.rh.head.n)
	}
	m.s.rh.compactHook = nil

	// CompactDevices and expiry failing at their last step.
	m.s.compactHook = func() error { return boom }
	if _, _, err := m.s.CompactDevices(ctx, []string{"d1"}, t0.Add(time.Hour), 0, 100); !errors.Is(err, boom) {
		t.Fatalf("CompactDevices with a failing hook: %v", err)
	}
	m.s.compactHook = nil
	if got := m.readingSecs(t0); !slices.Equal(got, want) || m.s.rh.head.n != 4 {
		t.Fatalf("after a failed CompactDevices: %v (head %d), want %v", got, m.s.rh.head.n, want)
	}

	// A commit whose context is cancelled while its batch is written.
	maxID := m.s.rh.max.Load()
	cctx, cancel := context.WithCancel(ctx)
	m.id++
	msg := &readings.Message{ID: m.id, Topic: "devices/d1/data", Transport: "mqtt", Accepted: true, ReceivedAt: t0}
	ch := &commit.Change{DeviceID: "d1", Ops: withReadings(msg, []readings.Reading{{Time: t0.Add(9 * time.Second), Values: []byte(`{"t":9}`)}}, &cancelOp{cancel})}
	if err := m.s.Commit(cctx, []*commit.Change{ch}); err == nil {
		t.Fatal("Commit whose context ends: no error")
	}
	if got := m.s.rh.max.Load(); got != maxID {
		t.Errorf("largest reading id %d after a failed commit, want %d", got, maxID)
	}
	if m.s.rh.head.n != 4 || len(m.s.rh.head.batches) != 4 {
		t.Errorf("head holds %d readings in %d rows after a failed commit, want 4 in 4", m.s.rh.head.n, len(m.s.rh.head.batches))
	}
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after a failed commit: %v, want %v", got, want)
	}
	// The same reading again, as the committer retries: the next id.
	m.sendReadings(t0, 9)
	want = append([]string{fmt.Sprintf("%d@9", maxID+1)}, want...)
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after the retried commit: %v, want %v", got, want)
	}

	if n, err := m.s.CompactReadingsHead(ctx, 100); err != nil || n != 5 {
		t.Fatalf("CompactReadingsHead = %d, %v; want 5", n, err)
	}
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after the compaction: %v, want %v", got, want)
	}
	var batches, blocks int
	m.s.r.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM reading_batches), (SELECT count(*) FROM reading_blocks)`).Scan(&batches, &blocks)
	if batches != 0 || blocks != 1 || m.s.rh.head.n != 0 || len(m.s.rh.head.devs) != 0 {
		t.Errorf("%d batch rows, %d blocks, head %d readings of %d devices; want 0, 1, 0, 0", batches, blocks, m.s.rh.head.n, len(m.s.rh.head.devs))
	}
}

// TestReadingsHeadReopen: the head is built again at open from the batch
// rows, rewritten ones included, and ids never go back, also once every
// batch row moved into blocks.
func TestReadingsHeadReopen(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := newMsgTest(t, Options{})
	m.sendReadings(t0, 5, 1, 2, 3)
	// A batch of several readings, two of which move out by CompactDevices.
	m.id++
	msg := &readings.Message{ID: m.id, Topic: "devices/d1/data", Transport: "mqtt", Accepted: true, ReceivedAt: t0}
	var rows []readings.Reading
	for _, s := range []int{10, 0, 11, 4} {
		rows = append(rows, readings.Reading{Time: t0.Add(time.Duration(s) * time.Second), Values: fmt.Appendf(nil, `{"t":%d}`, s)})
	}
	if err := m.s.Commit(ctx, []*commit.Change{{DeviceID: "d1", Ops: withReadings(msg, rows)}}); err != nil {
		t.Fatal(err)
	}
	want := m.readingSecs(t0)
	if n, _, err := m.s.CompactDevices(ctx, []string{"d1"}, t0.Add(2*time.Second), 0, 100); err != nil || n != 2 {
		t.Fatalf("CompactDevices = %d, %v; want the readings at 0 and 1", n, err)
	}
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after CompactDevices: %v, want %v", got, want)
	}
	m.reopen()
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after reopening: %v, want %v", got, want)
	}
	if m.s.rh.head.n != 6 {
		t.Fatalf("head of %d readings after reopening, want 6", m.s.rh.head.n)
	}
	top := m.s.rh.max.Load()
	for {
		n, err := m.s.CompactReadingsHead(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	m.reopen()
	if got := m.s.rh.max.Load(); got != top || m.s.rh.head.n != 0 {
		t.Fatalf("largest id %d and head %d after every row moved, want %d and 0", got, m.s.rh.head.n, top)
	}
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after reopening with every row moved: %v, want %v", got, want)
	}
	m.sendReadings(t0, 7)
	if got := m.readingSecs(t0); !slices.Contains(got, fmt.Sprintf("%d@7", top+1)) {
		t.Fatalf("readings %v, want the new one at 7s with id %d", got, top+1)
	}
}

// TestReadingsTableRowsRead: the rows of an older database's readings
// table are read with the head and the blocks, compacted and expired as
// before, and new ids follow theirs.
func TestReadingsTableRowsRead(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := newMsgTest(t, Options{})
	for i := 1; i <= 5; i++ {
		if _, err := m.s.w.ExecContext(ctx, `INSERT INTO readings (id, dev, stream, ts, received_at, message_id, data)
			VALUES (?, (SELECT key FROM devices WHERE id = 'd1'), '', ?, ?, ?, ?)`,
			100+i, t0.Add(time.Duration(2*i)*time.Second).UnixMicro(), t0.UnixMicro(), i, fmt.Sprintf(`{"t":%d}`, 2*i)); err != nil {
			t.Fatal(err)
		}
	}
	m.reopen()
	m.sendReadings(t0, 3, 20)
	want := []string{"107@20", "105@10", "104@8", "103@6", "102@4", "106@3", "101@2"}
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("rows and head: %v, want %v", got, want)
	}
	if n, err := m.s.CountReadings(ctx, "d1"); err != nil || n != 7 {
		t.Fatalf("CountReadings = %d, %v; want 7", n, err)
	}
	rds, err := m.s.ReadingsAfter(ctx, 103, 3)
	if err != nil || len(rds) != 3 || rds[0].ID != 104 || rds[2].ID != 106 {
		t.Fatalf("ReadingsAfter(103, 3) = %+v, %v", rds, err)
	}
	// Everything before 9s: the rows at 2, 4, 6, 8 and the head's
	// reading at 3.
	if n, _, err := m.s.CompactDevices(ctx, []string{"d1"}, t0.Add(9*time.Second), 0, 100); err != nil || n != 5 {
		t.Fatalf("CompactDevices = %d, %v; want 5", n, err)
	}
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after CompactDevices: %v, want %v", got, want)
	}
	e := retention.New(m.s, retention.Options{Readings: time.Microsecond, Batch: 2, Now: func() time.Time { return t0.Add(time.Hour) }},
		slog.New(slog.DiscardHandler), nil)
	if err := e.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	// The table's newest row and the newest reading stay.
	if got := m.readingSecs(t0); !slices.Equal(got, []string{"107@20", "105@10"}) {
		t.Fatalf("after expiry: %v", got)
	}
}

// TestReadingsHeadRollupHold: with rollups, a batch row moves into blocks
// only once the roller summed all of it up (the roller reads the head).
func TestReadingsHeadRollupHold(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := newMsgTest(t, Options{ReadingsHead: ReadingsHeadOptions{Rollups: true}})
	m.sendReadings(t0, 1, 2, 3)
	if n, err := m.s.CompactReadingsHead(ctx, 100); err != nil || n != 0 {
		t.Fatalf("CompactReadingsHead before any rollup = %d, %v; want 0", n, err)
	}
	roller := retention.NewRoller(m.s, retention.RollupOptions{Batch: 2}, slog.New(slog.DiscardHandler), nil)
	if err := roller.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	m.sendReadings(t0, 4)
	if n, err := m.s.CompactReadingsHead(ctx, 100); err != nil || n != 3 {
		t.Fatalf("CompactReadingsHead after the rollups = %d, %v; want the 3 summed up", n, err)
	}
	if err := roller.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	a, err := m.s.AggregateReadings(ctx, readings.AggregateQuery{DeviceID: "d1", Field: "t", From: t0, To: t0.Add(time.Minute), Buckets: 1, Resolution: retention.Minute})
	if err != nil || len(a.Buckets) != 1 || a.Buckets[0].Count != 4 {
		t.Fatalf("minute rollup %+v, %v; want 4 readings", a.Buckets, err)
	}
	m.reopen()
	if n, err := m.s.CompactReadingsHead(ctx, 100); err != nil || n != 1 {
		t.Fatalf("CompactReadingsHead after reopening = %d, %v; want 1 (the cursor read at open)", n, err)
	}
}

// TestHeadBlocksMergedLater: the head's compaction writes each move as
// new blocks of its own (none merged into the stream's newest block);
// retention's CompactDevices merges those small blocks once they ended
// before its cutoff, in budget-sized steps, and every reading is read
// once before, between and after.
func TestHeadBlocksMergedLater(t *testing.T) {
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m := newMsgTest(t, Options{})
	var secs []int
	for i := range 40 {
		secs = append(secs, i)
	}
	m.sendReadings(t0, secs...)
	want := m.readingSecs(t0)
	// Four moves of ten readings (a batch row holds one): four blocks.
	for range 4 {
		if n, err := m.s.CompactReadingsHead(ctx, 10); err != nil || n != 10 {
			t.Fatalf("CompactReadingsHead: %d, %v", n, err)
		}
	}
	counts := func() []int {
		t.Helper()
		rows, err := m.s.r.QueryContext(ctx, `SELECT n FROM reading_blocks ORDER BY t0`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var ns []int
		for rows.Next() {
			var n int
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			ns = append(ns, n)
		}
		return ns
	}
	if got := counts(); !slices.Equal(got, []int{10, 10, 10, 10}) {
		t.Fatalf("blocks after the head's moves hold %v readings, want four of 10", got)
	}
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after the moves: %v, want %v", got, want)
	}
	// Blocks ending at or after the cutoff stay as they are.
	if n, _, err := m.s.CompactDevices(ctx, []string{"d1"}, t0.Add(20*time.Second), 0, 1000); err != nil || n != 20 {
		t.Fatalf("CompactDevices before 20s: %d, %v; want the two first blocks merged (20)", n, err)
	}
	if got := counts(); !slices.Equal(got, []int{20, 10, 10}) {
		t.Fatalf("blocks after merging up to 20s hold %v readings, want [20 10 10]", got)
	}
	// A budget of 15 takes the blocks of 20 and 10 (it stops once it
	// has 15): they merge, the last block waits for the next call.
	if n, _, err := m.s.CompactDevices(ctx, []string{"d1"}, t0.Add(time.Hour), 0, 15); err != nil || n != 30 {
		t.Fatalf("CompactDevices with a budget of 15: %d, %v; want 30", n, err)
	}
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after a merge: %v, want %v", got, want)
	}
	if n, _, err := m.s.CompactDevices(ctx, []string{"d1"}, t0.Add(time.Hour), 0, 1000); err != nil || n != 40 {
		t.Fatalf("CompactDevices: %d, %v; want 40", n, err)
	}
	if got := counts(); !slices.Equal(got, []int{40}) {
		t.Fatalf("blocks after merging hold %v readings, want [40]", got)
	}
	// One small block left: nothing to merge.
	if n, _, err := m.s.CompactDevices(ctx, []string{"d1"}, t0.Add(time.Hour), 0, 1000); err != nil || n != 0 {
		t.Fatalf("CompactDevices with one small block: %d, %v; want 0", n, err)
	}
	if got := m.readingSecs(t0); !slices.Equal(got, want) {
		t.Fatalf("after merging: %v, want %v", got, want)
	}
}
