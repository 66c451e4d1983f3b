package hub

import (
	"context"
	"errors"
	"fmt"

	"github.com/devicehub/devicehub/events"

	"github.com/devicehub/devicehub/internal/cluster"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/lease"
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
	ls, ok := h.store.(lease.Store)
	if !ok {
		return fmt.Errorf("cluster mode needs storage.driver: postgres, got %s", h.cfg.Storage.Driver)
	}
	h.leases = lease.New(ls, lease.Options{Holder: cl.NodeID, TTL: cl.LeaseTTL, Renew: cl.Renew}, h.log.With("component", "lease"), h.reg)
	return nil
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
	h.fanout, err = cluster.New(ctx, cluster.Options{URLs: cl.NATS, Node: cl.NodeID, Name: cl.Name, Replicas: cl.StreamReplicas},
		h.bus, h.store, last, h.log.With("component", "fanout"), h.reg)
	return err
}

// credentialTypes are the events after which a node reloads the device's
// credentials: another node may have changed them.
var credentialTypes = []events.Type{events.DeviceProvisioned, events.DeviceRegistered, events.DeviceCredentialsRevoked, events.DeviceDisabledChanged}

// followCluster keeps this node's in-memory views in step with what the
// other nodes commit (every node runs it): the credential view.
func (h *Hub) followCluster(ctx context.Context) error {
	creds, ok := h.store.(registry.CredentialReader)
	if !ok {
		return errors.New("cluster: the store cannot read one device's credentials")
	}
	sub, err := h.bus.Subscribe(eventlog.SubscribeOptions{Filter: events.Filter{Types: credentialTypes}}, func(e events.Event) {
		if err := h.registry.Reload(ctx, creds, e.DeviceID); err != nil && ctx.Err() == nil {
			h.log.Warn("cluster: reload credentials", "device_id", e.DeviceID, "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("cluster: follow events: %w", err)
	}
	<-ctx.Done()
	sub.Close()
	return nil
}
