package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// BenchmarkListMessages: one device's message log listing (the newest
// 100, a page deep in its history, its rejected ones) and the all-devices
// listing, with the device's 20,000 messages (1 in 50 rejected) among a
// fleet of 10 or 1,000 devices that each sent 100 messages at the same
// time, in batches of one message per device as ingest commits them; all
// but the last 2,000 batches' messages compacted into blocks (what the
// head bound leaves). A device's listing must not grow with the fleet.
//
//	go test ./internal/store/sqlite -run '^$' -bench ListMessages -benchtime 200x
func BenchmarkListMessages(b *testing.B) {
	for _, fleet := range []int{10, 1000} {
		b.Run(fmt.Sprintf("fleet=%d", fleet), func(b *testing.B) {
			benchListMessages(b, fleet)
		})
	}
}

func benchListMessages(b *testing.B, fleet int) {
	ctx := context.Background()
	s := openTest(b)
	const (
		dev  = "dev-0000"
		mine = 20_000
	)
	provisionFleet(b, s, fleet)
	var id int64
	msg := func(d, k int) *commit.Change {
		id++
		dv := fmt.Sprintf("dev-%04d", d)
		m := &readings.Message{ID: id, Topic: "devices/" + dv + "/data", Transport: "mqtt", QoS: 1, MsgID: fmt.Sprint("m-", k),
			Payload: []byte(`{"temperature":21.25,"humidity":40}`), Accepted: k%50 != 7, ReceivedAt: time.Now()}
		if !m.Accepted {
			m.Code, m.Reason = "invalid_reading", "out of range"
		}
		return &commit.Change{DeviceID: dv, Ops: []commit.Op{m}}
	}
	// The device's own messages, 100 a batch, then the fleet's rounds
	// with one of the device's in each.
	for k := 0; k < mine-100; k += 100 {
		var batch []*commit.Change
		for j := range 100 {
			batch = append(batch, msg(0, k+j))
		}
		if err := s.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	for r := range 100 {
		var batch []*commit.Change
		for d := range fleet {
			batch = append(batch, msg(d, mine-100+r))
		}
		if err := s.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
		if r == 80 {
			for {
				n, err := s.CompactMessages(ctx, compactChunk)
				if err != nil {
					b.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
		}
	}
	mid := id / 2
	for _, q := range []struct {
		name string
		q    messagelog.Query
	}{
		{"device_newest_100", messagelog.Query{DeviceID: dev, Limit: 100}},
		{"device_page_mid", messagelog.Query{DeviceID: dev, Before: mid, Limit: 100}},
		{"device_rejected", messagelog.Query{DeviceID: dev, Rejected: true, Limit: 100}},
		{"all_newest_100", messagelog.Query{Limit: 100}},
	} {
		b.Run(q.name, func(b *testing.B) {
			for b.Loop() {
				ms, err := s.ListMessages(ctx, q.q)
				if err != nil || len(ms) != 100 {
					b.Fatalf("%d messages, %v", len(ms), err)
				}
			}
		})
	}
}

// BenchmarkCompactMessagesChunk: one compaction of the message log,
// chunk messages moved from the head into blocks, with the head as ingest
// leaves it at sustained load: a fleet of devices whose messages (msg_id,
// ~50-byte payload) arrive batch to a group commit (200: the closed loop;
// 5: the open loop at half of peak), each device's spread over many
// batches. It reports the time before the writer is taken (reading the
// head, decoding, encoding the blocks: prep_ms) and the longest time one
// of its transactions (txs/chunk: of blocks, then of the dead batch rows'
// deletion) held the writer (the statements, COMMIT with its fsync, the
// head's drop: hold_ms), which a commit waits for; stmts_ms and commit_ms
// are those of the longest transaction of blocks.
//
//	go test ./internal/store/sqlite -run '^$' -bench CompactMessagesChunk -benchtime 20x
func BenchmarkCompactMessagesChunk(b *testing.B) {
	for _, c := range []struct{ fleet, batch, chunk int }{
		{1000, 200, 10_000}, {1000, 200, 2_500}, {1000, 200, 1_000},
		{100, 5, 10_000}, {1000, 5, 10_000}, {100, 200, 10_000},
	} {
		b.Run(fmt.Sprintf("fleet=%d/batch=%d/chunk=%d", c.fleet, c.batch, c.chunk), func(b *testing.B) {
			benchCompactChunk(b, c.fleet, c.batch, c.chunk)
		})
	}
}

func benchCompactChunk(b *testing.B, fleet, batch, chunk int) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(b.TempDir(), "hub.db"),
		MessageLog: MessageLogOptions{HeadMessages: 1 << 30, HeadBytes: 1 << 40}}) // no compaction but the benchmark's
	if err != nil {
		b.Fatal(err)
	}
	runUntilCleanup(b, s)
	provisionFleet(b, s, fleet)
	var id int64
	fill := func(n int) {
		for k := 0; k < n; k += batch {
			cs := make([]*commit.Change, 0, batch)
			for range batch {
				id++
				dv := fmt.Sprintf("dev-%04d", id%int64(fleet))
				m := &readings.Message{ID: id, Topic: "devices/" + dv + "/data", Transport: "mqtt", QoS: 1, MsgID: fmt.Sprint("m-", id),
					Payload:  fmt.Appendf(nil, `{"temperature":%.2f,"humidity":%.1f,"battery":%d}`, 20+float64(id%500)/100, 40+float64(id%70)/10, id%100),
					Accepted: true, ReceivedAt: time.Now()}
				cs = append(cs, &commit.Change{DeviceID: dv, Ops: []commit.Op{m}})
			}
			if err := s.Commit(ctx, cs); err != nil {
				b.Fatal(err)
			}
		}
	}
	var prep, hold, stmts, commits []time.Duration
	moved, txs := 0, 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		s.mlog.hmu.RLock()
		left := s.mlog.head.msgs
		s.mlog.hmu.RUnlock()
		if left < chunk {
			fill(5 * chunk)
		}
		b.StartTimer()
		st, err := s.compactMessages(ctx, chunk)
		if err != nil || st.moved == 0 {
			b.Fatalf("compaction moved %d: %v", st.moved, err)
		}
		moved += st.moved
		txs += st.txs + st.deletes
		prep = append(prep, st.prep)
		hold = append(hold, max(st.hold, st.deleteHold))
		stmts = append(stmts, st.stmts)
		commits = append(commits, st.commit)
	}
	b.StopTimer()
	ms := func(ds []time.Duration, q float64) float64 {
		ds = slices.Clone(ds)
		slices.Sort(ds)
		return float64(ds[min(len(ds)-1, int(q*float64(len(ds))))].Microseconds()) / 1000
	}
	b.ReportMetric(ms(prep, 0.5), "prep_ms")
	b.ReportMetric(ms(hold, 0.5), "hold_ms")
	b.ReportMetric(ms(hold, 1), "hold_max_ms")
	b.ReportMetric(ms(stmts, 0.5), "stmts_ms")
	b.ReportMetric(ms(commits, 0.5), "commit_ms")
	b.ReportMetric(float64(moved)/float64(b.N), "msgs/chunk")
	b.ReportMetric(float64(txs)/float64(b.N), "txs/chunk")
}

// provisionFleet provisions devices dev-0000 … of fleet in one commit.
func provisionFleet(tb testing.TB, s *Store, fleet int) {
	tb.Helper()
	var prov []*commit.Change
	for d := range fleet {
		id := fmt.Sprintf("dev-%04d", d)
		prov = append(prov, &commit.Change{DeviceID: id, Ops: []commit.Op{&registry.NewDevice{Type: "T", MQTTUsername: id,
			PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: time.Now()}}})
	}
	if err := s.Commit(context.Background(), prov); err != nil {
		tb.Fatal(err)
	}
}
