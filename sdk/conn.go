package sdk

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	bolt "go.etcd.io/bbolt"
)

// MQTT v5 reason codes the sender tells apart.
const (
	rcNotAuthorized     = 0x87
	rcBadCredentials    = 0x86
	rcPacketTooLarge    = 0x95
	rcMessageRateTooHi  = 0x96
	rcQuotaExceeded     = 0x97
	rcServerBusy        = 0x89
	rcPayloadFormatBad  = 0x99
	rcTopicNameInvalid  = 0x90
	rcImplementationErr = 0x83
)

// backoff returns the wait before reconnect attempt n (1, 2, ...):
// exponential from MinBackoff up to MaxBackoff, with full jitter (a random
// wait between MinBackoff and the exponential bound), so that a fleet that
// lost its hub does not come back in lockstep.
func backoff(minD, maxD time.Duration, n int) time.Duration {
	if n <= 0 {
		return 0
	}
	hi := minD
	for i := 1; i < n && hi < maxD; i++ {
		hi *= 2
	}
	hi = min(hi, maxD)
	if hi <= minD {
		return minD
	}
	return minD + rand.N(hi-minD)
}

// receiveMaximum is the Receive Maximum the client announces: the QoS 1
// PUBLISHes the hub may have sent it unacknowledged at once.
const receiveMaximum = 32

func (c *Client) mqttConfig() (autopaho.ClientConfig, error) {
	u, err := c.opts.mqttURL()
	if err != nil {
		return autopaho.ClientConfig{}, err
	}
	minB, maxB := c.opts.MinBackoff, c.opts.MaxBackoff
	return autopaho.ClientConfig{
		ServerUrls: []*url.URL{u},
		TlsCfg:     c.opts.TLSConfig,
		KeepAlive:  uint16(min(c.opts.KeepAlive/time.Second, 65535)),
		// A clean session each time: the outbox, not the MQTT session,
		// holds what must be resent (autopaho's in-memory session would
		// resend on its own, and its file queue neither fsyncs nor keeps
		// order).
		CleanStartOnInitialConnection: true,
		SessionExpiryInterval:         0,
		ReconnectBackoff:              func(n int) time.Duration { return backoff(minB, maxB, n) },
		ConnectTimeout:                10 * time.Second,
		ConnectUsername:               c.creds.MQTTUsername,
		ConnectPassword:               []byte(c.creds.MQTTPassword),
		// paho sizes each connection's queue of incoming PUBLISHes by the
		// Receive Maximum the CONNECT announces, 65,535 pointers (512 KiB)
		// when it announces none; the hub sends a device few at a time
		// (commands, desired properties, firmware offers) and holds the
		// rest back until a PUBACK frees a slot.
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			rm := uint16(receiveMaximum)
			cp.Properties.ReceiveMaximum = &rm
			return cp, nil
		},
		ClientConfig: paho.ClientConfig{
			ClientID: c.creds.DeviceID,
			// Inbound messages are acknowledged only once stored.
			EnableManualAcknowledgment: true,
		},
	}, nil
}

// run keeps a connection to the hub and drains the outbox through it until
// ctx is done or the credentials are refused.
func (c *Client) run(ctx context.Context) {
	cfg, _ := c.mqttConfig() // checked by Start
	connCtx, stopConn := context.WithCancel(ctx)
	defer stopConn()
	cfg.OnConnectionUp = func(cm *autopaho.ConnectionManager, ca *paho.Connack) {
		// Publishes of this connection end when it goes down, not at paho's
		// packet timeout.
		c.connMu.Lock()
		c.connDown = make(chan struct{})
		c.connMu.Unlock()
		if c.gen.Add(1) > 1 {
			c.stats.reconnects.Add(1)
		}
		c.stats.connected.Store(true)
		c.log.Info("connected to the hub")
		c.poke()
	}
	cfg.OnConnectionDown = func() bool {
		c.connLost()
		c.stats.connected.Store(false)
		c.log.Info("connection to the hub lost")
		return c.Err() == nil
	}
	cfg.OnConnectError = func(err error) {
		var ce *autopaho.ConnackError
		if errors.As(err, &ce) && ce.ReasonCode == rcBadCredentials {
			c.revoked(ce)
			stopConn()
			return
		}
		c.log.Debug("connect to the hub failed", "err", err)
	}
	cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){c.received}
	cm, err := autopaho.NewConnection(connCtx, cfg)
	if err != nil {
		c.stop(newError(KindInvalidOptions, "connect", err))
		return
	}
	c.drain(connCtx, cm)
	stopConn()
	<-cm.Done()
	c.connLost()
}

