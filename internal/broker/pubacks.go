package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// PublishStarter is the optional capability of a PublishHandler to take in
// a QoS 1 message without holding the device's read loop until it is
// stored. StartPublish checks the message and queues it for storing in the
// caller's goroutine (so a device's messages are stored in the order they
// were read) and returns before the commit. If started is false, err is
// the outcome, as HandlePublish would return it, and done is never called;
// otherwise done is called exactly once with the outcome, from any
// goroutine (the commit path's, once the message's batch is committed or
// failed), and must not block. ctx ends when the broker gives up on the
// connection; it bounds nothing once StartPublish returned.
type PublishStarter interface {
	StartPublish(ctx context.Context, p *Publish, done func(error)) (started bool, err error)
}

// pubacks is one connection's queue of QoS 1 publishes whose PUBACK is due
// once the hub has stored them. MQTT wants PUBACKs in the order the
// publishes arrived, not one publish at a time: the read loop queues each
// publish here and goes on reading; the commit path settles each (the
// PublishStarter's done callback, in the committer's goroutine) and wakes
// the session's writer (writer.go), which writes the PUBACKs of every
// settled publish from the head, in order. No goroutine waits for a
// commit, and no device's socket holds the committer. A publish that was
// not stored is never acknowledged, nor is any publish after it: the
// connection is closed and the device sends them again.
//
// A publish not settled within Options.HandlerTimeout counts as not
// stored: one watchdog of the broker looks at the head of every queue
// (watchPubacks), with no timer per message, and has the writer close the
// connection.
//
// The window bounds the publishes in the queue by the receive maximum the
// broker announced: a v5 client that keeps to it never waits, and a 3.1.1
// client (which has no receive maximum) is held at the read loop, so the
// memory a connection holds stays bounded either way.
type pubacks struct {
	window chan struct{} // a token per queued publish; made at the first one
	// ctx is the connection's for StartPublish, made with window; cancel
	// ends it when a publish timed out or the connection ended, so that a
	// read loop waiting for the commit path (a full queue) gives up. It is
	// the connection's lifetime, not a request's: kept here as net/http
	// keeps a connection's context.
	ctx    context.Context
	cancel context.CancelFunc
	// head is the time (Unix ns) the publish at the head of q was
	// received, 0 while q is empty: what the watchdog reads.
	head atomic.Int64

	mu       sync.Mutex
	q        []*pendingAck // in the order the publishes were read
	failed   bool          // a publish was not stored: acknowledge no more
	timedOut bool          // the head was not settled in time (watchPubacks)
	// spare is an acknowledged entry kept for the next publish: a device
	// with one message in flight (the SDK's way) then allocates no entry
	// per message, and holds one, not a pool, while idle.
	spare *pendingAck
	// writing says that a goroutine writes the PUBACKs at the head of q
	// (the writer's writeAcks, or settle's writeAcksNow): one at a time,
	// so that they go out in order.
	writing bool
	// raw reaches the connection's socket for writeAcksNow, set with
	// window: nil when the connection is not plain TCP (TLS, WebSocket),
	// or the broker's Options say not to (writerAcks).
	raw syscall.RawConn
}

// keptQueue is the largest backing array of q kept once the queue is
// empty: enough for the devices that keep a few messages in flight, small
// against the memory of an idle connection (issue 14, goal 6); a burst's
// larger array goes with the burst.
const keptQueue = 4

// pendingAck is one queued publish.
type pendingAck struct {
	id       uint16 // packet id
	topic    string
	received int64 // Unix ns
	settled  bool
	err      error // the PublishHandler's outcome
	// done is the PublishStarter's callback of the entry (settle), made
	// with the entry and kept with it when it is kept as the queue's
	// spare: no closure per publish.
	done func(error)
	// wire is the PUBACK as written (writePuback): a field, so that the
	// write allocates nothing.
	wire [4]byte
	// writeRaw is the entry's writeRaw, made with the entry like done,
	// and its outcome: the raw write of writeAcksNow without a closure
	// per PUBACK.
	writeRaw func(fd uintptr) bool
	wrote    int
	werr     error
}

// errNotInTime is the outcome of a publish not stored within the
// HandlerTimeout.
var errNotInTime = errors.New("not stored in time")

