package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/registry"
)

// hook is the broker's only mochi hook. It is also the only auth hook:
// mochi grants access if any hook allows it, so no allow-all hook may ever
// be added next to it.
type hook struct {
	mqtt.HookBase
	b *Broker
}

func (h *hook) ID() string { return "devicehub" }

func (h *hook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnPacketSent,
		mqtt.OnDisconnect, mqtt.OnACLCheck, mqtt.OnPublish, mqtt.OnPacketRead, mqtt.OnWill,
		mqtt.OnQosPublish, mqtt.OnQosComplete, mqtt.OnClientExpired, mqtt.OnPublished:
		return true
	}
	return false
}

// OnConnect authenticates the device. It runs before mochi's own
// OnConnectAuthenticate so that a refusal can carry its own reason code
// (mochi would answer every refusal with "bad username or password"); a
// refused client gets its CONNACK here and the error ends the connection.
func (h *hook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	b := h.b
	s := b.sessionOf(cl)
	if s == nil { // not accepted through our listeners: cannot happen
		return b.refuse(cl, "error", packets.ErrServerUnavailable, packets.Err3ServerUnavailable)
	}
	user := string(pk.Connect.Username)
	typ, byCert, err := b.certAuthenticate(cl, s, user)
	var v refusal
	if byCert {
		v = b.authVerdict(cl.ID, err)
		if v.why == "" {
			v = willVerdict(cl.ID, &pk.Connect)
		}
	} else {
		typ, v = b.connectVerdict(&pk.Connect)
	}
	if v.why != "" {
		return b.refuse(cl, v.why, v.v5, v.v3)
	}
	// A delayed will would be published after presence already decided;
	// the heartbeat timeout of the device's type is the way to ride out
	// short losses. Devices never retain (see OnPublish).
	cl.Properties.Will.WillDelayInterval = 0
	cl.Properties.Will.Retain = false
	b.clampKeepAlive(cl)

	s.deviceID, s.deviceType, s.remote = cl.ID, typ, cl.Net.Remote
	s.client.Store(cl)
	if next := b.opts.Generation; next != nil {
		gctx, cancel := context.WithTimeout(context.Background(), presenceTimeout)
		g, err := next(gctx)
		cancel()
		if err != nil {
			b.log.Warn("session generation", "device_id", cl.ID, "err", err)
			return b.refuse(cl, "unavailable", packets.ErrServerUnavailable, packets.Err3ServerUnavailable)
		}
		s.gen = g
	} else {
		s.gen = b.gens.Add(1)
	}
	// One connection of a device at a time from here until its session is
	// in mochi's client map (OnSessionEstablished): mochi's takeover then
	// always finds the previous session, and exactly one stays.
	if !b.enterDevice(s) {
		return b.refuse(cl, "busy", packets.ErrServerBusy, packets.Err3ServerUnavailable)
	}
	s.authed.Store(true)
	// The device may have been revoked or disabled since Authenticate, by
	// a Kick that ran before this session was in the device's set: ask
	// again now that it is (see Kick).
	if a, ok := b.deps.Authenticator.(activeChecker); ok {
		if err := a.Active(cl.ID); err != nil {
			s.kicked.Store(true)
			s.authed.Store(false)
			b.leaveDevice(s)
			return b.refuse(cl, "revoked_while_connecting", packets.ErrNotAuthorized, packets.Err3NotAuthorized)
		}
	}
	b.m.connects.WithLabelValues("accepted").Inc()
	return nil
}

// activeChecker is the optional capability of an Authenticator to say
// whether a device may still use the hub (the registry has it).
type activeChecker interface {
	Active(deviceID string) error
}

// OnSessionEstablished lets the device's next connection in: this one's
// session is in mochi's client map, where its takeover will find it.
func (h *hook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if s := h.b.sessionOf(cl); s != nil && s.authed.Load() {
		h.b.releaseSlot(s)
	}
}

// OnClientExpired removes the subscriptions of a session that outlived
// its connection and expired from the topic index, as mochi does when a
// session ends with its connection (its expiry removes only the client).
// Left there, a new connection with the same client id would be sent
// what the expired session subscribed to (and, when the broker runs
// mochi's write loop, through a loop it may not have: startWriteLoop).
func (h *hook) OnClientExpired(cl *mqtt.Client) {
	h.b.server.UnsubscribeClient(cl)
}

