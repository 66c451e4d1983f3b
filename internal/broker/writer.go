package broker

import (
	"fmt"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/devicehub/devicehub/internal/registry"
)

// The on-demand writer (issue 14, goal 6: memory per connected device).
//
// mochi queues what it sends a subscribed client (a publish to one of its
// subscriptions, a retained message when it subscribes) on the client's
// outbound queue (ClientState.outbound, a buffered channel), which mochi's
// write loop (Client.WriteLoop) drains. That loop lives as long as the
// connection and parks, after its first write, with a stack grown to
// 8 KiB that the garbage collector does not shrink while a quarter of it
// is in use: a goroutine and its stack for every subscribed device, most
// of which are sent a message a day.
//
// The broker drains the queue itself instead: a client's writer goroutine
// runs only while the client has outbound data and ends once it has been
// idle for Options.WriterIdle; the next packet queued starts a new one.
// One writer at most runs per client, so packets are written in the order
// mochi queued them, as with its loop. The queue is unexported: the
// writer reaches it through its offset in mochi's ClientState, found with
// reflect when the broker is made and checked there (the field's name,
// type and offset, and on a client mochi made: the queue's capacity). If
// any check fails (a mochi upgrade changed the struct) the broker logs it
// once and runs mochi's own write loop per subscribed client, as before
// (startWriteLoop): an upgrade costs memory, never correctness.
//
// What starts a writer. mochi queues a packet in one place only,
// publishToClient, called by publishToSubscribers and
// publishRetainedToClient, and calls a hook after each: OnPublished once
// the publish was queued for every subscriber (every path of
// processPublish, the hub's inline publishes and the wills the broker
// publishes included; mochi's other callers of publishToSubscribers are
// its $SYS topics, which no device may subscribe to, and its own will
// paths, which the broker does not use), OnRetainPublished for each
// retained message queued for a client. Both wake the writer of the
// client the packet was queued for (wake), after it was queued. A device
// may subscribe only under its own prefix devices/{id}/ with the prefix
// written out (registry.TopicAllowed), so a publish to devices/{id}/...
// can be queued only for the client {id}; a publish to any other topic
// looks its subscribers up in mochi's index.
//
// The hand-off. A writer's state is one word: a running bit, an ended bit
// (the connection ended: no new writer) and a count of wakes above them.
// wake, called after the packet was queued, returns if the queue is
// empty (a writer took the packet already), else adds one to the count
// and starts a writer if the running bit is clear. A writer that has been idle for
// WriterIdle loads the state, then checks that the queue is empty, then
// clears the running bit with a compare-and-swap against the word it
// loaded. A packet queued before a wake whose count the writer loaded is
// seen by the check (the wake's add is ordered after the queueing, the
// load after the add); a wake that came after the load fails the swap
// (the count changed), and the writer keeps running; a wake after the
// swap sees the bit clear and starts a writer. So nothing queued is left
// without a writer, and a writer that ends never holds a packet.

// Bits of outWriter.state.
const (
	writerRunning = 1 << 0 // a writer goroutine drains the queue
	writerEnded   = 1 << 1 // the connection ended: no writer starts again
	writerWake    = 1 << 2 // one wake (the count above the bits)
)

// outWriter is the writer state of a session's client (see above).
type outWriter struct {
	state atomic.Uint64
	// mu orders a writer's start (and its count in Broker.writersWg)
	// against the end of the session's connection (end), so that no
	// writer starts once its connection is gone, and Broker.shutdown
	// waits for every writer that did.
	mu sync.Mutex
}

// end marks the connection ended: no writer starts for it any more. A
// running writer ends once the queue is idle (its writes fail at once on
// the closed connection).
func (w *outWriter) end() {
	w.mu.Lock()
	w.state.Or(writerEnded)
	w.mu.Unlock()
}

// outboundAccess reaches mochi's unexported outbound queue of a client
// and its counter (ClientState.outbound, ClientState.outboundQty) by
// their offsets in ClientState.
type outboundAccess struct {
	queueOff, qtyOff uintptr
}

// Types of the fields reached through outboundAccess.
var (
	outboundQueueType = reflect.TypeFor[chan *packets.Packet]()
	outboundQtyType   = reflect.TypeFor[int32]()
)

// findOutbound finds the fields in mochi's ClientState and checks their
// types, or says why it cannot.
func findOutbound() (*outboundAccess, error) {
	return findOutboundIn(reflect.TypeFor[mqtt.ClientState]())
}

// findOutboundIn finds the fields in t, a struct type.
func findOutboundIn(t reflect.Type) (*outboundAccess, error) {
	field := func(name string, want reflect.Type) (uintptr, error) {
		f, ok := t.FieldByName(name)
		switch {
		case !ok:
			return 0, fmt.Errorf("%s has no field %s", t, name)
		case len(f.Index) != 1:
			return 0, fmt.Errorf("%s.%s is promoted from an embedded field", t, name)
		case f.Type != want:
			return 0, fmt.Errorf("%s.%s is a %s, want %s", t, name, f.Type, want)
		case f.Offset+want.Size() > t.Size() || f.Offset%uintptr(want.Align()) != 0:
			return 0, fmt.Errorf("%s.%s has offset %d", t, name, f.Offset)
		}
		return f.Offset, nil
	}
	q, err := field("outbound", outboundQueueType)
	if err != nil {
		return nil, err
	}
	n, err := field("outboundQty", outboundQtyType)
	if err != nil {
		return nil, err
	}
	return &outboundAccess{queueOff: q, qtyOff: n}, nil
}

