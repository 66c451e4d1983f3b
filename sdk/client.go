package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
)

// Client is a device's connection to the hub: a local store-and-forward
// database drained in the background over MQTT v5. Create it with Start and
// end it with Close. All its methods are safe for concurrent use.
type Client struct {
	opts  Options
	log   *slog.Logger
	st    *store
	creds Credentials

	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool

	wake    chan struct{} // one slot: the outbox has something new, or a connection came up
	inWake  chan struct{} // one slot: an inbound message was stored
	cfgWake chan struct{} // one slot: a configuration notice was stored

	msgPrefix  string
	msgCounter atomic.Uint64

	mu           sync.Mutex
	progress     chan struct{} // closed and replaced when the outbox moved
	doneThrough  uint64        // every entry with a sequence number up to this one is finished
	lastSeq      uint64        // the last sequence number given
	pending      int64         // messages in the outbox (a chunked one counts once)
	pendingRepd  int64         // of which reported properties patches
	rejections   map[uint64]*Error
	rejectOrder  []uint64
	fatal        *Error // the client stopped for good (revoked credentials)
	desired      DesiredProperties
	desiredKnown bool

	stats struct {
		sent, acked, rejected, reconnects atomic.Int64
		connected                         atomic.Bool
	}
	gen atomic.Uint64 // connection generation, increased by each connection

	// Firmware updates (firmware.go): fwWake has one slot; fwRunning and
	// fwStop name the download running (under mu), fwCanceled the rollout
	// the hub canceled.
	fwWake     chan struct{}
	fwHTTP     *http.Client
	fwRunning  string
	fwStop     context.CancelFunc
	fwCanceled string
	fwRetry    int // the firmware loop's failed downloads in a row

	connMu   sync.Mutex
	connDown chan struct{} // closed when the current connection goes down
}

// keepRejections bounds the rejections remembered for Send.
const keepRejections = 1024

// Start opens the local database and starts the client. If the database
// holds no valid credentials (and Options.Credentials is nil), it runs the
// provisioning flow first: it creates a provisioning operation with the
// token, shows it through OnProvisioning and waits, within ctx, for an
// operator's decision. With credentials, Start returns at once, even with
// no network: enqueued messages wait on disk.
//
// ctx bounds Start only; the client runs until Close.
func Start(ctx context.Context, opts Options) (*Client, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, newError(KindInvalidOptions, "start", err)
	}
	st, err := openStore(opts.DB)
	if err != nil {
		return nil, newError(KindStorage, "start", err)
	}
	c := &Client{
		opts:    opts,
		log:     opts.Logger,
		st:      st,
		wake:    make(chan struct{}, 1),
		inWake:  make(chan struct{}, 1),
		cfgWake: make(chan struct{}, 1),
		fwWake:  make(chan struct{}, 1),
		// Downloads may take longer than the API client's timeout.
		fwHTTP:     &http.Client{Transport: opts.HTTPClient.Transport},
		progress:   make(chan struct{}),
		rejections: map[uint64]*Error{},
		msgPrefix:  randomID(6),
	}
	ok := false
	defer func() {
		if !ok {
			st.close()
		}
	}()
	creds, err := c.credentials(ctx)
	if err != nil {
		return nil, err
	}
	c.creds = *creds
	c.log = c.log.With("device_id", creds.DeviceID)
	os, err := st.outboxState()
	if err != nil {
		return nil, newError(KindStorage, "start", err)
	}
	c.pending, c.pendingRepd, c.lastSeq = os.messages, os.reported, os.last
	c.doneThrough = os.last
	if os.first > 0 {
		c.doneThrough = os.first - 1
	}
	var d DesiredProperties
	if found, err := st.getJSON(keyDesired, &d); err != nil {
		return nil, newError(KindStorage, "start", err)
	} else if found {
		c.desired, c.desiredKnown = d, true
	}
	if _, err := c.mqttConfig(); err != nil {
		return nil, newError(KindInvalidOptions, "start", err)
	}

	var job fwJob
	hasJob, err := st.getJSON(keyFirmwareJob, &job)
	if err != nil {
		return nil, newError(KindStorage, "start", err)
	}
	booted := hasJob && job.Phase == fwInstalled

	runCtx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	if opts.OnFirmware != nil || opts.FirmwareVersion != "" || opts.HardwareVersion != "" {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.firmwareLoop(runCtx, booted)
		}()
	}
	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.run(runCtx)
	}()
	go func() {
		defer c.wg.Done()
		c.dispatch(runCtx)
	}()
	if opts.OnConfig != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.configs(runCtx)
		}()
	}
	ok = true
	c.log.Info("device client started", "pending", os.messages)
	return c, nil
}

