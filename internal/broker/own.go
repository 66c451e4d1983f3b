package broker

import (
	"slices"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/devicehub/devicehub/internal/registry"
)

// Devices' subscriptions, held by the broker (issue 14, goal 6; see
// writer.go for why).
//
// A device may subscribe only under its own prefix devices/{id}/, with
// the prefix written out (registry.TopicAllowed), so every subscription
// of a device is private to it: a publish to devices/{id}/... can match
// the subscriptions of client {id} only. The broker therefore keeps a
// device's subscriptions in its session as a few bytes each (the filter
// after the prefix, the options), answers SUBSCRIBE and UNSUBSCRIBE
// itself (subscribe, unsubscribe: mochi's processSubscribe and
// processUnsubscribe with the subscriptions kept here instead of in
// mochi's topic index and client state), and delivers what matches them
// (OnPublished: every publish mochi processed, the hub's included, once
// mochi sent it to the subscribers it knows, which are never devices;
// retained messages after the SUBACK). Delivery is mochi's
// publishToClient, the same steps in the same order: the ACL, the retain
// flag, subscription identifiers, the QoS, topic aliases, the inflight
// store; then the outbox instead of mochi's channel, where a QoS > 0
// publish waits for the device's send quota (writer.go). Two things
// differ from mochi, both mochi's departures from MQTT 5: a retained
// message sent for a new subscription carries the subscription's
// identifier [MQTT-3.3.4-3], and a publish held for send quota returns
// its quota when acknowledged (mochi's does not, so a device with a
// Receive Maximum stops being sent QoS 1 messages after a burst).
//
// A session taken over by a new connection (clean start unset) passes its
// subscriptions on (inheritSession); a session that ends with its
// connection, or expires, takes them with it.

// maxSubscriptions bounds the subscriptions of one device: a new one
// beyond it is refused with "quota exceeded" (0x97; 0x80 for 3.1.1), so
// that a device cannot grow its session, and the scan of its
// subscriptions on every publish to it, without bound. The SDKs subscribe
// to two or three filters.
const maxSubscriptions = 64

// ownSub is a subscription of a device: a filter under devices/{id}/, by
// the part after the prefix, and its options.
type ownSub struct {
	rest           string // the filter after devices/{id}/
	id             int    // the subscription identifier (v5); 0 for none
	qos            byte
	retainHandling byte
	noLocal        bool
	rap            bool // retain as published
}

// set adds or replaces the subscription to s.rest and reports whether
// it existed; full: it did not, and the device holds maxSubscriptions
// already (nothing changed). o.mu is held.
func (o *outbox) set(s ownSub) (existed, full bool) {
	for i := range o.subs {
		if o.subs[i].rest == s.rest {
			o.subs[i] = s
			return true, false
		}
	}
	if len(o.subs) >= maxSubscriptions {
		return false, true
	}
	o.subs = append(o.subs, s)
	return false, false
}

// unset removes the subscription to rest and reports whether it existed.
func (o *outbox) unset(rest string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range o.subs {
		if o.subs[i].rest == rest {
			o.subs = slices.Delete(o.subs, i, i+1)
			if len(o.subs) == 0 {
				o.subs = nil
			}
			return true
		}
	}
	return false
}

// takeSubs hands the subscriptions over to a new session and forgets
// them.
func (o *outbox) takeSubs() []ownSub {
	o.mu.Lock()
	defer o.mu.Unlock()
	subs := o.subs
	o.subs = nil
	return subs
}

// match merges the subscriptions whose filter matches rest, the topic
// after devices/{id}/, as mochi merges a client's subscriptions that
// match one topic (one message: the highest QoS; no local if any says
// so; every subscription identifier). ok is false if none matches.
func (o *outbox) match(rest string) (m ownSub, ids []int, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.subs {
		if !matchFilter(s.rest, rest) {
			continue
		}
		if !ok {
			m, ok = s, true
		} else {
			m.qos = max(m.qos, s.qos)
			m.noLocal = m.noLocal || s.noLocal
			m.rap = m.rap || s.rap
		}
		if s.id > 0 {
			ids = append(ids, s.id)
		}
	}
	slices.Sort(ids)
	return m, ids, ok
}

