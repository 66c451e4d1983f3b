package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Outbound is a message a node publishes to a device (a configuration or
// firmware notice) that must reach the device on whichever node holds its
// connection. Retained messages are kept by every node's broker.
//
// Kind KindMonitors is not for a device: it tells the nodes that an
// operator changed push monitors (Topic names the monitor).
type Outbound struct {
	Kind    string `json:"kind,omitempty"`
	Topic   string `json:"topic"`
	Payload []byte `json:"payload"`
	Retain  bool   `json:"retain,omitempty"`
	QoS     byte   `json:"qos"`
}

// Kinds of Outbound messages that are not for a device: see Outbound.
const (
	KindMonitors = "monitors"
)

// relaySubject carries Outbound messages between the nodes (core NATS:
// at most once, in order per sending node). What must survive a lost
// message is in PostgreSQL: a node where a device connects reads what is
// pending for it, and firmware notices are sent again until answered.
func (f *Fanout) relaySubject() string { return "devicehub." + f.opts.Name + ".outbound" }

// Relay sends m to the other nodes. It does not wait for them: a message
// that cannot be sent now is lost (see relaySubject for why that is
// acceptable).
func (f *Fanout) Relay(m Outbound) error {
	data, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("cluster: encode outbound %s: %w", m.Topic, err)
	}
	msg := &nats.Msg{Subject: f.relaySubject(), Data: data, Header: nats.Header{}}
	msg.Header.Set(nodeHeader, f.opts.Node)
	if err := f.nc.PublishMsg(msg); err != nil {
		return fmt.Errorf("cluster: relay %s: %w", m.Topic, err)
	}
	return nil
}

// OnRelay calls fn with every Outbound message another node relays, one
// at a time in the order each node sent them, until the returned stop
// is called (or the NATS connection closes with Run).
func (f *Fanout) OnRelay(fn func(Outbound)) (stop func(), err error) {
	sub, err := f.nc.Subscribe(f.relaySubject(), func(msg *nats.Msg) {
		if msg.Header.Get(nodeHeader) == f.opts.Node {
			return
		}
		var m Outbound
		if err := json.Unmarshal(msg.Data, &m); err != nil {
			f.logger.Warn("cluster: undecodable outbound message dropped", "err", err)
			return
		}
		fn(m)
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: subscribe %s: %w", f.relaySubject(), err)
	}
	// Many notices at once (a rollout's first phase) must not be dropped
	// as a slow consumer's.
	_ = sub.SetPendingLimits(1<<20, 256<<20)
	return func() { _ = sub.Unsubscribe() }, nil
}

// ErrNoServer: no node serves a request's kind now (Request).
var ErrNoServer = errors.New("cluster: no node serves the request now")

// requestSubject carries the requests of a kind to the node that serves
// them (core NATS request and reply: the caller gets the answer, or an
// error, never silence).
func (f *Fanout) requestSubject(kind string) string {
	return "devicehub." + f.opts.Name + ".request." + kind
}

// Serve answers the requests of kind with fn, one at a time, until the
// returned stop is called (or the NATS connection closes with Run). One
// node serves a kind: the holder of the lease of the work it is about.
func (f *Fanout) Serve(kind string, fn func(req []byte) []byte) (stop func(), err error) {
	sub, err := f.nc.Subscribe(f.requestSubject(kind), func(msg *nats.Msg) {
		if err := msg.Respond(fn(msg.Data)); err != nil {
			f.logger.Warn("cluster: answer not sent", "kind", kind, "err", err)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: serve %s: %w", kind, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// Request sends req to the node serving kind and returns its answer
// (ErrNoServer when none serves it now) within ctx.
func (f *Fanout) Request(ctx context.Context, kind string, req []byte) ([]byte, error) {
	msg, err := f.nc.RequestWithContext(ctx, f.requestSubject(kind), req)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, ErrNoServer
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: request %s: %w", kind, err)
	}
	return msg.Data, nil
}
