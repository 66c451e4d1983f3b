// Package broker is devicehub's embedded MQTT broker: mochi-mqtt with one
// hook that authenticates devices, confines each device to its own topic
// prefix, hands every device message to the ingest path (a QoS 1 PUBACK
// means the message is stored; PUBACKs go out in order, several messages
// of a device may be on their way to the store at once, see pubacks.go)
// and tells presence about connections, disconnections and activity.
//
// Connection generations: every accepted connection gets a generation, a
// process-wide increasing number, assigned in OnConnect right after the
// credentials were checked and before mochi takes over an older session
// with the same client id. The broker remembers the current generation per
// device. Presence learns a connection's generation in Connected (called
// from OnSessionEstablish, before the takeover, so that presence already
// knows the new generation when the old session's disconnect arrives) and
// every Disconnected carries the generation of the connection that ended,
// so presence ignores the disconnect of a taken-over session. A last will
// is handed to ingest only if its connection is still the device's current
// one and the hub did not close it itself (kick, shutdown).
package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/fdlimit"
)

// Errors of the broker.
var (
	// ErrNoListener: the options name no address to listen on.
	ErrNoListener = errors.New("no listener configured")
	// ErrMissingDep: a required dependency is nil.
	ErrMissingDep = errors.New("missing dependency")
	// ErrAlreadyRunning: Run was called twice.
	ErrAlreadyRunning = errors.New("broker already running")
)

// Authenticator checks a device's MQTT credentials and returns its type.
// It reports registry.ErrNotFound, registry.ErrUnauthorized or
// registry.ErrDisabled.
type Authenticator interface {
	Authenticate(clientID, username string, password []byte) (deviceType string, err error)
}

// PublishHandler takes in a device's message. It returns once the message
// is durably stored (for QoS > 0), with nil, with a rejection (an error
// with a RejectCode() string method, already recorded by the hub), or with
// any other error, meaning the message was not stored. p is the broker's
// again once HandlePublish (or StartPublish) returned: keep what it holds
// (its strings, its Payload), not p.
type PublishHandler interface {
	HandlePublish(ctx context.Context, p *Publish) error
}

// Presence is told about device connections. gen identifies the connection
// (see the package comment).
type Presence interface {
	Connected(ctx context.Context, deviceID, deviceType string, gen uint64, remoteAddr string)
	Disconnected(ctx context.Context, deviceID string, gen uint64, reason string, cause error)
	// Activity is called for every packet a device sends; it must be cheap.
	Activity(deviceID string)
}

// Deps are the broker's collaborators.
type Deps struct {
	Authenticator  Authenticator
	PublishHandler PublishHandler
	Presence       Presence
	// DeviceGone, if set, is called when a device's last connection has
	// ended (ingest frees what it held for the device).
	DeviceGone func(deviceID string)
	// Delivered, if set, is called when a device acknowledged a QoS 1
	// publish of the hub (its PUBACK), with the publish's topic (see
	// acks). It runs on the device's read loop and must not block for
	// long.
	Delivered func(deviceID, topic string)
}

// Publish is one message from a device (or its last will).
type Publish struct {
	DeviceID   string
	DeviceType string
	Topic      string
	// Payload belongs to the broker's packet: read it, do not modify it.
	Payload           []byte
	QoS               byte
	ContentType       string
	PayloadFormatUTF8 bool
	Will              bool // the device's last will, sent by the broker for it
	Received          time.Time
}

