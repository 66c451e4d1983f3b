package sqlite

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// msgTest is a store for the message log's tests, at path, with opts.
type msgTest struct {
	t    *testing.T
	path string
	opts Options
	s    *Store
	id   int64
}

func newMsgTest(t *testing.T, opts Options) *msgTest {
	t.Helper()
	opts.Path = filepath.Join(t.TempDir(), "hub.db")
	m := &msgTest{t: t, path: opts.Path, opts: opts, id: 1000}
	m.open()
	t.Cleanup(func() {
		if m.s != nil {
			m.s.Close()
		}
	})
	if err := m.s.Commit(context.Background(), []*commit.Change{{DeviceID: "d1", Ops: []commit.Op{&registry.NewDevice{
		Type: "T", MQTTUsername: "d1", PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: time.Now(),
	}}}}); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *msgTest) open() {
	m.t.Helper()
	s, err := Open(context.Background(), m.opts)
	if err != nil {
		m.t.Fatal(err)
	}
	m.s = s
}

func (m *msgTest) reopen() {
	m.t.Helper()
	if err := m.s.Close(); err != nil {
		m.t.Fatal(err)
	}
	m.open()
}

// send commits one message of d1 per msg_id, each in a batch of its own
// ("" for a message without a msg_id), and returns whether each was a
// duplicate.
func (m *msgTest) send(msgIDs ...string) []bool {
	m.t.Helper()
	var dups []bool
	for _, id := range msgIDs {
		m.id++
		msg := &readings.Message{ID: m.id, Topic: "devices/d1/data", Transport: "mqtt", QoS: 1,
			Payload: []byte(`{"t":1}`), MsgID: id, Accepted: true, ReceivedAt: time.Now()}
		ch := &commit.Change{DeviceID: "d1", Ops: withReadings(msg, []readings.Reading{{Time: time.Now(), Values: []byte(`{"t":1}`)}})}
		if err := m.s.Commit(context.Background(), []*commit.Change{ch}); err != nil {
			m.t.Fatal(err)
		}
		dups = append(dups, ch.Duplicate)
	}
	return dups
}

func (m *msgTest) compact() {
	m.t.Helper()
	if _, err := m.s.CompactMessages(context.Background(), 1<<30); err != nil {
		m.t.Fatal(err)
	}
}

// msgIDsOf lists the msg_ids of d1's messages, newest first.
func (m *msgTest) msgIDsOf() []string {
	m.t.Helper()
	ms, err := m.s.ListMessages(context.Background(), messagelog.Query{DeviceID: "d1", Limit: 1000})
	if err != nil {
		m.t.Fatal(err)
	}
	var out []string
	for _, x := range ms {
		out = append(out, x.MsgID)
	}
	return out
}

// TestDedupeWindow: the msg_id dedupe recognises a device's newest
// DedupeWindow msg_ids (messages without one do not count), wherever they
// are stored (head or blocks) and after a restart; an older one is stored
// again. The window here is 3.
func TestDedupeWindow(t *testing.T) {
	tests := []struct {
		name    string
		compact bool // move everything into blocks before the probe
		reopen  bool // restart before the probe
		probe   string
		dup     bool
	}{
		{"newest", false, false, "d", true},
		{"oldest in the window", false, false, "b", true},
		{"out of the window", false, false, "a", false},
		{"new", false, false, "e", false},
		{"after a restart", false, true, "b", true},
		{"out of the window after a restart", false, true, "a", false},
		{"in blocks", true, false, "b", true},
		{"in blocks after a restart", true, true, "c", true},
		{"out of the window in blocks", true, true, "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newMsgTest(t, Options{MessageLog: MessageLogOptions{DedupeWindow: 3}})
			// Messages without a msg_id between do not push b out.
			if dups := m.send("a", "b", "", "c", "", "", "d"); slices.Contains(dups, true) {
				t.Fatalf("first messages: duplicates %v", dups)
			}
			if tt.compact {
				m.compact()
			}
			if tt.reopen {
				m.reopen()
			}
			before := m.msgIDsOf()
			if got := m.send(tt.probe)[0]; got != tt.dup {
				t.Fatalf("%s: Duplicate = %v, want %v", tt.probe, got, tt.dup)
			}
			after := m.msgIDsOf()
			if stored := len(after) == len(before)+1; stored == tt.dup {
				t.Errorf("stored: %v (messages %v, then %v)", stored, before, after)
			}
		})
	}
}

