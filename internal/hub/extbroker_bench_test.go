package hub_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/extbroker/mosquittotest"
	"github.com/devicehub/devicehub/internal/registry"
)

// BenchmarkExternalBroker compares the two ways devices reach a node:
// mode=embedded is BenchmarkIngestMsgIDQoS1/clients=100 (each PUBACK
// means committed); mode=mosquitto has the same 100 MQTT v5 clients
// publish the same readings (QoS 1, a msg_id each, one in flight) to a
// private Debian Mosquitto 2.0, from which the node takes them through
// its shared subscription and acknowledges each after its commit.
// readings/s is stored readings per second, from the first publish until
// the store holds them all (for embedded, the last PUBACK);
// acked-readings/s is, for mosquitto, the rate at which Mosquitto
// acknowledged the devices (its receipt, not the hub's commit);
// cpu-ms/10k is this process (hub and clients) per 10,000 readings,
// mosquitto-cpu-ms/10k Mosquitto's own.
//
//	go test ./internal/hub -run '^$' -bench ExternalBroker -benchtime 20000x -count 3
func BenchmarkExternalBroker(b *testing.B) {
	b.Run("mode=embedded", func(b *testing.B) { benchIngest(b, 100, true, 0) })
	b.Run("mode=mosquitto", func(b *testing.B) { benchExternal(b, 100) })
}

func benchExternal(b *testing.B, clients int) {
	mq := mosquittotest.Start(b, "")
	th := startExternalHub(b, mq, "ingest: {rate_limit: {rate: 0, burst: 0}}\n")
	ctx := context.Background()
	users := map[string]string{}
	ids := make([]string, clients)
	for i := range clients {
		id := fmt.Sprintf("bench-%04d", i)
		cr, err := th.Registry().Provision(ctx, registry.ProvisionRequest{ID: id, Type: "WeatherStation"})
		if err != nil {
			b.Fatal(err)
		}
		users[cr.MQTTUsername] = cr.MQTTPassword
		ids[i] = id
	}
	mq.AddDevices(b, users)
	conns := make([]*mqttClient, clients)
	for i, id := range ids {
		eventually.CheckFor(b, 10*time.Second, 20*time.Millisecond, func() error {
			c, _, err := dial(b, mq.Addr, id, id, users[id])
			conns[i] = c
			return err
		})
	}
	b.ResetTimer()
	cpu0, mcpu0 := cpuTime(b), mq.CPU()
	start := time.Now()
	var wg sync.WaitGroup
	var failed sync.Once
	for i, c := range conns {
		n := b.N / clients
		if i < b.N%clients {
			n++
		}
		topic := "devices/" + ids[i] + "/data"
		prefix := fmt.Sprintf("%08x", uint32(i)*2654435761)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range n {
				payload := fmt.Appendf(nil, `{"msg_id":"%s-%d","temperature":%d.25,"humidity":%d}`, prefix, k+1, k%60, k%100)
				if _, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: payload}); err != nil {
					failed.Do(func() { b.Errorf("publish: %v", err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	acked := time.Since(start)
	eventually.CheckFor(b, 10*time.Minute, 10*time.Millisecond, func() error {
		n, err := th.Store().CountReadings(ctx, "")
		if err != nil {
			return err
		}
		if n < int64(b.N) {
			return fmt.Errorf("%d of %d readings stored", n, b.N)
		}
		return nil
	})
	stored := time.Since(start)
	cpu, mcpu := cpuTime(b)-cpu0, mq.CPU()-mcpu0
	b.StopTimer()
	n, err := th.Store().CountReadings(ctx, "")
	if err != nil {
		b.Fatal(err)
	}
	if n != int64(b.N) {
		b.Fatalf("store holds %d readings, %d were published", n, b.N)
	}
	b.ReportMetric(float64(b.N)/stored.Seconds(), "readings/s")
	b.ReportMetric(float64(b.N)/acked.Seconds(), "acked-readings/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000*10000/float64(b.N), "cpu-ms/10k")
	b.ReportMetric(float64(mcpu.Microseconds())/1000*10000/float64(b.N), "mosquitto-cpu-ms/10k")
}
