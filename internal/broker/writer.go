package broker

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The outbox: what the broker sends a device, and the writer that sends
// it (issue 14, goal 6: memory per connected device).
//
// The broker holds a device's subscriptions itself (own.go) and delivers
// the publishes that match them: it queues the packet on the session's
// outbox, and a writer goroutine writes the outbox to the connection. The
// writer runs only while the outbox has packets and ends once it has been
// idle for Options.WriterIdle; the next packet starts a new one. At most
// one writer runs per session, so packets are written in the order they
// were queued. The outbox, its subscriptions and the writer's state are
// guarded by one mutex, taken for a few instructions per packet.
//
// mochi would hold these subscriptions in its topic index (five trie
// nodes of four maps each for a device's commands and desired
// properties, and a map in the client: ~4.7 KB a device) and queue what
// it sends a client on a channel it makes for every client at
// MaximumClientWritesPending (2.5 KiB a device, used or not) and drains
// with a write loop per client (a goroutine and its stack). None of that
// is used for a device's connection here: mochi never finds a device in
// its index, so it never queues for one, and the broker drops the
// channel mochi made (mochiAccess.dropQueue) before the client is
// published.
//
// The writer also writes the PUBACKs of the device's QoS 1 publishes once
// they are stored (pubacks.go): the committer only marks them settled and
// wakes the writer, so that no device's socket ever holds the committer
// or another device's acknowledgements. A device that publishes more
// often than every WriterIdle keeps its writer, instead of starting a
// goroutine per publish. In the fallback below the broker's writer runs
// beside mochi's write loop for these PUBACKs alone (mochi's WritePacket
// serialises the two).
//
// Two of mochi's fields are unexported and reached by their offsets,
// found with reflect when the broker is made and checked there on
// objects mochi made: the client's outbound channel (only to drop it) and
// the inflight store's send quota (MQTT 5 flow control: a device's
// Receive Maximum; a QoS > 0 publish waits in the outbox while the quota
// is used up, and is queued for the writer once a PUBACK returned some:
// push, release). If a check fails (a mochi upgrade
// changed them) the broker logs it once and lets mochi hold the
// subscriptions and run its write loop per subscribed client
// (startWriteLoop): an upgrade costs memory, never correctness.

// outbox is a session's subscriptions and the packets queued for its
// connection (see above).
type outbox struct {
	mu        sync.Mutex
	subs      []ownSub          // the device's subscriptions (own.go)
	pks       []*packets.Packet // queued for the writer, in order
	waiting   []*packets.Packet // QoS > 0 publishes waiting for send quota, in order
	running   bool              // a writer runs
	mochiLoop bool              // mochi's write loop runs (the fallback: startWriteLoop)
	ended     bool              // the connection ended: no writer starts again
	kick      chan struct{}     // wakes the running writer; made with it
	// acks are the session's publishes awaiting their PUBACK
	// (pubacks.go); acksDue says that some at its head are settled and
	// the writer should write their PUBACKs.
	acks    *pubacks
	acksDue bool
}

// end marks the connection ended: no writer starts for it any more. A
// running writer ends once the outbox is idle (its writes fail at once on
// the closed connection). What is still queued is dropped: a QoS > 0
// publish among it stays in the session's inflight store, and mochi sends
// it again if a connection takes the session over.
func (o *outbox) end() {
	o.mu.Lock()
	o.ended = true
	o.pks, o.waiting = nil, nil
	o.mu.Unlock()
}

// push queues pk for cl and makes sure a writer runs; a QoS > 0 publish
// (counted in cl's inflight store) waits for send quota first (release).
// It reports false if the outbox is full (Options.WriteQueue). Once the
// connection ended it queues nothing (see end).
func (b *Broker) push(o *outbox, cl *mqtt.Client, pk *packets.Packet) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return b.pushLocked(o, cl, pk)
}

// pushLocked is push with o.mu held.
func (b *Broker) pushLocked(o *outbox, cl *mqtt.Client, pk *packets.Packet) bool {
	switch {
	case o.ended:
		return true
	case len(o.pks)+len(o.waiting) >= b.opts.WriteQueue:
		return false
	case pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos > 0:
		o.waiting = append(o.waiting, pk)
		b.release(o, cl)
	default:
		o.pks = append(o.pks, pk)
		b.startWriter(o, cl)
	}
	return true
}

