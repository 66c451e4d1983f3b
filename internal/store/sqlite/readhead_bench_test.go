package sqlite

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/retention"
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
		f := newBenchFleet(b, s, devices)
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
		f.store(0, perDev)
		all() // every device has a block
		f.store(perDev, 2*perDev+1)
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

// BenchmarkMergeSmallBlocks: what the head's small blocks cost an hour
// later. 1,000 devices, readings time-major (2,000 changes a commit)
// moved by the head's compaction in chunks of 10,000 (10 readings a
// device: blocks of 10, as at 1,000 devices in the ingest benchmark),
// 20 such blocks a device; then one pass of the hub's compactor (its
// defaults: 16 devices and 2,048 readings a transaction) merges them.
// cpu-µs/reading is the process's CPU per reading merged, blocks/device
// what is left a device (2 at 200 readings a device: even blocks of
// ≤ 512 are one, plus a block the pass's budget left).
//
//	go test ./internal/store/sqlite -run '^$' -bench MergeSmallBlocks -benchtime 2x
func BenchmarkMergeSmallBlocks(b *testing.B) {
	const (
		devices = 1000
		perDev  = 200
	)
	ctx := context.Background()
	var merged int
	var cpu time.Duration
	var left float64
	for range b.N {
		b.StopTimer()
		s := openTest(b)
		f := newBenchFleet(b, s, devices)
		base := f.base
		for k := range perDev {
			for d := range devices {
				f.reading(d, k, base.Add(time.Duration(k)*time.Second+time.Duration(d)*time.Millisecond), false)
			}
			if (k+1)%10 == 0 {
				f.flush()
				for {
					n, err := s.CompactReadingsHead(ctx, readingsChunk)
					if err != nil {
						b.Fatal(err)
					}
					if n == 0 {
						break
					}
				}
			}
		}
		c := retention.NewCompactor(s, retention.CompactOptions{Now: func() time.Time { return base.Add(2 * time.Hour) }},
			slog.New(slog.DiscardHandler), nil)
		cpu0 := cpuTime(b)
		b.StartTimer()
		n, err := c.Pass(ctx)
		b.StopTimer()
		cpu += cpuTime(b) - cpu0
		if err != nil {
			b.Fatal(err)
		}
		merged += n
		var blocks int
		if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM reading_blocks`).Scan(&blocks); err != nil {
			b.Fatal(err)
		}
		left += float64(blocks) / devices
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(merged), "cpu-µs/reading")
	b.ReportMetric(float64(merged)/b.Elapsed().Seconds(), "readings/s")
	b.ReportMetric(left/float64(b.N), "blocks/device")
}
