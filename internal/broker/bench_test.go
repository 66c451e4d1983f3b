package broker

import (
	"context"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// storedHandler is a PublishStarter whose every message is stored at
// once: the broker's own path of a QoS 1 publish (read, queue, settle,
// PUBACK) without a store.
type storedHandler struct{}

func (storedHandler) HandlePublish(context.Context, *Publish) error { return nil }

func (storedHandler) StartPublish(context.Context, *Publish) (func(context.Context) error, error) {
	return func(context.Context) error { return nil }, nil
}

// BenchmarkPublishQoS1 measures one device's QoS 1 publish to its PUBACK
// over TCP, one at a time (the bench's --inflight 1). Its allocations are
// the process's: the broker's and the paho client's.
//
//	go test ./internal/broker -run '^$' -bench PublishQoS1 -benchmem
func BenchmarkPublishQoS1(b *testing.B) {
	h := startWith(b, storedHandler{})
	c := mustDial(b, h, "dev1")
	ctx := context.Background()
	p := &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{"temperature":21.25,"humidity":40}`)}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Publish(ctx, p); err != nil {
			b.Fatal(err)
		}
	}
}
