package broker

import (
	"context"
	"testing"

	"github.com/eclipse/paho.golang/paho"
)

// storedHandler is a PublishStarter whose every message is stored at
// once: the broker's own path of a QoS 1 publish (read, queue, settle,
// PUBACK) without a store. Like the committer, one goroutine of its own
// calls the done callbacks (run).
type storedHandler struct{ done chan func(error) }

func newStoredHandler() storedHandler { return storedHandler{done: make(chan func(error), 64)} }

func (storedHandler) HandlePublish(context.Context, *Publish) error { return nil }

func (h storedHandler) StartPublish(_ context.Context, _ *Publish, done func(error)) (bool, error) {
	h.done <- done
	return true, nil
}

// run is the "committer": it settles every publish until stopped.
func (h storedHandler) run(tb testing.TB) {
	quit := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			select {
			case fn := <-h.done:
				fn(nil)
			case <-quit:
				return
			}
		}
	}()
	tb.Cleanup(func() {
		close(quit)
		<-ended
	})
}

// BenchmarkPublishQoS1 measures one device's QoS 1 publish to its PUBACK
// over TCP, one at a time (the bench's --inflight 1). Its allocations are
// the process's: the broker's and the paho client's.
//
//	go test ./internal/broker -run '^$' -bench PublishQoS1 -benchmem
func BenchmarkPublishQoS1(b *testing.B) {
	st := newStoredHandler()
	st.run(b) // registered first: its cleanup runs after the broker's
	h := startWith(b, st)
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

// BenchmarkPublishQoS1Paths is BenchmarkPublishQoS1 with the device's
// publish taken in by the read loop (own, publish.go) and through mochi's
// processing (mochi): the difference is what the broker's own path saves
// per message.
//
//	go test ./internal/broker -run '^$' -bench PublishQoS1Paths -benchmem
func BenchmarkPublishQoS1Paths(b *testing.B) {
	for _, bb := range []struct {
		name  string
		mochi bool
	}{{"own", false}, {"mochi", true}} {
		b.Run(bb.name, func(b *testing.B) {
			st := newStoredHandler()
			st.run(b)
			h := startOpts(b, Options{mochiPublish: bb.mochi}, st)
			if (h.b.starter == nil) != bb.mochi {
				b.Fatalf("the read loop takes QoS 1 publishes in itself = %v", h.b.starter != nil)
			}
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
		})
	}
}