// connLost ends the publishes of the connection that went down.
func (c *Client) connLost() {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if c.connDown != nil {
		close(c.connDown)
		c.connDown = nil
	}
}

// revoked stops the client: the hub no longer accepts its credentials.
func (c *Client) revoked(ce *autopaho.ConnackError) {
	err := &Error{Kind: KindCredentialsRevoked, Op: "connect", Reason: ce.Reason, Err: ce}
	if werr := c.st.putJSON(keyRevoked, true); werr != nil {
		c.log.Error("store credentials revoked", "err", werr)
	}
	c.stop(err)
}

// drain sends the outbox in order, one MQTT message in flight, and deletes
// each message only after its PUBACK. After any failure it starts again
// from the oldest message not deleted: a resend is stored once by the hub
// thanks to its msg_id. The chunks of a message are deleted together when
// the last one (which completes the message on the hub) is acknowledged,
// so a lost connection resends the whole message.
//
// A backlog of single-reading messages is sent in batches (see
// sendBatches); the order within each stream is kept.
func (c *Client) drain(ctx context.Context, cm *autopaho.ConnectionManager) {
	var (
		cursor    uint64 // last entry sent in this connection and kept (chunks)
		gen       uint64
		chunkSeqs []uint64
		failures  int
		noBatch   uint64 // send alone every entry up to this one (a batch was refused)
	)
	restart := func() {
		cursor, chunkSeqs = 0, nil
		failures++
		t := time.NewTimer(backoff(c.opts.MinBackoff, c.opts.MaxBackoff, failures))
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		}
	}
	for ctx.Err() == nil && c.Err() == nil {
		if err := cm.AwaitConnection(ctx); err != nil {
			return
		}
		if g := c.gen.Load(); g != gen {
			gen, cursor, chunkSeqs = g, 0, nil
			if err := c.subscribe(ctx, cm); err != nil {
				c.log.Warn("subscribe", "err", err)
				restart()
				gen = 0
				continue
			}
		}
		if !c.opts.DisableBatching && len(chunkSeqs) == 0 {
			run, err := c.st.run(cursor, maxBatchRun, maxBatchRunBytes, func(e *entry) bool { return e.seq > noBatch && batchable(e) })
			if err != nil {
				c.log.Error("read outbox", "err", err)
				restart()
				continue
			}
			if len(run) > 1 {
				switch c.sendBatches(ctx, cm, run) {
				case sentOK:
					failures = 0
					cursor = run[len(run)-1].seq
				case sentRefused:
					// Find the refused message: send them one by one.
					noBatch, cursor = run[len(run)-1].seq, 0
				default:
					restart()
				}
				continue
			}
		}
		e, ok, err := c.st.next(cursor)
		if err != nil {
			c.log.Error("read outbox", "err", err)
			restart()
			continue
		}
		if !ok {
			select {
			case <-c.wake:
			case <-ctx.Done():
			}
			continue
		}
		pr, err := c.publish(ctx, cm, e.topic, e.contentType, e.payload)
		switch {
		case err == nil:
			failures = 0
			if !e.final() {
				cursor = e.seq
				chunkSeqs = append(chunkSeqs, e.seq)
				continue
			}
			if err := c.remove(append(chunkSeqs, e.seq)); err != nil {
				restart()
				continue
			}
			cursor, chunkSeqs = e.seq, nil
			c.finished(e, nil)
		case pr != nil && transient(pr.ReasonCode):
			c.log.Debug("hub asks to slow down", "reason_code", pr.ReasonCode)
			restart()
		case pr != nil:
			failures = 0
			rej := rejection(e, pr)
			seqs := append(chunkSeqs, e.seq)
			// The rest of a refused chunked message goes too.
			for i := e.chunkIndex + 1; e.chunkCount > 0 && i < e.chunkCount; i++ {
				seqs = append(seqs, e.seq+uint64(i-e.chunkIndex))
			}
			if err := c.remove(seqs); err != nil {
				restart()
				continue
			}
			last := e
			last.seq = seqs[len(seqs)-1]
			cursor, chunkSeqs = last.seq, nil
			c.finished(last, rej)
		default:
			if ctx.Err() == nil {
				c.log.Debug("publish failed, resending from the oldest message", "err", err)
				restart()
			}
		}
	}
}

