package postgres

// Measured on the 2-core development machine with the local PostgreSQL:
//
//	DEVICEHUB_TEST_POSTGRES_DSN=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test -run XXX -bench Commit -benchtime 100x ./internal/store/postgres/
//
// RESULTS (changes/s; one message with msg_id + reading + last-seen patch +
// event per change):
//
//	batch=100     20.0k   (5.0 ms per commit)
//	batch=1000    32.4k   (30.9 ms per commit)

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// BenchmarkCommit measures Commit with data changes (one message with a
// msg_id, one reading, one last-seen patch and one event each) from 100
// devices.
func BenchmarkCommit(b *testing.B) {
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			ctx := context.Background()
			s := openTest(b)
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
			ev, err := commit.NewEvent(events.Event{Type: events.DeviceDataReceived, Args: &events.DataReceived{
				MessageID: 1, Topic: "devices/device-0000/data", Transport: "mqtt",
				Readings: []events.Reading{{Time: time.Now(), Values: map[string]any{"temperature": 21.5}}},
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
							Args: ev.Args}},
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

// withReadings returns the ops of a message with its readings, then more.
func withReadings(m *readings.Message, rows []readings.Reading, more ...commit.Op) []commit.Op {
	return append([]commit.Op{m, &readings.Readings{Message: m, Rows: rows}}, more...)
}
