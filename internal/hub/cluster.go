package hub

import (
	"context"
	"errors"
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

// errLeaseLost stops a node whose single-owner part lost its lease: the
// part cannot be sure its state is current after another node ran it, so
// the node stops (and its supervisor starts it again), crash-only.
var errLeaseLost = errors.New("lease lost")

// single runs part under lease name: only while this node holds it, and
// on one node of the cluster at a time. Outside cluster mode it runs part
// at once. prepare, when set, runs after the lease is taken and before
// part (to reload state another node may have changed). A part stopped
// because the lease was lost stops the node.
func (h *Hub) single(name string, prepare func(context.Context) error, part func(context.Context) error) func(context.Context) error {
	if h.leases == nil {
		return part
	}
	return func(ctx context.Context) error {
		return h.leases.Run(ctx, "job/"+name, func(lctx context.Context, _ int64) error {
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