// Close stops the background work and closes the local database. Messages
// not yet acknowledged stay in it for the next Start.
func (c *Client) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.cancel()
	c.wg.Wait()
	c.mu.Lock()
	close(c.progress)
	c.progress = make(chan struct{})
	c.mu.Unlock()
	if err := c.st.close(); err != nil {
		return newError(KindStorage, "close", err)
	}
	return nil
}

// DeviceID is the device's id (it may come from the operator's approval).
func (c *Client) DeviceID() string { return c.creds.DeviceID }

// PendingMessages is the number of messages stored but not yet
// acknowledged by the hub (a message sent in chunks counts once).
func (c *Client) PendingMessages() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return int(c.pending)
}

// Err returns the error that stopped the client for good (revoked
// credentials), nil while it works.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fatal == nil {
		return nil
	}
	return c.fatal
}

// Stats are counters of a client since Start.
type Stats struct {
	Sent       int64 // MQTT publishes written
	Acked      int64 // messages the hub acknowledged
	Rejected   int64 // messages the hub refused for good
	Pending    int64 // messages waiting in the outbox
	Reconnects int64 // connections after the first
	Connected  bool
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	pending := c.pending
	c.mu.Unlock()
	rc := c.stats.reconnects.Load()
	return Stats{
		Sent: c.stats.sent.Load(), Acked: c.stats.acked.Load(), Rejected: c.stats.rejected.Load(),
		Pending: pending, Reconnects: rc, Connected: c.stats.connected.Load(),
	}
}

// WaitSent waits until every message enqueued before the call was
// acknowledged (or refused) by the hub.
func (c *Client) WaitSent(ctx context.Context) error {
	c.mu.Lock()
	target := c.lastSeq
	c.mu.Unlock()
	return c.waitSeq(ctx, target, "wait sent")
}

func (c *Client) waitSeq(ctx context.Context, seq uint64, op string) error {
	for {
		c.mu.Lock()
		done, ch, fatal := c.doneThrough >= seq, c.progress, c.fatal
		c.mu.Unlock()
		switch {
		case done:
			return nil
		case fatal != nil:
			return fatal
		case c.closed.Load():
			return newError(KindClosed, op, nil)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return newError(KindOther, op, ctx.Err())
		}
	}
}