// OnPublished delivers the publish to the device it is for, if the
// device subscribed to it (own.go).
func (h *hook) OnPublished(_ *mqtt.Client, pk packets.Packet) { h.b.deliverPublished(pk) }

// OnPacketSent notes the successful CONNACK: from then on the hub closes
// the session with a DISCONNECT (v5), never before.
func (h *hook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Connack || pk.ReasonCode != packets.CodeSuccess.Code || cl.Net.Inline {
		return
	}
	if s := h.b.sessionOf(cl); s != nil {
		s.established.Store(true)
	}
}

// refusal is why a CONNECT is refused ("" why: accepted) and its codes.
type refusal struct {
	why    string
	v5, v3 packets.Code
}

// connectVerdict decides a password CONNECT from the fields of the packet
// the hook reads (client id, username, password, will flag and topic):
// the client id must be the username, the credentials the device's, and a
// will a publish under the device's own prefix. It is the whole of what
// an unauthenticated peer controls, and is fuzzed (FuzzConnect).
func (b *Broker) connectVerdict(c *packets.ConnectParams) (string, refusal) {
	user := string(c.Username)
	if !registry.ConnectIdentityOK(c.ClientIdentifier, user) {
		return "", refusal{"client_id_mismatch", packets.ErrClientIdentifierNotValid, packets.Err3ClientIdentifierNotValid}
	}
	typ, err := b.deps.Authenticator.Authenticate(c.ClientIdentifier, user, c.Password)
	if v := b.authVerdict(c.ClientIdentifier, err); v.why != "" {
		return "", v
	}
	if v := willVerdict(c.ClientIdentifier, c); v.why != "" {
		return "", v
	}
	return typ, refusal{}
}

// authVerdict maps an Authenticator error to the refusal.
func (b *Broker) authVerdict(id string, err error) refusal {
	switch {
	case err == nil:
		return refusal{}
	case errors.Is(err, registry.ErrNotFound):
		return refusal{"unknown_device", packets.ErrBadUsernameOrPassword, packets.ErrMalformedUsernameOrPassword}
	case errors.Is(err, registry.ErrUnauthorized):
		return refusal{"bad_credentials", packets.ErrBadUsernameOrPassword, packets.ErrMalformedUsernameOrPassword}
	case errors.Is(err, registry.ErrDisabled):
		// Not authorized rather than banned: the device is known and may be
		// enabled again, so it should keep retrying (with backoff).
		return refusal{"disabled", packets.ErrNotAuthorized, packets.Err3NotAuthorized}
	default:
		b.log.Error("authenticate device", "device_id", id, "err", err)
		return refusal{"error", packets.ErrServerUnavailable, packets.Err3ServerUnavailable}
	}
}

// willVerdict checks a will: it is a publish the broker makes for the
// device, so the publish rules apply (no wildcards), not the subscribe
// rules.
func willVerdict(id string, c *packets.ConnectParams) refusal {
	if c.WillFlag && !registry.TopicAllowed(id, c.WillTopic, true) {
		return refusal{"will_not_authorized", packets.ErrNotAuthorized, packets.Err3NotAuthorized}
	}
	return refusal{}
}

// refuse writes a CONNACK with the v5 code, or its 3.1.1 return code, and
// returns the code to end the connection.
func (b *Broker) refuse(cl *mqtt.Client, why string, v5, v3 packets.Code) error {
	b.m.connects.WithLabelValues(why).Inc()
	b.log.Info("mqtt connection refused", "client_id", cl.ID, "remote", cl.Net.Remote, "reason", why)
	if cl.Properties.ProtocolVersion == 5 {
		_ = b.server.SendConnack(cl, v5, false, nil)
	} else {
		// mochi's own 3.1.1 mapping turns "bad username or password" into
		// "not authorized"; write the return code ourselves.
		_ = cl.WritePacket(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: v3.Code})
	}
	return v5
}

