package broker

import (
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// acks follows the hub's QoS 1 publishes to one device connection until
// the device acknowledges them, so that the hub learns which message a
// PUBACK was for (a PUBACK carries only the packet id).
//
// mochi calls OnQosComplete for two different things: the device's PUBACK
// of a publish sent to it, and the broker's own PUBACK of a QoS 1 publish
// the device sent. Both carry a Puback packet, and the two directions use
// independent packet ids. The read loop tells them apart: OnPacketRead
// sees the device's PUBACK first (readAck), and OnQosComplete, called by
// mochi only once it matched the PUBACK to an inflight publish, counts as
// a delivery only for that packet.
type acks struct {
	mu      sync.Mutex
	topics  map[uint16]string // packet id → topic of the inflight publish
	aliases map[uint16]string // outbound topic alias → topic
	readAck atomic.Int32      // packet id of the PUBACK being read, -1 for none
}

// sent notes a QoS 1 publish handed to the device's connection.
func (a *acks) sent(pk *packets.Packet) {
	if pk.FixedHeader.Type != packets.Publish || pk.FixedHeader.Qos == 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	topic := pk.TopicName
	if alias := pk.Properties.TopicAlias; alias > 0 {
		if topic != "" {
			if a.aliases == nil {
				a.aliases = map[uint16]string{}
			}
			a.aliases[alias] = topic
		} else {
			topic = a.aliases[alias]
		}
	}
	if topic == "" {
		return
	}
	if a.topics == nil {
		a.topics = map[uint16]string{}
	}
	a.topics[pk.PacketID] = topic
}

// read notes the packet the read loop is about to process.
func (a *acks) read(pk *packets.Packet) {
	if pk.FixedHeader.Type == packets.Puback {
		a.readAck.Store(int32(pk.PacketID))
		return
	}
	a.readAck.Store(-1)
}

// completed returns the topic of the publish the device's PUBACK pk
// acknowledged, "" if pk is not such a PUBACK or refuses the message.
func (a *acks) completed(pk *packets.Packet) string {
	if pk.FixedHeader.Type != packets.Puback || a.readAck.Load() != int32(pk.PacketID) {
		return ""
	}
	a.readAck.Store(-1)
	a.mu.Lock()
	topic := a.topics[pk.PacketID]
	delete(a.topics, pk.PacketID)
	a.mu.Unlock()
	if pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
		return "" // the device refused it (MQTT v5 PUBACK reason code)
	}
	return topic
}

// OnQosPublish notes the hub's QoS 1 publishes to a device.
func (h *hook) OnQosPublish(cl *mqtt.Client, pk packets.Packet, _ int64, _ int) {
	if cl.Net.Inline {
		return
	}
	if s := h.b.sessionOf(cl); s != nil {
		s.acks.sent(&pk)
	}
}

// OnQosComplete reports the device's acknowledgement of a publish of the
// hub (see acks).
func (h *hook) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	if cl.Net.Inline {
		return
	}
	s := h.b.sessionOf(cl)
	if s == nil {
		return
	}
	if h.b.mochi != nil {
		h.b.releaseWaiting(&s.out, cl) // the PUBACK returned send quota
	}
	topic := s.acks.completed(&pk)
	if topic == "" {
		return
	}
	if fn := h.b.deps.Delivered; fn != nil {
		fn(s.deviceID, topic)
	}
}
