// Package extbroker connects a hub node to an external MQTT v5 broker
// (EMQX, HiveMQ, Mosquitto) instead of the embedded one: the node
// subscribes to the device-to-hub topics with a shared subscription
// ($share/<group>/devices/+/...), so that the nodes of one hub share the
// devices' traffic, and publishes what goes to devices (commands, desired
// properties, configuration and firmware notices, errors) to the broker.
//
// What a message's acknowledgement means here (docs/CLUSTER.md): the
// device's PUBACK comes from the broker, when the broker has the message;
// the node's PUBACK to the broker comes only after the Handler returned
// nil, that is after the message was committed (or refused for good and
// the refusal recorded). The node's session is persistent (clean start
// false, a session expiry), so a message the node never acknowledged (it
// stopped or died first) stays with the broker and comes again when the
// node's session reconnects; the hub's msg_id idempotence stores such a
// redelivered reading once.
//
// Flow and order: paho hands every PUBLISH to one goroutine, which puts
// it on the queue of one of Options.Workers workers, chosen by device id,
// so that one device's messages are handled in the order the broker sent
// them while many devices are handled at once. Acknowledgements go back
// in the order the messages came (paho's manual acknowledgement buffers a
// later one until the earlier ones are done, as MQTT requires). A full
// worker queue blocks the reading goroutine, and Options.ReceiveMaximum
// bounds what the broker sends before acknowledgements: the broker, not
// the node's memory, holds the backlog.
//
// A Handler error (the store is unavailable) is not acknowledged and not
// dropped: the worker tries the same message again, with a growing pause,
// until it succeeds or the client stops.
package extbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/registry"
)

// ErrQueueFull is returned by Publish when the outbound queue is full.
var ErrQueueFull = errors.New("external broker: outbound queue full")

// Topics are the device-to-hub topic filters the node subscribes to
// (docs/ARCHITECTURE.md, device protocol), each under
// $share/<group>/. Chunks of a data message are published under the
// message's own topic followed by chunks/{chunk_id}/{index}/{count}.
var Topics = []string{
	"devices/+/data",
	"devices/+/data/+",
	"devices/+/data/chunks/+/+/+",
	"devices/+/data/+/chunks/+/+/+",
	"devices/+/status",
	"devices/+/heartbeat",
	"devices/+/commands/+/result",
	"devices/+/twin/reported",
	"devices/+/config/status",
	"devices/+/firmware/status",
}

// Message is one device message as the broker delivered it.
type Message struct {
	DeviceID    string // from the topic: the broker's ACL keeps devices to their own prefix
	Topic       string
	Payload     []byte
	QoS         byte
	ContentType string
	// Redelivered is the broker's DUP flag: it may have been sent before
	// (to this node or, for a shared subscription, to another).
	Redelivered bool
	Received    time.Time
}

// Handler takes in one device message. nil means done: stored, or
// refused for good with the refusal recorded; the message is then
// acknowledged. An error means nothing was stored: the message is tried
// again and acknowledged only once the Handler returns nil.
type Handler func(ctx context.Context, m *Message) error

// Options configure the client. Zero values take the defaults.
type Options struct {
	URL        string // mqtt://host:port, mqtts://host:port, ...
	TLS        *tls.Config
	ClientID   string
	Username   string
	Password   string
	ShareGroup string // default "devicehub"
	// SessionExpiry is how long the broker keeps the node's session while
	// it is away (default 1h).
	SessionExpiry  time.Duration
	Workers        int           // default 64
	ReceiveMaximum int           // default 1024
	KeepAlive      time.Duration // default 30s
	// PublishQueue bounds the messages to devices waiting to be sent
	// (default 8192); Publish refuses more with ErrQueueFull.
	PublishQueue int
	// Delivered, if set, is called when the broker acknowledged a QoS 1
	// message to a device (the broker has it; whether the device got it
	// is not known to the node).
	Delivered func(deviceID, topic string)
	// RetryMin and RetryMax bound the pause before a message whose
	// Handler failed is tried again (defaults 100ms and 5s).
	RetryMin, RetryMax time.Duration
	// StopGrace bounds how long Run, once its context is done, lets the
	// workers finish the messages in hand (default 10s).
	StopGrace time.Duration
}