func (b *Broker) clampKeepAlive(cl *mqtt.Client) {
	lo := uint16(min(b.opts.MinKeepAlive/time.Second, 65535))
	hi := uint16(min(b.opts.MaxKeepAlive/time.Second, 65535))
	ka := cl.State.Keepalive
	switch {
	case ka == 0 || ka > hi:
		ka = hi
	case ka < lo:
		ka = lo
	}
	if ka != cl.State.Keepalive {
		cl.State.Keepalive = ka
		cl.State.ServerKeepalive = true
	}
}

// OnConnectAuthenticate accepts exactly the clients OnConnect accepted.
func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	s := h.b.sessionOf(cl)
	return s != nil && s.authed.Load()
}

// OnSessionEstablish tells presence about the connection. It runs before
// mochi takes over an older session of the same device, so presence knows
// the new generation before the old session's disconnect can reach it.
func (h *hook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	b := h.b
	s := b.sessionOf(cl)
	if s == nil || !s.authed.Load() {
		return
	}
	b.connected.Add(1)
	s.connected.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), presenceTimeout)
	defer cancel()
	b.deps.Presence.Connected(ctx, s.deviceID, s.deviceType, s.gen, s.remote)
}

// OnDisconnect tells presence that the connection ended, with its
// generation and why.
func (h *hook) OnDisconnect(cl *mqtt.Client, err error, _ bool) {
	b := h.b
	s := b.sessionOf(cl)
	if s == nil {
		return
	}
	b.disconnected(s, b.reasonFor(s, cl.StopCause(), err))
}

// reasonFor classifies the end of a connection. stop is mochi's stop cause
// (the first reason the client was stopped for), err what the read loop
// returned.
func (b *Broker) reasonFor(s *session, stop, err error) reason {
	switch {
	case s.kicked.Load():
		return reason{name: events.ReasonKicked}
	case b.closing.Load():
		return reason{name: events.ReasonShutdown}
	case errors.Is(stop, packets.CodeDisconnect), errors.Is(stop, packets.CodeDisconnectWillMessage):
		return reason{name: events.ReasonClientDisconnect}
	}
	if stop != nil {
		err = stop
	}
	if err == nil {
		err = errors.New("connection closed")
	}
	return reason{name: events.ReasonConnectionLost, cause: err}
}

// OnPacketRead counts every packet a device sends (PINGREQ included) as
// activity.
func (h *hook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if pk.FixedHeader.Type != packets.Connect && cl.ID != "" && !cl.Net.Inline {
		h.b.deps.Presence.Activity(cl.ID)
		if s := h.b.sessionOf(cl); s != nil {
			s.acks.read(&pk)
		}
	}
	return pk, nil
}

// OnACLCheck confines a device to its own prefix devices/{id}/, for
// topics and filters alike: a filter that starts with the literal prefix
// cannot match outside it. Refused publishes are also explained on
// devices/{id}/errors, so that a QoS 0 refusal is not silent.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	if s := h.b.sessionOf(cl); s == nil || !s.live() {
		h.b.m.aclDenied.WithLabelValues("session_closed").Inc()
		return false
	}
	if registry.TopicAllowed(cl.ID, topic, write) {
		return true
	}
	op := "subscribe"
	if write {
		op = "publish"
		h.b.reportError(cl.ID, topic, "not_authorized", "a device may publish only under devices/"+cl.ID+"/")
	}
	h.b.m.aclDenied.WithLabelValues(op).Inc()
	return false
}

// reportError publishes why a device's message was refused on
// devices/{id}/errors.
func (b *Broker) reportError(deviceID, topic, code, why string) {
	var buf bytes.Buffer
	_ = json.NewEncoder(&buf).Encode(struct {
		Topic  string `json:"topic"`
		Code   string `json:"code"`
		Reason string `json:"reason"`
	}{topic, code, why})
	if err := b.server.Publish("devices/"+deviceID+"/errors", bytes.TrimSpace(buf.Bytes()), false, 1); err != nil {
		b.log.Warn("publish device error", "device_id", deviceID, "err", err)
	}
}

