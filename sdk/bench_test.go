package sdk_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/sdk"
)

// offlineClient is a client whose hub is not there: Enqueue measures the
// local store alone.
func offlineClient(b *testing.B) *sdk.Client {
	return startClient(b, sdk.Options{
		DB: filepath.Join(b.TempDir(), "device.db"), MQTTServer: "mqtt://127.0.0.1:1",
		Credentials: &sdk.Credentials{DeviceID: "bench", MQTTUsername: "bench", MQTTPassword: "x"},
		MinBackoff:  time.Minute, MaxBackoff: 2 * time.Minute,
	})
}

// BenchmarkEnqueue measures Enqueue with fsync: one caller at a time (one
// transaction, one fsync per message), many callers (their messages share
// transactions), and batches of 100 readings per message.
//
//	go test ./sdk -run '^$' -bench Enqueue -benchtime 2000x
func BenchmarkEnqueue(b *testing.B) {
	payload := []byte(`{"temperature": 21.5, "humidity": 40}`)
	b.Run("one-at-a-time", func(b *testing.B) {
		s := offlineClient(b).StreamSender("")
		b.ResetTimer()
		for range b.N {
			if _, err := s.Enqueue(payload); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("16-callers", func(b *testing.B) {
		s := offlineClient(b).StreamSender("")
		b.SetParallelism(16 / max(1, runtimeProcs()))
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Enqueue(payload); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("batch-of-100", func(b *testing.B) {
		s := offlineClient(b).StreamSender("")
		batch := make([]map[string]any, 100)
		for i := range batch {
			batch[i] = map[string]any{"temperature": 21.5, "humidity": i}
		}
		b.ResetTimer()
		for range b.N {
			if _, err := s.EnqueueBatch(batch); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*100)/b.Elapsed().Seconds(), "readings/s")
	})
}

// BenchmarkDrainBacklog measures the time to drain a backlog to the hub
// after reconnect: messages are enqueued while the hub is down (not timed),
// then the hub starts and the benchmark times WaitSent. The backlog is
// SDK_BENCH_BACKLOG messages (default 10,000; the figure is
// 100,000).
//
//	SDK_BENCH_BACKLOG=100000 go test ./sdk -run '^$' -bench DrainBacklog -benchtime 1x -timeout 30m
func BenchmarkDrainBacklog(b *testing.B) {
	backlog := 10000
	if v, err := strconv.Atoi(os.Getenv("SDK_BENCH_BACKLOG")); err == nil && v > 0 {
		backlog = v
	}
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		addr := freePort(b)
		th := startHub(b, dir, addr)
		creds := provision(b, th.api, "drain")
		th.stop()
		c := startClient(b, sdk.Options{DB: filepath.Join(b.TempDir(), "device.db"), MQTTServer: "mqtt://" + addr, Credentials: creds})
		s := c.StreamSender("")
		var wg sync.WaitGroup
		const writers = 16
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for n := w; n < backlog; n += writers {
					if _, err := s.Enqueue(fmt.Appendf(nil, `{"seq": %d, "temperature": 21.5}`, n)); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		th = startHub(b, dir, addr)
		b.StartTimer()
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		if err := c.WaitSent(ctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		el := time.Since(start)
		b.StopTimer()
		b.ReportMetric(el.Seconds(), "drain-s")
		b.ReportMetric(float64(backlog)/el.Seconds(), "msgs/s")
		if n, _ := th.Store().CountReadings(context.Background(), "drain"); n != int64(backlog) {
			b.Fatalf("%d readings stored, want %d", n, backlog)
		}
		c.Close()
		th.stop()
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
