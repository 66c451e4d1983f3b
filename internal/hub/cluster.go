package hub

import (
	"context"
	"fmt"

	"github.com/devicehub/devicehub/internal/lease"
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
