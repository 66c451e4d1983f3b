package sqlite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// BenchmarkCommitIngest measures Commit with changes shaped like those of
// MQTT ingest (a message without msg_id, one reading, a last-seen patch
// and a device_data_received event), each batch from distinct devices as
// when every device has one message in flight. It reports the commit
// loop's cost per change, the serial part of durable ingest, and the bytes
// written per change (WAL frames and checkpoints, /proc/self/io wchar),
// and the p99 and max time of one Commit.
// The msgid=1 rows carry a msg_id as the SDK sends it (the real case: the
// dedupe index is touched by every message); batch=39 is the mean batch
// of the hub's closed loop at 100 devices (bench ingest, 2026-12-05), a
// size that is not one of the prepared statements' row counts. Each device sends many
// changes a second, so the store writes its last-seen patch about once a
// second only (registry.SeenResolution), as for such a device in the hub.
//
// Knobs, each bounding from below what one layout change of the commit
// could save (benchmark only; the product is unchanged):
// DEVICEHUB_BENCH_DROP_INDEXES (benchDropIndexes),
// DEVICEHUB_BENCH_READINGS_LAYOUT (benchReadingsLayout),
// and DEVICEHUB_BENCH_OMIT (benchOmit) (DEVICEHUB_BENCH_DEDUP went with
// the messages rows it changed, migration 00900); DEVICEHUB_BENCH_PLAIN_WAL=1 writes the WAL one
// frame header and page at a time, as SQLite's unix VFS does (walvfs.go);
// DEVICEHUB_BENCH_WAL_FSYNC=1 syncs it with fsync, not fdatasync.
//
//	go test ./internal/store/sqlite -run '^$' -bench CommitIngest -benchtime 2000x
func BenchmarkCommitIngest(b *testing.B) {
	for _, tc := range []struct {
		devices, batch int
		msgID          bool
	}{{100, 20, false}, {100, 20, true}, {100, 39, true}, {100, 100, false}, {1000, 400, false}, {1000, 400, true}, {1000, 10, true}} {
		b.Run(fmt.Sprintf("devices=%d/batch=%d/msgid=%d", tc.devices, tc.batch, map[bool]int{true: 1}[tc.msgID]), func(b *testing.B) {
			benchCommitIngest(b, tc.devices, tc.batch, tc.msgID)
		})
	}
}