// startPublish queues a device's QoS 1 publish and hands it to the
// PublishStarter; its PUBACK is written once it and every publish read
// before it are settled. Only the connection's read loop calls it.
func (b *Broker) startPublish(cl *mqtt.Client, s *session, pk *packets.Packet, p *Publish, st PublishStarter) {
	q := &s.pubacks
	if q.window == nil {
		ctx, cancel := context.WithCancel(context.Background())
		q.mu.Lock()
		q.window = make(chan struct{}, b.opts.ReceiveMaximum)
		q.ctx, q.cancel = ctx, cancel
		q.raw = b.rawConn(s.conn)
		q.mu.Unlock()
	}
	select {
	case <-q.ctx.Done():
		return // the connection is being closed: nothing more is taken in
	default:
	}
	select {
	case q.window <- struct{}{}:
	case <-q.ctx.Done():
		return
	}
	received := p.Received.UnixNano()
	q.mu.Lock()
	e := q.spare
	q.spare = nil
	if e == nil {
		e = &pendingAck{}
		e.done = func(err error) { b.settle(cl, s, e, err) }
		if q.raw != nil {
			e.writeRaw = e.rawWrite
		}
	}
	*e = pendingAck{id: pk.PacketID, topic: pk.TopicName, received: received, done: e.done, writeRaw: e.writeRaw}
	if len(q.q) == 0 {
		q.head.Store(received)
	}
	q.q = append(q.q, e)
	q.mu.Unlock()

	// Counted until settled, so that shutdown waits for the outcome of
	// every publish taken in (up to the ShutdownGrace). The read loop's
	// goroutine is counted in b.wg until it returns, and shutdown waits
	// for b.wg before it reads this count: it only goes down then.
	b.unsettled.Add(1)
	started, err := st.StartPublish(q.ctx, p, e.done)
	if !started {
		b.settle(cl, s, e, err)
	}
}

// settle records the outcome of e and, if the head of the queue is
// settled, writes the PUBACKs that can be written at once
// (writeAcksNow) and has the session's writer write the rest. It never
// waits for the connection: the committer calls it.
func (b *Broker) settle(cl *mqtt.Client, s *session, e *pendingAck, err error) {
	q := &s.pubacks
	q.mu.Lock()
	e.settled, e.err = true, err
	// e is in q until the writer takes it, and the writer takes only
	// settled entries: q is not empty.
	due := q.q[0].settled
	now := due && q.raw != nil && !q.writing
	if now {
		q.writing = true
	}
	q.mu.Unlock()
	if now && b.writeAcksNow(q, cl) {
		due = false
	}
	if due {
		b.acksSettled(&s.out, cl)
	}
	// After the writer was started: shutdown waits for the writers only
	// once this count is zero (or the grace ended: then every connection
	// has ended, and acksSettled starts no writer).
	if b.unsettled.Add(-1) == 0 && b.closing.Load() {
		select {
		case b.allSettled <- struct{}{}:
		default: // a token is there already
		}
	}
}

// writeAcks writes the PUBACKs of the settled publishes at the head of
// the queue, in order, and closes the connection for a publish that was
// not stored, or not in time. Only the session's writer calls it.
func (b *Broker) writeAcks(q *pubacks, cl *mqtt.Client) {
	q.mu.Lock()
	if q.writing {
		// settle writes them (writeAcksNow), and wakes the writer again
		// for what it leaves.
		q.mu.Unlock()
		return
	}
	q.writing = true
	var late string // the topic of the publish not stored in time
	if q.timedOut && !q.failed && len(q.q) > 0 {
		q.failed = true
		late = q.q[0].topic
	}
	for len(q.q) > 0 && q.q[0].settled {
		h := q.popHead()
		failed := q.failed
		q.mu.Unlock()
		if !failed && !b.ack(cl, h) {
			failed = true
		}
		<-q.window
		q.mu.Lock()
		q.failed = q.failed || failed
		q.keep(h)
	}
	q.writing = false
	q.trim()
	q.mu.Unlock()
	if late != "" {
		b.notStored(cl, late, fmt.Errorf("%w (%s)", errNotInTime, b.opts.HandlerTimeout))
	}
}

// popHead takes the head entry out of q. q.mu is held.
func (q *pubacks) popHead() *pendingAck {
	h := q.q[0]
	// Shifted, not resliced, so that the backing array keeps its start
	// and can be kept (the queue holds at most the receive maximum).
	n := copy(q.q, q.q[1:])
	q.q[n] = nil
	q.q = q.q[:n]
	if n > 0 {
		q.head.Store(q.q[0].received)
	} else {
		q.head.Store(0)
	}
	return h
}

// keep keeps h, answered and out of the queue, as the spare: settle was
// its publisher's last use of it. Its callbacks are the session's, the
// same for the next publish. q.mu is held.
func (q *pubacks) keep(h *pendingAck) {
	*h = pendingAck{done: h.done, writeRaw: h.writeRaw}
	q.spare = h
}

