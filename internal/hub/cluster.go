package hub

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/devicehub/devicehub/events"

	"github.com/devicehub/devicehub/internal/cluster"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/lease"
	"github.com/devicehub/devicehub/internal/presence"
	"github.com/devicehub/devicehub/internal/registry"
)

// nodeLeasePrefix names the leases that say a node is alive:
// node/<node_id>, renewed every cluster.renew.
const nodeLeasePrefix = "node/"

// newLeases returns the lease manager of a cluster node, nil outside
// cluster mode. Cluster mode needs a store that keeps leases (PostgreSQL;
// the configuration refuses SQLite already).
func (h *Hub) newLeases() error {
	cl := h.cfg.Cluster
	if !cl.Enabled() {
		return nil
	}
	ls, ok := h.store.(clusterStore)
	if !ok {
		return fmt.Errorf("cluster mode needs storage.driver: postgres, got %s", h.cfg.Storage.Driver)
	}
	h.leases = lease.New(ls, lease.Options{Holder: cl.NodeID, TTL: cl.LeaseTTL, Renew: cl.Renew}, h.log.With("component", "lease"), h.reg)
	return nil
}

// maxNodes bounds the nodes of a cluster: message ids carry the node's
// slot in their low bits (commit.IDs.Slots).
const maxNodes = 16

// takeSlot takes the first free message id slot (a lease slot/<k>, kept
// with the node's) so that no two live nodes hand out the same message id.
func (h *Hub) takeSlot(ctx context.Context, ids *commit.IDs) error {
	ls := h.clusterStore()
	for k := range maxNodes {
		_, ok, err := ls.AcquireLease(ctx, fmt.Sprintf("slot/%d", k), h.cfg.Cluster.NodeID, h.cfg.Cluster.LeaseTTL)
		if err != nil {
			return fmt.Errorf("cluster: message id slot: %w", err)
		}
		if ok {
			h.slot = k
			ids.Slots(int64(k), maxNodes)
			h.log.Info("cluster node", "node_id", h.cfg.Cluster.NodeID, "message_id_slot", k)
			return nil
		}
	}
	return fmt.Errorf("cluster: all %d message id slots are held by live nodes (at most %d nodes)", maxNodes, maxNodes)
}

// runSlotLease keeps the node's message id slot.
func (h *Hub) runSlotLease(ctx context.Context) error {
	return h.leases.Run(ctx, fmt.Sprintf("slot/%d", h.slot), func(ctx context.Context, _ int64) error {
		<-ctx.Done()
		return nil
	})
}

// runNodeLease holds the node's own lease while the node serves: a
// survivor holding the reaper lease treats a node whose lease expired as
// dead.
func (h *Hub) runNodeLease(ctx context.Context) error {
	return h.leases.Run(ctx, nodeLeasePrefix+h.cfg.Cluster.NodeID, func(ctx context.Context, _ int64) error {
		<-ctx.Done()
		return nil
	})
}

// newFanout connects the node to the NATS cluster that relays committed
// events between the nodes.
func (h *Hub) newFanout(ctx context.Context) error {
	cl := h.cfg.Cluster
	last, err := h.store.LastSeq(ctx)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	h.fanout, err = cluster.New(ctx, cluster.Options{URLs: cl.NATS, Node: cl.NodeID, Name: cl.Name, Replicas: cl.StreamReplicas, Poll: cl.LogPoll},
		h.bus, h.store, last, h.log.With("component", "fanout"), h.reg)
	return err
}

// credentialTypes are the events after which a node reloads the device's
// credentials: another node may have changed them.
var credentialTypes = []events.Type{events.DeviceProvisioned, events.DeviceRegistered, events.DeviceCredentialsRevoked, events.DeviceDisabledChanged}

// clusterStore is what cluster mode needs of the store beyond Store (the
// PostgreSQL store has it; New checked).
type clusterStore interface {
	lease.Store
	registry.CredentialReader
	NextSessionGeneration(ctx context.Context) (uint64, error)
	DevicesOnNode(ctx context.Context, node string) ([]presence.LostDevice, error)
}

func (h *Hub) clusterStore() clusterStore { return h.store.(clusterStore) }

// resetOwnDevices sets offline (hub_restart) the devices the database
// shows connected through this node: its previous life stopped without
// recording their disconnects. Devices on other nodes are theirs.
func (h *Hub) resetOwnDevices(ctx context.Context) error {
	devs, err := h.clusterStore().DevicesOnNode(ctx, h.cfg.Cluster.NodeID)
	if err != nil {
		return err
	}
	if len(devs) == 0 {
		return nil
	}
	h.log.Info("devices left connected to this node by an unclean stop are set offline", "devices", len(devs))
	return h.presence.Lost(ctx, devs, presence.ReasonHubRestart)
}

