package sqlite

// Ingest benchmarks. Measured on the 2-core development machine (AMD EPYC,
// shared with other builds, so ±15%), go1.26, modernc.org/sqlite v1.61.1:
//
//	go test -run XXX -bench . -benchtime 300x ./internal/store/sqlite/
//
// RESULTS
//
// Readings layout alone (BenchmarkReadingsLayout, 300 batches of 1000 rows
// from 100 devices, synchronous=full), rows/s, with the batch's rows sorted
// by device as Commit does (and, from a first run, in arrival order):
//
//	layout                                        sorted   arrival order
//	no index (newest-N is a full scan + sort)     607k     434k
//	rowid table, INDEX (device_id TEXT, ts)       160k      98k
//	rowid table, INDEX (dev INTEGER, ts)          174k     112k   <- chosen
//	WITHOUT ROWID, PRIMARY KEY (dev, ts, id)      128k      74k
//
// Commit (BenchmarkCommit: message with msg_id + reading + last-seen patch
// + event per change, 100 devices, synchronous=full), changes/s:
//
//	batch=100     18.4k   (5.4 ms per commit, mostly the WAL fsync)
//	batch=1000    30.5k   (32.8 ms per commit)
//
// Before temp_store=MEMORY, the statement journal of the ON CONFLICT insert
// went to a temporary file and batch=1000 ran at 25k/s. A CPU profile of
// batch=1000 now shows about a third in the message insert (two indexes:
// (device_id, msg_id) for idempotence and (device_id, id) for the audit
// listing), a fifth in WAL writes, the rest in readings, events and
// database/sql.
//
// The layout of the migration is the rowid table with an index on (dev, ts)
// where dev is the device's integer key: the cheapest layout measured that
// still answers "newest N readings of a device" with an index search.

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// BenchmarkCommit measures Commit with data changes (one message with a
// msg_id, one reading, one last-seen patch and one event each) from 100
// devices, synchronous=full.
func BenchmarkCommit(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, Options{Path: filepath.Join(b.TempDir(), "bench.db"), Synchronous: "full"})
			if err != nil {
				b.Fatal(err)
			}
			runUntilCleanup(b, s)
			const devices = 100
			var prov []*commit.Change
			for d := range devices {
				prov = append(prov, &commit.Change{DeviceID: fmt.Sprintf("device-%04d", d), Ops: []commit.Op{&registry.NewDevice{
					Type: "sensor", MQTTUsername: "u", PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: time.Now(),
				}}})
			}
			if err := s.Commit(ctx, prov); err != nil {
				b.Fatal(err)
			}
			payload := []byte(`{"temperature":21.5,"humidity":40.25,"battery":87}`)
			args, err := commit.NewEvent(events.Event{Type: events.DeviceDataReceived, Args: &events.DataReceived{
				MessageID: 1, Topic: "devices/device-0000/data", Transport: "mqtt",
				Readings: []events.Reading{{Time: time.Now(), Values: map[string]any{"temperature": 21.5, "humidity": 40.25, "battery": 87}}},
			}})
			if err != nil {
				b.Fatal(err)
			}
			var ids commit.IDs
			batch := make([]*commit.Change, size)
			b.ResetTimer()
			for n := range b.N {
				now := time.Now()
				for i := range batch {
					dev := fmt.Sprintf("device-%04d", i%devices)
					batch[i] = &commit.Change{
						DeviceID: dev,
						Ops: withReadings(&readings.Message{ID: ids.Next(), Topic: "devices/" + dev + "/data", Transport: "mqtt", QoS: 1,
							Payload: payload, MsgID: fmt.Sprintf("m-%d-%d", n, i), Accepted: true, ReceivedAt: now}, []readings.Reading{{Time: now, Values: payload}}, &registry.DevicePatch{LastSeen: &now}),
						Events: []commit.Event{{Event: events.Event{Type: events.DeviceDataReceived, Time: now, DeviceID: dev, DeviceType: "sensor"},
							Args: args.Args}},
					}
				}
				if err := s.Commit(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*size)/b.Elapsed().Seconds(), "changes/s")
		})
	}
}