// matchFilter reports whether the topic name matches the filter, both
// taken after the same leading levels (MQTT 4.7: "+" matches one level,
// a last "#" any number of levels, none included). filter is a valid
// filter (mqtt.IsValidFilter).
func matchFilter(filter, topic string) bool {
	for {
		f, frest, fmore := strings.Cut(filter, "/")
		if f == "#" {
			return true
		}
		t, trest, tmore := strings.Cut(topic, "/")
		if f != "+" && f != t {
			return false
		}
		switch {
		case !fmore:
			return !tmore
		case !tmore:
			return frest == "#" // "a/#" matches "a"
		}
		filter, topic = frest, trest
	}
}

// subscribe is mochi's processSubscribe for a device (see above); pk is
// a SUBSCRIBE of cl, the client of session s. When retained messages
// match the new subscriptions, the SUBACK and then they go through the
// outbox while it is locked: a publish to the device that a new
// subscription matches is queued after them, so a device never gets a
// retained message (a version of its desired properties, say) after the
// newer one that replaced it. mochi writes the SUBACK, then queues the
// retained messages, and a publish can come in between.
func (b *Broker) subscribe(cl *mqtt.Client, s *session, pk packets.Packet) error {
	if code := pk.SubscribeValidate(); code != packets.CodeSuccess {
		return code
	}
	caps := b.server.Options.Capabilities
	code := packets.CodeSuccess
	if packetIDInUse(cl, pk.PacketID) {
		code = packets.ErrPacketIdentifierInUse
	}
	prefix := registry.TopicPrefix + cl.ID + "/"
	type retained struct {
		filter string
		sub    ownSub
	}
	var sendRetained []retained
	reasons := make([]byte, len(pk.Filters))
	o := &s.out
	o.mu.Lock()
	for i, sub := range pk.Filters {
		switch {
		case code != packets.CodeSuccess:
			reasons[i] = code.Code // NB 3.9.3 Non-normative 0x91
			continue
		case !mqtt.IsValidFilter(sub.Filter, false):
			reasons[i] = packets.ErrTopicFilterInvalid.Code
		case sub.NoLocal && mqtt.IsSharedFilter(sub.Filter):
			reasons[i] = packets.ErrProtocolViolationInvalidSharedNoLocal.Code // [MQTT-3.8.3-4]
		case !b.hook.OnACLCheck(cl, sub.Filter, false) || !strings.HasPrefix(sub.Filter, prefix):
			reasons[i] = packets.ErrNotAuthorized.Code
		default:
			own := ownSub{
				rest:           sub.Filter[len(prefix):],
				id:             sub.Identifier,
				qos:            sub.Qos,
				retainHandling: sub.RetainHandling,
				noLocal:        sub.NoLocal,
				rap:            sub.RetainAsPublished,
			}
			existed, full := o.set(own) // [MQTT-3.8.4-3]
			if full {
				reasons[i] = packets.ErrQuotaExceeded.Code
				break
			}
			reasons[i] = min(sub.Qos, caps.MaximumQos)                          // [MQTT-3.2.2-9] [MQTT-3.9.3-1] [MQTT-3.8.4-7]
			if own.retainHandling == 0 || own.retainHandling == 1 && !existed { // [MQTT-3.3.1-10] [MQTT-3.3.1-11]
				sendRetained = append(sendRetained, retained{sub.Filter, own})
			}
		}
		if reasons[i] > packets.CodeGrantedQos2.Code && cl.Properties.ProtocolVersion < 5 { // MQTT3
			reasons[i] = packets.ErrUnspecifiedError.Code
		}
	}
	ack := ackOf(packets.Suback, &pk, reasons, code) // [MQTT-3.8.4-1] [MQTT-3.8.4-2] [MQTT-3.8.4-5] [MQTT-3.8.4-6]
	var outs []*packets.Packet
	for _, r := range sendRetained { // [MQTT-3.3.1-9] [MQTT-3.8.4-4]
		var ids []int
		if r.sub.id > 0 {
			ids = []int{r.sub.id}
		}
		for _, m := range b.server.Topics.Messages(r.filter) {
			if out, ok := b.prepare(cl, r.sub, ids, m, true); ok {
				outs = append(outs, out)
			}
		}
	}
	if len(outs) == 0 {
		// Nothing to order the SUBACK with: written here, as mochi does,
		// with no writer to start.
		o.mu.Unlock()
		return cl.WritePacket(*ack)
	}
	defer o.mu.Unlock()
	if !b.pushLocked(o, cl, ack) {
		for _, out := range outs {
			b.dropped(cl, out)
		}
		return packets.ErrPendingClientWritesExceeded // it reads nothing we send
	}
	for _, out := range outs {
		if !b.pushLocked(o, cl, out) {
			b.dropped(cl, out)
		}
	}
	return nil
}