// Options configure the broker. Every limit is set on purpose: mochi's own
// defaults are unbounded or sized for a few clients, not a fleet. Zero
// values take the defaults documented on each field.
type Options struct {
	// Generation, if set, numbers sessions instead of the broker's own
	// counter (cluster mode: a sequence shared by every node).
	Generation func(ctx context.Context) (uint64, error)
	// Addr is the plain TCP listener address (":1883"); empty for none.
	Addr string
	// TLSAddr, CertFile and KeyFile configure an optional TLS listener.
	TLSAddr  string
	CertFile string
	KeyFile  string
	// ClientCAFile, if set, makes the TLS listener require a client
	// certificate signed by one of its CAs (PEM). A device whose pinned
	// certificate fingerprint matches may connect without a password
	// (see CertAuthenticator); others authenticate with their password.
	ClientCAFile string
	// WSAddr is an optional WebSocket listener address (plain; put TLS in
	// front of it).
	WSAddr string

	// MaxPacketSize bounds an incoming packet in bytes (default 256 KiB);
	// a larger packet closes the connection.
	MaxPacketSize int
	// MaxConnections caps the open connections of all listeners together,
	// counted from accept (before CONNECT), so that the broker can never
	// run the process out of descriptors; an excess connection is closed
	// at once and counted. 0 takes three quarters of the open-file limit
	// (fdlimit.Default); negative: no cap.
	MaxConnections int
	// MaxClients bounds the connected devices (default 100000); more are
	// refused with server busy (v5) / server unavailable (3.1.1).
	MaxClients int
	// ReceiveMaximum is the number of unacknowledged QoS > 0 messages a
	// device may send at once (default 64, at most 65535). With a
	// PublishStarter, that many QoS 1 messages of one connection may be
	// on their way to the store at once; a client that sends more (3.1.1
	// clients know no receive maximum) is not read from until the oldest
	// is acknowledged.
	ReceiveMaximum int
	// MaxInflight bounds the QoS > 0 messages held for one device,
	// including those queued while it is offline (default 256, at most
	// 65535); beyond it messages to the device are dropped (and counted by
	// mochi). The hub keeps its own record of commands, so this is a
	// buffer, not a store.
	MaxInflight int
	// WriteQueue bounds the outbound queue of one client (default
	// MaxInflight + 64); when it is full, messages to the client are
	// dropped. The broker's outbox (writer.go) grows as packets are
	// queued; in the fallback to mochi's write loop mochi allocates it per
	// client up front, 8 bytes an entry. The default is the smallest that
	// drops nothing the inflight cap
	// lets through: every QoS > 0 message beyond MaxInflight is dropped
	// before it reaches the queue, so a burst handed over at once (a
	// device's queued commands when it connects) fits, with room for
	// QoS 0 messages beside it.
	WriteQueue int
	// MaxSessionExpiry caps how long a persistent session outlives its
	// connection (default 1h).
	MaxSessionExpiry time.Duration
	// MinKeepAlive and MaxKeepAlive clamp the keepalive a device asks for
	// (defaults 5s and 20m). A keepalive of zero (none) becomes
	// MaxKeepAlive, so that a dead connection is always noticed. A v5
	// client is told the value in force (server keep alive).
	MinKeepAlive time.Duration
	MaxKeepAlive time.Duration
	// ConnectTimeout is how long a new connection may take to send its
	// CONNECT (default 10s); mochi itself sets no deadline before CONNECT.
	ConnectTimeout time.Duration
	// HandlerTimeout bounds one PublishHandler call (default 30s), and
	// the time from a QoS 1 publish's arrival to its outcome when a
	// PublishStarter took it in (checked by one watchdog a few times per
	// timeout, pubacks.go); a timeout counts as "not stored" and
	// disconnects the device.
	HandlerTimeout time.Duration
	// ShutdownGrace bounds the broker's stop (default 5s). Run's stop
	// closes every connection at once (no PUBACK is written after it
	// began), and then waits up to ShutdownGrace, counted from the
	// stop's start, for what the connections were waiting for: the
	// presence records of their disconnects and the outcomes of the QoS 1
	// publishes taken in and handed to the commit path. What is not done
	// by then is abandoned, logged (how many publishes) and not
	// acknowledged: the devices send those messages again, so a PUBACK
	// still means stored. A late outcome finds its connection ended and
	// only updates the broker's count.
	//
	// Not HandlerTimeout: that is how long a running hub lets a slow
	// store (a checkpoint, a failover) take before it disconnects a
	// device, and 30 s of it, before the committer's own stop, would
	// overrun the time an orchestrator gives a stopping process. A
	// healthy store commits in milliseconds, so 5 s abandons only what a
	// stuck store holds.
	ShutdownGrace time.Duration
	// ReadBufferSize sizes the per-client read buffer, allocated for
	// every connection (default 1 KiB: device messages are small, a
	// larger packet is read past the buffer, and a burst of pipelined
	// publishes takes one read per ~1 KiB instead of per 2 KiB; issue 14
	// goal 6 counts every byte per connection). WriteBufferSize bounds
	// what mochi gathers while a write is pending (default 2 KiB, mochi's;
	// nothing is allocated for an idle connection).
	ReadBufferSize  int
	WriteBufferSize int
	// WriterIdle is how long a client's writer goroutine waits for more
	// outbound data before it ends (default 2s); the next message to
	// the client starts a new one (writer.go).
	WriterIdle time.Duration

	// mochiWriteLoop (tests) leaves the subscriptions to mochi and runs
	// its write loop per subscribed client, as when mochi's fields
	// cannot be reached (writer.go).
	mochiWriteLoop bool
	// mochiPublish (tests) has a device's QoS 1 publish go through
	// mochi's processing, as when mochi's receive quota cannot be
	// reached (publish.go).
	mochiPublish bool
	// byteWait (tests) has the connection loop wait for input with a
	// one-byte read, as when mochi's client reader cannot be reached
	// (serve.go).
	byteWait bool
	// writerAcks (tests) has the session's writer write every PUBACK,
	// as for a connection that is not plain TCP (pubacks.go).
	writerAcks bool
}