func (o *Options) setDefaults() {
	if o.ShareGroup == "" {
		o.ShareGroup = "devicehub"
	}
	if o.SessionExpiry <= 0 {
		o.SessionExpiry = time.Hour
	}
	if o.Workers <= 0 {
		o.Workers = 64
	}
	if o.ReceiveMaximum <= 0 || o.ReceiveMaximum > 65535 {
		o.ReceiveMaximum = 1024
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.PublishQueue <= 0 {
		o.PublishQueue = 8192
	}
	if o.StopGrace <= 0 {
		o.StopGrace = 10 * time.Second
	}
	if o.RetryMin <= 0 {
		o.RetryMin = 100 * time.Millisecond
	}
	if o.RetryMax < o.RetryMin {
		o.RetryMax = max(5*time.Second, o.RetryMin)
	}
}

// publishers is the number of goroutines sending to devices; one
// device's messages always go through the same one, in order (a retained
// desired-properties version must not overtake the next).
const publishers = 4

// Client is a node's connection to the external broker. Run it; Publish
// is safe for concurrent use.
type Client struct {
	opts    Options
	url     *url.URL
	handler Handler
	log     *slog.Logger
	seed    maphash.Seed

	work  []chan job
	out   []chan outMsg
	ready chan struct{}
	once  sync.Once

	m *metrics
}

type job struct {
	msg Message
	pub *paho.Publish
	cli *paho.Client
}

type outMsg struct {
	deviceID, topic string
	payload         []byte
	retain          bool
	qos             byte
}

// New checks the options and returns a client; nothing connects until
// Run. reg may be nil.
func New(opts Options, h Handler, log *slog.Logger, reg prometheus.Registerer) (*Client, error) {
	opts.setDefaults()
	u, err := url.Parse(opts.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("external broker url %q: want mqtt://host:port", opts.URL)
	}
	if opts.ClientID == "" {
		return nil, errors.New("external broker: client id required")
	}
	if strings.ContainsAny(opts.ShareGroup, "/+#") {
		return nil, fmt.Errorf("external broker: share group %q must not contain '/', '+' or '#'", opts.ShareGroup)
	}
	c := &Client{
		opts: opts, url: u, handler: h, log: log, seed: maphash.MakeSeed(),
		ready: make(chan struct{}),
		m:     newMetrics(reg),
	}
	c.work = make([]chan job, opts.Workers)
	per := max(opts.ReceiveMaximum/opts.Workers, 4)
	for i := range c.work {
		c.work[i] = make(chan job, per)
	}
	c.out = make([]chan outMsg, publishers)
	for i := range c.out {
		c.out[i] = make(chan outMsg, max(opts.PublishQueue/publishers, 1))
	}
	return c, nil
}

// Ready is closed once the node is connected and subscribed for the first
// time.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Filters returns the subscription filters: Topics under
// $share/<group>/.
func (c *Client) Filters() []string {
	fs := make([]string, len(Topics))
	for i, t := range Topics {
		fs[i] = "$share/" + c.opts.ShareGroup + "/" + t
	}
	return fs
}

// Run connects (and reconnects) until ctx is done. The messages being
// handled when ctx ends are finished (the hub's committer still runs at
// that point) and acknowledged if the connection still is up; those
// not acknowledged come again at the next start.
func (c *Client) Run(ctx context.Context) error {
	connCtx, stopConn := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConn()
	var (
		cm  *autopaho.ConnectionManager
		err error
		wg  sync.WaitGroup
	)
	// Workers finish the message in hand with a context that outlives
	// ctx by a bounded grace, so that what is committed is acknowledged.
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	for i := range c.work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.worker(ctx, workCtx, c.work[i])
		}()
	}
	pubCtx, stopPub := context.WithCancel(ctx)
	defer stopPub()
	var cmReady = make(chan struct{})
	for i := range c.out {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-cmReady:
			case <-pubCtx.Done():
				return
			}
			c.publisher(pubCtx, cm, c.out[i])
		}()
	}

	expiry := uint32(c.opts.SessionExpiry / time.Second)
	recvMax := uint16(c.opts.ReceiveMaximum)
	cfg := autopaho.ClientConfig{
		ServerUrls:                    []*url.URL{c.url},
		TlsCfg:                        c.opts.TLS,
		KeepAlive:                     uint16(c.opts.KeepAlive / time.Second),
		CleanStartOnInitialConnection: false,
		SessionExpiryInterval:         expiry,
		ReconnectBackoff:              autopaho.NewExponentialBackoff(200*time.Millisecond, 10*time.Second, 2*time.Second, 2),
		ConnectTimeout:                10 * time.Second,
		ConnectUsername:               c.opts.Username,
		ConnectPassword:               []byte(c.opts.Password),
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.SessionExpiryInterval = &expiry
			cp.Properties.ReceiveMaximum = &recvMax
			return cp, nil
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
			c.m.up.Set(1)
			c.m.connects.Inc()
			c.log.Info("external broker connected", "url", c.url.Redacted(), "client_id", c.opts.ClientID, "session_present", ca.SessionPresent)
			// A present session has the subscriptions, and the broker
			// sends what it queued for it at once: the node is ready, and
			// the SUBACK of a new SUBSCRIBE would wait behind that
			// backlog. Subscribing again is harmless and covers a change
			// of the filters or share group since the session was made.
			if ca.SessionPresent {
				c.once.Do(func() { close(c.ready) })
			}
			go c.subscribe(connCtx, cm)
		},
		OnConnectionDown: func() bool {
			c.m.up.Set(0)
			c.log.Warn("external broker connection lost", "url", c.url.Redacted())
			return true
		},
		OnConnectError: func(err error) {
			c.log.Warn("external broker connect", "url", c.url.Redacted(), "err", err)
		},
		ClientConfig: paho.ClientConfig{
			ClientID:                   c.opts.ClientID,
			EnableManualAcknowledgment: true,
			SendAcksInterval:           5 * time.Millisecond,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
				c.received(ctx, pr)
				return true, nil
			}},
			OnClientError: func(err error) { c.log.Debug("external broker client", "err", err) },
			OnServerDisconnect: func(d *paho.Disconnect) {
				c.log.Warn("external broker disconnected the node", "reason_code", d.ReasonCode)
			},
		},
	}
	cm, err = autopaho.NewConnection(connCtx, cfg)
	if err != nil {
		stopWork()
		stopPub()
		wg.Wait()
		return fmt.Errorf("external broker: %w", err)
	}
	close(cmReady)
	<-ctx.Done()
	stopPub()
	// Let the workers finish what they hold (bounded), then give paho's
	// acknowledgement loop a moment to send their PUBACKs.
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(c.opts.StopGrace):
		stopWork()
		<-done
	}
	dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	flushAcks(dctx)
	_ = cm.Disconnect(dctx)
	stopConn()
	<-cm.Done()
	c.m.up.Set(0)
	return nil
}