// publish sends one message at QoS 1 and waits for its PUBACK. err is nil
// for a PUBACK with a success reason code; pr is nil when no PUBACK came.
func (c *Client) publish(ctx context.Context, cm *autopaho.ConnectionManager, topic, contentType string, payload []byte) (*paho.PublishResponse, error) {
	c.connMu.Lock()
	down := c.connDown
	c.connMu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, c.opts.PublishTimeout)
	defer cancel()
	if down != nil {
		go func() {
			select {
			case <-down:
				cancel()
			case <-pctx.Done():
			}
		}()
	}
	c.stats.sent.Add(1)
	pr, err := cm.Publish(pctx, &paho.Publish{
		Topic: topic, QoS: 1, Payload: payload,
		Properties: &paho.PublishProperties{ContentType: contentType},
	})
	if pr != nil && pr.ReasonCode < 0x80 {
		err = nil
	}
	if pr != nil && err == nil && pr.ReasonCode >= 0x80 {
		err = fmt.Errorf("reason code %#x", pr.ReasonCode)
	}
	return pr, err
}

// Batching limits: the entries looked at for one round of batches.
const (
	maxBatchRun      = 512
	maxBatchRunBytes = 512 << 10
	contentTypeBatch = "application/vnd.devicehub.batch+json"
)

// batchable reports whether e may go in a batch: a plain JSON data message
// of one reading (a message that is an array is a batch of its own).
func batchable(e *entry) bool {
	return e.kind == kindData && e.chunkCount == 0 && e.contentType == contentTypeJSON && len(e.payload) > 0 && e.payload[0] == '{'
}

type sendOutcome int

const (
	sentOK      sendOutcome = iota
	sentRefused             // the hub refused a batch for good
	sentFailed              // no PUBACK, or the hub asked to slow down
)

// sendBatches sends run (consecutive batchable entries) as batches: per
// topic, in order, at most MaxBatchBytes each. Each message of a batch
// keeps its msg_id, so batches may be cut differently when resent. The
// run is deleted from the outbox once every batch is acknowledged.
func (c *Client) sendBatches(ctx context.Context, cm *autopaho.ConnectionManager, run []entry) sendOutcome {
	var topics []string
	byTopic := map[string][]*entry{}
	for i := range run {
		e := &run[i]
		if _, ok := byTopic[e.topic]; !ok {
			topics = append(topics, e.topic)
		}
		byTopic[e.topic] = append(byTopic[e.topic], e)
	}
	for _, topic := range topics {
		es := byTopic[topic]
		for len(es) > 0 {
			n, size := 0, 2
			for n < len(es) && (n == 0 || size+len(es[n].payload)+1 <= c.opts.MaxBatchBytes) {
				size += len(es[n].payload) + 1
				n++
			}
			var (
				payload = es[0].payload
				ct      = contentTypeJSON
			)
			if n > 1 {
				b := make([]byte, 0, size)
				b = append(b, '[')
				for i, e := range es[:n] {
					if i > 0 {
						b = append(b, ',')
					}
					b = append(b, e.payload...)
				}
				payload, ct = append(b, ']'), contentTypeBatch
			}
			pr, err := c.publish(ctx, cm, topic, ct, payload)
			switch {
			case err == nil:
			case pr != nil && !transient(pr.ReasonCode):
				c.log.Info("batch refused, sending its messages one by one", "messages", n, "reason_code", pr.ReasonCode)
				return sentRefused
			default:
				return sentFailed
			}
			es = es[n:]
		}
	}
	seqs := make([]uint64, len(run))
	for i := range run {
		seqs[i] = run[i].seq
	}
	if err := c.remove(seqs); err != nil {
		return sentFailed
	}
	for _, e := range run {
		c.finished(e, nil)
	}
	return sentOK
}

