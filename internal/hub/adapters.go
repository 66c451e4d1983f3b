package hub

import (
	"context"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/broker"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/ingest"
	"github.com/devicehub/devicehub/internal/monitors"
	"github.com/devicehub/devicehub/internal/registry"
)

// sessionKicker closes a device's sessions in the broker. The registry and
// presence get it at construction; the broker, built after them (it
// authenticates with the one and reports to the other), is reached
// through the hub, and only once the hub runs.
type sessionKicker struct{ h *Hub }

func (k sessionKicker) Kick(deviceID, reason string) { k.h.broker.Kick(deviceID, reason) }

// brokerIngest hands MQTT publishes to the ingest pipeline.
type brokerIngest struct{ h *Hub }

func (b brokerIngest) HandlePublish(ctx context.Context, p *broker.Publish) error {
	_, err := b.h.ingest.Handle(ctx, &ingest.Request{
		DeviceID:    p.DeviceID,
		DeviceType:  p.DeviceType,
		Topic:       p.Topic,
		Payload:     p.Payload,
		QoS:         p.QoS,
		Transport:   "mqtt",
		ContentType: p.ContentType,
		Will:        p.Will,
		Received:    p.Received,
		// The broker tells presence of every packet a device sends
		// (a will is none).
		ActivityNoted: !p.Will,
	})
	return err
}

// StartPublish hands a QoS 1 publish to the pipeline without waiting for
// its commit (broker.PublishStarter): done is called by the committer.
func (b brokerIngest) StartPublish(ctx context.Context, p *broker.Publish, done func(error)) (bool, error) {
	pd, err := b.h.ingest.Start(ctx, &ingest.Request{
		DeviceID:    p.DeviceID,
		DeviceType:  p.DeviceType,
		Topic:       p.Topic,
		Payload:     p.Payload,
		QoS:         p.QoS,
		Transport:   "mqtt",
		ContentType: p.ContentType,
		Will:        p.Will,
		Received:    p.Received,
		// The broker tells presence of every packet a device sends
		// (a will is none).
		ActivityNoted: !p.Will,
	})
	if pd == nil {
		return false, err
	}
	pd.OnDone(done)
	return true, nil
}

var _ broker.PublishStarter = brokerIngest{}

// httpIngest hands readings posted over HTTP to the ingest pipeline.
type httpIngest struct{ h *Hub }

func (x httpIngest) HandleHTTPData(ctx context.Context, deviceID, deviceType, stream string, payload []byte, contentType string) (api.DataResult, error) {
	topic := "devices/" + deviceID + "/data"
	if stream != "" {
		topic += "/" + stream
	}
	res, err := x.h.ingest.Handle(ctx, &ingest.Request{
		DeviceID:    deviceID,
		DeviceType:  deviceType,
		Topic:       topic,
		Payload:     payload,
		QoS:         1,
		Transport:   "http",
		ContentType: contentType,
		Received:    now(),
	})
	if err != nil {
		return api.DataResult{}, err
	}
	return api.DataResult{MessageID: res.MessageID, Readings: res.Readings, Duplicate: res.Duplicate}, nil
}

// busEvents lets the API subscribe to the event bus.
type busEvents struct{ b *eventlog.Bus }

func (e busEvents) Subscribe(opts eventlog.SubscribeOptions, fn func(events.Event)) (api.Subscription, error) {
	s, err := e.b.Subscribe(opts, fn)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func now() time.Time { return time.Now().UTC() }

// monitorEvents is the event log as the monitors read it.
type monitorEvents struct {
	bus *eventlog.Bus
	st  eventlog.Store
}

func (m monitorEvents) Subscribe(opts eventlog.SubscribeOptions, fn func(events.Event)) (monitors.Subscription, error) {
	s, err := m.bus.Subscribe(opts, fn)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return s, nil
}

func (m monitorEvents) LastSeq(ctx context.Context) (int64, error) { return m.st.LastSeq(ctx) }

func (m monitorEvents) ReadEvents(ctx context.Context, after int64, limit int) ([]events.Event, error) {
	return m.st.ReadEvents(ctx, after, limit)
}

// registryGroups tells the monitors a device's group.
type registryGroups struct{ r *registry.Service }

func (g registryGroups) DeviceGroup(ctx context.Context, id string) (string, error) {
	d, err := g.r.Get(ctx, id)
	if err != nil {
		return "", err
	}
	return d.Group, nil
}