// OnPublish hands a device's message to the PublishHandler. A QoS 1
// message goes to its PublishStarter if it has one, and is acknowledged
// in order once stored without holding the read loop (pubacks.go);
// otherwise OnPublish waits for the verdict and mochi writes the
// acknowledgement after it returns. Messages of the hub's inline client
// pass untouched.
func (h *hook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	b := h.b
	s := b.sessionOf(cl)
	p, ok := b.devicePublish(s, &pk)
	if !ok {
		return pk, packets.ErrRejectPacket
	}
	if st, ok := b.deps.PublishHandler.(PublishStarter); ok && pk.FixedHeader.Qos == 1 {
		// Acknowledged in order once stored, while the read loop goes
		// on (pubacks.go). mochi writes nothing for it, and does not
		// forward it: device messages are for the hub, and a device may
		// subscribe only under its own prefix. The read loop takes such
		// a publish in itself, without mochi, when it can (publish.go).
		b.startPublish(cl, s, &pk, p, st)
		releasePublish(p)
		return pk, packets.ErrRejectPacket
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.HandlerTimeout)
	err := b.deps.PublishHandler.HandlePublish(ctx, p)
	cancel()
	releasePublish(p)
	if err != nil {
		return pk, b.publishOutcome(cl, pk, err)
	}
	// Retained messages under a device's prefix belong to the hub (twin,
	// config); a device's retain flag is dropped, which also keeps devices
	// from growing the retained store without bound.
	pk.FixedHeader.Retain = false
	return pk, nil
}

// devicePublish is the message that pk, a publish of the device of
// session s, hands to the PublishHandler. ok is false when the session
// may not publish: not authenticated, or no longer live (counted).
func (b *Broker) devicePublish(s *session, pk *packets.Packet) (p *Publish, ok bool) {
	if s == nil || !s.authed.Load() {
		return nil, false
	}
	if !s.live() {
		// Revoked, disabled or replaced: nothing it sends from that
		// instant is stored or acknowledged.
		b.m.rejected.WithLabelValues("session_closed").Inc()
		return nil, false
	}
	p = publishes.Get().(*Publish)
	*p = Publish{
		DeviceID:          s.deviceID,
		DeviceType:        s.deviceType,
		Topic:             pk.TopicName,
		Payload:           pk.Payload,
		QoS:               pk.FixedHeader.Qos,
		ContentType:       pk.Properties.ContentType,
		PayloadFormatUTF8: pk.Properties.PayloadFormatFlag && pk.Properties.PayloadFormat == 1,
		Received:          time.Now(),
	}
	return p, true
}

// publishes holds the Publishes devicePublish hands out: one per device
// message, which the PublishHandler does not keep (PublishHandler).
var publishes = sync.Pool{New: func() any { return new(Publish) }}

// releasePublish gives p, from devicePublish, back once the
// PublishHandler returned.
func releasePublish(p *Publish) {
	*p = Publish{}
	publishes.Put(p)
}

// rejection is an error the hub already recorded as a refusal of the
// message, with a stable code.
type rejection interface{ RejectCode() string }

// publishOutcome is the one place that maps a PublishHandler error to the
// MQTT edge, and returns what OnPublish returns to mochi:
//
//   - a rejection: for v5 QoS > 0 a PUBACK (or PUBREC) with the matching
//     reason code, written here; otherwise the message is acknowledged as
//     usual but not forwarded (the reason went to devices/{id}/errors);
//   - any other error: the message was not stored, so it must not be
//     acknowledged: the client is disconnected and mochi told to write no
//     ack (packets.ErrRejectPacket; any other error would still ack a
//     3.1.1 client). The device resends after reconnecting. A v5 client
//     is told why in the DISCONNECT: 0x97 (quota exceeded) with the
//     error's text when the error has a QuotaExceeded() bool method that
//     says so (the hub's disk is nearly full), else 0x83.
func (b *Broker) publishOutcome(cl *mqtt.Client, pk packets.Packet, err error) error {
	var rj rejection
	if errors.As(err, &rj) {
		ack, ok := b.rejectionAck(cl, pk.PacketID, pk.FixedHeader.Qos, err, rj)
		if !ok {
			return packets.CodeSuccessIgnore
		}
		_ = cl.WritePacket(ack)
		return packets.ErrRejectPacket
	}
	b.notStored(cl, pk.TopicName, err)
	return packets.ErrRejectPacket
}