// writeQueueRoom is what the default WriteQueue holds beyond MaxInflight.
const writeQueueRoom = 64

// maxMQTTPacket is the largest packet MQTT can encode.
const maxMQTTPacket = 268435455

func (o *Options) check() error {
	switch {
	case o.MaxPacketSize < 0 || o.MaxPacketSize > maxMQTTPacket:
		return fmt.Errorf("MaxPacketSize %d: must be between 1 and %d", o.MaxPacketSize, maxMQTTPacket)
	case o.ReceiveMaximum < 0 || o.ReceiveMaximum > math.MaxUint16:
		return fmt.Errorf("ReceiveMaximum %d: must be between 1 and 65535", o.ReceiveMaximum)
	case o.MaxInflight < 0 || o.MaxInflight > math.MaxUint16:
		return fmt.Errorf("MaxInflight %d: must be between 1 and 65535", o.MaxInflight)
	case o.MaxSessionExpiry/time.Second > math.MaxUint32:
		return fmt.Errorf("MaxSessionExpiry %s: too long", o.MaxSessionExpiry)
	case o.TLSAddr != "" && (o.CertFile == "" || o.KeyFile == ""):
		return errors.New("TLSAddr needs CertFile and KeyFile")
	case o.ClientCAFile != "" && o.TLSAddr == "":
		return errors.New("ClientCAFile needs TLSAddr")
	}
	return nil
}

func (o *Options) setDefaults() {
	if o.MaxPacketSize == 0 {
		o.MaxPacketSize = 256 << 10
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = fdlimit.Default().MQTT
	}
	if o.MaxClients <= 0 {
		o.MaxClients = 100000
	}
	if o.ReceiveMaximum == 0 {
		o.ReceiveMaximum = 64
	}
	if o.MaxInflight == 0 {
		o.MaxInflight = 256
	}
	if o.WriteQueue <= 0 {
		o.WriteQueue = o.MaxInflight + writeQueueRoom
	}
	if o.MaxSessionExpiry <= 0 {
		o.MaxSessionExpiry = time.Hour
	}
	if o.MinKeepAlive <= 0 {
		o.MinKeepAlive = 5 * time.Second
	}
	if o.MaxKeepAlive <= 0 {
		o.MaxKeepAlive = 20 * time.Minute
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 10 * time.Second
	}
	if o.HandlerTimeout <= 0 {
		o.HandlerTimeout = 30 * time.Second
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 5 * time.Second
	}
	if o.ReadBufferSize <= 0 {
		o.ReadBufferSize = 1 << 10
	}
	if o.WriteBufferSize <= 0 {
		o.WriteBufferSize = 2 << 10
	}
	if o.WriterIdle <= 0 {
		o.WriterIdle = 2 * time.Second
	}
}

// capabilities turns the options into mochi's capabilities, each value
// chosen rather than inherited.
func (o *Options) capabilities() *mqtt.Capabilities {
	c := mqtt.NewDefaultServerCapabilities()
	c.MaximumClients = int64(o.MaxClients)
	// No broker-imposed message expiry: messages carry their own. With
	// mochi's default (a day) it would also delete the hub's retained
	// twin and config messages after a day. Nothing grows without bound:
	// inflight is capped per client, sessions expire (MaxSessionExpiry)
	// and devices cannot retain messages (their retain flag is cleared).
	c.MaximumMessageExpiryInterval = 0
	c.MaximumClientWritesPending = int32(min(o.WriteQueue, math.MaxInt32))
	c.MaximumSessionExpiryInterval = uint32(o.MaxSessionExpiry / time.Second)
	c.MaximumPacketSize = uint32(o.MaxPacketSize)
	c.ReceiveMaximum = uint16(o.ReceiveMaximum)
	c.MaximumInflight = uint16(o.MaxInflight)
	// Inbound topic aliases are stored per client: a small table bounds
	// that memory (mochi's default is 65535 entries).
	c.TopicAliasMaximum = 16
	// Devices may not use shared subscriptions (the ACL refuses $share).
	c.SharedSubAvailable = 0
	c.MinimumProtocolVersion = 4 // MQTT 3.1.1 and 5
	c.MaximumQos = 2
	c.RetainAvailable = 1 // the hub retains twin and config messages
	c.WildcardSubAvailable = 1
	c.SubIDAvailable = 1
	return c
}

