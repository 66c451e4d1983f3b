package hub_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/monitors/monitorstest"
	"github.com/devicehub/devicehub/internal/registry"
)

// BenchmarkIngestQoS1 measures durable ingest: concurrent MQTT v5 clients
// each publish {"temperature":..,"humidity":..} at QoS 1 with one message in
// flight, and every PUBACK means the reading, its message log record and its event
// are committed (SQLite, synchronous=full, group commit). It reports
// readings/s and publish→PUBACK latency percentiles, and checks afterwards
// that the store holds every reading. cpu-ms/10k is the CPU time (user +
// system, getrusage) of the whole process per 10,000 readings: the hub and
// the in-process paho clients together.
//
//	go test ./internal/hub -run '^$' -bench IngestQoS1 -benchtime 100000x -count 3
func BenchmarkIngestQoS1(b *testing.B) {
	for _, clients := range []int{100, 400, 1000} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) { benchIngest(b, clients, false, 0) })
	}
}

// BenchmarkIngestInflightQoS1 is BenchmarkIngestQoS1 with several QoS 1
// messages in flight per client (each from its own goroutine, within the
// receive maximum): the broker takes a client's next message while the
// previous ones wait for their commit and acknowledges them in order, so
// 10 clients with 10 in flight can fill a group commit as 100 clients with
// one each do.
//
//	go test ./internal/hub -run '^$' -bench IngestInflightQoS1 -benchtime 40000x -count 3
func BenchmarkIngestInflightQoS1(b *testing.B) {
	for _, c := range []struct{ clients, inflight int }{{100, 1}, {10, 10}, {100, 10}} {
		b.Run(fmt.Sprintf("clients=%d/inflight=%d", c.clients, c.inflight), func(b *testing.B) {
			benchIngestInflight(b, c.clients, c.inflight)
		})
	}
}

// BenchmarkIngestMonitors is BenchmarkIngestQoS1 with 100 clients and no
// push monitor, then with 10 HTTP monitors of device_data_received, each
// delivering (batch size 100, batch_duration 0.05 s) to a real HTTP
// receiver on loopback in a process of its own (the test binary run again,
// monitorstest.StartReceiver) that checks every delivery's Standard
// Webhooks signature and counts its events (Devicehub-Count) before it
// answers 204. readings/s of the two is the issue's "ingest rate with 10
// active monitors against none"; delivered-ev/s is the monitors' events
// (10 per reading) from the start to the last delivery; cpu-ms/10k is this
// process's CPU (hub and MQTT clients, not the receiver) per 10,000
// readings while they were sent, cpu-ms/10k-delivered the same until the
// last delivery.
//
//	go test ./internal/hub -run '^$' -bench IngestMonitors -benchtime 100000x -count 3
func BenchmarkIngestMonitors(b *testing.B) {
	for _, mons := range []int{0, 10} {
		b.Run(fmt.Sprintf("monitors=%d", mons), func(b *testing.B) { benchIngest(b, 100, false, mons) })
	}
}

// BenchmarkIngestMsgIDQoS1 is BenchmarkIngestQoS1 with a msg_id in every
// payload, as the SDK sends ({"msg_id":"<prefix>-<n>",...}): the real case,
// where every message is also checked against the per-device msg_id
// dedupe. write-KB/10k is the bytes the process wrote (/proc/self/io wchar:
// WAL frames, checkpoints, and the MQTT packets) per 10,000 readings.
//
//	go test ./internal/hub -run '^$' -bench 'IngestMsgIDQoS1/clients=100$' -benchtime 100000x -count 3
func BenchmarkIngestMsgIDQoS1(b *testing.B) {
	for _, clients := range []int{100, 400, 1000} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) { benchIngest(b, clients, true, 0) })
	}
}

func benchIngest(b *testing.B, clients int, msgID bool, monitors int) {
	benchIngestN(b, clients, 1, msgID, monitors)
}

func benchIngestInflight(b *testing.B, clients, inflight int) {
	benchIngestN(b, clients, inflight, false, 0)
}