// rejectionAck counts a rejection and returns the acknowledgement that
// carries its reason code: a PUBACK (a PUBREC for QoS 2). ok is false
// when the client takes no reason code (3.1.1, or QoS 0): it is then
// acknowledged as usual.
func (b *Broker) rejectionAck(cl *mqtt.Client, id uint16, qos byte, err error, rj rejection) (packets.Packet, bool) {
	b.m.rejected.WithLabelValues(rj.RejectCode()).Inc()
	if cl.Properties.ProtocolVersion != 5 || qos == 0 {
		return packets.Packet{}, false
	}
	code := rejectReasonCode(rj.RejectCode())
	ackType := packets.Puback
	if qos == 2 {
		ackType = packets.Pubrec // mochi would answer QoS 2 with a PUBACK
	}
	reasonString := err.Error()
	if len(reasonString) > 256 {
		reasonString = reasonString[:256]
	}
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: ackType},
		PacketID:    id,
		ReasonCode:  code.Code,
		Properties:  packets.Properties{ReasonString: reasonString},
	}, true
}

// notStored disconnects a client whose message could not be stored (see
// publishOutcome).
func (b *Broker) notStored(cl *mqtt.Client, topic string, err error) {
	b.m.storeFailures.Inc()
	b.log.Warn("device message not stored, disconnecting", "device_id", cl.ID, "topic", topic, "err", err)
	cause := &notStoredError{err: err}
	if cl.Properties.ProtocolVersion == 5 {
		code, reason := packets.ErrImplementationSpecificError, "message not stored"
		// The hub refuses to store (its disk is nearly full): say why.
		var quota interface{ QuotaExceeded() bool }
		if errors.As(err, &quota) && quota.QuotaExceeded() {
			code, reason = packets.ErrQuotaExceeded, err.Error()
			if len(reason) > 256 {
				reason = reason[:256]
			}
		}
		_ = cl.Net.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_ = cl.WritePacket(packets.Packet{
			FixedHeader: packets.FixedHeader{Type: packets.Disconnect},
			ReasonCode:  code.Code,
			Properties:  packets.Properties{ReasonString: reason},
		})
	}
	cl.Stop(cause)
}

// notStoredError is the stop cause of a client disconnected because its
// message could not be stored.
type notStoredError struct{ err error }

func (e *notStoredError) Error() string { return "message not stored: " + e.err.Error() }
func (e *notStoredError) Unwrap() error { return e.err }

// rejectReasonCode maps the hub's rejection codes to MQTT v5 reason codes.
func rejectReasonCode(code string) packets.Code {
	switch code {
	case "payload_too_large":
		return packets.ErrPacketTooLarge
	case "rate_limited":
		return packets.ErrMessageRateTooHigh
	case "invalid_payload", "validation_failed", "invalid_json", "invalid_timestamp":
		return packets.ErrPayloadFormatInvalid
	case "unknown_topic":
		return packets.ErrTopicNameInvalid
	}
	return packets.ErrImplementationSpecificError
}

// OnWill hands the last will of the device's current connection to the
// PublishHandler. A will of a taken-over session (stale generation) or of
// a connection the hub closed itself (kick, shutdown) says nothing about
// the device and is not handed on; mochi still publishes it to MQTT
// subscribers (a hook cannot cancel a will), never retained.
func (h *hook) OnWill(cl *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	b := h.b
	s := b.sessionOf(cl)
	if s == nil || !s.authed.Load() {
		return will, nil
	}
	if s.kicked.Load() || b.closing.Load() {
		return will, nil
	}
	// isCurrent covers the usual takeover (the new connection's generation
	// was recorded in its OnConnect); IsTakenOver covers two connections
	// racing, where the one that authenticated first takes over last.
	if !b.isCurrent(s.deviceID, s.gen) || takenOver(cl) {
		b.log.Debug("dropping will of a taken-over session", "device_id", s.deviceID, "gen", s.gen)
		return will, nil
	}
	p := &Publish{
		DeviceID:   s.deviceID,
		DeviceType: s.deviceType,
		Topic:      will.TopicName,
		Payload:    will.Payload,
		QoS:        will.Qos,
		Will:       true,
		Received:   time.Now(),
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.opts.HandlerTimeout)
	defer cancel()
	if err := b.deps.PublishHandler.HandlePublish(ctx, p); err != nil {
		b.log.Warn("device will not taken in", "device_id", s.deviceID, "topic", will.TopicName, "err", err)
	}
	return will, nil
}