func benchCommitIngest(b *testing.B, devices, size int, withMsgID bool) {
	ctx := context.Background()
	walFsync.Store(os.Getenv("DEVICEHUB_BENCH_WAL_FSYNC") == "1")
	// The readings head is not compacted while the commits are timed
	// (BenchmarkCompactReadingsHead measures that): the commit alone,
	// as main's readings rows were measured without the Compactor.
	s, err := Open(ctx, Options{Path: filepath.Join(b.TempDir(), "bench.db"), Synchronous: "full", PageSize: benchPageSize(b),
		plainWAL: os.Getenv("DEVICEHUB_BENCH_PLAIN_WAL") == "1", CacheSize: benchWriterCache(b),
		ReadingsHead: ReadingsHeadOptions{MaxReadings: 1 << 30, MaxBytes: 1 << 40, MaxAge: 24 * time.Hour}})
	if err != nil {
		b.Fatal(err)
	}
	benchCheckpointer(b, s)
	runUntilCleanup(b, s)
	benchDropIndexes(b, s)
	benchReadingsLayout(ctx, b, s)
	omit := benchOmit(b)
	ids := make([]string, devices)
	topics := make([]string, devices)
	var prov []*commit.Change
	for d := range devices {
		ids[d] = fmt.Sprintf("bench-%04d", d)
		topics[d] = "devices/" + ids[d] + "/data"
		prov = append(prov, &commit.Change{DeviceID: ids[d], Ops: []commit.Op{&registry.NewDevice{
			Type: "WeatherStation", MQTTUsername: ids[d], PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: time.Now(),
		}}})
	}
	if err := s.Commit(ctx, prov); err != nil {
		b.Fatal(err)
	}
	payload := []byte(`{"temperature":21.25,"humidity":40}`)
	values := []byte(`{"temperature":21.25,"humidity":40}`)
	var gen commit.IDs
	batch := make([]*commit.Change, size)
	next := 0
	b.ReportAllocs()
	b.ResetTimer()
	var cpu time.Duration
	var written int64
	took := make([]time.Duration, 0, b.N)
	for range b.N {
		b.StopTimer()
		now := time.Now()
		for i := range batch {
			d := next % devices
			next++
			id := gen.Next()
			msgID, pl := "", payload
			if withMsgID {
				msgID = fmt.Sprintf("%08x-%d", uint32(d)*2654435761, next/devices+1)
				pl = fmt.Appendf(nil, `{"msg_id":%q,"temperature":21.25,"humidity":40}`, msgID)
			}
			var args []byte
			if omit.eventArgs {
				args = fmt.Appendf(nil, `{"message_id":%d}`, id)
			} else {
				args = fmt.Appendf(nil, `{"message_id":%d,"topic":%q,"transport":"mqtt","readings":[{"ts":%q,"values":%s}]}`,
					id, topics[d], now.Format(time.RFC3339Nano), values)
			}
			if omit.payload {
				pl = nil
			}
			var more []commit.Op
			if !omit.patch {
				more = append(more, &registry.DevicePatch{LastSeen: &now})
			}
			batch[i] = &commit.Change{
				DeviceID: ids[d],
				Ops: withReadings(&readings.Message{ID: id, Topic: topics[d], Transport: "mqtt", QoS: 1,
					Payload: pl, MsgID: msgID, Accepted: true, ReceivedAt: now}, []readings.Reading{{Time: now, Values: values}}, more...),
				Events: []commit.Event{{Event: events.Event{Type: events.DeviceDataReceived, Time: now, DeviceID: ids[d], DeviceType: "WeatherStation"},
					Args: args}},
			}
		}
		b.StartTimer()
		cpu0, w0, t0 := cpuTime(b), writtenBytes(), time.Now()
		if err := s.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(t0))
		cpu += cpuTime(b) - cpu0
		written += writtenBytes() - w0
	}
	b.StopTimer()
	// Every variant must still store every reading.
	if n, err := s.CountReadings(ctx, ""); err != nil || n != int64(b.N*size) {
		b.Fatalf("readings stored: %d, %v; want %d", n, err, b.N*size)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*size), "µs/change")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N*size), "cpu-µs/change")
	b.ReportMetric(float64(written)/1024/float64(b.N*size), "write-KB/change")
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-commit-ms")
	b.ReportMetric(float64(took[len(took)-1].Microseconds())/1000, "max-commit-ms")
}

// benchDropIndexes drops the indexes named in DEVICEHUB_BENCH_DROP_INDEXES
// (comma-separated), to measure what their upkeep costs per change: an
// upper bound of what maintaining a per-device index in batches (a
// staging table merged later) could save. Not the dedupe index: the
// msg_id insert's ON CONFLICT needs it.
func benchDropIndexes(b *testing.B, s *Store) {
	v := os.Getenv("DEVICEHUB_BENCH_DROP_INDEXES")
	if v == "" {
		return
	}
	for name := range strings.SplitSeq(v, ",") {
		if _, err := s.w.Exec(`DROP INDEX ` + name); err != nil {
			b.Fatalf("drop index %s: %v", name, err)
		}
	}
}