// Broker is the embedded MQTT broker. Create it with New and serve with Run.
type Broker struct {
	opts   Options
	deps   Deps
	log    *slog.Logger
	server *mqtt.Server
	hook   *hook // the only hook: serve.go calls it where mochi's attachClient would
	// willClient publishes the wills of devices (an inline client: no
	// ACL), as mochi's sendLWT does with its own.
	willClient *mqtt.Client
	tlsCfg     *tls.Config
	m          *metrics

	// mochi reaches the fields of mochi the broker needs to hold the
	// devices' subscriptions and write to them itself; nil: mochi holds
	// them and runs its write loop per subscribed client (writer.go).
	mochi       *mochiAccess
	writers     atomic.Int64   // running writers (or mochi write loops)
	writersWg   sync.WaitGroup // writers and mochi write loops
	writersQuit chan struct{}  // closed once every connection ended (shutdown)
	deepReaders *deepReaders   // run connections' deep reads (serve.go); end with writersQuit

	// starter is the PublishHandler when the read loop takes a device's
	// QoS 1 publish in itself, and recvQuotaOff where mochi's receive
	// quota is (publish.go); nil: such a publish goes through mochi.
	starter      PublishStarter
	recvQuotaOff uintptr
	// reader reaches mochi's buffered reader of a client, which the
	// connection loop fills when it waits for input (serve.go); nil: it
	// reads one byte.
	reader *readerAccess

	ready   chan struct{}
	running atomic.Bool
	served  atomic.Bool  // mochi's Serve started the listeners
	closing atomic.Bool  // set when shutdown starts: disconnects are "shutdown"
	stopBy  atomic.Int64 // Unix ns: the end of the shutdown grace, set before closing

	// unsettled counts the QoS 1 publishes handed to the PublishStarter
	// whose outcome has not come (pubacks.go); once closing, the outcome
	// that brings it to zero sends a token on allSettled (1-buffered), on
	// which shutdown waits, up to the ShutdownGrace.
	unsettled  atomic.Int64
	allSettled chan struct{}
	addr       atomic.Value

	gens      atomic.Uint64 // last generation handed out
	connected atomic.Int64  // sessions for which Connected was called and Disconnected not yet

	conns sync.Map     // net.Conn → *session, from accept to the end of the connection
	open  atomic.Int64 // tracked connections (len of conns)
	failc chan error   // a listener stopped on its own (1-buffered)

	// Sampled logging of refused connections and accept errors: one line
	// per logEvery, with the count since the last line.
	refusedLog, acceptLog, unansweredLog sampler
	listeners                            []stoppable

	mu      sync.Mutex
	closed  bool                    // no new connections are tracked
	current map[string]uint64       // device id → generation of its newest connection
	devs    map[string]*deviceConns // device id → its connections (see deviceConns)
	wg      sync.WaitGroup          // connection goroutines
}

// deviceConns serializes the connections of one device. mochi's session
// takeover is not atomic: two CONNECTs of one client id racing through it
// can both end up alive, one of them outside mochi's client map. So the
// hook lets one connection of a device at a time from authentication to
// the moment its session is in mochi's client map (slot), and keeps its
// own set of the device's sessions, so that closing a device (revoke,
// disable, kick) finds every one of them, not only the one in the map.
// Guarded by Broker.mu, except slot.
type deviceConns struct {
	slot     chan struct{} // 1-buffered: held by the connection being established
	sessions []*session    // accepted sessions that have not ended (one, but for an instant; a slice is smaller than a map)
	waiters  int           // connections holding or waiting for slot
}

// session is what the broker knows of one network connection. Fields set
// in OnConnect are read-only once authed is true.
type session struct {
	conn       net.Conn
	client     atomic.Pointer[mqtt.Client]
	deviceID   string
	deviceType string
	gen        uint64
	remote     string

	authed      atomic.Bool // credentials accepted
	connected   atomic.Bool // Presence.Connected called
	done        atomic.Bool // Presence.Disconnected called
	kicked      atomic.Bool // the hub closed the connection
	superseded  atomic.Bool // a newer connection of the device was accepted
	slotHeld    atomic.Bool // holds its device's slot (see deviceConns)
	established atomic.Bool // CONNACK sent, session in mochi's client map
	takenOver   atomic.Bool // a newer connection took over its mochi session (inheritSession)

	out outbox // the device's subscriptions, what is queued for it and its writer (writer.go, own.go)

	acks    acks    // the hub's QoS 1 publishes to the device awaiting its PUBACK
	pubacks pubacks // the device's QoS 1 publishes awaiting their commit
}

// live reports whether the session may still act for its device: neither
// closed by the hub nor replaced by a newer connection. Its publishes and
// subscriptions are refused from the instant that changes.
func (s *session) live() bool { return !s.kicked.Load() && !s.superseded.Load() }