// reap runs on the node holding the reaper lease: every cluster.renew it
// sets offline, with reason node_lost, the devices still shown connected
// through a node whose lease expired (unless they reconnected elsewhere:
// their stored session is newer, and the change does not apply).
func (h *Hub) reap(ctx context.Context) error {
	t := time.NewTicker(h.cfg.Cluster.Renew)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		nodes, err := h.leases.Leases(ctx, nodeLeasePrefix)
		if err != nil {
			h.log.Warn("reaper: list node leases", "err", err)
			continue
		}
		for _, n := range nodes {
			if n.Live {
				continue
			}
			node := strings.TrimPrefix(n.Name, nodeLeasePrefix)
			devs, err := h.clusterStore().DevicesOnNode(ctx, node)
			if err != nil {
				h.log.Warn("reaper: devices of a dead node", "node", node, "err", err)
				continue
			}
			if len(devs) == 0 {
				continue
			}
			h.log.Warn("node lost: its devices are set offline", "node", node, "devices", len(devs))
			if err := h.presence.Lost(ctx, devs, events.ReasonNodeLost); err != nil && ctx.Err() == nil {
				h.log.Warn("reaper: set devices offline", "node", node, "err", err)
			}
		}
	}
}

// followCluster keeps this node's in-memory views in step with what the
// other nodes commit (every node runs it): the credential view, sessions
// taken over, desired properties, configuration templates and group
// configurations.
func (h *Hub) followCluster(ctx context.Context) error {
	creds := h.clusterStore()
	types := append([]events.Type{events.DeviceConnected, events.TwinDesiredChanged, events.ConfigTemplatesChanged}, credentialTypes...)
	sub, err := h.bus.Subscribe(eventlog.SubscribeOptions{Filter: events.Filter{Types: types}}, func(e events.Event) {
		if e.Type == events.ConfigTemplatesChanged {
			// Held in memory by every node: read again, whatever node
			// changed them (this one too: harmless, and the event may
			// carry a change another node made meanwhile).
			if err := h.deviceConfig.ReloadTemplates(ctx); err != nil && ctx.Err() == nil {
				h.log.Warn("cluster: reload configuration templates", "err", err)
			}
			return
		}
		if e.Type == events.TwinDesiredChanged {
			// Retained on every node's broker: the device gets them on
			// whichever node it is, or will be, connected to.
			if d, ok := e.Args.(*events.TwinDesired); ok {
				h.twin.Republish(e.DeviceID, d.Version, d.Values)
			}
			return
		}
		if e.Type == events.DeviceConnected {
			// A newer session anywhere closes the older ones here, and
			// makes their disconnects stale.
			if c, ok := e.Args.(*events.Connected); ok && c.Generation != 0 {
				h.presence.Superseded(e.DeviceID, c.Generation)
				h.broker.Supersede(e.DeviceID, c.Generation)
			}
			return
		}
		if err := h.registry.Reload(ctx, creds, e.DeviceID); err != nil && ctx.Err() == nil {
			h.log.Warn("cluster: reload credentials", "device_id", e.DeviceID, "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("cluster: follow events: %w", err)
	}
	// What changed between this node's start (Load) and its subscription.
	if err := h.deviceConfig.ReloadTemplates(ctx); err != nil && ctx.Err() == nil {
		h.log.Warn("cluster: reload configuration templates", "err", err)
	}
	<-ctx.Done()
	sub.Close()
	return nil
}

// errLeaseLost stops a node whose single-owner part lost its lease: the
// part cannot be sure its state is current after another node ran it, so
// the node stops (and its supervisor starts it again), crash-only.
var errLeaseLost = errors.New("lease lost")

// single runs part under lease name: only while this node holds it, and
// on one node of the cluster at a time. Outside cluster mode it runs part
// at once. prepare, when set, runs after the lease is taken and before
// part (to reload state another node may have changed). A part stopped
// because the lease was lost stops the node. The part's context carries
// the lease's fence (commit.WithFence): its changes and its stores'
// fenced writes are refused once the token is no longer current.
func (h *Hub) single(name string, prepare func(context.Context) error, part func(context.Context) error) func(context.Context) error {
	if h.leases == nil {
		return part
	}
	return func(ctx context.Context) error {
		return h.leases.Run(ctx, "job/"+name, func(lctx context.Context, token int64) error {
			// The part's writes are fenced: refused once another node
			// holds the lease (checked in each write's transaction).
			lctx = commit.WithFence(lctx, commit.Fence{Lease: "job/" + name, Token: token})
			if prepare != nil {
				if err := prepare(lctx); err != nil {
					return err
				}
			}
			err := part(lctx)
			if ctx.Err() == nil && lctx.Err() != nil {
				return fmt.Errorf("%s: %w; stopping the node", name, errLeaseLost)
			}
			return err
		})
	}
}

// relayPublisher publishes a message to a device on this node's broker
// and relays it to the other nodes, which publish it on theirs: the
// device gets it on whichever node holds its connection (firmware
// notices).
type relayPublisher struct{ h *Hub }

func (p relayPublisher) Publish(topic string, payload []byte, retain bool, qos byte) error {
	err := p.h.broker.Publish(topic, payload, retain, qos)
	if rerr := p.h.fanout.Relay(cluster.Outbound{Topic: topic, Payload: payload, Retain: retain, QoS: qos}); rerr != nil {
		p.h.log.Warn("cluster: relay to the other nodes", "topic", topic, "err", rerr)
	}
	return err
}

// relayConfigNotice tells the other nodes that a device's configuration
// notice changed: each reads it from the store (so that two changes made
// through two nodes end with the newer one everywhere) and keeps it
// retained on its broker.
func (h *Hub) relayConfigNotice(deviceID string) {
	if err := h.fanout.Relay(cluster.Outbound{Topic: configNoticeTopic(deviceID), Retain: true, QoS: 1}); err != nil {
		h.log.Warn("cluster: relay config notice", "device_id", deviceID, "err", err)
	}
}

func configNoticeTopic(deviceID string) string { return "devices/" + deviceID + "/config" }

// configNoticeDevice returns the device of a config notice topic.
func configNoticeDevice(topic string) (string, bool) {
	rest, ok := strings.CutPrefix(topic, "devices/")
	if !ok {
		return "", false
	}
	id, ok := strings.CutSuffix(rest, "/config")
	return id, ok && id != "" && !strings.Contains(id, "/")
}

// followOutbound publishes on this node's broker what the other nodes
// relay for devices (every node runs it), and gives a device that connects
// here what is pending for it in the store: its configuration notice
// (firmware notices are sent again by the scheduler's node when it sees
// the device_connected event).
func (h *Hub) followOutbound(ctx context.Context) error {
	select {
	case <-h.devicesReady():
	case <-ctx.Done():
		return nil
	}
	refresh := func(id string) {
		if err := h.deviceConfig.Refresh(ctx, id); err != nil && ctx.Err() == nil {
			h.log.Warn("cluster: refresh config notice", "device_id", id, "err", err)
		}
	}
	stop, err := h.fanout.OnRelay(func(m cluster.Outbound) {
		if m.Kind == cluster.KindMonitors {
			if err := h.monitors.Sync(ctx); err != nil && ctx.Err() == nil {
				h.log.Warn("cluster: sync monitors changed through another node", "monitor", m.Topic, "err", err)
			}
			return
		}
		if m.Kind != "" {
			return
		}
		if id, ok := configNoticeDevice(m.Topic); ok && m.Retain && m.Payload == nil {
			refresh(id)
			return
		}
		if err := h.broker.Publish(m.Topic, m.Payload, m.Retain, m.QoS); err != nil {
			h.log.Warn("cluster: publish relayed message", "topic", m.Topic, "err", err)
		}
	})
	if err != nil {
		return err
	}
	defer stop()
	node := h.cfg.Cluster.NodeID
	sub, err := h.bus.Subscribe(eventlog.SubscribeOptions{Filter: events.Filter{Types: []events.Type{events.DeviceConnected}}}, func(e events.Event) {
		if c, ok := e.Args.(*events.Connected); ok && c.Node == node {
			refresh(e.DeviceID)
		}
	})
	if err != nil {
		return fmt.Errorf("cluster: follow connects: %w", err)
	}
	<-ctx.Done()
	sub.Close()
	return nil
}

// relayMonitorChanged tells the other nodes that an operator changed a
// push monitor through this one: the node running the monitors (and every
// other, for its API's view) syncs them from the store at once.
func (h *Hub) relayMonitorChanged(id string) {
	if err := h.fanout.Relay(cluster.Outbound{Kind: cluster.KindMonitors, Topic: id}); err != nil {
		h.log.Warn("cluster: relay monitor change", "monitor", id, "err", err)
	}
}

// monitorSyncEvery is how often the node running the monitors syncs them
// from the store in cluster mode, in case a relayed change was lost.
const monitorSyncEvery = 5 * time.Second

// runMonitors runs the push monitors' send loops (on the node holding
// job/monitors in cluster mode, where it also syncs them from the store
// every monitorSyncEvery).
func (h *Hub) runMonitors(ctx context.Context) error {
	if h.leases == nil {
		return h.monitors.Run(ctx)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return h.monitors.Run(gctx) })
	g.Go(func() error {
		t := time.NewTicker(monitorSyncEvery)
		defer t.Stop()
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-t.C:
				if err := h.monitors.Sync(gctx); err != nil && gctx.Err() == nil {
					h.log.Warn("sync monitors", "err", err)
				}
			}
		}
	})
	return g.Wait()
}

// monitorsElsewhere is what a stream receiver connecting to a node that
// does not run the monitors is told: the node that does.
func (h *Hub) monitorsElsewhere() string {
	me := h.cfg.Cluster.NodeID
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	infos, err := h.leases.Leases(ctx, "job/monitors")
	if err == nil && len(infos) == 1 && infos[0].Live && infos[0].Holder != me {
		return fmt.Sprintf("cluster: the monitors run on node %s, not on this node (%s): connect to the monitor port of %s",
			infos[0].Holder, me, infos[0].Holder)
	}
	return fmt.Sprintf("cluster: the monitors do not run on this node (%s) now (no node holds them, or this one is taking them over): try again", me)
}
