package broker

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// The connection loop (issue 14, goal 6: memory per connected device).
//
// mochi's EstablishConnection runs a client's whole life on the goroutine
// that accepted it: the CONNECT, then Client.Read, which reads and
// processes every packet inline. mochi passes its 800-byte packets.Packet
// by value down that chain, so the goroutine's stack grows to 16 KiB with
// the first packet after the CONNECT, and, parked in Client.Read under
// attachClient (~5.3 KB of frames), it uses more than a quarter of 16 KiB:
// the garbage collector never shrinks it. 16 KiB per connected device
// before any heap.
//
// The broker drives the same client through mochi's exported API instead
// (serveConn, startClient, clientConn.serve), so that the one goroutine
// that lives as long as the connection waits in a small frame: the CONNECT
// is read and the session established on the accepting goroutine, which
// then starts the connection's goroutine and ends; that goroutine waits
// until the connection has a byte to read (peekConn keeps the byte for
// mochi's reader), then hands what arrived to a short-lived goroutine
// ("deep") that reads and processes the packets with mochi's own functions
// (Client.ReadFixedHeader, Client.ReadPacket, Server.InjectPacket, which
// runs mochi's per-packet protocol) and ends. One client's packets are
// still read and processed one after the other, in order, as before; a
// deep goroutine's stack goes back to the runtime when it ends. The
// connection's goroutine parks with a 2 KiB stack. What mochi queues for
// a subscribed client is written by a writer goroutine that runs only
// while there is something to write (writer.go), in place of mochi's
// write loop, which would live as long as the connection.
//
// What mochi's attachClient does around Client.Read is done here with
// mochi's exported pieces, in its order: CONNECT checks (validateConnect),
// the takeover of an older session of the same client id
// (inheritClientSession), the CONNACK, the resend of inflight messages,
// and at the end the will and the clean-up of an expired session. Two
// things differ: the taken-over flag is the broker's own
// (session.takenOver; mochi's is unexported), and a will is published
// through a broker-owned inline client (mochi's sendLWT is unexported;
// devicehub never delays nor retains a will, see OnConnect).

// errWait ends a deep read: every byte handed to mochi's reader was
// processed, the connection loop waits for more.
var errWait = errors.New("wait for more input")

// peekConn is the net.Conn mochi's client reads through. wait blocks
// until the connection has input, on the caller's stack: it fills mochi's
// buffered reader of the client (r) when the broker can reach it
// (readerAccess), else it reads one byte and keeps it for the next Read.
// It counts the bytes it handed to mochi's buffered reader and the bytes
// of the packets read (consumed), so that the loop knows when that reader
// is empty. Not safe for concurrent reads: the connection loop and its
// deep goroutine never run at once.
type peekConn struct {
	net.Conn
	s *session
	// r is mochi's buffered reader of the client, which reads through
	// this conn; nil when the broker cannot reach it.
	r         *bufio.Reader
	one       [1]byte
	have      bool  // one holds a byte read by wait, not yet handed on
	delivered int64 // bytes handed to mochi's reader
	consumed  int64 // bytes of the packets read, headers included
}

func (c *peekConn) Read(p []byte) (int, error) {
	if c.have && len(p) > 0 {
		p[0] = c.one[0]
		c.have = false
		c.delivered++
		return 1, nil
	}
	n, err := c.Conn.Read(p)
	c.delivered += int64(n)
	return n, err
}