// TestDedupeVerifiesHashHits: with every msg_id hashed alike, each new
// msg_id hits the window; the verification finds it was never stored and
// stores it. A false duplicate would lose a reading.
func TestDedupeVerifiesHashHits(t *testing.T) {
	m := newMsgTest(t, Options{})
	m.s.mlog.hashFn = func(string) uint64 { return 42 }
	if dups := m.send("a", "b", "c"); slices.Contains(dups, true) {
		t.Fatalf("distinct msg_ids with one hash: duplicates %v", dups)
	}
	m.compact()
	if dups := m.send("d", "b", "e"); !slices.Equal(dups, []bool{false, true, false}) {
		t.Fatalf("duplicates %v, want [false true false]", dups)
	}
	if n := m.s.mlog.verifies.Load(); n < 5 {
		t.Errorf("%d verifications, want every hit verified", n)
	}
	if got := m.msgIDsOf(); !slices.Equal(got, []string{"e", "d", "c", "b", "a"}) {
		t.Errorf("stored %v", got)
	}
}

// TestMessageLogFailuresLeaveMemory: a compaction or a commit that fails
// leaves the head, the windows and the largest id as they were; the
// listing is the same after the failure and after the retry.
func TestMessageLogFailuresLeaveMemory(t *testing.T) {
	ctx := context.Background()
	m := newMsgTest(t, Options{})
	m.send("a", "b", "", "c")
	want := m.msgIDsOf()
	boom := errors.New("boom")
	m.s.mlog.compactHook = func() error { return boom }
	if _, err := m.s.CompactMessages(ctx, 100); !errors.Is(err, boom) {
		t.Fatalf("CompactMessages with a failing hook: %v", err)
	}
	if got := m.msgIDsOf(); !slices.Equal(got, want) {
		t.Fatalf("after a failed compaction: %v, want %v", got, want)
	}
	if m.s.mlog.head.msgs != 4 {
		t.Fatalf("head holds %d messages after a failed compaction, want 4", m.s.mlog.head.msgs)
	}
	m.s.mlog.compactHook = nil

	// A commit whose context is cancelled while its batch is written.
	maxID, _ := m.s.MaxMessageID(ctx)
	cctx, cancel := context.WithCancel(ctx)
	msg := &readings.Message{ID: m.id + 1, Topic: "devices/d1/data", Transport: "mqtt", MsgID: "z", Accepted: true, ReceivedAt: time.Now()}
	ch := &commit.Change{DeviceID: "d1", Ops: withReadings(msg, nil, &cancelOp{cancel})}
	if err := m.s.Commit(cctx, []*commit.Change{ch}); err == nil {
		t.Fatal("Commit whose context ends: no error")
	}
	if got, _ := m.s.MaxMessageID(ctx); got != maxID {
		t.Errorf("MaxMessageID = %d after a failed commit, want %d", got, maxID)
	}
	if m.s.mlog.head.msgs != 4 {
		t.Errorf("head holds %d messages after a failed commit, want 4", m.s.mlog.head.msgs)
	}
	// The same id again, as the committer retries.
	if dups := m.send("z"); dups[0] {
		t.Error("the msg_id of a failed commit is taken")
	}

	if _, err := m.s.CompactMessages(ctx, 100); err != nil {
		t.Fatal(err)
	}
	want = append([]string{"z"}, want...)
	if got := m.msgIDsOf(); !slices.Equal(got, want) {
		t.Fatalf("after the compaction: %v, want %v", got, want)
	}
	var batches, blocks int
	m.s.r.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM message_batches), (SELECT count(*) FROM message_blocks)`).Scan(&batches, &blocks)
	if batches != 0 || blocks != 1 || m.s.mlog.head.msgs != 0 {
		t.Errorf("%d batch rows, %d blocks, head %d messages; want 0, 1, 0", batches, blocks, m.s.mlog.head.msgs)
	}
}

// TestMessagesTableMovedAtOpen: rows of the messages table (the log
// before migration 00900) are moved into blocks at open: listed as
// before, their msg_ids still known, the largest id kept.
func TestMessagesTableMovedAtOpen(t *testing.T) {
	ctx := context.Background()
	m := newMsgTest(t, Options{})
	for i := range 25 {
		msgID := any(fmt.Sprint("old-", i))
		if i%5 == 0 {
			msgID = nil
		}
		accepted := i%7 != 3
		if _, err := m.s.w.ExecContext(ctx, `INSERT INTO messages (id, device_id, topic, transport, qos, payload, msg_id, accepted, code, reason, received_at)
			VALUES (?, 'd1', 'devices/d1/data', 'mqtt', 1, ?, ?, ?, '', '', ?)`, 100+i, []byte(`{"t":1}`), msgID, accepted, i); err != nil {
			t.Fatal(err)
		}
	}
	m.reopen()
	var left int
	m.s.r.QueryRowContext(ctx, `SELECT count(*) FROM messages`).Scan(&left)
	if left != 0 {
		t.Fatalf("%d rows left in messages", left)
	}
	got := m.msgIDsOf()
	if len(got) != 25 || got[0] != "old-24" || got[24] != "" {
		t.Fatalf("moved messages %v", got)
	}
	if id, _ := m.s.MaxMessageID(ctx); id != 124 {
		t.Errorf("MaxMessageID = %d, want 124", id)
	}
	rej, err := m.s.ListMessages(ctx, messagelog.Query{DeviceID: "d1", Rejected: true})
	if err != nil || len(rej) != 4 {
		t.Errorf("rejected after the move: %d, %v; want 4", len(rej), err)
	}
	m.id = 200
	if dups := m.send("old-24", "old-3", "new"); !slices.Equal(dups, []bool{true, true, false}) {
		t.Errorf("duplicates %v, want [true true false]", dups)
	}
}

// TestHeadBounded: past HeadMessages the store's Run moves the oldest
// batch rows into blocks, leaving at most half in the head; idle windows
// are let go and read again when needed.
func TestHeadBounded(t *testing.T) {
	m := newMsgTest(t, Options{MessageLog: MessageLogOptions{HeadMessages: 100, DedupeIdle: time.Hour}})
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.s.Run(ctx) }()
	var ids []string
	for i := range 150 {
		ids = append(ids, fmt.Sprint("m", i))
	}
	m.send(ids...)
	eventually.True(t, 10*time.Second, "head within its bound", func() bool {
		m.s.mlog.hmu.RLock()
		defer m.s.mlog.hmu.RUnlock()
		return m.s.mlog.head.msgs <= 50
	})
	stop()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
	if got := m.msgIDsOf(); len(got) != 150 || got[0] != "m149" || got[149] != "m0" {
		t.Fatalf("listing after compaction: %d messages", len(got))
	}
	m.s.clock = func() time.Time { return time.Now().Add(2 * time.Hour) }
	m.s.evictWindows()
	if n := len(m.s.mlog.windows); n != 0 {
		t.Fatalf("%d windows left after the idle time", n)
	}
	if dups := m.send("m149", "m1"); !slices.Equal(dups, []bool{true, true}) {
		t.Errorf("after eviction: duplicates %v", dups)
	}
}

// TestStripPayloadsInHead: payload retention rewrites batch rows the head
// holds; a device's listing (which decodes its records from their offsets
// in the head's blocks) and the dedupe see the new blocks.
func TestStripPayloadsInHead(t *testing.T) {
	ctx := context.Background()
	m := newMsgTest(t, Options{})
	m.send("a", "b", "c")
	cut := time.Now().Add(time.Hour)
	if n, _, err := m.s.StripMessagePayloads(ctx, cut, 0, 100); err != nil || n != 3 {
		t.Fatalf("StripMessagePayloads = %d, %v; want 3", n, err)
	}
	check := func(stage string) {
		t.Helper()
		for _, q := range []messagelog.Query{{DeviceID: "d1"}, {}} {
			ms, err := m.s.ListMessages(ctx, q)
			if err != nil || len(ms) != 3 {
				t.Fatalf("%s: %d messages, %v", stage, len(ms), err)
			}
			for i, x := range ms {
				if x.Payload != nil || x.MsgID != []string{"c", "b", "a"}[i] || x.Topic != "devices/d1/data" {
					t.Errorf("%s: message %+v", stage, x)
				}
			}
		}
	}
	check("stripped in the head")
	if dups := m.send("b"); !dups[0] {
		t.Error("b not a duplicate after its payload was stripped")
	}
	m.compact()
	check("compacted")
	if n, _, err := m.s.StripMessagePayloads(ctx, cut, 0, 100); err != nil || n != 0 {
		t.Errorf("second strip = %d, %v; want 0", n, err)
	}
}

// TestHeadDrop: drop takes batch rows out of the head, whether they are
// its oldest in commit order (a compaction's: the entries cut off the
// front of each device's list) or not (expiry's may not be); the rest
// stays as it was. Commit order is not first_id order here: message ids
// are taken before the commit queue.
func TestHeadDrop(t *testing.T) {
	// Batch rows in commit order: first_id 10 (d1, d2), 5 (d1), 20 (d2, d3).
	build := func() *msgHead {
		h := &msgHead{devs: map[string][]headEntry{}, data: map[int64][]byte{}}
		for _, b := range []struct {
			devs []string
			ids  []int64
		}{{[]string{"d1", "d2"}, []int64{10, 11}}, {[]string{"d1"}, []int64{5}}, {[]string{"d2", "d3"}, []int64{20, 21}}} {
			pb := &pendingBatch{}
			for i, d := range b.devs {
				pb.add(d, headEntry{id: b.ids[i]}, 0)
			}
			pb.finish()
			pb.hb.data = make([]byte, 100*len(b.ids))
			pb.hb.bytes = len(pb.hb.data)
			h.add(pb)
		}
		return h
	}
	tests := []struct {
		name     string
		firsts   []int64
		batches  []int64            // first_ids left, in commit order
		devs     map[string][]int64 // message ids left per device
		msgs     int
		dataRows int
	}{
		{"oldest two", []int64{5, 10}, []int64{20}, map[string][]int64{"d2": {20}, "d3": {21}}, 2, 1},
		{"oldest one", []int64{10}, []int64{5, 20}, map[string][]int64{"d1": {5}, "d2": {20}, "d3": {21}}, 3, 2},
		{"not the oldest", []int64{5}, []int64{10, 20}, map[string][]int64{"d1": {10}, "d2": {11, 20}, "d3": {21}}, 4, 2},
		{"oldest and newest", []int64{10, 20}, []int64{5}, map[string][]int64{"d1": {5}}, 1, 1},
		{"none of the head's", []int64{99}, []int64{10, 5, 20}, map[string][]int64{"d1": {10, 5}, "d2": {11, 20}, "d3": {21}}, 5, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := build()
			h.drop(tc.firsts)
			var batches []int64
			for _, b := range h.batches {
				batches = append(batches, b.first)
			}
			if !slices.Equal(batches, tc.batches) {
				t.Errorf("batch rows %v, want %v", batches, tc.batches)
			}
			devs := map[string][]int64{}
			for d, es := range h.devs {
				for _, e := range es {
					devs[d] = append(devs[d], e.id)
				}
			}
			if !maps.EqualFunc(devs, tc.devs, slices.Equal) {
				t.Errorf("entries %v, want %v", devs, tc.devs)
			}
			if h.msgs != tc.msgs || len(h.data) != tc.dataRows || h.bytes != int64(100*tc.msgs) {
				t.Errorf("msgs %d, data rows %d, bytes %d; want %d, %d, %d", h.msgs, len(h.data), h.bytes, tc.msgs, tc.dataRows, 100*tc.msgs)
			}
		})
	}
}