// New returns a broker. reg may be nil.
func New(opts Options, deps Deps, log *slog.Logger, reg prometheus.Registerer) (*Broker, error) {
	if deps.Authenticator == nil || deps.PublishHandler == nil || deps.Presence == nil {
		return nil, fmt.Errorf("broker: %w (Authenticator, PublishHandler and Presence are required)", ErrMissingDep)
	}
	if opts.Addr == "" && opts.TLSAddr == "" && opts.WSAddr == "" {
		return nil, fmt.Errorf("broker: %w", ErrNoListener)
	}
	if err := opts.check(); err != nil {
		return nil, fmt.Errorf("broker options: %w", err)
	}
	opts.setDefaults()
	b := &Broker{
		opts:        opts,
		deps:        deps,
		log:         log,
		ready:       make(chan struct{}),
		failc:       make(chan error, 1),
		current:     map[string]uint64{},
		devs:        map[string]*deviceConns{},
		writersQuit: make(chan struct{}),
		allSettled:  make(chan struct{}, 1),
	}
	b.deepReaders = newDeepReaders(b.writersQuit, (*clientConn).readPackets)
	if opts.TLSAddr != "" {
		cert, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("broker: load tls key pair: %w", err)
		}
		b.tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if opts.ClientCAFile != "" {
			if err := clientTLS(b.tlsCfg, opts.ClientCAFile); err != nil {
				return nil, fmt.Errorf("broker: %w", err)
			}
		}
	}
	b.server = mqtt.New(&mqtt.Options{
		Capabilities:             opts.capabilities(),
		ClientNetWriteBufferSize: opts.WriteBufferSize,
		ClientNetReadBufferSize:  opts.ReadBufferSize,
		Logger:                   slog.New(redactHandler{log.Handler()}).With("component", "mochi"),
		// $SYS topics are of no use to devices (the ACL hides them) and
		// each update reads the memory stats of the whole process.
		SysTopicResendInterval: 60,
		InlineClient:           true,
	})
	b.hook = &hook{b: b}
	b.willClient = b.server.NewClient(nil, "local", "devicehub-wills", true)
	if err := b.server.AddHook(b.hook, nil); err != nil {
		return nil, fmt.Errorf("broker: add hook: %w", err)
	}
	b.setupDelivery(opts.mochiWriteLoop)
	b.setupOwnPublish(opts.mochiPublish)
	b.setupReader(opts.byteWait)
	b.m = newMetrics(b, reg)
	return b, nil
}

// Ready is closed once the listeners are listening (never, if Run fails
// before).
func (b *Broker) Ready() <-chan struct{} { return b.ready }

// Addr is the address of the plain TCP listener once listening, "" before
// or without one.
func (b *Broker) Addr() string {
	s, _ := b.addr.Load().(string)
	return s
}

// ClientCount is the number of connected devices.
func (b *Broker) ClientCount() int { return int(b.connected.Load()) }

// Publish sends a message from the hub to devices through mochi's inline
// client: no ACL, no PublishHandler.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if err := b.server.Publish(topic, payload, retain, qos); err != nil {
		return fmt.Errorf("publish %s: %w", topic, err)
	}
	return nil
}

// Kick closes every connection of the device now, and refuses their
// publishes and subscriptions from this instant; presence hears of it
// with the reason events.ReasonKicked. reason is for the log. A caller
// that revokes a device's access changes what Active reports first, then
// kicks: a connection authenticated just before is either seen here or
// refused by its own check of Active (see OnConnect).
func (b *Broker) Kick(deviceID, reason string) {
	b.mu.Lock()
	var ss []*session
	if d := b.devs[deviceID]; d != nil {
		for _, s := range d.sessions {
			s.kicked.Store(true)
			ss = append(ss, s)
		}
	}
	b.mu.Unlock()
	if len(ss) == 0 {
		return
	}
	b.log.Info("kicking device", "device_id", deviceID, "reason", reason, "sessions", len(ss))
	for _, s := range ss {
		b.stopSession(s, packets.ErrAdministrativeAction)
	}
}

// Supersede closes the device's sessions older than gen: the device has a
// newer session on another cluster node. Their disconnects are stale for
// presence (see presence.Tracker.Superseded).
func (b *Broker) Supersede(deviceID string, gen uint64) {
	b.mu.Lock()
	var ss []*session
	if d := b.devs[deviceID]; d != nil {
		for _, s := range d.sessions {
			if s.gen < gen {
				s.kicked.Store(true)
				ss = append(ss, s)
			}
		}
	}
	b.mu.Unlock()
	for _, s := range ss {
		b.log.Info("session taken over on another node", "device_id", deviceID, "generation", s.gen, "newer", gen)
		b.stopSession(s, packets.ErrSessionTakenOver)
	}
}

