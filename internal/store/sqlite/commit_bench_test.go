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
// dedupe index is touched by every message).
//
//	go test ./internal/store/sqlite -run '^$' -bench CommitIngest -benchtime 2000x
func BenchmarkCommitIngest(b *testing.B) {
	for _, tc := range []struct {
		devices, batch int
		msgID          bool
	}{{100, 20, false}, {100, 20, true}, {100, 100, false}, {1000, 400, false}, {1000, 400, true}} {
		b.Run(fmt.Sprintf("devices=%d/batch=%d/msgid=%d", tc.devices, tc.batch, map[bool]int{true: 1}[tc.msgID]), func(b *testing.B) {
			benchCommitIngest(b, tc.devices, tc.batch, tc.msgID)
		})
	}
}

func benchCommitIngest(b *testing.B, devices, size int, withMsgID bool) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(b.TempDir(), "bench.db"), Synchronous: "full", PageSize: benchPageSize(b)})
	if err != nil {
		b.Fatal(err)
	}
	benchCheckpointer(b, s)
	runUntilCleanup(b, s)
	benchDropIndexes(b, s)
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
			args := fmt.Appendf(nil, `{"message_id":%d,"topic":%q,"transport":"mqtt","readings":[{"ts":%q,"values":%s}]}`,
				id, topics[d], now.Format(time.RFC3339Nano), values)
			batch[i] = &commit.Change{
				DeviceID: ids[d],
				Ops: withReadings(&readings.Message{ID: id, Topic: topics[d], Transport: "mqtt", QoS: 1,
					Payload: pl, MsgID: msgID, Accepted: true, ReceivedAt: now}, []readings.Reading{{Time: now, Values: values}}, &registry.DevicePatch{LastSeen: &now}),
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