// releaseWaiting queues the publishes waiting for send quota that the
// quota now allows (a PUBACK of the device returned some: OnQosComplete).
func (b *Broker) releaseWaiting(o *outbox, cl *mqtt.Client) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.ended {
		b.release(o, cl)
	}
}

// release moves waiting publishes to the writer's queue, in order, while
// cl's send quota allows: the device's Receive Maximum (MQTT 5) bounds
// the QoS > 0 publishes sent to it and not yet acknowledged; each takes a
// unit of quota, and mochi returns it when the PUBACK comes. o.mu is held.
func (b *Broker) release(o *outbox, cl *mqtt.Client) {
	n := 0
	for ; n < len(o.waiting); n++ {
		if quota, maximum := b.mochi.sendQuota(cl.State.Inflight); maximum > 0 && quota <= 0 {
			break
		}
		cl.State.Inflight.DecreaseSendQuota()
	}
	if n == 0 {
		return
	}
	o.pks = append(o.pks, o.waiting[:n]...)
	o.waiting = slices.Delete(o.waiting, 0, n)
	if len(o.waiting) == 0 {
		o.waiting = nil
	}
	b.startWriter(o, cl)
}

// startWriter makes sure a writer runs for the queued packets. o.mu is
// held.
func (b *Broker) startWriter(o *outbox, cl *mqtt.Client) {
	if o.running {
		select {
		case o.kick <- struct{}{}:
		default: // already kicked
		}
		return
	}
	o.running = true
	o.kick = make(chan struct{}, 1)
	b.writersWg.Add(1)
	b.writers.Add(1)
	go b.write(o, cl, o.kick)
}

// acksSettled has the writer write the PUBACKs of the settled publishes at
// the head of the session's pubacks, starting it if need be. It never
// waits for the connection, so the committer calls it (through the
// publishes' OnDone callbacks). Once the connection ended it does nothing.
func (b *Broker) acksSettled(o *outbox, cl *mqtt.Client) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ended {
		return
	}
	o.acksDue = true
	b.startWriter(o, cl)
}

// write is a session's writer: it writes what is queued for cl, and the
// PUBACKs of its publishes as they are settled, until the outbox has been
// idle for WriterIdle (or the broker stops).
func (b *Broker) write(o *outbox, cl *mqtt.Client, kick <-chan struct{}) {
	defer b.writersWg.Done()
	defer b.writers.Add(-1)
	idle := time.NewTimer(b.opts.WriterIdle)
	defer idle.Stop()
	for {
		o.mu.Lock()
		pks := o.pks
		o.pks = nil
		acksDue := o.acksDue
		o.acksDue = false
		o.mu.Unlock()
		if acksDue {
			b.writeAcks(o.acks, cl)
		}
		if len(pks) > 0 {
			for _, pk := range pks {
				if err := cl.WritePacket(*pk); err != nil {
					b.server.Log.Debug("failed publishing packet", "error", err, "client", cl.ID, "packet", pk)
				}
			}
		}
		if len(pks) > 0 || acksDue {
			idle.Reset(b.opts.WriterIdle)
			continue
		}
		select {
		case <-kick:
		case <-idle.C:
			o.mu.Lock()
			if len(o.pks) == 0 && !o.acksDue {
				o.running = false
				o.kick = nil
				o.mu.Unlock()
				return
			}
			o.mu.Unlock()
			idle.Reset(b.opts.WriterIdle)
		case <-b.writersQuit:
			return // every connection has ended (shutdown)
		}
	}
}

// mochiAccess reaches the unexported fields of mochi the broker needs
// (see above) by their offsets: the client's outbound channel
// (ClientState.outbound) and the inflight store's send quota and its
// maximum (Inflight.sendQuota, Inflight.maximumSendQuota).
type mochiAccess struct {
	queueOff, quotaOff, maxQuotaOff uintptr
}

// Types of the fields reached through mochiAccess.
var (
	outboundQueueType = reflect.TypeFor[chan *packets.Packet]()
	quotaType         = reflect.TypeFor[int32]()
)