// stopSession closes a session's connection, with a DISCONNECT carrying
// code for a v5 client that already has its CONNACK.
func (b *Broker) stopSession(s *session, code packets.Code) {
	cl := s.client.Load()
	if cl == nil {
		_ = s.conn.Close()
		return
	}
	if cl.Properties.ProtocolVersion == 5 && s.established.Load() {
		// The DISCONNECT is written synchronously: do not let a device
		// that stopped reading hold the caller.
		_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = b.server.DisconnectClient(cl, code)
	}
	cl.Stop(code) // 3.1.1 has no server DISCONNECT
}

// enterDevice waits (up to ConnectTimeout) until s may establish its
// session as the device's only one, marks every older session of the
// device superseded and records s as its newest. ok is false if the wait
// timed out.
func (b *Broker) enterDevice(s *session) bool {
	b.mu.Lock()
	d := b.devs[s.deviceID]
	if d == nil {
		d = &deviceConns{slot: make(chan struct{}, 1)}
		b.devs[s.deviceID] = d
	}
	d.waiters++
	b.mu.Unlock()
	t := time.NewTimer(b.opts.ConnectTimeout)
	defer t.Stop()
	select {
	case d.slot <- struct{}{}:
	case <-t.C:
		b.mu.Lock()
		d.waiters--
		b.dropDeviceLocked(s.deviceID, d)
		b.mu.Unlock()
		return false
	}
	s.slotHeld.Store(true)
	b.mu.Lock()
	for _, o := range d.sessions {
		o.superseded.Store(true)
		// mochi's takeover writes a DISCONNECT to the old session while
		// this one holds the slot: bound that write.
		_ = o.conn.SetWriteDeadline(time.Now().Add(time.Second))
	}
	d.sessions = append(d.sessions, s)
	b.current[s.deviceID] = s.gen
	b.mu.Unlock()
	return true
}

// releaseSlot lets the device's next connection in: s's session is in
// mochi's client map, or s ended.
func (b *Broker) releaseSlot(s *session) {
	if !s.slotHeld.CompareAndSwap(true, false) {
		return
	}
	b.mu.Lock()
	d := b.devs[s.deviceID]
	d.waiters--
	b.mu.Unlock()
	<-d.slot
}

// leaveDevice forgets an ended session.
func (b *Broker) leaveDevice(s *session) {
	b.releaseSlot(s)
	b.mu.Lock()
	if b.current[s.deviceID] == s.gen {
		delete(b.current, s.deviceID)
	}
	last := false
	if d := b.devs[s.deviceID]; d != nil {
		if i := slices.Index(d.sessions, s); i >= 0 {
			d.sessions = slices.Delete(d.sessions, i, i+1)
			b.dropDeviceLocked(s.deviceID, d)
			last = b.devs[s.deviceID] == nil
		}
	}
	b.mu.Unlock()
	if last && b.deps.DeviceGone != nil {
		b.deps.DeviceGone(s.deviceID)
	}
}

func (b *Broker) dropDeviceLocked(id string, d *deviceConns) {
	if len(d.sessions) == 0 && d.waiters == 0 {
		delete(b.devs, id)
	}
}

// Sessions is the number of sessions of the device that have not ended
// (at most one, except for an instant while one replaces another).
func (b *Broker) Sessions(deviceID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if d := b.devs[deviceID]; d != nil {
		return len(d.sessions)
	}
	return 0
}

// Run listens and serves until ctx is done, then closes the listeners and
// every connection (presence hears "shutdown" for each) and returns once
// all connection goroutines ended.
func (b *Broker) Run(ctx context.Context) error {
	if !b.running.CompareAndSwap(false, true) {
		return ErrAlreadyRunning
	}
	ls, err := b.listen()
	if err != nil {
		return err
	}
	b.listeners = ls
	for _, l := range ls {
		if err := b.server.AddListener(l); err != nil {
			b.shutdown()
			return fmt.Errorf("broker: add listener %s: %w", l.ID(), err)
		}
	}
	if err := b.server.Serve(); err != nil {
		b.shutdown()
		return fmt.Errorf("broker: serve: %w", err)
	}
	b.served.Store(true)
	b.writersWg.Add(1)
	go func() {
		defer b.writersWg.Done()
		b.watchPubacks(b.writersQuit)
	}()
	close(b.ready)
	b.log.Info("mqtt broker listening", "addr", b.Addr(), "tls_addr", b.opts.TLSAddr, "ws_addr", b.opts.WSAddr,
		"max_connections", b.opts.MaxConnections)
	select {
	case <-ctx.Done():
	case err = <-b.failc:
		b.log.Error("mqtt listener failed, stopping the broker", "err", err)
	}
	b.shutdown()
	b.log.Info("mqtt broker stopped")
	return err
}

// fail ends Run with err: a listener stopped on its own.
func (b *Broker) fail(err error) {
	select {
	case b.failc <- err:
	default: // Run already has one
	}
}

