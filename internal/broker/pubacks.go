package broker

import (
	"context"
	"errors"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// PublishStarter is the optional capability of a PublishHandler to take in
// a QoS 1 message without holding the device's read loop until it is
// stored. StartPublish checks the message and queues it for storing in the
// caller's goroutine (so a device's messages are stored in the order they
// were read) and returns before the commit. If wait is nil, err is the
// outcome, as HandlePublish would return it; otherwise wait waits for the
// commit and returns the outcome.
type PublishStarter interface {
	StartPublish(ctx context.Context, p *Publish) (wait func(context.Context) error, err error)
}

// pubacks is one connection's queue of QoS 1 publishes whose PUBACK is due
// once the hub has stored them. MQTT wants PUBACKs in the order the
// publishes arrived, not one publish at a time: the read loop queues each
// publish here and goes on reading, a goroutine per publish waits for its
// commit, and whichever settles the head of the queue writes the PUBACKs
// of every settled publish from there, in order. A publish that was not
// stored is never acknowledged, nor is any publish after it: the
// connection is closed and the device sends them again.
//
// The window bounds the publishes in the queue by the receive maximum the
// broker announced: a v5 client that keeps to it never waits, and a 3.1.1
// client (which has no receive maximum) is held at the read loop, so the
// memory a connection holds stays bounded either way.
type pubacks struct {
	window chan struct{} // a token per queued publish; made at the first one

	mu      sync.Mutex
	q       []*pendingAck // in the order the publishes were read
	writing bool          // a goroutine is writing PUBACKs from the head
	failed  bool          // a publish was not stored: acknowledge no more
	// spare is an acknowledged entry kept for the next publish: a device
	// with one message in flight (the SDK's way) then allocates no entry
	// per message, and holds one, not a pool, while idle.
	spare *pendingAck
}

// keptQueue is the largest backing array of q kept once the queue is
// empty: enough for the devices that keep a few messages in flight, small
// against the memory of an idle connection (issue 14, goal 6); a burst's
// larger array goes with the burst.
const keptQueue = 4

// pendingAck is one queued publish.
type pendingAck struct {
	id      uint16 // packet id
	topic   string
	settled bool
	err     error // the PublishHandler's outcome
}

// startPublish queues a device's QoS 1 publish and hands it to the
// PublishStarter; its PUBACK is written once it and every publish read
// before it are settled.
func (b *Broker) startPublish(cl *mqtt.Client, s *session, pk *packets.Packet, p *Publish, st PublishStarter) {
	q := &s.pubacks
	if q.window == nil { // only the read loop makes it
		q.window = make(chan struct{}, b.opts.ReceiveMaximum)
	}
	q.window <- struct{}{}
	q.mu.Lock()
	e := q.spare
	q.spare = nil
	if e == nil {
		e = &pendingAck{}
	}
	*e = pendingAck{id: pk.PacketID, topic: pk.TopicName}
	q.q = append(q.q, e)
	q.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), b.opts.HandlerTimeout)
	wait, err := st.StartPublish(ctx, p)
	if wait == nil {
		cancel()
		b.settle(cl, q, e, err)
		return
	}
	// The read loop's goroutine is counted in b.wg until it returns, so
	// this Add never races with shutdown's Wait.
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		err := wait(ctx)
		cancel()
		b.settle(cl, q, e, err)
	}()
}

// settle records the outcome of e and, unless another goroutine is at it,
// writes the PUBACKs of the settled publishes at the head of the queue.
func (b *Broker) settle(cl *mqtt.Client, q *pubacks, e *pendingAck, err error) {
	q.mu.Lock()
	e.settled, e.err = true, err
	if q.writing {
		q.mu.Unlock()
		return // the writer sees e when it gets there
	}
	q.writing = true
	for len(q.q) > 0 && q.q[0].settled {
		h := q.q[0]
		// Shifted, not resliced, so that the backing array keeps its
		// start and can be kept (the queue holds at most the receive
		// maximum).
		n := copy(q.q, q.q[1:])
		q.q[n] = nil
		q.q = q.q[:n]
		failed := q.failed
		q.mu.Unlock()
		if !failed && !b.ack(cl, h) {
			failed = true
		}
		<-q.window
		q.mu.Lock()
		q.failed = q.failed || failed
		// Its publisher's goroutine is done with it: settle was its last
		// use, and the entry left the queue.
		*h = pendingAck{}
		q.spare = h
	}
	if len(q.q) == 0 && cap(q.q) > keptQueue {
		q.q = nil // let the backing array go with the burst
	}
	q.writing = false
	q.mu.Unlock()
}

// ack answers one settled publish: a PUBACK, with a reason code for a
// refusal (v5), or, for a message that was not stored, no PUBACK and the
// connection closed. It reports whether later publishes may still be
// acknowledged.
func (b *Broker) ack(cl *mqtt.Client, h *pendingAck) bool {
	if h.err == nil {
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Puback},
			PacketID:    h.id,
			ReasonCode:  packets.CodeSuccess.Code,
		})
		return true
	}
	var rj rejection
	if errors.As(h.err, &rj) {
		if ack, ok := b.rejectionAck(cl, h.id, 1, h.err, rj); ok {
			_ = cl.WritePacket(ack)
		} else {
			_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: h.id})
		}
		return true
	}
	b.notStored(cl, h.topic, h.err)
	return false
}
