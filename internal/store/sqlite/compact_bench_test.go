package sqlite

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/retention"
)

// BenchmarkCompactorPass: one pass of the hub's compactor (synchronous
// full, the hub's default) over a fleet whose readings arrived time-major,
// as live ingest stores them (every device's k-th reading before any
// device's k+1-th, 2,000 changes a commit), with one device a transaction
// (as before CompactDevices) and runs of 16 (the default). Each device has
// a block already (an earlier pass) and perDev readings due, merged into
// it: what a pass every 10 minutes, or the hub's first pass after a
// restart, does.
//
//	go test ./internal/store/sqlite -run '^$' -bench CompactorPass -benchtime 3x
func BenchmarkCompactorPass(b *testing.B) {
	const (
		devices = 2000
		perDev  = 8
	)
	for _, run := range []int{1, 16} {
		b.Run(fmt.Sprintf("devices_per_tx=%d", run), func(b *testing.B) {
			ctx := context.Background()
			var moved int
			for range b.N {
				b.StopTimer()
				s := openTest(b)
				base := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
				var batch []*commit.Change
				flush := func() {
					if err := s.Commit(ctx, batch); err != nil {
						b.Fatal(err)
					}
					batch = batch[:0]
				}
				ids := make([]string, devices)
				for d := range devices {
					ids[d] = fmt.Sprintf("dev-%05d", d)
					batch = append(batch, &commit.Change{DeviceID: ids[d], Ops: []commit.Op{&registry.NewDevice{Type: "T", MQTTUsername: ids[d],
						PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: base}}})
					if len(batch) == 2000 {
						flush()
					}
				}
				flush()
				id := int64(0)
				store := func(k0, k1 int) {
					for k := k0; k < k1; k++ {
						for d := range devices {
							id++
							ts := base.Add(time.Duration(k)*time.Minute + time.Duration(d)*time.Millisecond)
							msg := &readings.Message{ID: id, Topic: "t", Transport: "mqtt", QoS: 1, MsgID: fmt.Sprint("m", k), Accepted: true, ReceivedAt: ts}
							batch = append(batch, &commit.Change{DeviceID: ids[d], Ops: []commit.Op{msg, &readings.Readings{Message: msg, Rows: []readings.Reading{{Time: ts,
								Values: fmt.Appendf(nil, `{"temperature":%.2f,"humidity":%.1f,"pressure":%.1f,"battery":%d}`, 20+float64(k%500)/100, 40+float64(k%70)/10, 1000+float64(k%300)/10, 100-k%100)}}}}})
							if len(batch) == 2000 {
								flush()
							}
						}
					}
					flush()
				}
				pass := func(now time.Time, devs int) int {
					c := retention.NewCompactor(s, retention.CompactOptions{Now: func() time.Time { return now }, After: time.Nanosecond, Devices: devs, Batch: 1000},
						slog.New(slog.DiscardHandler), nil)
					n, err := c.Pass(ctx)
					if err != nil {
						b.Fatal(err)
					}
					return n
				}
				store(0, perDev)
				pass(base.Add(time.Hour), 16) // every device has a block
				store(perDev, 2*perDev+1)
				b.StartTimer()
				moved += pass(base.Add(time.Hour+time.Duration(2*perDev)*time.Minute), run)
				b.StopTimer()
				// openTest closes the store when the benchmark ends.
			}
			b.ReportMetric(float64(moved)/b.Elapsed().Seconds(), "readings/s")
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*devices), "µs/device")
		})
	}
}
