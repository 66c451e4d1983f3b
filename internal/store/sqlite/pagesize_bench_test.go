package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// benchPageSize is the page size of the databases the commit benchmarks
// create: DEVICEHUB_BENCH_PAGE_SIZE, or the store's default.
func benchPageSize(b *testing.B) int {
	v := os.Getenv("DEVICEHUB_BENCH_PAGE_SIZE")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		b.Fatalf("DEVICEHUB_BENCH_PAGE_SIZE: %v", err)
	}
	return n
}

// benchCheckpointer sets the checkpointer of s from the environment, for
// A/B runs in one binary: DEVICEHUB_BENCH_CKPT_SYNC=0 leaves out the
// fsync before the blocking round, DEVICEHUB_BENCH_CATCHUP_PAGES sets
// catchUpPages, DEVICEHUB_BENCH_CKPT_CHANGES checkpointChanges. Call
// it before s runs.
func benchCheckpointer(b *testing.B, s *Store) {
	if os.Getenv("DEVICEHUB_BENCH_CKPT_SYNC") == "0" {
		s.syncFirst = false
	}
	if v := os.Getenv("DEVICEHUB_BENCH_CATCHUP_PAGES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("DEVICEHUB_BENCH_CATCHUP_PAGES: %v", err)
		}
		catchUpPages = n
	}
	if v := os.Getenv("DEVICEHUB_BENCH_CKPT_CHANGES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("DEVICEHUB_BENCH_CKPT_CHANGES: %v", err)
		}
		checkpointChanges = n
	}
}

// BenchmarkPageSizeQueries measures what the page size of a database
// costs the read side: 200 devices × 1,000 readings committed as ingest
// writes them (each batch from distinct devices, so a device's rows are
// scattered), then the newest 1,000 readings of a device as rows, and
// again once half the devices are compacted into reading_blocks; it
// reports the bytes of the database per reading.
//
//	go test ./internal/store/sqlite -run '^$' -bench PageSizeQueries -benchtime 200x
func BenchmarkPageSizeQueries(b *testing.B) {
	for _, size := range []int{1024, 2048, 4096, 8192} {
		b.Run(fmt.Sprintf("page=%d", size), func(b *testing.B) { benchPageSizeQueries(b, size) })
	}
}

func benchPageSizeQueries(b *testing.B, pageSize int) {
	const devices, perDevice = 200, 1000
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(b.TempDir(), "q.db"), PageSize: pageSize})
	if err != nil {
		b.Fatal(err)
	}
	runUntilCleanup(b, s)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ids := make([]string, devices)
	var batch []*commit.Change
	for d := range devices {
		ids[d] = fmt.Sprintf("q-%04d", d)
		batch = append(batch, &commit.Change{DeviceID: ids[d], Ops: []commit.Op{&registry.NewDevice{Type: "T", MQTTUsername: ids[d], PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: base}}})
	}
	if err := s.Commit(ctx, batch); err != nil {
		b.Fatal(err)
	}
	var msgID int64
	for i := range perDevice {
		batch = batch[:0]
		at := base.Add(time.Duration(i) * 10 * time.Second)
		for d := range devices {
			msgID++
			m := &readings.Message{ID: msgID, Topic: "devices/" + ids[d] + "/data", Transport: "mqtt", QoS: 1,
				Payload: []byte(`{"temperature":21.25,"humidity":40}`), MsgID: fmt.Sprintf("%08x-%d", d, i), Accepted: true, ReceivedAt: at}
			batch = append(batch, &commit.Change{DeviceID: ids[d], Ops: withReadings(m, []readings.Reading{{Time: at,
				Values: fmt.Appendf(nil, `{"temperature":%d.%d,"humidity":%d}`, 15+i%20, i%10, 30+d%40)}})})
		}
		if err := s.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	used, _, err := s.ReadingsSpace(ctx)
	if err != nil {
		b.Fatal(err)
	}
	newest := func(b *testing.B, from []string) {
		took := make([]time.Duration, 0, b.N)
		i := 0
		for b.Loop() {
			t0 := time.Now()
			p, err := s.QueryReadings(ctx, readings.Query{DeviceID: from[i%len(from)], Limit: 1000})
			if err != nil || len(p.Readings) != 1000 {
				b.Fatalf("%d readings, %v", len(p.Readings), err)
			}
			took = append(took, time.Since(t0))
			i += 7
		}
		slices.Sort(took)
		b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(used)/devices/perDevice, "db-B/reading")
	}
	b.Run("rows", func(b *testing.B) { newest(b, ids[devices/2:]) })
	for _, id := range ids[:devices/2] {
		for {
			n, err := s.CompactReadings(ctx, id, base.Add(365*24*time.Hour), 0, 5000)
			if err != nil {
				b.Fatal(err)
			}
			if n == 0 {
				break
			}
		}
	}
	b.Run("blocks", func(b *testing.B) { newest(b, ids[:devices/2]) })
}