// trim lets the backing array of an empty queue go with the burst that
// grew it. q.mu is held.
func (q *pubacks) trim() {
	if len(q.q) == 0 && cap(q.q) > keptQueue {
		q.q = nil
	}
}

// end ends the connection's context: the connection ended.
func (q *pubacks) end() {
	q.mu.Lock()
	if q.cancel != nil {
		q.cancel()
	}
	q.mu.Unlock()
}

// watchPubacks is the broker's one watchdog of the publishes awaiting
// their commit: a few times per HandlerTimeout it looks at the head of
// every connection's queue, and a publish not settled within the
// HandlerTimeout has its connection closed (timedOut). It returns when
// quit is closed.
func (b *Broker) watchPubacks(quit <-chan struct{}) {
	period := min(max(b.opts.HandlerTimeout/8, 10*time.Millisecond), time.Second)
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-quit:
			return
		case now := <-tick.C:
			limit := now.Add(-b.opts.HandlerTimeout).UnixNano()
			b.conns.Range(func(_, v any) bool {
				s := v.(*session)
				if h := s.pubacks.head.Load(); h != 0 && h < limit {
					b.timedOut(s)
				}
				return true
			})
		}
	}
}

// timedOut gives up on the head of s's queue if it is still not settled:
// the connection's context ends (a read loop waiting for the commit path
// returns), and the writer closes the connection, acknowledging nothing
// more. The publishes' outcomes, when they come, only release the window
// and the broker's count.
func (b *Broker) timedOut(s *session) {
	q := &s.pubacks
	q.mu.Lock()
	late := len(q.q) > 0 && !q.q[0].settled && !q.timedOut
	if late {
		q.timedOut = true
		q.cancel()
	}
	q.mu.Unlock()
	if !late {
		return
	}
	if cl := s.client.Load(); cl != nil {
		b.acksSettled(&s.out, cl)
	}
}

// ack answers one settled publish: a PUBACK, with a reason code for a
// refusal (v5), or, for a message that was not stored, no PUBACK and the
// connection closed. It reports whether later publishes may still be
// acknowledged.
func (b *Broker) ack(cl *mqtt.Client, h *pendingAck) bool {
	if h.err == nil {
		b.writePuback(cl, h)
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

// writePuback writes the PUBACK of h, a stored publish: what mochi's
// Client.WritePacket writes for it, without what WritePacket costs
// around four bytes (issue 14, goal 1: CPU per stored reading): copies
// of the 800-byte packet through its hook loops, a bytes.Buffer and
// mochi's pooled buffers per packet. A success PUBACK without properties
// is the same four bytes in MQTT 3.1.1 and 5 (a v5 reason code 0 with no
// properties is left out, as mochi leaves it out: [MQTT-3.4.2-1]).
//
// Only when the broker writes to the devices itself (b.mochi set): then
// mochi's outbound queue of the client is dropped and mochi's write
// buffer never used (writer.go), so a write goes straight to the
// connection under the client's lock, as WritePacket's does. Otherwise,
// through WritePacket. What WritePacket does besides, and why nothing is
// lost:
//
//   - the counters (PacketsSent, BytesSent) are counted here;
//   - OnPacketEncode and OnPacketSent: the broker's hook is mochi's only
//     one (hook.go); it provides no OnPacketEncode, and its OnPacketSent
//     looks at CONNACKs alone;
//   - the client's maximum packet size: a PUBACK over it is not
//     written, as WritePacket does not write it ([MQTT-3.1.2-24]).
func (b *Broker) writePuback(cl *mqtt.Client, h *pendingAck) {
	if b.mochi == nil {
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Puback},
			PacketID:    h.id,
			ReasonCode:  packets.CodeSuccess.Code,
		})
		return
	}
	if cl.Closed() || cl.Net.Conn == nil {
		return
	}
	if max := cl.Properties.Props.MaximumPacketSize; max > 0 && max < uint32(len(h.wire)) {
		return
	}
	h.wire = pubackWire(h.id)
	cl.Lock()
	n, err := cl.Net.Conn.Write(h.wire[:])
	cl.Unlock()
	if err != nil {
		return
	}
	atomic.AddInt64(&b.server.Info.BytesSent, int64(n))
	atomic.AddInt64(&b.server.Info.PacketsSent, 1)
}

// pubackWire is the success PUBACK of packet id as mochi encodes it, in
// MQTT 3.1.1 and 5 alike.
func pubackWire(id uint16) [4]byte {
	return [4]byte{packets.Puback << 4, 2, byte(id >> 8), byte(id)}
}