// StreamSender returns a sender of messages to a stream: topic
// devices/{id}/data/{stream}, or devices/{id}/data for stream "".
func (c *Client) StreamSender(stream string, opts ...SenderOption) *StreamSender {
	s := &StreamSender{c: c, stream: stream, topic: "devices/" + c.creds.DeviceID + "/data"}
	if stream != "" {
		s.topic += "/" + stream
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// SenderOption configures a StreamSender.
type SenderOption func(*StreamSender)

// WithCompression compresses the sender's messages (when that makes them
// smaller).
func WithCompression(comp Compression) SenderOption {
	return func(s *StreamSender) { s.comp = comp }
}

// StreamSender sends messages to one stream.
type StreamSender struct {
	c      *Client
	stream string
	topic  string
	comp   Compression
}

// MessageOption sets something of one message.
type MessageOption func(*msgOpts)

type msgOpts struct{ id string }

// MessageID sets the message's msg_id (at most 128 characters). Without it
// the SDK uses the msg_id the payload carries, or generates one. Either way
// it is stored with the message, so that a resend after a crash is stored
// once by the hub.
func MessageID(id string) MessageOption { return func(o *msgOpts) { o.id = id } }

// Enqueue stores a message in the outbox and returns its msg_id once it is
// on disk (fsynced). payload is a JSON object of field → value or an array
// of them (a batch of readings), with an optional ts each. It is sent in
// the background, in order.
func (s *StreamSender) Enqueue(payload []byte, opts ...MessageOption) (string, error) {
	id, _, err := s.enqueue(payload, opts)
	return id, err
}

// EnqueueBatch stores many readings as one message (one msg_id, one
// PUBACK): readings are marshalled into a JSON array.
func (s *StreamSender) EnqueueBatch(readings []map[string]any, opts ...MessageOption) (string, error) {
	b, err := marshalJSON(readings)
	if err != nil {
		return "", newError(KindInvalidPayload, "enqueue", err)
	}
	return s.Enqueue(b, opts...)
}

// Send enqueues a message and waits until the hub acknowledged it (and
// every message enqueued before it). A message the hub refused returns its
// *Error (KindRejected, ...).
func (s *StreamSender) Send(ctx context.Context, payload []byte, opts ...MessageOption) (string, error) {
	id, seq, err := s.enqueue(payload, opts)
	if err != nil {
		return id, err
	}
	if err := s.c.waitSeq(ctx, seq, "send"); err != nil {
		return id, err
	}
	s.c.mu.Lock()
	rej := s.c.rejections[seq]
	s.c.mu.Unlock()
	if rej != nil {
		return id, rej
	}
	return id, nil
}

func (s *StreamSender) enqueue(payload []byte, opts []MessageOption) (string, uint64, error) {
	var o msgOpts
	for _, f := range opts {
		f(&o)
	}
	c := s.c
	p, id, err := withMsgID(payload, o.id, c.nextMsgID)
	if err != nil {
		return o.id, 0, &Error{Kind: KindInvalidPayload, Op: "enqueue", MessageID: o.id, Err: err}
	}
	p, ct := compress(s.comp, p)
	if len(p) > c.opts.MaxMessageBytes {
		return id, 0, &Error{Kind: KindMessageTooLarge, Op: "enqueue", MessageID: id,
			Err: fmt.Errorf("%d bytes: over the limit of %d", len(p), c.opts.MaxMessageBytes)}
	}
	e := entry{kind: kindData, topic: s.topic, contentType: ct, msgID: id, payload: p}
	seq, err := c.enqueueEntry(e)
	return id, seq, err
}

// nextMsgID generates a msg_id: a random prefix per Start and a counter.
func (c *Client) nextMsgID() string {
	return c.msgPrefix + "-" + strconv.FormatUint(c.msgCounter.Add(1), 10)
}

// enqueueEntry stores e (chunked if large) and wakes the sender. It returns
// the sequence number of its final entry.
func (c *Client) enqueueEntry(e entry) (uint64, error) {
	if err := c.Err(); err != nil {
		return 0, err
	}
	if c.closed.Load() {
		return 0, newError(KindClosed, "enqueue", nil)
	}
	es := []entry{e}
	if len(e.payload) > c.opts.ChunkSize {
		var err error
		if es, err = chunk(e, c.opts.ChunkSize); err != nil {
			return 0, &Error{Kind: KindMessageTooLarge, Op: "enqueue", MessageID: e.msgID, Err: err}
		}
	}
	if err := c.st.write(func(tx *bolt.Tx) error { return appendEntries(tx, es) }); err != nil {
		return 0, &Error{Kind: KindStorage, Op: "enqueue", MessageID: e.msgID, Err: err}
	}
	c.added(es)
	return es[len(es)-1].seq, nil
}

// added counts stored entries and wakes the sender.
func (c *Client) added(es []entry) {
	c.mu.Lock()
	c.pending++
	if es[0].kind == kindReported {
		c.pendingRepd++
	}
	c.lastSeq = max(c.lastSeq, es[len(es)-1].seq)
	c.mu.Unlock()
	c.poke()
}

func (c *Client) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// finished records that the message ending at entry e left the outbox,
// acknowledged (rej nil) or refused.
func (c *Client) finished(e entry, rej *Error) {
	c.mu.Lock()
	c.pending--
	if e.kind == kindReported {
		c.pendingRepd--
	}
	c.doneThrough = max(c.doneThrough, e.seq)
	if rej != nil {
		c.rejections[e.seq] = rej
		c.rejectOrder = append(c.rejectOrder, e.seq)
		if len(c.rejectOrder) > keepRejections {
			delete(c.rejections, c.rejectOrder[0])
			c.rejectOrder = c.rejectOrder[1:]
		}
	}
	close(c.progress)
	c.progress = make(chan struct{})
	c.mu.Unlock()
	if rej != nil {
		c.stats.rejected.Add(1)
		c.reportError(rej)
	} else {
		c.stats.acked.Add(1)
	}
}

func (c *Client) reportError(err *Error) {
	c.log.Warn("device client error", "err", err)
	if c.opts.OnError != nil {
		c.opts.OnError(err)
	}
}

// stop ends the client's work for good with err.
func (c *Client) stop(err *Error) {
	c.mu.Lock()
	first := c.fatal == nil
	if first {
		c.fatal = err
		close(c.progress)
		c.progress = make(chan struct{})
	}
	c.mu.Unlock()
	if first {
		c.reportError(err)
	}
}

var errNoHandler = errors.New("no command handler")
