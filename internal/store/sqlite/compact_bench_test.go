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
				f := newBenchFleet(b, s, devices)
				base := f.base
				pass := func(now time.Time, devs int) int {
					c := retention.NewCompactor(s, retention.CompactOptions{Now: func() time.Time { return now }, After: time.Nanosecond, Devices: devs, Batch: 1000},
						slog.New(slog.DiscardHandler), nil)
					n, err := c.Pass(ctx)
					if err != nil {
						b.Fatal(err)
					}
					return n
				}
				f.store(0, perDev)
				pass(base.Add(time.Hour), 16) // every device has a block
				f.store(perDev, 2*perDev+1)
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

// benchFleet is a store and devices dev-00000… for the compaction
// benchmarks; changes are committed 2,000 at a time, as the hub commits
// them under load, readings time-major.
type benchFleet struct {
	b     *testing.B
	s     *Store
	ids   []string
	base  time.Time
	id    int64
	batch []*commit.Change
}

// newBenchFleet provisions devices devices in s.
func newBenchFleet(b *testing.B, s *Store, devices int) *benchFleet {
	f := &benchFleet{b: b, s: s, ids: make([]string, devices), base: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)}
	for d := range devices {
		f.ids[d] = fmt.Sprintf("dev-%05d", d)
		f.add(&commit.Change{DeviceID: f.ids[d], Ops: []commit.Op{&registry.NewDevice{Type: "T", MQTTUsername: f.ids[d],
			PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: f.base}}})
	}
	f.flush()
	return f
}

func (f *benchFleet) add(ch *commit.Change) {
	f.batch = append(f.batch, ch)
	if len(f.batch) == 2000 {
		f.flush()
	}
}

// flush commits the changes added since the last commit.
func (f *benchFleet) flush() {
	if len(f.batch) == 0 {
		return
	}
	if err := f.s.Commit(context.Background(), f.batch); err != nil {
		f.b.Fatal(err)
	}
	f.batch = f.batch[:0]
}

// reading adds device d's k-th reading (4 fields), taken at ts, with a
// msg_id when msgID.
func (f *benchFleet) reading(d, k int, ts time.Time, msgID bool) {
	f.id++
	msg := &readings.Message{ID: f.id, Topic: "t", Transport: "mqtt", QoS: 1, Accepted: true, ReceivedAt: ts}
	if msgID {
		msg.MsgID = fmt.Sprint("m", k)
	}
	f.add(&commit.Change{DeviceID: f.ids[d], Ops: []commit.Op{msg, &readings.Readings{Message: msg, Rows: []readings.Reading{{Time: ts,
		Values: fmt.Appendf(nil, `{"temperature":%.2f,"humidity":%.1f,"pressure":%.1f,"battery":%d}`, 20+float64(k%500)/100, 40+float64(k%70)/10, 1000+float64(k%300)/10, 100-k%100)}}}}})
}

// store adds every device's readings k0 to k1-1, a minute apart, and
// commits them.
func (f *benchFleet) store(k0, k1 int) {
	for k := k0; k < k1; k++ {
		for d := range f.ids {
			f.reading(d, k, f.base.Add(time.Duration(k)*time.Minute+time.Duration(d)*time.Millisecond), true)
		}
	}
	f.flush()
}
