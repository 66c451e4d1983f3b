package sqlite

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// BenchmarkDeviceQueries: the one-device queries of the bench's query
// scenario on one device shaped as each device of its 10,000,000 readings
// over 10,000 devices is (1,000 readings of 4 fields over 10 days, all
// but the last hour compacted into blocks), read from the store: what
// the store adds to a query's time, whatever the size of the fleet.
//
// With DEVICEHUB_BENCH_UNCOMPACTED=1 nothing is compacted: the device's
// 1,000 readings are the rows (before migration 01000) or the readings
// head (after) that a device's newest readings are in.
//
//	go test ./internal/store/sqlite -run '^$' -bench DeviceQueries -benchtime 200x
func BenchmarkDeviceQueries(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	uncompacted := os.Getenv("DEVICEHUB_BENCH_UNCOMPACTED") == "1"
	const (
		dev      = "dev-00001"
		per      = 1000
		interval = 864 * time.Second
	)
	end := time.Date(2026, 12, 3, 15, 0, 0, 0, time.UTC)
	start := end.Add(-per * interval)
	if err := s.Commit(ctx, []*commit.Change{{DeviceID: dev, Ops: []commit.Op{&registry.NewDevice{Type: "T", MQTTUsername: dev,
		PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: start}}}}); err != nil {
		b.Fatal(err)
	}
	var batch []*commit.Change
	for k := range per {
		ts := start.Add(time.Duration(k) * interval)
		msg := &readings.Message{ID: int64(k + 1), Topic: "t", Transport: "mqtt", QoS: 1, MsgID: fmt.Sprint("m", k), Accepted: true, ReceivedAt: ts}
		batch = append(batch, &commit.Change{DeviceID: dev, Ops: []commit.Op{msg, &readings.Readings{Message: msg, Rows: []readings.Reading{{Time: ts,
			Values: fmt.Appendf(nil, `{"temperature":%.2f,"humidity":%.1f,"pressure":%.1f,"battery":%d}`, 20+float64(k%500)/100, 40+float64(k%70)/10, 1000+float64(k%300)/10, 100-k%100)}}}}})
		if len(batch) == 100 {
			if err := s.Commit(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	for !uncompacted {
		n, err := s.CompactReadings(ctx, dev, end.Add(-time.Hour), 0, 2048)
		if err != nil {
			b.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	b.Run("newest_1000", func(b *testing.B) {
		for b.Loop() {
			p, err := s.QueryReadings(ctx, readings.Query{DeviceID: dev, Limit: 1000})
			if err != nil || len(p.Readings) != 1000 {
				b.Fatalf("%d readings, %v", len(p.Readings), err)
			}
		}
	})
	b.Run("day_field", func(b *testing.B) {
		for b.Loop() {
			p, err := s.QueryReadings(ctx, readings.Query{DeviceID: dev, Field: "temperature", From: end.Add(-24 * time.Hour), To: end, Limit: 10000})
			if err != nil || len(p.Readings) != 100 {
				b.Fatalf("%d readings, %v", len(p.Readings), err)
			}
		}
	})
	b.Run("week_buckets", func(b *testing.B) {
		for b.Loop() {
			a, err := s.AggregateReadings(ctx, readings.AggregateQuery{DeviceID: dev, Field: "temperature", From: end.Add(-7 * 24 * time.Hour), To: end, Buckets: 500})
			if err != nil || len(a.Buckets) == 0 {
				b.Fatalf("%d buckets, %v", len(a.Buckets), err)
			}
		}
	})
}