// acceptFailed counts and logs (sampled) a temporary accept error.
func (b *Broker) acceptFailed(listener string, err error, wait time.Duration) {
	b.m.acceptErrors.WithLabelValues(listener).Inc()
	if n, ok := b.acceptLog.tick(); ok {
		b.log.Warn("mqtt accept failed, retrying", "listener", listener, "err", err, "retry_in", wait,
			"open_connections", b.open.Load(), "errors_since_last_log", n)
	}
}

// shutdown stops the listeners, closes every connection and waits for
// their goroutines, then for the outcomes of the publishes taken in, up to
// the ShutdownGrace, and only then closes mochi's server: mochi's Close
// waits on a WaitGroup that each connection goroutine adds to itself, so
// it must not run while a connection can still start.
func (b *Broker) shutdown() {
	b.stopBy.Store(time.Now().Add(b.opts.ShutdownGrace).UnixNano())
	b.closing.Store(true)
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	for _, l := range b.listeners {
		l.stop()
	}
	b.conns.Range(func(_, v any) bool {
		s := v.(*session)
		// A read loop waiting for the commit path (a full queue) gives
		// up, so that its connection can end.
		s.pubacks.end()
		cl := s.client.Load()
		switch {
		case cl == nil:
			_ = s.conn.Close()
		case cl.Properties.ProtocolVersion == 5:
			_ = s.conn.SetWriteDeadline(time.Now().Add(time.Second))
			_ = b.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
		default:
			cl.Stop(packets.ErrServerShuttingDown)
		}
		return true
	})
	b.wg.Wait()
	if n := b.waitSettled(); n > 0 {
		b.log.Warn("mqtt shutdown: QoS 1 publishes whose commit did not end within the shutdown grace abandoned, not acknowledged (the devices send them again)",
			"publishes", n, "shutdown_grace", b.opts.ShutdownGrace)
	}
	close(b.writersQuit)
	b.writersWg.Wait()
	b.deepReaders.wait()
	if b.served.Load() {
		_ = b.server.Close()
	}
}

// waitSettled waits until every publish taken in has its outcome, or the
// shutdown grace ended, and returns how many have none. Every connection
// has ended: the count only goes down.
func (b *Broker) waitSettled() int64 {
	if b.unsettled.Load() == 0 {
		return 0
	}
	timer := time.NewTimer(time.Until(time.Unix(0, b.stopBy.Load())))
	defer timer.Stop()
	for {
		if n := b.unsettled.Load(); n == 0 {
			return 0
		}
		select {
		case <-b.allSettled:
		case <-timer.C:
			return b.unsettled.Load()
		}
	}
}

// listen opens the configured listeners.
func (b *Broker) listen() ([]stoppable, error) {
	var out []stoppable
	fail := func(err error) ([]stoppable, error) {
		for _, l := range out {
			l.stop()
		}
		return nil, err
	}
	if b.opts.Addr != "" {
		ln, err := net.Listen("tcp", b.opts.Addr)
		if err != nil {
			return fail(fmt.Errorf("broker: listen %s: %w", b.opts.Addr, err))
		}
		b.addr.Store(ln.Addr().String())
		out = append(out, newNetListener("tcp", "tcp", ln, b))
	}
	if b.opts.TLSAddr != "" {
		ln, err := tls.Listen("tcp", b.opts.TLSAddr, b.tlsCfg)
		if err != nil {
			return fail(fmt.Errorf("broker: listen tls %s: %w", b.opts.TLSAddr, err))
		}
		out = append(out, newNetListener("tls", "tcp+tls", ln, b))
	}
	if b.opts.WSAddr != "" {
		out = append(out, &wsListener{
			Listener: listeners.NewWebsocket(listeners.Config{Type: listeners.TypeWS, ID: "ws", Address: b.opts.WSAddr}),
			b:        b,
			done:     make(chan struct{}),
		})
	}
	return out, nil
}

// track registers a new connection; false once the broker is closing.
func (b *Broker) track(c net.Conn) (*session, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, false
	}
	if max := b.opts.MaxConnections; max > 0 && b.open.Load() >= int64(max) {
		b.m.refused.WithLabelValues("connection_limit").Inc()
		if n, ok := b.refusedLog.tick(); ok {
			b.log.Warn("mqtt connection refused: connection limit reached", "max_connections", max,
				"remote", c.RemoteAddr().String(), "refused_since_last_log", n)
		}
		return nil, false
	}
	b.open.Add(1)
	s := &session{conn: c}
	s.out.acks = &s.pubacks
	b.conns.Store(c, s)
	b.wg.Add(1)
	return s, true
}