// packetIDInUse reports whether the client has a packet of its own with
// the id in flight: a QoS 2 publish whose PUBREL has not come. mochi
// asks its inflight store whether it holds the id at all, but the store
// also holds the broker's publishes to the client, whose ids are the
// broker's, not the client's: a SUBSCRIBE sent while the device had not
// yet acknowledged a command with the same id would be refused.
func packetIDInUse(cl *mqtt.Client, id uint16) bool {
	pk, ok := cl.State.Inflight.Get(id)
	return ok && pk.FixedHeader.Type == packets.Pubrec
}

// unsubscribe is mochi's processUnsubscribe for a device (see above).
func (b *Broker) unsubscribe(cl *mqtt.Client, s *session, pk packets.Packet) error {
	if code := pk.UnsubscribeValidate(); code != packets.CodeSuccess {
		return code
	}
	code := packets.CodeSuccess
	if packetIDInUse(cl, pk.PacketID) {
		code = packets.ErrPacketIdentifierInUse
	}
	prefix := registry.TopicPrefix + cl.ID + "/"
	reasons := make([]byte, len(pk.Filters))
	for i, sub := range pk.Filters { // [MQTT-3.10.4-6] [MQTT-3.11.3-1]
		switch rest, own := strings.CutPrefix(sub.Filter, prefix); {
		case code != packets.CodeSuccess:
			reasons[i] = code.Code // NB 3.11.3 Non-normative 0x91
		case own && s.out.unset(rest): // [MQTT-3.10.4-2]
			reasons[i] = packets.CodeSuccess.Code
		default:
			reasons[i] = packets.CodeNoSubscriptionExisted.Code
		}
	}
	return cl.WritePacket(*ackOf(packets.Unsuback, &pk, reasons, code)) // [MQTT-3.10.4-4] [MQTT-3.10.4-5] [MQTT-3.11.3-2]
}

// ackOf is the SUBACK or UNSUBACK (typ) of pk, as mochi makes them: the
// packet id, a reason code per filter, the user properties of pk, and
// the reason string of code when it refused the whole packet.
func ackOf(typ byte, pk *packets.Packet, reasons []byte, code packets.Code) *packets.Packet {
	ack := &packets.Packet{
		FixedHeader: packets.FixedHeader{Type: typ},
		PacketID:    pk.PacketID, // [MQTT-2.2.1-6]
		ReasonCodes: reasons,
		Properties:  packets.Properties{User: pk.Properties.User},
	}
	if code.Code >= packets.ErrUnspecifiedError.Code {
		ack.Properties.ReasonString = code.Reason
	}
	return ack
}

// deliverPublished delivers a publish mochi processed (OnPublished) to
// the device whose prefix its topic is under, if the device holds a
// subscription that matches.
func (b *Broker) deliverPublished(pk packets.Packet) {
	if b.mochi == nil {
		return
	}
	id, ok := registry.DeviceIDFromTopic(pk.TopicName)
	if !ok {
		return
	}
	cl, ok := b.server.Clients.Get(id)
	if !ok {
		return
	}
	s := sessionOfConn(cl)
	if s == nil {
		return
	}
	sub, ids, ok := s.out.match(pk.TopicName[len(registry.TopicPrefix)+len(id)+1:])
	if !ok {
		return
	}
	// What mochi's publishToSubscribers sets on its copy of the packet.
	if pk.Created == 0 {
		pk.Created = time.Now().Unix()
	}
	if pk.Expiry == 0 {
		if expiry := min(b.server.Options.Capabilities.MaximumMessageExpiryInterval, int64(pk.Properties.MessageExpiryInterval)); expiry > 0 {
			pk.Expiry = pk.Created + expiry
		}
	}
	b.deliver(cl, s, sub, ids, pk)
}

