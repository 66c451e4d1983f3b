package hub

import (
	"context"
	"errors"
	"time"

	"github.com/devicehub/devicehub/internal/broker"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/extbroker"
	"github.com/devicehub/devicehub/internal/ingest"
	"github.com/devicehub/devicehub/internal/presence"
	"github.com/devicehub/devicehub/internal/registry"
)

// devicePublisher is what the domains publish to devices through: the
// embedded broker, or the external broker's client (mqtt.external).
type devicePublisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// outbound returns the publisher to devices: emb, or, with an external
// broker configured, a new extbroker client (kept in h.ext), which then
// also takes in the devices' messages instead of the embedded broker.
func (h *Hub) outbound(emb *broker.Broker) (devicePublisher, error) {
	e := h.cfg.MQTT.External
	if !e.Enabled() {
		return emb, nil
	}
	c, err := extbroker.New(extbroker.Options{
		URL:            e.URL,
		ClientID:       e.ClientID,
		Username:       e.Username,
		Password:       e.Password,
		ShareGroup:     e.ShareGroup,
		SessionExpiry:  e.SessionExpiry,
		Workers:        e.Workers,
		ReceiveMaximum: e.ReceiveMaximum,
		KeepAlive:      e.KeepAlive,
		// The broker's PUBACK of a command: the broker has it (for a
		// device with a persistent session it is queued there); the node
		// cannot know more (docs/CLUSTER.md).
		Delivered: func(id, topic string) { h.commands.Delivered(id, topic) },
	}, h.handleExternal, h.log.With("component", "extbroker"), h.reg)
	if err != nil {
		return nil, err
	}
	h.ext = c
	return c, nil
}

// handleExternal hands a device message from the external broker to
// ingest. nil (the message is acknowledged to the broker) when it was
// stored or refused for good; an error when nothing could be stored (the
// extbroker client tries it again).
func (h *Hub) handleExternal(ctx context.Context, m *extbroker.Message) error {
	typ, ok := h.registry.DeviceType(m.DeviceID)
	if !ok {
		// Provisioned through another node a moment ago? Read it once.
		if r, isReader := h.store.(registry.CredentialReader); isReader {
			if err := h.registry.Reload(ctx, r, m.DeviceID); err != nil {
				return err
			}
			typ, ok = h.registry.DeviceType(m.DeviceID)
		}
		if !ok {
			// The broker let in a device the hub does not know: its ACL
			// or password file is out of step with the registry.
			h.log.Warn("external broker: message of an unknown device dropped", "device_id", m.DeviceID, "topic", m.Topic)
			return nil
		}
	}
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err := h.ingest.Handle(hctx, &ingest.Request{
		DeviceID:    m.DeviceID,
		DeviceType:  typ,
		Topic:       m.Topic,
		Payload:     m.Payload,
		QoS:         m.QoS,
		Transport:   "mqtt",
		ContentType: m.ContentType,
		Received:    m.Received,
	})
	var rej *ingest.Rejection
	if errors.As(err, &rej) {
		return nil // recorded, and told the device on devices/{id}/errors
	}
	return err
}

// embeddedAddr is mqtt.addr; with an external broker, where mqtt.addr
// may be empty, an address that satisfies the embedded broker's
// construction: it is built (the hub's parts hold it) but never run.
func embeddedAddr(cfg *config.Config) string {
	if cfg.MQTT.External.Enabled() && cfg.MQTT.Addr == "" {
		return "127.0.0.1:0"
	}
	return cfg.MQTT.Addr
}

// activityTransport is the transport presence gives a device it brings
// online by its messages: with an external broker the hub never sees a
// device's connection.
func activityTransport(cfg *config.Config) string {
	if cfg.MQTT.External.Enabled() {
		return presence.TransportExternal
	}
	return presence.TransportHTTP
}

// runDevices runs the device side: the embedded broker, or the external
// broker's client.
func (h *Hub) runDevices(ctx context.Context) error {
	if h.ext != nil {
		return h.ext.Run(ctx)
	}
	return h.broker.Run(ctx)
}

// devicesReady is closed once devices can be reached: the embedded
// broker listens, or the external broker's client is subscribed.
func (h *Hub) devicesReady() <-chan struct{} {
	if h.ext != nil {
		return h.ext.Ready()
	}
	return h.broker.Ready()
}