// queue is cl's outbound queue (set once by mochi's newClient).
func (a *outboundAccess) queue(cl *mqtt.Client) chan *packets.Packet {
	return *(*chan *packets.Packet)(unsafe.Add(unsafe.Pointer(&cl.State), a.queueOff))
}

// qty is cl's count of queued packets (mochi adds to it when it queues).
func (a *outboundAccess) qty(cl *mqtt.Client) *int32 {
	return (*int32)(unsafe.Add(unsafe.Pointer(&cl.State), a.qtyOff))
}

// check tries the access on a client mochi made (idle, never connected):
// its queue must be the one mochi sized from the capabilities, empty.
func (a *outboundAccess) check(cl *mqtt.Client, capacity int) error {
	q := a.queue(cl)
	if q == nil || cap(q) != capacity || len(q) != 0 || atomic.LoadInt32(a.qty(cl)) != 0 {
		return fmt.Errorf("mochi's outbound queue not where it was looked for (capacity %d, want %d)", cap(q), capacity)
	}
	return nil
}

// setupWriters decides between the on-demand writer and mochi's write
// loop, once per broker, and logs a fallback.
func (b *Broker) setupWriters(forceLoop bool) {
	a, err := findOutbound()
	if err == nil {
		err = a.check(b.willClient, b.opts.WriteQueue)
	}
	if err == nil && forceLoop {
		err = fmt.Errorf("forced by the broker's options")
	}
	if err != nil {
		b.log.Warn("mqtt: running mochi's write loop per subscribed client (more memory per device)", "err", err)
		return
	}
	b.outq = a
}

// wakeTopic wakes the writers of the clients a publish to topic was
// queued for (OnPublished: mochi queued it for every subscriber).
func (b *Broker) wakeTopic(topic string) {
	if b.outq == nil {
		return
	}
	if id, ok := registry.DeviceIDFromTopic(topic); ok {
		if cl, ok := b.server.Clients.Get(id); ok {
			b.wake(cl)
		}
		return
	}
	for id := range b.server.Topics.Subscribers(topic).Subscriptions {
		if cl, ok := b.server.Clients.Get(id); ok {
			b.wake(cl)
		}
	}
}

// wake makes sure a writer runs for cl if mochi queued a packet for it
// (the publish that called it may have been queued for other clients
// only: a device's publish to its own prefix, which it did not subscribe
// to, starts no writer).
func (b *Broker) wake(cl *mqtt.Client) {
	if b.outq == nil {
		return
	}
	s := sessionOfConn(cl)
	if s == nil { // inline: mochi queues nothing for it
		return
	}
	if len(b.outq.queue(cl)) == 0 {
		return // nothing queued for cl, or a writer already took it
	}
	w := &s.w
	if w.state.Add(writerWake)&(writerRunning|writerEnded) != 0 {
		return // the running writer sees the packet (see the hand-off)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		v := w.state.Load()
		if v&(writerRunning|writerEnded) != 0 {
			return
		}
		if w.state.CompareAndSwap(v, v|writerRunning) {
			break
		}
	}
	b.writersWg.Add(1)
	b.writers.Add(1)
	go b.write(w, cl)
}

// write is a client's writer: it writes what mochi queues for cl, as
// mochi's write loop does, until the queue has been idle for WriterIdle
// (or the broker stops).
func (b *Broker) write(w *outWriter, cl *mqtt.Client) {
	defer b.writersWg.Done()
	defer b.writers.Add(-1)
	q, qty := b.outq.queue(cl), b.outq.qty(cl)
	idle := time.NewTimer(b.opts.WriterIdle)
	defer idle.Stop()
	for {
		select {
		case pk := <-q:
			if err := cl.WritePacket(*pk); err != nil {
				b.server.Log.Debug("failed publishing packet", "error", err, "client", cl.ID, "packet", pk)
			}
			atomic.AddInt32(qty, -1)
			idle.Reset(b.opts.WriterIdle)
		case <-idle.C:
			v := w.state.Load()
			if len(q) == 0 && w.state.CompareAndSwap(v, v&^writerRunning) {
				return
			}
			idle.Reset(b.opts.WriterIdle)
		case <-b.writersQuit:
			return // every connection has ended (shutdown)
		}
	}
}

// startWriteLoop starts mochi's write loop of cl, the session's client,
// once, when the broker cannot reach the outbound queue (setupWriters).
// mochi queues a packet for a client only through a subscription of its
// id in the topic index, so the loop is started when the client has a
// subscription, before mochi can find it through one: when it sends a
// SUBSCRIBE (readPackets) and when its session carried subscriptions over
// (establish, before the client is in mochi's client map); the index
// keeps no subscription of an id whose client does not hold it
// (OnClientExpired). The loop ends when the client is stopped.
func (b *Broker) startWriteLoop(s *session, cl *mqtt.Client) {
	if b.outq != nil || !s.w.state.CompareAndSwap(0, writerRunning) {
		return
	}
	b.writersWg.Add(1)
	b.writers.Add(1)
	go func() {
		defer b.writersWg.Done()
		defer b.writers.Add(-1)
		cl.WriteLoop()
	}()
}