func benchIngestN(b *testing.B, clients, inflight int, msgID bool, monitors int) {
	extra := os.Getenv("DEVICEHUB_BENCH_EXTRA")
	// DEVICEHUB_BENCH_STORAGE=postgres: a fresh PostgreSQL schema per run;
	// =cluster: the same, in cluster mode on DEVICEHUB_TEST_NATS_URL (one
	// node: the cost of clustering on the node that commits).
	switch os.Getenv("DEVICEHUB_BENCH_STORAGE") {
	case "postgres":
		extra += postgresStorage(b)
	case "cluster":
		nats := os.Getenv("DEVICEHUB_TEST_NATS_URL")
		if nats == "" {
			b.Skip("DEVICEHUB_TEST_NATS_URL is not set")
		}
		extra += postgresStorage(b) + fmt.Sprintf("cluster: {node_id: bench, nats: [%q], name: bench%d}\n", nats, time.Now().UnixNano()%1e9)
	}
	th := startHub(b, "ingest: {rate_limit: {rate: 0, burst: 0}}\nmonitors: {allow_private_targets: true}\n"+extra)
	ctx := context.Background()
	delivered := monitorReceivers(b, th, monitors)
	conns := make([]*mqttClient, clients)
	for i := range clients {
		id := fmt.Sprintf("bench-%04d", i)
		cr, err := th.Registry().Provision(ctx, registry.ProvisionRequest{ID: id, Type: "WeatherStation"})
		if err != nil {
			b.Fatal(err)
		}
		c, _, err := dial(b, th.MQTTAddr(), id, cr.MQTTUsername, cr.MQTTPassword)
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	lat := make([][]time.Duration, clients*inflight)
	b.ReportAllocs()
	b.ResetTimer()
	m0 := commitMetrics(b, th)
	cpu0 := cpuTime(b)
	wr0 := writtenBytes()
	start := time.Now()
	var wg sync.WaitGroup
	var failed sync.Once
	for j := range clients * inflight {
		i := j % clients
		c := conns[i]
		n := b.N / (clients * inflight)
		if j < b.N%(clients*inflight) {
			n++
		}
		topic := fmt.Sprintf("devices/bench-%04d/data", i)
		prefix := fmt.Sprintf("%08x", uint32(i)*2654435761)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ls := make([]time.Duration, 0, n)
			for k := range n {
				var payload []byte
				if msgID {
					payload = fmt.Appendf(nil, `{"msg_id":"%s-%d","temperature":%d.25,"humidity":%d}`, prefix, k+1, k%60, k%100)
				} else {
					payload = fmt.Appendf(nil, `{"temperature":%d.25,"humidity":%d}`, k%60, k%100)
				}
				t0 := time.Now()
				_, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload})
				if err != nil {
					failed.Do(func() { b.Errorf("publish: %v", err) })
					return
				}
				ls = append(ls, time.Since(t0))
			}
			lat[j] = ls
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	written := writtenBytes() - wr0
	b.StopTimer()
	m1 := commitMetrics(b, th)

	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) / 1000 }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "readings/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(float64(all[len(all)-1].Microseconds())/1000, "max-ms")
	b.ReportMetric(float64(cpu.Microseconds())/1000*10000/float64(len(all)), "cpu-ms/10k")
	if written > 0 {
		b.ReportMetric(float64(written)/1024*10000/float64(len(all)), "write-KB/10k")
	}
	if commits := m1.commits - m0.commits; commits > 0 {
		b.ReportMetric((m1.changes-m0.changes)/commits, "changes/commit")
		b.ReportMetric((m1.seconds-m0.seconds)/commits*1000, "ms/commit")
	}
	n, err := th.Store().CountReadings(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	if n != int64(len(all)) {
		b.Fatalf("store holds %d readings, %d were acknowledged", n, len(all))
	}
	if monitors > 0 {
		want := int64(monitors * len(all))
		eventually.True(b, 10*time.Minute, "every delivery", func() bool { return delivered() >= want })
		b.ReportMetric(float64(want)/time.Since(start).Seconds(), "delivered-ev/s")
		b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/1000*10000/float64(len(all)), "cpu-ms/10k-delivered")
	}
}

// monitorReceivers creates n HTTP monitors of device_data_received, each
// delivering to a receiver process (monitorstest.StartReceiver: an outside
// system, whose CPU is not the hub's) that checks the signature and counts
// the events; it returns the count.
func monitorReceivers(b *testing.B, th *testHub, n int) func() int64 {
	if n == 0 {
		return func() int64 { return 0 }
	}
	recv := monitorstest.StartReceiver(b, "verify")
	api := client.New(th.base, th.token, nil)
	d := 0.05
	for range n {
		m, err := api.CreateHTTPMonitor(context.Background(), []string{"device_data_received"}, recv.URL,
			client.MonitorSpec{Method: "POST", BatchSize: 100, BatchDuration: &d})
		if err != nil {
			b.Fatal(err)
		}
		recv.Secret(m.Monitor.ID, m.Secret)
	}
	return recv.Count
}

// cpuTime is the user and system CPU time the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writtenBytes is the bytes the process passed to write system calls so
// far (/proc/self/io wchar), or 0 where that is not available.
func writtenBytes() int64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "wchar: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// commitStats are the committer's totals from /metrics.
type commitStats struct{ commits, changes, seconds float64 }

func commitMetrics(b *testing.B, th *testHub) commitStats {
	resp, err := http.Get(th.base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var st commitStats
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		switch name {
		case "devicehub_commit_batch_size_count":
			st.commits = f
		case "devicehub_commit_batch_size_sum":
			st.changes = f
		case "devicehub_commit_duration_seconds_sum":
			st.seconds = f
		}
	}
	return st
}
