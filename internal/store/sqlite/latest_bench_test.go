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
// each, read from the store (store) and also encoded as JSON (json).
//
//	go test ./internal/store/sqlite -run '^$' -bench LatestValues -benchtime 20x
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
	for _, enc := range []bool{false, true} {
		b.Run(map[bool]string{false: "store", true: "json"}[enc], func(b *testing.B) {
			for b.Loop() {
				p, err := s.LatestValues(ctx, readings.LatestQuery{})
				if err != nil || len(p.Devices) != devices {
					b.Fatalf("%d devices, %v", len(p.Devices), err)
				}
				if enc {
					if _, err := json.Marshal(p); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