// flushAcks waits a few of paho's acknowledgement intervals (5 ms): the
// acknowledgements of the last messages are sent by paho's own loop, and
// Disconnect does not flush them. An acknowledgement lost here only
// means a redelivery, which msg_id idempotence absorbs.
func flushAcks(ctx context.Context) {
	t := time.NewTimer(25 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// subscribe makes the shared subscriptions, retrying until they are
// granted or the connection ends.
func (c *Client) subscribe(ctx context.Context, cm *autopaho.ConnectionManager) {
	subs := make([]paho.SubscribeOptions, 0, len(Topics))
	for _, f := range c.Filters() {
		subs = append(subs, paho.SubscribeOptions{Topic: f, QoS: 1})
	}
	backoff := 200 * time.Millisecond
	for {
		// The SUBACK may come after a backlog the broker sends first.
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		sa, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: subs})
		cancel()
		if err == nil {
			bad := ""
			for i, rc := range sa.Reasons {
				if rc >= 0x80 && i < len(subs) {
					bad = fmt.Sprintf("%s (reason code 0x%02x)", subs[i].Topic, rc)
					break
				}
			}
			if bad == "" {
				c.log.Info("external broker subscribed", "filters", len(subs), "share_group", c.opts.ShareGroup)
				c.once.Do(func() { close(c.ready) })
				return
			}
			err = fmt.Errorf("subscription refused: %s", bad)
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Error("external broker subscribe", "err", err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// received runs on paho's one routing goroutine: it puts the message on
// its device's worker queue, waiting while that queue is full.
func (c *Client) received(ctx context.Context, pr paho.PublishReceived) {
	p := pr.Packet
	id, ok := registry.DeviceIDFromTopic(p.Topic)
	if !ok {
		// Not a device topic the filters allow: cannot happen with the
		// filters above; acknowledge so that it does not block the rest.
		c.m.badTopic.Inc()
		c.log.Warn("external broker message on an unexpected topic", "topic", p.Topic)
		_ = pr.Client.Ack(p)
		return
	}
	m := Message{DeviceID: id, Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Redelivered: p.Duplicate(), Received: time.Now().UTC()}
	if p.Properties != nil {
		m.ContentType = p.Properties.ContentType
	}
	w := c.work[maphash.String(c.seed, id)%uint64(len(c.work))]
	select {
	case w <- job{msg: m, pub: p, cli: pr.Client}:
	case <-ctx.Done():
		// Stopping: not acknowledged, the broker keeps it for the session.
	}
}

// worker handles its queue's messages one at a time, in order, until ctx
// (the client's) is done; the message in hand is finished with workCtx.
func (c *Client) worker(ctx, workCtx context.Context, q chan job) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-q:
			if c.handle(workCtx, &j) {
				if err := j.cli.Ack(j.pub); err != nil {
					// The connection it came on is gone: the broker sends
					// it again on the next one.
					c.log.Debug("external broker ack", "topic", j.msg.Topic, "err", err)
				}
				c.m.acked.Inc()
			}
		}
	}
}

// handle calls the Handler until it succeeds; false when ctx ended first.
func (c *Client) handle(ctx context.Context, j *job) bool {
	wait := c.opts.RetryMin
	for {
		err := c.handler(ctx, &j.msg)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		c.m.retried.Inc()
		c.log.Warn("device message not stored, trying again", "device_id", j.msg.DeviceID, "topic", j.msg.Topic, "in", wait, "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
		wait = min(wait*2, c.opts.RetryMax)
	}
}

// Publish queues a message to a device (topic devices/{id}/...). It does
// not wait for the broker: a full queue is refused with ErrQueueFull, and
// a message that cannot be sent (the broker is unreachable for longer
// than the send timeout) is dropped and counted; the hub resends
// commands that were not acknowledged and republishes retained state at
// its start.
func (c *Client) Publish(topic string, payload []byte, retain bool, qos byte) error {
	id, _ := registry.DeviceIDFromTopic(topic)
	o := outMsg{deviceID: id, topic: topic, payload: payload, retain: retain, qos: min(qos, 1)}
	select {
	case c.out[maphash.String(c.seed, id)%publishers] <- o:
		return nil
	default:
		c.m.published.WithLabelValues("queue_full").Inc()
		return fmt.Errorf("publish %s: %w", topic, ErrQueueFull)
	}
}

// publishTimeout bounds the wait for a connection and the broker's PUBACK.
const publishTimeout = 10 * time.Second

func (c *Client) publisher(ctx context.Context, cm *autopaho.ConnectionManager, q chan outMsg) {
	for {
		var o outMsg
		select {
		case <-ctx.Done():
			return
		case o = <-q:
		}
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		err := cm.AwaitConnection(pctx)
		if err == nil {
			_, err = cm.Publish(pctx, &paho.Publish{Topic: o.topic, Payload: o.payload, QoS: o.qos, Retain: o.retain})
		}
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.m.published.WithLabelValues("failed").Inc()
			c.log.Warn("publish to device through external broker", "topic", o.topic, "err", err)
			continue
		}
		c.m.published.WithLabelValues("ok").Inc()
		if o.qos > 0 && c.opts.Delivered != nil && o.deviceID != "" {
			c.opts.Delivered(o.deviceID, o.topic)
		}
	}
}

type metrics struct {
	up                       prometheus.Gauge
	connects, acked, retried prometheus.Counter
	badTopic                 prometheus.Counter
	published                *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		up: prometheus.NewGauge(prometheus.GaugeOpts{Name: "devicehub_extbroker_connected",
			Help: "1 while the node is connected to the external MQTT broker."}),
		connects: prometheus.NewCounter(prometheus.CounterOpts{Name: "devicehub_extbroker_connects_total",
			Help: "Connections made to the external MQTT broker."}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{Name: "devicehub_extbroker_messages_acked_total",
			Help: "Device messages handled (stored or refused for good) and acknowledged to the external broker."}),
		retried: prometheus.NewCounter(prometheus.CounterOpts{Name: "devicehub_extbroker_message_retries_total",
			Help: "Device messages tried again because nothing could be stored."}),
		badTopic: prometheus.NewCounter(prometheus.CounterOpts{Name: "devicehub_extbroker_unexpected_topic_total",
			Help: "Messages from the external broker on a topic that is not a device topic (acknowledged, dropped)."}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "devicehub_extbroker_published_total",
			Help: "Messages to devices published to the external broker, by outcome (ok, failed, queue_full)."}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.up, m.connects, m.acked, m.retried, m.badTopic, m.published)
	}
	return m
}