// remove deletes finished entries.
func (c *Client) remove(seqs []uint64) error {
	if err := c.st.write(func(tx *bolt.Tx) error { return deleteSeqs(tx, seqs) }); err != nil {
		c.log.Error("delete from outbox", "err", err)
		return err
	}
	return nil
}

// transient reports whether a refusal asks to send again later.
func transient(rc byte) bool {
	return rc == rcMessageRateTooHi || rc == rcQuotaExceeded || rc == rcServerBusy
}

// rejection is the error of a message the hub refused for good.
func rejection(e entry, pr *paho.PublishResponse) *Error {
	kind := KindRejected
	switch pr.ReasonCode {
	case rcPacketTooLarge:
		kind = KindMessageTooLarge
	case rcPayloadFormatBad:
		kind = KindInvalidPayload
	}
	reason := fmt.Sprintf("reason code %#x", pr.ReasonCode)
	if pr.Properties != nil && pr.Properties.ReasonString != "" {
		reason = pr.Properties.ReasonString
	}
	return &Error{Kind: kind, Op: "send", MessageID: e.msgID, Reason: reason}
}

// subscribe asks for the device's commands, desired properties and, with
// OnConfig, configuration notices.
func (c *Client) subscribe(ctx context.Context, cm *autopaho.ConnectionManager) error {
	prefix := "devices/" + c.creds.DeviceID + "/"
	sctx, cancel := context.WithTimeout(ctx, c.opts.PublishTimeout)
	defer cancel()
	subs := []paho.SubscribeOptions{
		{Topic: prefix + "commands/+", QoS: 1},
		{Topic: prefix + "twin/desired", QoS: 1},
	}
	if c.opts.OnConfig != nil {
		subs = append(subs, paho.SubscribeOptions{Topic: prefix + "config", QoS: 1})
	}
	if c.opts.OnFirmware != nil {
		subs = append(subs, paho.SubscribeOptions{Topic: prefix + "firmware", QoS: 1})
	}
	sa, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: subs})
	if err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	for i, rc := range sa.Reasons {
		if rc >= 0x80 {
			return fmt.Errorf("subscribe: refused filter %d with reason code %#x", i, rc)
		}
	}
	return nil
}

// received stores a command or desired properties, and acknowledges the
// message only once it is stored.
func (c *Client) received(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	rest, ok := strings.CutPrefix(p.Topic, "devices/"+c.creds.DeviceID+"/")
	if !ok {
		return false, c.ack(pr)
	}
	var err error
	switch {
	case rest == "twin/desired":
		err = c.storeDesired(p.Payload)
	case rest == "config" && c.opts.OnConfig != nil:
		err = c.storeConfigNotice(p.Payload)
	case rest == "firmware" && c.opts.OnFirmware != nil:
		err = c.storeFirmwareNotice(p.Payload)
	case strings.HasPrefix(rest, "commands/") && strings.Count(rest, "/") == 1:
		err = c.storeCommand(strings.TrimPrefix(rest, "commands/"), p.Topic, p.Payload)
	default:
		return false, c.ack(pr)
	}
	if err != nil {
		// Not acknowledged: with a clean session the hub's own record of
		// commands and the retained twin bring it back after a reconnect.
		c.log.Error("store inbound message", "topic", p.Topic, "err", err)
		return true, err
	}
	return true, c.ack(pr)
}

func (c *Client) ack(pr paho.PublishReceived) error {
	if pr.Packet.QoS == 0 {
		return nil
	}
	return pr.Client.Ack(pr.Packet)
}
