package ingest

import (
	"context"
	"testing"

	"github.com/devicehub/devicehub/internal/commit"
)

// BenchmarkStartDataQoS1 is MQTT's QoS 1 path through the pipeline:
// Start, the real committer (over a store that writes nothing) and the
// outcome through OnDone, as the broker takes it (one message in flight
// per device, 64 devices per core).
//
//	go test ./internal/ingest -run '^$' -bench StartDataQoS1 -benchmem
func BenchmarkStartDataQoS1(b *testing.B) {
	c := commit.New(nopStore{}, nopEvents{}, commit.Options{}, discard(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	p := benchPipeline(b, c)
	reqs := benchRequests(`{"temp":21.5,"hum":40.25,"ok":true,"msg_id":"0000a3f1-1234"}`)
	for _, r := range reqs {
		r.QoS = 1
	}
	b.ReportAllocs()
	b.SetParallelism(64)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		stored := make(chan error, 1)
		settle := func(err error) { stored <- err }
		i := 0
		for pb.Next() {
			pd, err := p.Start(context.Background(), reqs[i%len(reqs)])
			if err != nil || pd == nil {
				b.Errorf("Start: %v, %v", pd, err)
				return
			}
			pd.OnDone(settle)
			if err := <-stored; err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
}