// PUBACKs written by the committer (issue 14, goal 1: CPU per stored
// reading).
//
// Waking the session's writer for every stored publish (a goroutine
// readied, scheduled and parked again per message) is most of what a
// PUBACK costs besides its write system call. So settle, in the
// committer's goroutine, writes the PUBACKs at the head of the queue
// itself when each can be written at once (writeAcksNow), and leaves to
// the writer only what cannot: a PUBACK that is a refusal or for a
// publish not stored (they close the connection), a connection whose
// socket cannot take four bytes now, or whose client lock is held (by
// the writer or mochi, writing). It never waits: the client's lock is
// tried, not taken, and the socket written without blocking; the
// committer is held by one system call per PUBACK, no longer by a device
// that does not read.
//
// The PUBACKs of a queue are written by one goroutine at a time
// (pubacks.writing), the writer or settle, so that they go out in the
// order the publishes were read. A write that the socket takes in part
// (it had room for less than four bytes) is finished by a goroutine of
// its own that holds the client's lock until it is, so that nothing is
// written between the parts; the writer's next write waits for it.

// rawConn is c's socket for writeAcksNow, or nil: only for a plain TCP
// connection (a TLS or WebSocket connection frames what it writes).
func (b *Broker) rawConn(c net.Conn) syscall.RawConn {
	tc, ok := c.(*net.TCPConn)
	if !ok || b.mochi == nil || b.opts.writerAcks {
		return nil
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// writeAcksNow writes the PUBACKs of the stored publishes at the head of
// q that can be written at once (see above); the caller set q.writing.
// It reports whether it left nothing for the writer.
func (b *Broker) writeAcksNow(q *pubacks, cl *mqtt.Client) bool {
	q.mu.Lock()
	for len(q.q) > 0 && q.q[0].settled && q.q[0].err == nil && !q.failed && !q.timedOut {
		h := q.q[0]
		q.mu.Unlock()
		if !b.tryPuback(q, cl, h) {
			q.mu.Lock()
			break
		}
		q.mu.Lock()
		q.popHead()
		q.mu.Unlock()
		<-q.window
		q.mu.Lock()
		q.keep(h)
	}
	q.writing = false
	// What the writer must still do: PUBACKs (or refusals) due, or the
	// end of a publish not stored in time (timedOut woke the writer
	// while settle wrote: the writer left it).
	left := (len(q.q) > 0 && q.q[0].settled) || (q.timedOut && !q.failed)
	q.trim()
	q.mu.Unlock()
	return !left
}

// tryPuback writes h's PUBACK, as writePuback does, if it can be written
// without waiting, and reports whether it was (or, as WritePacket
// would, left unwritten on a closed connection or over the client's
// maximum packet size).
func (b *Broker) tryPuback(q *pubacks, cl *mqtt.Client, h *pendingAck) bool {
	if cl.Closed() || cl.Net.Conn == nil {
		return true
	}
	if max := cl.Properties.Props.MaximumPacketSize; max > 0 && max < uint32(len(h.wire)) {
		return true
	}
	if h.writeRaw == nil || !cl.TryLock() {
		return false
	}
	h.wire = pubackWire(h.id)
	h.wrote, h.werr = 0, nil
	err := q.raw.Write(h.writeRaw)
	n := h.wrote
	switch {
	case err != nil || n <= 0:
		// The socket had no room (EAGAIN), or the connection failed:
		// the writer writes it, or finds the connection closed.
		cl.Unlock()
		return false
	case n < len(h.wire):
		// The client's lock is handed to finishPuback with the rest.
		rest := h.wire
		b.writersWg.Add(1)
		go b.finishPuback(cl, rest[n:])
	default:
		cl.Unlock()
	}
	atomic.AddInt64(&b.server.Info.BytesSent, int64(len(h.wire)))
	atomic.AddInt64(&b.server.Info.PacketsSent, 1)
	return true
}

// rawWrite writes e.wire to the socket fd without waiting (the
// connection's socket is non-blocking), for syscall.RawConn.Write: it
// returns true, so that Write never waits for room.
func (e *pendingAck) rawWrite(fd uintptr) bool {
	e.wrote, e.werr = syscall.Write(int(fd), e.wire[:])
	return true
}

// finishPuback writes rest, the end of a PUBACK the socket took in part,
// and then releases cl's lock, which its caller holds for it.
func (b *Broker) finishPuback(cl *mqtt.Client, rest []byte) {
	defer b.writersWg.Done()
	_, _ = cl.Net.Conn.Write(rest)
	cl.Unlock()
}