// deliver is mochi's publishToClient for a device: it sends pk to cl
// under the subscription sub (merged, with the identifiers ids).
func (b *Broker) deliver(cl *mqtt.Client, s *session, sub ownSub, ids []int, pk packets.Packet) {
	if out, ok := b.prepare(cl, sub, ids, pk, false); ok && !b.push(&s.out, cl, out) {
		b.dropped(cl, out)
	}
}

// prepare makes the packet that sends pk to cl under sub (see deliver);
// retained: pk is a retained message sent for a new subscription. A QoS
// > 0 publish is in cl's inflight store once made. ok is false when there
// is nothing to queue: the publish is not for cl, or cannot be sent
// (counted as mochi counts it), or the connection closed (a QoS > 0
// publish then waits in the inflight store for a connection that takes
// the session over).
func (b *Broker) prepare(cl *mqtt.Client, sub ownSub, ids []int, pk packets.Packet, retained bool) (*packets.Packet, bool) {
	if sub.noLocal && pk.Origin == cl.ID {
		return nil, false // [MQTT-3.8.3-3]
	}
	if !b.hook.OnACLCheck(cl, pk.TopicName, false) {
		return nil, false
	}
	srv := b.server
	caps := srv.Options.Capabilities
	out := pk.Copy(false)
	if !retained && (cl.Properties.ProtocolVersion < 5 || !sub.rap) { // ![MQTT-3.3.1-13] [v3 MQTT-3.3.1-9]
		out.FixedHeader.Retain = false // [MQTT-3.3.1-12]
	}
	if len(ids) > 0 {
		out.Properties.SubscriptionIdentifier = ids // [MQTT-3.3.4-3] [MQTT-3.3.4-4]
	}
	out.FixedHeader.Qos = min(out.FixedHeader.Qos, sub.qos, caps.MaximumQos) // [MQTT-3.2.2-9]
	if cl.Properties.Props.TopicAliasMaximum > 0 {
		var exists bool
		out.Properties.TopicAlias, exists = cl.State.TopicAliases.Outbound.Set(pk.TopicName)
		if out.Properties.TopicAlias > 0 {
			out.Properties.TopicAliasFlag = true
			if exists {
				out.TopicName = ""
			}
		}
	}
	if out.FixedHeader.Qos > 0 {
		in := cl.State.Inflight
		if in.Len() >= int(caps.MaximumInflight) {
			atomic.AddInt64(&srv.Info.InflightDropped, 1)
			srv.Log.Warn("client store quota reached", "client", cl.ID, "listener", cl.Net.Listener)
			return nil, false
		}
		id, err := cl.NextPacketID() // [MQTT-4.3.2-1] [MQTT-4.3.3-1]
		if err != nil {
			atomic.AddInt64(&srv.Info.InflightDropped, 1)
			srv.Log.Warn("packet ids exhausted", "error", err, "client", cl.ID, "listener", cl.Net.Listener)
			return nil, false
		}
		out.PacketID = uint16(id) // [MQTT-2.2.1-4]
		if in.Set(out) {          // [MQTT-4.3.2-3] [MQTT-4.3.3-3]
			atomic.AddInt64(&srv.Info.Inflight, 1)
			b.hook.OnQosPublish(cl, out, out.Created, 0)
		}
		// The send quota is taken when the outbox releases the publish
		// to the writer (push), not here: mochi holds a publish beyond
		// the quota in the inflight store and sends it when a packet of
		// the client finds quota, but takes it out of the store then, so
		// that its PUBACK never returns the quota.
	}
	if cl.Net.Conn == nil || cl.Closed() {
		return nil, false
	}
	return &out, true
}

// dropped counts a publish the outbox had no room for and takes it out
// of the inflight store, as mochi does when a client's queue is full.
func (b *Broker) dropped(cl *mqtt.Client, out *packets.Packet) {
	srv := b.server
	atomic.AddInt64(&srv.Info.MessagesDropped, 1)
	if out.FixedHeader.Qos > 0 && cl.State.Inflight.Delete(out.PacketID) {
		atomic.AddInt64(&srv.Info.Inflight, -1)
	}
}