// serveConn serves one tracked connection in place of mochi's
// EstablishConnection (see serve.go): it establishes the session on the
// caller's goroutine, then serves the connection on a goroutine of its own
// (detach) or on the caller's, and ends it with connEnded.
func (b *Broker) serveConn(listenerID string, s *session, detach bool) {
	b.serveConnBy(listenerID, s, detach, time.Now().Add(b.opts.ConnectTimeout))
}

// serveConnBy is serveConn with the connection's CONNECT due by deadline.
func (b *Broker) serveConnBy(listenerID string, s *session, detach bool, deadline time.Time) {
	start := time.Now()
	_ = s.conn.SetDeadline(deadline)
	c, err := b.startClient(listenerID, s)
	if err != nil {
		b.unanswered(listenerID, s, err, time.Since(start))
		b.connEnded(c, err)
		return
	}
	if detach {
		go c.serve()
		return
	}
	c.serve()
}

// unanswered counts a connection that ended before its CONNECT was
// answered, other than by a refusal (which has its CONNACK, its count and
// its log line in refuse): the client sent no CONNECT within
// ConnectTimeout, or the hub did not read it in time (connect_timeout,
// logged: a device that gets no CONNACK sees only a closed connection),
// or the connection closed or failed first (closed_before_connack: health
// checks that only open a TCP connection end so, logged at debug level).
func (b *Broker) unanswered(listenerID string, s *session, err error, waited time.Duration) {
	var code packets.Code
	if errors.As(err, &code) {
		return
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		b.m.connects.WithLabelValues("closed_before_connack").Inc()
		return
	}
	b.m.connects.WithLabelValues("connect_timeout").Inc()
	if n, ok := b.unansweredLog.tick(); ok {
		b.log.Warn("mqtt connection closed: no CONNECT answered within the connect timeout", "listener", listenerID,
			"remote", s.conn.RemoteAddr().String(), "waited", waited.Round(time.Millisecond), "connect_timeout", b.opts.ConnectTimeout,
			"err", err, "closed_since_last_log", n)
	}
}

// connEnded is the end of a connection: mochi's own (the client stopped,
// its counts) and the broker's, making sure presence hears of it even on
// the paths where no OnDisconnect is called (a failed CONNACK write or
// inflight resend).
func (b *Broker) connEnded(c *clientConn, err error) {
	s := c.s
	if c.counted {
		atomic.AddInt64(&b.server.Info.ClientsConnected, -1)
	}
	c.cl.Stop(nil)
	s.out.end()
	s.pubacks.end()
	b.server.Listeners.ClientsWg.Done()
	b.disconnected(s, b.reasonFor(s, nil, err))
	b.conns.Delete(s.conn)
	_ = s.conn.Close()
	b.open.Add(-1)
	if s.authed.Load() {
		b.leaveDevice(s)
	}
	if err != nil {
		b.log.Debug("mqtt connection ended", "listener", c.listener, "remote", s.conn.RemoteAddr().String(), "err", err)
	}
	b.wg.Done()
}

func (b *Broker) sessionOf(cl *mqtt.Client) *session {
	c := cl.Net.Conn
	if c == nil {
		return nil
	}
	if pc, ok := c.(*peekConn); ok {
		c = pc.Conn
	}
	v, ok := b.conns.Load(c)
	if !ok {
		return nil
	}
	return v.(*session)
}

// isCurrent reports whether gen is the device's newest connection.
func (b *Broker) isCurrent(deviceID string, gen uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.current[deviceID] == gen
}

// presenceTimeout bounds the presence calls made from mochi's hooks (they
// may wait for a commit).
const presenceTimeout = 10 * time.Second

type reason struct {
	name  string
	cause error
}

// disconnected tells presence once that s ended.
func (b *Broker) disconnected(s *session, r reason) {
	if !s.connected.Load() || !s.done.CompareAndSwap(false, true) {
		return
	}
	b.connected.Add(-1)
	b.m.disconnects.WithLabelValues(r.name).Inc()
	deadline := time.Now().Add(presenceTimeout)
	if b.closing.Load() {
		// Within the shutdown grace: a store that stopped answering
		// must not hold every connection's end for presenceTimeout.
		deadline = time.Unix(0, b.stopBy.Load())
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	b.deps.Presence.Disconnected(ctx, s.deviceID, s.gen, r.name, r.cause)
}

// logEvery is how often a sampled log line may repeat.
const logEvery = 10 * time.Second

// sampler lets one log line through per logEvery and counts the rest.
type sampler struct {
	mu    sync.Mutex
	last  time.Time
	count int
}

// tick counts an occurrence; ok says whether to log it now, n how many
// occurrences the line stands for.
func (s *sampler) tick() (n int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	if now := time.Now(); now.Sub(s.last) >= logEvery {
		s.last, n, s.count = now, s.count, 0
		return n, true
	}
	return 0, false
}