// wait blocks until the connection has a byte to read (or fails).
//
// Filling mochi's reader here, rather than reading one byte, reads what
// arrived (a whole packet, as a rule) with one read system call: the
// deep read then finds the packet in the reader and makes none. With one
// byte read here, every packet cost a second read system call for the
// rest of it (issue 14, goal 1: mochi alone pays one). The reader's
// buffer is mochi's, made for every client: it costs no memory, and the
// frames of a read under bufio's Peek are a few hundred bytes of the
// connection goroutine's small stack.
func (c *peekConn) wait() error {
	if c.r != nil {
		// Peek(1) returns the first error of the connection only when
		// no byte came with it; bufio keeps an error that did for the
		// read after the bytes, as a net.Conn returns it again.
		_, err := c.r.Peek(1)
		return err
	}
	for range 100 { // as bufio: a reader that returns nothing 100 times is broken
		n, err := c.Conn.Read(c.one[:])
		if n == 1 {
			c.have = true
			return nil // an error with the byte comes again with the next Read
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// buffered reports whether input was handed to mochi's reader (or kept by
// wait) and not read as a packet yet. A length encoded in more bytes than
// needed makes consumed fall short: the loop then keeps reading on the
// deep goroutine, which is mochi's own behaviour, never waits with input
// left unread.
func (c *peekConn) buffered() bool { return c.have || c.consumed < c.delivered }

// packetBytes is the size of a packet on the wire: the fixed header (type
// byte and the remaining length, in its shortest encoding) and the rest.
func packetBytes(remaining int) int64 {
	n := 2
	for r := remaining; r >= 128; r >>= 7 {
		n++
	}
	return int64(n + remaining)
}

// deep reads and processes packets (readPackets) on another goroutine
// and waits for it, so that the caller's stack stays small. That
// goroutine is one of the broker's deep readers (deepReaders): an idle one
// if there is one, else a new one. The channel it answers on is the
// connection's, made once, not once per wake-up.
func (c *clientConn) deep() error {
	if c.done == nil {
		c.done = make(chan error, 1)
	}
	c.b.deepReaders.run(c)
	return <-c.done
}

// deepReaders are the goroutines that run deep reads, any connection's,
// one at a time each.
//
// A goroutine started per wake-up (one per message for a device that
// waits for each PUBACK) began with the runtime's smallest stack and
// grew it, copied three or four times, to the 16 KiB mochi's processing
// of a publish needs: 10 % of the hub's CPU under ingest (issue 14, goal
// 1; docs/BENCHMARKS.md, "Deep reads on kept goroutines"). A reader
// that finished waits for the next deep read with its stack as it grew,
// so a busy broker starts no goroutine and grows no stack per message.
// At most maxIdleDeepReaders wait: a burst's extra readers end with it,
// and what the waiting ones keep (their stacks, which the garbage
// collector shrinks while they wait in a small frame) does not grow with
// the connections (issue 14, goal 6).
type deepReaders struct {
	read func(*clientConn) error // the deep read: clientConn.readPackets
	work chan *clientConn        // unbuffered: a send succeeds when a reader waits
	quit chan struct{}           // closed once every connection ended (shutdown)
	wg   sync.WaitGroup

	idle    atomic.Int32 // readers waiting, or about to, on work, not claimed by a run
	running atomic.Int32 // readers that have not ended
	started atomic.Int64 // readers ever started (tests)
}

// maxIdleDeepReaders bounds the deep readers that wait for work.
const maxIdleDeepReaders = 16

func newDeepReaders(quit chan struct{}, read func(*clientConn) error) *deepReaders {
	return &deepReaders{read: read, work: make(chan *clientConn), quit: quit}
}

// run hands c's deep read to a waiting reader, or starts one; the answer
// comes on c.done. A reader counted idle is claimed by counting it down
// here, so the hand-off cannot miss it while it is on its way to wait.
// run is called by connection goroutines, counted in Broker.wg, so no
// reader starts, and none is claimed, once shutdown waited for them (quit
// is closed after that wait).
func (d *deepReaders) run(c *clientConn) {
	for {
		n := d.idle.Load()
		if n == 0 {
			break
		}
		if d.idle.CompareAndSwap(n, n-1) {
			d.work <- c
			return
		}
	}
	d.wg.Add(1)
	d.running.Add(1)
	d.started.Add(1)
	go d.reader(c)
}

// reader runs c's deep read and then the deep reads handed to it, until
// it would be one waiting reader too many or the broker shuts down.
func (d *deepReaders) reader(c *clientConn) {
	defer d.wg.Done()
	defer d.running.Add(-1)
	for {
		// c is not touched after its answer: its connection goroutine
		// goes on with it.
		c.done <- d.read(c)
		for {
			n := d.idle.Load()
			if n >= maxIdleDeepReaders {
				return
			}
			if d.idle.CompareAndSwap(n, n+1) {
				break
			}
		}
		select {
		case c = <-d.work: // counted down by the run that claimed it
		case <-d.quit:
			d.idle.Add(-1)
			return
		}
	}
}

// wait waits for the readers to end; quit must be closed.
func (d *deepReaders) wait() { d.wg.Wait() }

// clientConn is a connection being served: its session, mochi's client
// and the reader under it.
type clientConn struct {
	b        *Broker
	s        *session
	cl       *mqtt.Client
	pc       *peekConn
	listener string
	counted  bool       // counted in mochi's ClientsConnected
	done     chan error // deep's answer
}

// startClient makes mochi's client for a tracked connection and
// establishes its session (mochi's attachClient up to
// Client.Read), on the caller's goroutine. On error the connection is to
// be ended (connEnded) as is: as with mochi, without will nor
// OnDisconnect.
func (b *Broker) startClient(listener string, s *session) (*clientConn, error) {
	srv := b.server
	srv.Listeners.ClientsWg.Add(1)
	pc := &peekConn{Conn: s.conn, s: s}
	c := &clientConn{b: b, s: s, pc: pc, listener: listener}
	c.cl = srv.NewClient(pc, listener, "", false)
	if b.reader != nil {
		pc.r = b.reader.of(c.cl)
	}
	if b.mochi != nil {
		b.mochi.dropQueue(c.cl) // never used (writer.go)
	}
	var err error
	c.counted, err = b.establish(c.cl, pc, listener)
	return c, err
}

// serve reads the client until its connection ends, then ends it on
// another goroutine (endClient: the will, OnDisconnect, the session's
// clean-up; then connEnded). It is the one goroutine per connection that
// lives as long as the connection: it waits for input in a small frame
// (peekConn.wait) and reads and processes what arrived on a deep
// goroutine, so that its stack stays at the runtime's smallest.
func (c *clientConn) serve() {
	var err error
	for {
		if c.cl.Closed() {
			break
		}
		refreshDeadline(c.cl)
		// What came with the CONNECT is in mochi's reader already.
		if !c.pc.buffered() {
			if err = c.pc.wait(); err != nil {
				break
			}
		}
		if err = c.deep(); err != errWait {
			break
		}
	}
	go c.end(err)
}

// end is the end of a client whose read loop returned err.
func (c *clientConn) end(err error) {
	err = c.b.endClient(c.cl, c.listener, err)
	c.b.connEnded(c, err)
}

func (c *clientConn) readPackets() error { return c.b.readPackets(c.cl, c.pc) }

// readPackets reads and processes packets while mochi's reader holds
// input (the body of mochi's Client.Read with Server.receivePacket).
func (b *Broker) readPackets(cl *mqtt.Client, pc *peekConn) error {
	for {
		fh := new(packets.FixedHeader)
		if err := cl.ReadFixedHeader(fh); err != nil {
			return err
		}
		pk, err := cl.ReadPacket(fh)
		if err != nil {
			return err
		}
		pc.consumed += packetBytes(fh.Remaining)
		if pk.FixedHeader.Type == packets.Subscribe {
			b.startWriteLoop(pc.s, cl) // before mochi sends it a retained message
		}
		if err := b.receivePacket(cl, pc.s, pk); err != nil {
			return err
		}
		if cl.Closed() {
			return nil
		}
		if !pc.buffered() {
			return errWait
		}
		refreshDeadline(cl)
	}
}

// receivePacket processes a packet the client of session s sent
// (mochi's receivePacket: a v5 client gets a DISCONNECT with the code of
// a protocol error). The broker answers SUBSCRIBE and UNSUBSCRIBE itself
// when it holds the subscriptions (own.go), and takes a QoS 1 PUBLISH in
// itself when it can (publish.go).
func (b *Broker) receivePacket(cl *mqtt.Client, s *session, pk packets.Packet) error {
	var err error
	switch t := pk.FixedHeader.Type; {
	case b.mochi != nil && t == packets.Subscribe:
		err = b.subscribe(cl, s, pk)
	case b.mochi != nil && t == packets.Unsubscribe:
		err = b.unsubscribe(cl, s, pk)
	case b.ownPublish(&pk):
		err = b.publish(cl, s, pk)
	default:
		err = b.inject(cl, pk)
	}
	if err != nil {
		var code packets.Code
		if errors.As(err, &code) && cl.Properties.ProtocolVersion == 5 && code.Code >= packets.ErrUnspecifiedError.Code {
			_ = b.server.DisconnectClient(cl, code)
		}
		b.server.Log.Warn("error processing packet", "error", err, "client", cl.ID, "listener", cl.Net.Listener, "pk", pk)
		return err
	}
	return nil
}

// inject runs mochi's processing of one packet of cl. InjectPacket counts
// the packet as received, which ReadPacket already did (and a will is not
// counted by mochi): the count is taken back.
func (b *Broker) inject(cl *mqtt.Client, pk packets.Packet) error {
	if err := b.server.InjectPacket(cl, pk); err != nil {
		return err
	}
	atomic.AddInt64(&b.server.Info.PacketsReceived, -1)
	if pk.FixedHeader.Type == packets.Publish {
		atomic.AddInt64(&b.server.Info.MessagesReceived, -1)
	}
	return nil
}

// refreshDeadline is mochi's: a connection that sends nothing for one and
// a half keepalives is closed.
func refreshDeadline(cl *mqtt.Client) {
	var expiry time.Time
	if ka := cl.State.Keepalive; ka > 0 {
		expiry = time.Now().Add(time.Duration(ka+ka/2) * time.Second)
	}
	_ = cl.Net.Conn.SetDeadline(expiry)
}

// establish reads the CONNECT and establishes the session (mochi's
// attachClient up to Client.Read). counted reports that the client was
// counted in ClientsConnected (the caller takes it back at the end).
func (b *Broker) establish(cl *mqtt.Client, pc *peekConn, listener string) (counted bool, err error) {
	srv := b.server
	caps := srv.Options.Capabilities
	fh := new(packets.FixedHeader)
	if err := cl.ReadFixedHeader(fh); err != nil {
		// The connect timeout is the device's to keep, not the hub's: if
		// the CONNECT is waiting in the socket, the hub ran late (see
		// connectArrived). Nothing was read yet, so mochi's reader can
		// start again; it gets one more ConnectTimeout.
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() || pc.delivered != 0 || !connectArrived(pc.Conn) {
			return false, fmt.Errorf("read connection: %w", err)
		}
		b.m.readLate.Inc()
		_ = pc.SetDeadline(time.Now().Add(b.opts.ConnectTimeout))
		if err := cl.ReadFixedHeader(fh); err != nil {
			return false, fmt.Errorf("read connection: %w", err)
		}
	}
	if fh.Type != packets.Connect {
		return false, fmt.Errorf("read connection: %w", packets.ErrProtocolViolationRequireFirstConnect) // [MQTT-3.1.0-1]
	}
	pk, err := cl.ReadPacket(fh)
	if err != nil {
		return false, fmt.Errorf("read connection: %w", err)
	}
	pc.consumed += packetBytes(fh.Remaining)

	cl.ParseConnect(listener, pk)
	if atomic.LoadInt64(&srv.Info.ClientsConnected) >= caps.MaximumClients {
		if cl.Properties.ProtocolVersion < 5 {
			_ = srv.SendConnack(cl, packets.ErrServerUnavailable, false, nil)
		} else {
			_ = srv.SendConnack(cl, packets.ErrServerBusy, false, nil)
		}
		return false, packets.ErrServerBusy
	}
	if code := validateConnect(caps, cl, pk); code != packets.CodeSuccess {
		if err := srv.SendConnack(cl, code, false, nil); err != nil {
			return false, fmt.Errorf("invalid connection send ack: %w", err)
		}
		return false, code
	}
	if err := b.hook.OnConnect(cl, pk); err != nil {
		return false, err
	}
	refreshDeadline(cl)
	if !b.hook.OnConnectAuthenticate(cl, pk) { // not reached: OnConnect refuses first
		if err := srv.SendConnack(cl, packets.ErrBadUsernameOrPassword, false, nil); err != nil {
			return false, fmt.Errorf("invalid connection send ack: %w", err)
		}
		return false, packets.ErrBadUsernameOrPassword
	}

	atomic.AddInt64(&srv.Info.ClientsConnected, 1)
	b.hook.OnSessionEstablish(cl, pk)
	present := b.inheritSession(pk, cl)
	if cl.State.Subscriptions.Len() > 0 { // carried over: a publish may find it once it is in the map
		b.startWriteLoop(pc.s, cl)
	}
	srv.Clients.Add(cl) // [MQTT-4.1.0-1]
	if err := srv.SendConnack(cl, packets.CodeSuccess, present, nil); err != nil {
		return true, fmt.Errorf("ack connection packet: %w", err)
	}
	// mochi deletes a delayed will of the client id here; devicehub
	// never delays a will (OnConnect), so there is none.
	if present {
		if err := cl.ResendInflightMessages(true); err != nil {
			return true, fmt.Errorf("resend inflight: %w", err)
		}
	}
	b.hook.OnSessionEstablished(cl, pk)
	return true, nil
}

// validateConnect is mochi's check of a CONNECT against the capabilities.
func validateConnect(caps *mqtt.Capabilities, cl *mqtt.Client, pk packets.Packet) packets.Code {
	if code := pk.ConnectValidate(); code != packets.CodeSuccess { // [MQTT-3.1.4-1] [MQTT-3.1.4-2]
		return code
	}
	switch {
	case cl.Properties.ProtocolVersion < 5 && !pk.Connect.Clean && pk.Connect.ClientIdentifier == "":
		return packets.ErrUnspecifiedError
	case cl.Properties.ProtocolVersion < caps.MinimumProtocolVersion:
		return packets.ErrUnsupportedProtocolVersion // [MQTT-3.1.2-2]
	case cl.Properties.Will.Qos > caps.MaximumQos:
		return packets.ErrQosNotSupported // [MQTT-3.2.2-12]
	case cl.Properties.Will.Retain && caps.RetainAvailable == 0:
		return packets.ErrRetainNotSupported // [MQTT-3.2.2-13]
	}
	return packets.CodeSuccess
}

// inheritSession takes over an older client with the same id (mochi's
// inheritClientSession): it is disconnected, and unless the new session is
// clean (or the old one was a clean 3.1.1 session) its inflight messages
// and subscriptions carry over. It reports whether a session was present.
func (b *Broker) inheritSession(pk packets.Packet, cl *mqtt.Client) bool {
	srv := b.server
	existing, ok := srv.Clients.Get(cl.ID)
	if !ok {
		if atomic.LoadInt64(&srv.Info.ClientsConnected) > atomic.LoadInt64(&srv.Info.ClientsMaximum) {
			atomic.AddInt64(&srv.Info.ClientsMaximum, 1)
		}
		return false // [MQTT-3.2.2-2]
	}
	// Marked before it is disconnected, so that its end leaves the id's
	// subscriptions and client map entry to the new client.
	if old := sessionOfConn(existing); old != nil {
		old.takenOver.Store(true)
	}
	_ = srv.DisconnectClient(existing, packets.ErrSessionTakenOver)                                 // [MQTT-3.1.4-3]
	if pk.Connect.Clean || (existing.Properties.Clean && existing.Properties.ProtocolVersion < 5) { // [MQTT-3.1.2-4] [MQTT-3.1.4-4]
		srv.UnsubscribeClient(existing)
		existing.ClearInflights()
		return false // [MQTT-3.2.2-3]
	}
	if existing.State.Inflight.Len() > 0 {
		cl.State.Inflight = existing.State.Inflight.Clone() // [MQTT-3.1.2-5]
		// the clone has no quotas: set them as ParseConnect did
		if rm := srv.Options.Capabilities.ReceiveMaximum; rm != 0 {
			cl.State.Inflight.ResetReceiveQuota(int32(rm))
			cl.State.Inflight.ResetSendQuota(int32(cl.Properties.Props.ReceiveMaximum))
		}
	}
	if old := sessionOfConn(existing); old != nil && b.mochi != nil {
		if s := sessionOfConn(cl); s != nil {
			subs := old.out.takeSubs()
			s.out.mu.Lock()
			s.out.subs = subs
			s.out.mu.Unlock()
		}
	}
	for _, sub := range existing.State.Subscriptions.GetAll() {
		if srv.Topics.Subscribe(cl.ID, sub) { // [MQTT-3.8.4-3]
			atomic.AddInt64(&srv.Info.Subscriptions, 1)
		}
		cl.State.Subscriptions.Add(sub.Filter, sub)
	}
	// The old client forgets its subscriptions; the topic index keeps
	// them, now the new client's (mochi's UnsubscribeClient of a
	// taken-over client).
	for filter := range existing.State.Subscriptions.GetAll() {
		existing.State.Subscriptions.Delete(filter)
	}
	existing.ClearInflights()
	b.server.Log.Debug("session taken over", "client", cl.ID, "old_remote", existing.Net.Remote, "new_remote", cl.Net.Remote)
	return true // [MQTT-3.2.2-3]
}

// endClient is what mochi's attachClient does after Client.Read: the will
// of a connection that did not end with a DISCONNECT, OnDisconnect, and
// the removal of a session that expires with its connection, unless a
// newer connection took it over.
func (b *Broker) endClient(cl *mqtt.Client, listener string, err error) error {
	if err != nil {
		b.sendWill(cl)
		cl.Stop(err)
	} else {
		cl.Properties.Will = mqtt.Will{} // [MQTT-3.14.4-3] [MQTT-3.1.2-10]
	}
	b.server.Log.Debug("client disconnected", "error", err, "client", cl.ID, "remote", cl.Net.Remote, "listener", listener)
	expire := (cl.Properties.ProtocolVersion == 5 && cl.Properties.Props.SessionExpiryInterval == 0) ||
		(cl.Properties.ProtocolVersion < 5 && cl.Properties.Clean)
	b.hook.OnDisconnect(cl, err, expire)
	if expire && !takenOver(cl) {
		cl.ClearInflights()
		b.server.UnsubscribeClient(cl)
		b.server.Clients.Delete(cl.ID) // [MQTT-4.1.0-2] ![MQTT-3.1.2-23]
	}
	return err
}

// sendWill publishes the client's will, if it has one (mochi's sendLWT,
// without delay: OnConnect cleared it).
func (b *Broker) sendWill(cl *mqtt.Client) {
	if atomic.LoadUint32(&cl.Properties.Will.Flag) == 0 {
		return
	}
	will, _ := b.hook.OnWill(cl, cl.Properties.Will)
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: will.Retain, Qos: will.Qos}, // [MQTT-3.1.2-14] [MQTT-3.1.2-15]
		TopicName:   will.TopicName,
		Payload:     will.Payload,
		Properties:  packets.Properties{User: will.User},
		PacketID:    uint16(will.Qos), // an inline publish's QoS is not processed; its id only passes validation
	}
	if err := b.inject(b.willClient, pk); err != nil { // [MQTT-3.1.2-8]
		b.log.Warn("publish will", "device_id", cl.ID, "topic", will.TopicName, "err", err)
	}
	atomic.StoreUint32(&cl.Properties.Will.Flag, 0) // [MQTT-3.1.2-10]
}

// sessionOfConn is the session whose connection cl reads, also after the
// connection ended.
func sessionOfConn(cl *mqtt.Client) *session {
	if pc, ok := cl.Net.Conn.(*peekConn); ok {
		return pc.s
	}
	return nil
}

// takenOver reports whether a newer connection took over cl's session.
func takenOver(cl *mqtt.Client) bool {
	if cl.IsTakenOver() {
		return true
	}
	s := sessionOfConn(cl)
	return s != nil && s.takenOver.Load()
}

// readerAccess reaches mochi's buffered reader of a client
// (ClientConnection.bconn, unexported) by its offset, found with reflect
// when the broker is made and checked there on a client mochi made, as
// mochiAccess does (writer.go). If the check fails (a mochi upgrade moved
// it), the broker logs it once and waits for input with a one-byte read:
// an upgrade costs a read system call per packet, never correctness.
type readerAccess struct{ off uintptr }

// findReader finds the reader's field in this mochi's types and checks it
// on a client mochi made for a connection of its own, whose reader must
// be of the size the options gave.
func findReader(srv *mqtt.Server, size int) (*readerAccess, error) {
	off, err := fieldOffset(reflect.TypeFor[mqtt.ClientConnection](), "bconn", reflect.TypeFor[*bufio.Reader]())
	if err != nil {
		return nil, err
	}
	a := &readerAccess{off: off}
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	if r := a.of(srv.NewClient(c1, "check", "", false)); r == nil || r.Size() != size || r.Buffered() != 0 {
		return nil, fmt.Errorf("mochi's client reader not where it was looked for")
	}
	return a, nil
}

// of is cl's buffered reader.
func (a *readerAccess) of(cl *mqtt.Client) *bufio.Reader {
	return *(**bufio.Reader)(unsafe.Add(unsafe.Pointer(&cl.Net), a.off))
}

// setupReader decides, once per broker, whether the connection loop waits
// for input by filling mochi's reader (b.reader set), and logs the
// fallback.
func (b *Broker) setupReader(forceByte bool) {
	a, err := findReader(b.server, b.opts.ReadBufferSize)
	if err == nil && forceByte {
		err = fmt.Errorf("forced by the broker's options")
	}
	if err != nil {
		b.log.Warn("mqtt: the connection loop reads one byte to wait for input (a read system call more per packet)", "err", err)
		return
	}
	b.reader = a
}
