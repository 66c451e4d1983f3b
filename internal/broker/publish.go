package broker

import (
	"fmt"
	"reflect"
	"sync/atomic"
	"time"
	"unsafe"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// A device's QoS 1 PUBLISH, taken in by the broker's own read loop
// (issue 14, goal 1: CPU per stored reading).
//
// A device's QoS 1 message goes to the PublishStarter and is acknowledged
// once stored (pubacks.go); mochi neither acknowledges nor forwards it.
// Through mochi (InjectPacket) it would still cost mochi's whole
// processing of a publish for nothing: OnPublish rejects it, and on that
// path mochi logs the whole packet at debug level, which moves every
// packet to the heap whatever the level (8–11 % of the hub's allocated
// bytes under ingest), and loops over its hooks for each step. So the
// read loop takes such a publish in itself (publish): the checks mochi's
// processPacket and processPublish make before OnPublish, in their order
// and with their answers, then what OnPublish does for it. Everything
// else goes through mochi as before: QoS 0 and QoS 2 publishes, the
// hub's own (inline) publishes, and every publish when the
// PublishHandler is not a PublishStarter or mochi's fields cannot be
// reached (setupOwnPublish).
//
// mochi's hook calls (OnACLCheck, OnPublish) are the broker's hook's:
// it is mochi's only hook (hook.go), and mochi asks each hook in turn.
//
// What mochi does on that path and publish does not, and why nothing is
// lost:
//
//   - the counters: ReadPacket counted the packet and the message
//     (PacketsReceived, MessagesReceived, BytesReceived) and ran
//     OnPacketRead (presence activity, acks.read) before the dispatch, as
//     before; InjectPacket's second count was taken back (inject), so
//     mochi's $SYS figures are the same on both paths;
//   - pk.Origin, Created and Expiry: read only when mochi forwards,
//     retains or stores the packet, which it never does with a rejected
//     one; for the same reason the retain flag is ignored on both paths
//     (mochi returns before retainMessage);
//   - the deletion of an inflight entry with the publish's packet id:
//     mochi deletes any entry the client's store holds with that id, but
//     only a QoS 2 publish of the client's own (a PUBREC entry) has the
//     client's ids; the others are the broker's publishes to the device,
//     whose ids are the broker's (as in packetIDInUse). mochi would drop
//     a command awaiting the device's PUBACK because the device used
//     the same id for a reading; here the command stays in flight;
//   - OnPacketProcessed (no hook provides it) and the send of a publish
//     held back for the device's send quota: mochi holds none for a
//     device once the broker holds the subscriptions (b.mochi set, a
//     condition of this path), the outbox does (writer.go).

// setupOwnPublish decides, once per broker, whether the read loop takes a
// device's QoS 1 publish in itself (b.starter set): the PublishHandler is
// a PublishStarter, the broker holds the devices' subscriptions, mochi
// may grant QoS 1, and mochi's receive quota is where it was looked for.
// Otherwise every publish goes through mochi, as before.
func (b *Broker) setupOwnPublish(forceMochi bool) {
	st, ok := b.deps.PublishHandler.(PublishStarter)
	if !ok || forceMochi || b.mochi == nil || b.server.Options.Capabilities.MaximumQos < 1 {
		return
	}
	off, err := findReceiveQuota(reflect.TypeFor[mqtt.Inflight]())
	if err == nil {
		err = checkReceiveQuota(off)
	}
	if err != nil {
		b.log.Warn("mqtt: devices' QoS 1 publishes go through mochi's processing (more CPU per message)", "err", err)
		return
	}
	b.starter, b.recvQuotaOff = st, off
}

// findReceiveQuota finds the offset of the remaining receive quota
// (Inflight.receiveQuota) in inflight, a struct type: mochi has no
// accessor for it, and processPublish disconnects a client whose quota is
// used up.
func findReceiveQuota(inflight reflect.Type) (uintptr, error) {
	return fieldOffset(inflight, "receiveQuota", quotaType)
}

// checkReceiveQuota tries the offset on an inflight store mochi made: the
// quota read must follow mochi's methods.
func checkReceiveQuota(off uintptr) error {
	in := mqtt.NewInflights()
	in.ResetReceiveQuota(7)
	in.DecreaseReceiveQuota()
	if q := receiveQuotaAt(in, off); q != 6 {
		return fmt.Errorf("mochi's receive quota not where it was looked for (read %d, want 6)", q)
	}
	return nil
}

// receiveQuotaAt reads in's remaining receive quota at offset off.
func receiveQuotaAt(in *mqtt.Inflight, off uintptr) int32 {
	return atomic.LoadInt32((*int32)(unsafe.Add(unsafe.Pointer(in), off)))
}

// ownPublish reports whether the read loop takes pk, a packet of a
// device's connection, in itself (publish) rather than through mochi.
func (b *Broker) ownPublish(pk *packets.Packet) bool {
	return b.starter != nil && pk.FixedHeader.Type == packets.Publish && pk.FixedHeader.Qos == 1
}

// publish takes in pk, a QoS 1 PUBLISH that cl, the client of session s,
// sent: mochi's processPacket, processPublish and the hook's OnPublish
// for it (see above), each step saying which of mochi's it repeats. A
// returned packets.Code ends the connection, with a DISCONNECT for a v5
// client (receivePacket), as with mochi.
func (b *Broker) publish(cl *mqtt.Client, s *session, pk packets.Packet) error {
	srv := b.server
	caps := srv.Options.Capabilities
	// processPacket: the publish itself (packet id, wildcards, topic or
	// topic alias, subscription identifiers).
	if code := pk.PublishValidate(caps.TopicAliasMaximum); code != packets.CodeSuccess {
		return code
	}
	// processPublish, in its order. A topic name a client may not
	// publish to ($SYS) is dropped unanswered.
	if !mqtt.IsValidFilter(pk.TopicName, true) {
		return nil
	}
	// The client's receive quota: used up by QoS 2 publishes it has not
	// released ([MQTT-3.3.4-7] [MQTT-3.3.4-8]). A QoS 1 publish taken in
	// here never uses it: the pubacks window bounds those (pubacks.go).
	if receiveQuotaAt(cl.State.Inflight, b.recvQuotaOff) == 0 {
		return srv.DisconnectClient(cl, packets.ErrReceiveMaximum)
	}
	// The ACL, on the topic name as sent: mochi resolves a topic alias
	// only after it, so a publish by alias alone is refused, as it is
	// through mochi.
	if !b.hook.OnACLCheck(cl, pk.TopicName, true) {
		if cl.Properties.ProtocolVersion != 5 {
			return srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		}
		return cl.WritePacket(buildAck(caps, pk.PacketID, packets.Puback, pk.Properties, packets.ErrNotAuthorized))
	}
	// The packet id of a QoS 2 publish of the client that awaits its
	// PUBREL: answered as mochi answers it ([MQTT-4.3.3-10]), with a
	// PUBREC. Any other entry with this id is the broker's (see above).
	if packetIDInUse(cl, pk.PacketID) {
		return cl.WritePacket(buildAck(caps, pk.PacketID, packets.Pubrec, pk.Properties, packets.ErrPacketIdentifierInUse))
	}
	if pk.Properties.TopicAliasFlag && pk.Properties.TopicAlias > 0 { // [MQTT-3.3.2-11]
		pk.TopicName = cl.State.TopicAliases.Inbound.Set(pk.Properties.TopicAlias, pk.TopicName)
	}
	// mochi would lower the QoS to MaximumQos here: at least 1, or this
	// path is off (setupOwnPublish).

	// OnPublish, for a QoS 1 message and a PublishStarter.
	p, ok := b.devicePublish(s, &pk)
	if !ok {
		return nil
	}
	b.startPublish(cl, s, &pk, p, b.starter)
	releasePublish(p)
	return nil
}

// buildAck is mochi's Server.buildAck: the acknowledgement of type typ
// of the publish with packet id id and properties props, with the reason
// code, carrying the publish's properties unless the capabilities say
// not to, and the code's reason string if it is an error.
func buildAck(caps *mqtt.Capabilities, id uint16, typ byte, props packets.Properties, reason packets.Code) packets.Packet {
	if caps.Compatibilities.NoInheritedPropertiesOnAck {
		props = packets.Properties{}
	}
	if reason.Code >= packets.ErrUnspecifiedError.Code {
		props.ReasonString = reason.Reason
	}
	now := time.Now().Unix()
	return packets.Packet{
		FixedHeader: packets.FixedHeader{Type: typ},
		PacketID:    id,          // [MQTT-2.2.1-5]
		ReasonCode:  reason.Code, // [MQTT-3.4.2-1]
		Properties:  props,
		Created:     now,
		Expiry:      now + caps.MaximumMessageExpiryInterval,
	}
}
