package sqlite

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// timedStore records the duration and size of every Commit.
type timedStore struct {
	*Store
	mu      sync.Mutex
	commits []time.Duration
	sizes   []int
}

func (t *timedStore) Commit(ctx context.Context, batch []*commit.Change) error {
	t0 := time.Now()
	err := t.Store.Commit(ctx, batch)
	d := time.Since(t0)
	t.mu.Lock()
	t.commits = append(t.commits, d)
	t.sizes = append(t.sizes, len(batch))
	t.mu.Unlock()
	return err
}

type nopPublisher struct{}

func (nopPublisher) Publish([]events.Event) {}

// BenchmarkCommitOpenLoop is the store's share of goal 2 of issue 14 (p99
// publish→PUBACK at half of peak): the committer and the store, fed on a
// schedule by devices with one message in flight each (a device whose
// message is not committed by its next slot falls behind). Latency
// counts from each message's scheduled time, as devicehub bench's open
// loop does; b.N is the number of messages. It also reports the p99 and
// max of one Commit and the checkpoints' time holding the writer.
//
//	go test ./internal/store/sqlite -run '^$' -bench 'CommitOpenLoop/devices=100/' -benchtime 16000x
func BenchmarkCommitOpenLoop(b *testing.B) {
	for _, tc := range []struct{ devices, rate int }{{100, 4000}, {1000, 4000}} {
		b.Run(fmt.Sprintf("devices=%d/rate=%d", tc.devices, tc.rate), func(b *testing.B) {
			benchCommitOpenLoop(b, tc.devices, tc.rate)
		})
	}
}

func benchCommitOpenLoop(b *testing.B, devices, rate int) {
	walFsync.Store(os.Getenv("DEVICEHUB_BENCH_WAL_FSYNC") == "1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := Open(ctx, Options{Path: filepath.Join(b.TempDir(), "ol.db"), PageSize: benchPageSize(b), plainWAL: os.Getenv("DEVICEHUB_BENCH_PLAIN_WAL") == "1"})
	if err != nil {
		b.Fatal(err)
	}
	benchCheckpointer(b, st)
	runUntilCleanup(b, st)
	s := &timedStore{Store: st}
	c := commit.New(s, nopPublisher{}, commit.Options{}, slog.New(slog.DiscardHandler), nil)
	ran := make(chan error, 1)
	go func() { ran <- c.Run(ctx) }()
	defer func() { cancel(); <-ran }()

	ids := make([]string, devices)
	var prov []*commit.Change
	for d := range devices {
		ids[d] = fmt.Sprintf("ol-%04d", d)
		prov = append(prov, &commit.Change{DeviceID: ids[d], Ops: []commit.Op{&registry.NewDevice{
			Type: "WeatherStation", MQTTUsername: ids[d], PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: time.Now(),
		}}})
	}
	if err := st.Commit(ctx, prov); err != nil {
		b.Fatal(err)
	}
	var gen commit.IDs
	var genMu sync.Mutex
	values := []byte(`{"temperature":21.25,"humidity":40}`)
	perDevice := max(b.N/devices, 1)
	lat := make([][]time.Duration, devices)
	interval := time.Second * time.Duration(devices) / time.Duration(rate)
	b.ResetTimer()
	start := time.Now().Add(10 * time.Millisecond)
	var wg sync.WaitGroup
	for d := range devices {
		wg.Go(func() {
			// Devices start spread over one interval.
			first := start.Add(interval * time.Duration(d) / time.Duration(devices))
			lat[d] = make([]time.Duration, 0, perDevice)
			for k := range perDevice {
				at := first.Add(interval * time.Duration(k))
				time.Sleep(time.Until(at)) // the schedule, not synchronisation
				genMu.Lock()
				id := gen.Next()
				genMu.Unlock()
				now := time.Now()
				msgID := fmt.Sprintf("%08x-%d", uint32(d)*2654435761, k+1)
				topic := "devices/" + ids[d] + "/data"
				ch := &commit.Change{
					DeviceID: ids[d],
					Ops: withReadings(&readings.Message{ID: id, Topic: topic, Transport: "mqtt", QoS: 1,
						Payload: fmt.Appendf(nil, `{"msg_id":%q,"temperature":21.25,"humidity":40}`, msgID), MsgID: msgID, Accepted: true, ReceivedAt: now},
						[]readings.Reading{{Time: now, Values: values}}, &registry.DevicePatch{LastSeen: &now}),
					Events: []commit.Event{{Event: events.Event{Type: events.DeviceDataReceived, Time: now, DeviceID: ids[d], DeviceType: "WeatherStation"},
						Args: fmt.Appendf(nil, `{"message_id":%d,"topic":%q,"transport":"mqtt","readings":[{"ts":%q,"values":%s}]}`, id, topic, now.Format(time.RFC3339Nano), values)}},
				}
				if err := c.Submit(ctx, ch); err != nil {
					b.Error(err)
					return
				}
				lat[d] = append(lat[d], time.Since(at))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	q := func(xs []time.Duration, p float64) float64 {
		return float64(xs[min(int(float64(len(xs))*p), len(xs)-1)].Microseconds()) / 1000
	}
	b.ReportMetric(float64(len(all))/time.Since(start).Seconds(), "achieved/s")
	b.ReportMetric(q(all, 0.5), "p50-ms")
	b.ReportMetric(q(all, 0.99), "p99-ms")
	b.ReportMetric(q(all, 1), "max-ms")
	s.mu.Lock()
	commits := slices.Clone(s.commits)
	total := 0
	for _, n := range s.sizes {
		total += n
	}
	s.mu.Unlock()
	slices.Sort(commits)
	b.ReportMetric(q(commits, 0.5), "p50-commit-ms")
	b.ReportMetric(q(commits, 0.99), "p99-commit-ms")
	b.ReportMetric(q(commits, 1), "max-commit-ms")
	b.ReportMetric(float64(total)/float64(len(commits)), "changes/commit")
	held, maxHeld := st.checkpointHold()
	b.ReportMetric(float64(held.Microseconds())/1000, "ckpt-hold-ms")
	b.ReportMetric(float64(maxHeld.Microseconds())/1000, "ckpt-max-hold-ms")
}
