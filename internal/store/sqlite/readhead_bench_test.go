package sqlite

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// BenchmarkCompactReadingsHead: the readings head's compaction (whole
// batch rows into the devices' blocks, readingsChunk readings a
// transaction) over the fleet of BenchmarkCompactorPass: 2,000 devices
// whose readings arrived time-major, 2,000 changes a commit, each device
// with a block already and 9 readings to merge into it. cpu-µs/reading
// is the process's CPU (the encoding before the writer is taken
// included) per reading moved: what moving a reading into blocks costs
// the hub, off the PUBACK path; BenchmarkCompactorPass measures the same
// move from the readings table's rows before migration 01000.
// max-ms/chunk is the longest CompactReadingsHead call.
//
//	go test ./internal/store/sqlite -run '^$' -bench CompactReadingsHead -benchtime 3x
func BenchmarkCompactReadingsHead(b *testing.B) {
	const (
		devices = 2000
		perDev  = 8
	)
	ctx := context.Background()
	var moved int
	var cpu, longest time.Duration
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
		all := func() int {
			total := 0
			for {
				t0 := time.Now()
				n, err := s.CompactReadingsHead(ctx, readingsChunk)
				longest = max(longest, time.Since(t0))
				if err != nil {
					b.Fatal(err)
				}
				if n == 0 {
					return total
				}
				total += n
			}
		}
		store(0, perDev)
		all() // every device has a block
		store(perDev, 2*perDev+1)
		cpu0 := cpuTime(b)
		b.StartTimer()
		moved += all()
		b.StopTimer()
		cpu += cpuTime(b) - cpu0
		// openTest closes the store when the benchmark ends.
	}
	b.ReportMetric(float64(moved)/b.Elapsed().Seconds(), "readings/s")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*devices), "µs/device")
	b.ReportMetric(float64(cpu.Microseconds())/float64(moved), "cpu-µs/reading")
	// An upper bound of the writer's wait behind one chunk (its encoding,
	// before the writer is taken, included).
	b.ReportMetric(float64(longest.Microseconds())/1000, "max-ms/chunk")
}