// findMochi finds the fields in this mochi's types, or says why it
// cannot.
func findMochi() (*mochiAccess, error) {
	return findMochiIn(reflect.TypeFor[mqtt.ClientState](), reflect.TypeFor[mqtt.Inflight]())
}

// findMochiIn finds the fields in state and inflight, struct types.
func findMochiIn(state, inflight reflect.Type) (*mochiAccess, error) {
	field := fieldOffset
	var a mochiAccess
	var err error
	if a.queueOff, err = field(state, "outbound", outboundQueueType); err != nil {
		return nil, err
	}
	if a.quotaOff, err = field(inflight, "sendQuota", quotaType); err != nil {
		return nil, err
	}
	if a.maxQuotaOff, err = field(inflight, "maximumSendQuota", quotaType); err != nil {
		return nil, err
	}
	return &a, nil
}

// fieldOffset is the offset of the field name of the struct type t, a
// field of type want declared in t itself.
func fieldOffset(t reflect.Type, name string, want reflect.Type) (uintptr, error) {
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

// queue is where cl's outbound channel is (set by mochi's newClient).
func (a *mochiAccess) queue(cl *mqtt.Client) *chan *packets.Packet {
	return (*chan *packets.Packet)(unsafe.Add(unsafe.Pointer(&cl.State), a.queueOff))
}

// dropQueue drops cl's outbound channel, which mochi never uses for a
// client the broker holds the subscriptions of: with no channel, mochi
// would count a packet queued there as dropped, never block on it. Only
// before cl is published to other goroutines.
func (a *mochiAccess) dropQueue(cl *mqtt.Client) { *a.queue(cl) = nil }

// sendQuota is the remaining send quota of in and its maximum (0: no
// flow control).
func (a *mochiAccess) sendQuota(in *mqtt.Inflight) (quota, maximum int32) {
	p := unsafe.Pointer(in)
	return atomic.LoadInt32((*int32)(unsafe.Add(p, a.quotaOff))), atomic.LoadInt32((*int32)(unsafe.Add(p, a.maxQuotaOff)))
}

// check tries the access on objects mochi made: a client's channel must
// be the one mochi sized from the capabilities, empty; an inflight
// store's quotas must follow its methods.
func (a *mochiAccess) check(cl *mqtt.Client, capacity int) error {
	if q := *a.queue(cl); q == nil || cap(q) != capacity || len(q) != 0 {
		return fmt.Errorf("mochi's outbound queue not where it was looked for (capacity %d, want %d)", cap(q), capacity)
	}
	in := mqtt.NewInflights()
	in.ResetSendQuota(7)
	in.DecreaseSendQuota()
	if q, m := a.sendQuota(in); q != 6 || m != 7 {
		return fmt.Errorf("mochi's send quota not where it was looked for (read %d of %d, want 6 of 7)", q, m)
	}
	return nil
}

// setupDelivery decides, once per broker, whether the broker holds the
// devices' subscriptions and writes to them itself (b.mochi set), or
// leaves both to mochi, and logs the fallback.
func (b *Broker) setupDelivery(forceMochi bool) {
	a, err := findMochi()
	if err == nil {
		err = a.check(b.willClient, b.opts.WriteQueue)
	}
	if err == nil && forceMochi {
		err = fmt.Errorf("forced by the broker's options")
	}
	if err != nil {
		b.log.Warn("mqtt: mochi holds the subscriptions and runs a write loop per subscribed client (more memory per device)", "err", err)
		return
	}
	b.mochi = a
}

// startWriteLoop starts mochi's write loop of cl, the session's client,
// once, when mochi holds the subscriptions (setupDelivery). mochi queues
// a packet for a client only through a subscription of its id in the
// topic index, so the loop is started when the client has a
// subscription, before mochi can find it through one: when it sends a
// SUBSCRIBE (readPackets) and when its session carried subscriptions over
// (establish, before the client is in mochi's client map); the index
// keeps no subscription of an id whose client does not hold it
// (OnClientExpired). The loop ends when the client is stopped.
func (b *Broker) startWriteLoop(s *session, cl *mqtt.Client) {
	if b.mochi != nil {
		return
	}
	o := &s.out
	o.mu.Lock()
	start := !o.mochiLoop && !o.ended
	o.mochiLoop = true
	o.mu.Unlock()
	if !start {
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
