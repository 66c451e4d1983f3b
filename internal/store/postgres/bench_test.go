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
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

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

// BenchmarkLogRetention expires a day of the message log and the event
// log (dayRows of each, written straight into their tables) while
// ingest commits batches of 100 changes: by row deletes in batches of
// 1,000 (ExpireMessages and ExpireEvents, what retention ran before the
// logs were partitioned) or by dropping the day's partition and range
// (DropMessages, DropEvents); "payloads-rows" and "payloads-drop" expire
// the day's payloads only (the payload window), by row deletes in batches
// of 1,000 (StripMessagePayloads) or by dropping the day's partition of
// message_payloads (DropMessagePayloads); "none" is ingest alone.
// Reported: the
// expiry's duration (ns/op), and the commit latency of the commits that
// ran during it (median, max; for "none", of every commit).
//
//	DEVICEHUB_TEST_POSTGRES_DSN=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test -run XXX -bench LogRetention -benchtime 1x ./internal/store/postgres/
func BenchmarkLogRetention(b *testing.B) {
	const dayRows = 50000
	for _, mode := range []string{"none", "rows", "drop", "payloads-rows", "payloads-drop"} {
		b.Run("expiry="+mode, func(b *testing.B) {
			ctx := context.Background()
			var during []time.Duration
			var expiry time.Duration
			for range b.N {
				b.StopTimer()
				s := openWithRanges(b, dayRows)
				if err := s.EnsurePartitions(ctx, day0, day0); err != nil {
					b.Fatal(err)
				}
				for _, q := range []string{
					`INSERT INTO messages (id, device_id, topic, transport, qos, msg_id, accepted, received_at)
						SELECT g, 'dev-' || (g % 100), 'devices/x/data', 'mqtt', 1, 'm' || g, true,
						$1::timestamptz + g * interval '1 millisecond' FROM generate_series(1, $2::int) g`,
					`INSERT INTO message_payloads (id, received_at, payload) SELECT id, received_at, '\x7b2274223a32312e357d'::bytea FROM messages`,
					`INSERT INTO message_ids (device_id, msg_id, id, received_at) SELECT device_id, msg_id, id, received_at FROM messages`,
					`INSERT INTO events (type, time, device_id, device_type, args)
						SELECT 'test_event', $1::timestamptz + g * interval '1 millisecond', 'dev-' || (g % 100), 'sensor', '{"message_id":1}'::json
						FROM generate_series(1, $2::int) g`,
					`ANALYZE`,
				} {
					args := []any{day0, dayRows}
					if q == `ANALYZE` || strings.HasPrefix(q, `INSERT INTO message_ids`) || strings.HasPrefix(q, `INSERT INTO message_payloads`) {
						args = nil
					}
					if _, err := s.pool.Exec(ctx, q, args...); err != nil {
						b.Fatal(err)
					}
				}
				var prov []*commit.Change
				for d := range 100 {
					prov = append(prov, &commit.Change{DeviceID: fmt.Sprintf("live-%02d", d), Ops: []commit.Op{&registry.NewDevice{
						Type: "sensor", MQTTUsername: "u", PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: time.Now(),
					}}})
				}
				if err := s.Commit(ctx, prov); err != nil {
					b.Fatal(err)
				}

				// Ingest: from its tenth commit on, expiry runs; ingest
				// goes on until expiry is done and 100 commits are.
				started, expired := make(chan struct{}), make(chan struct{})
				type timed struct {
					start time.Time
					took  time.Duration
				}
				var commits []timed
				var g errgroup.Group
				g.Go(func() error {
					ids := commit.IDs{}
					ids.Seed(1 << 40)
					for n := 0; ; n++ {
						if n == 10 {
							close(started)
						}
						if n >= 100 {
							select {
							case <-expired:
								return nil
							default:
							}
						}
						now := time.Now()
						var batch []*commit.Change
						for i := range 100 {
							batch = append(batch, logMsg{device: fmt.Sprintf("live-%02d", i), msgID: fmt.Sprintf("l%d-%d", n, i), at: now}.change(b, &ids))
						}
						if err := s.Commit(ctx, batch); err != nil {
							return err
						}
						commits = append(commits, timed{now, time.Since(now)})
					}
				})
				<-started
				b.StartTimer()
				start := time.Now()
				var err error
				switch mode {
				case "rows":
					for _, expire := range []func(context.Context, time.Time, int) (int, error){s.ExpireMessages, s.ExpireEvents} {
						for n := 1000; n == 1000 && err == nil; {
							n, err = expire(ctx, day0.AddDate(0, 0, 1), 1000)
						}
					}
				case "drop":
					if _, err = s.DropMessages(ctx, day0.AddDate(0, 0, 1)); err == nil {
						_, err = s.DropEvents(ctx, day0.AddDate(0, 0, 1))
					}
				case "payloads-rows":
					var last int64
					for n := 1000; n == 1000 && err == nil; {
						n, last, err = s.StripMessagePayloads(ctx, day0.AddDate(0, 0, 1), last, 1000)
					}
				case "payloads-drop":
					_, err = s.DropMessagePayloads(ctx, day0.AddDate(0, 0, 1))
				}
				took := time.Since(start)
				b.StopTimer()
				close(expired)
				if err != nil {
					b.Fatal(err)
				}
				if err := g.Wait(); err != nil {
					b.Fatal(err)
				}
				expiry += took
				for _, c := range commits {
					if mode == "none" || (c.start.Add(c.took).After(start) && c.start.Before(start.Add(took))) {
						during = append(during, c.took)
					}
				}
				var left int
				q := `SELECT (SELECT count(*) FROM messages WHERE received_at < $1) + (SELECT count(*) FROM events WHERE time < $1)`
				if strings.HasPrefix(mode, "payloads-") {
					q = `SELECT count(*) FROM message_payloads WHERE received_at < $1`
				}
				if err := s.pool.QueryRow(ctx, q, day0.AddDate(0, 0, 1)).Scan(&left); err != nil || (mode != "none" && left != 0) {
					b.Fatalf("%d rows of the day left, %v", left, err)
				}
			}
			slices.Sort(during)
			if len(during) > 0 {
				b.ReportMetric(float64(during[len(during)/2].Microseconds())/1000, "p50-commit-ms")
				b.ReportMetric(float64(during[len(during)-1].Microseconds())/1000, "max-commit-ms")
			}
			b.ReportMetric(float64(len(during))/float64(b.N), "commits-during")
			b.ReportMetric(float64(expiry.Milliseconds())/float64(b.N), "expiry-ms")
		})
	}
}
