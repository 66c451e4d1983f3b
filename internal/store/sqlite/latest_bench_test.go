package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// BenchmarkLatestValues: the latest values of 10,000 devices of 4 fields
// each, read from the tables (tables: the join of devices and
// latest_fields) and from the snapshot in memory (snapshot: what
// LatestValues answers), the snapshot's copy on a commit of 1,000
// devices (publish-1000), and the page encoded by encoding/json (json).
//
//	go test ./internal/store/sqlite -run '^$' -bench LatestValues -benchtime 20x -count 5
func BenchmarkLatestValues(b *testing.B) {
	ctx := context.Background()
	s := openTest(b)
	const devices = 10000
	var batch []*commit.Change
	flush := func() {
		if err := s.Commit(ctx, batch); err != nil {
			b.Fatal(err)
		}
		batch = batch[:0]
	}
	for d := range devices {
		id := fmt.Sprintf("dev-%05d", d)
		batch = append(batch, &commit.Change{DeviceID: id, Ops: []commit.Op{&registry.NewDevice{Type: "T", MQTTUsername: id, PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: time.Now()}}})
		if len(batch) == 1000 {
			flush()
		}
	}
	for d := range devices {
		id := fmt.Sprintf("dev-%05d", d)
		msg := &readings.Message{ID: int64(d + 1), Topic: "t", Transport: "mqtt", QoS: 1, Accepted: true, ReceivedAt: time.Now()}
		batch = append(batch, &commit.Change{DeviceID: id, Ops: []commit.Op{msg, &readings.Readings{Message: msg, Rows: []readings.Reading{{Time: time.Now(),
			Values: []byte(`{"temperature":21.25,"humidity":40.5,"pressure":1013.5,"battery":97}`)}}}}})
		if len(batch) == 1000 {
			flush()
		}
	}
	// tables is the join LatestValues answered with before the snapshot
	// (and still does without one); snapshot is what it answers now.
	for _, m := range []struct {
		name string
		get  func(readings.LatestQuery) (readings.LatestPage, error)
	}{
		{"tables", func(q readings.LatestQuery) (readings.LatestPage, error) { return s.latestFromTables(ctx, q) }},
		{"snapshot", func(q readings.LatestQuery) (readings.LatestPage, error) { return s.LatestValues(ctx, q) }},
	} {
		b.Run(m.name, func(b *testing.B) {
			for b.Loop() {
				p, err := m.get(readings.LatestQuery{})
				if err != nil || len(p.Devices) != devices {
					b.Fatalf("%d devices, %v", len(p.Devices), err)
				}
			}
			if m.name == "snapshot" { // its memory: entries, ids and values
				b.ReportMetric(float64(s.snap.Load().bytes)/devices, "snapshot-B/device")
			}
		})
	}
	snap := s.snap.Load()
	// publish: the copy a commit of 1,000 devices' new values makes of
	// the snapshot of 10,000 devices (what the snapshot adds to Commit).
	b.Run("publish-1000", func(b *testing.B) {
		upd := make([]latestEntry, 0, 1000)
		for d := 0; d < devices; d += devices / 1000 {
			e, _ := snap.get(fmt.Sprintf("dev-%05d", d))
			upd = append(upd, *e)
		}
		for b.Loop() {
			if next := snap.with(upd); next.n != devices {
				b.Fatal(next.n)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		for b.Loop() {
			p, err := s.LatestValues(ctx, readings.LatestQuery{})
			if err != nil {
				b.Fatal(err)
			}
			if _, err := json.Marshal(p); err != nil {
				b.Fatal(err)
			}
		}
	})
}