// benchReadingsLayout replaces the readings table (empty at this point)
// with the layout named in DEVICEHUB_BENCH_READINGS_LAYOUT, to measure
// what a clustered table costs the commit instead of the rowid table and
// its readings_dev_ts index:
//
//   - clustered: WITHOUT ROWID, keyed by (dev, ts, id). The id is written
//     by the insert (the writer would assign it; here the message id,
//     unique with one reading per message), through a SELECT over the
//     same multi-row VALUES the product's insert binds.
//   - clustered-noid: WITHOUT ROWID, keyed by (dev, ts), no id column: the
//     smallest clustered row; the product's insert runs unchanged (the
//     bench never gives a device two readings of one ts).
//
// Only the commit's insert is kept working; the queries of readings by id
// are not.
func benchReadingsLayout(ctx context.Context, b *testing.B, s *Store) {
	var ddl string
	ins := newBulk(s.w, `INSERT INTO readings (dev, stream, ts, received_at, message_id, data) VALUES `, `(?,?,?,?,?,?)`, ``)
	switch v := os.Getenv("DEVICEHUB_BENCH_READINGS_LAYOUT"); v {
	case "":
		return
	case "clustered":
		ddl = `CREATE TABLE readings (dev INTEGER NOT NULL, ts INTEGER NOT NULL, id INTEGER NOT NULL,
			stream TEXT NOT NULL DEFAULT '', received_at INTEGER NOT NULL, message_id INTEGER NOT NULL, data TEXT NOT NULL,
			PRIMARY KEY (dev, ts, id)) WITHOUT ROWID`
		ins = newBulk(s.w, `INSERT INTO readings (dev, stream, ts, received_at, message_id, data, id)
			SELECT column1, column2, column3, column4, column5, column6, column5 FROM (VALUES `, `(?,?,?,?,?,?)`, `)`)
	case "clustered-noid":
		ddl = `CREATE TABLE readings (dev INTEGER NOT NULL, ts INTEGER NOT NULL,
			stream TEXT NOT NULL DEFAULT '', received_at INTEGER NOT NULL, message_id INTEGER NOT NULL, data TEXT NOT NULL,
			PRIMARY KEY (dev, ts)) WITHOUT ROWID`
	default:
		b.Fatalf("DEVICEHUB_BENCH_READINGS_LAYOUT=%q: want clustered or clustered-noid", v)
	}
	for _, q := range []string{`DROP TABLE readings`, ddl} {
		if _, err := s.w.ExecContext(ctx, q); err != nil {
			b.Fatalf("readings layout: %v", err)
		}
	}
	if err := s.onWriter(ctx, func(dc any) error {
		s.inserts["readings"].closeRaw(dc)
		return ins.prepareRaw(ctx, dc)
	}); err != nil {
		b.Fatalf("readings layout: %v", err)
	}
	s.inserts["readings"] = ins
}

// benchOmission is what DEVICEHUB_BENCH_OMIT leaves out of each change.
type benchOmission struct {
	// patch: the device's last_seen update (registry.DevicePatch; the
	// store writes it about once a second per device anyway).
	patch bool
	// eventArgs: the device_data_received event's values; its args keep
	// only the message id, a pointer to the message.
	eventArgs bool
	// payload: the raw payload of the message audit record (NULL).
	payload bool
}

// benchOmit reads DEVICEHUB_BENCH_OMIT, a comma list of patch,
// eventargs and payload: parts of an ingest change the benchmark leaves
// out, to bound what not writing them per reading could save.
func benchOmit(b *testing.B) benchOmission {
	var o benchOmission
	v := os.Getenv("DEVICEHUB_BENCH_OMIT")
	if v == "" {
		return o
	}
	for name := range strings.SplitSeq(v, ",") {
		switch name {
		case "patch":
			o.patch = true
		case "eventargs":
			o.eventArgs = true
		case "payload":
			o.payload = true
		default:
			b.Fatalf("DEVICEHUB_BENCH_OMIT: unknown %q (want patch, eventargs, payload)", name)
		}
	}
	return o
}

// writtenBytes is the bytes the process passed to write system calls so
// far (/proc/self/io wchar), or 0 where that is not available.
func writtenBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// cpuTime is the user and system CPU time the process used so far,
// background goroutines (a checkpointer) included.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchWriterCache is DEVICEHUB_BENCH_WRITER_CACHE_KIB, the writer's page
// cache in KiB, as bytes (0: the store's default).
func benchWriterCache(b *testing.B) int64 {
	v := os.Getenv("DEVICEHUB_BENCH_WRITER_CACHE_KIB")
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("DEVICEHUB_BENCH_WRITER_CACHE_KIB=%q: want a positive number of KiB", v)
	}
	return int64(n) * 1024
}
