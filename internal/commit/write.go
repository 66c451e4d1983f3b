package commit

import (
	"cmp"
	"context"
	"fmt"
	"slices"
)

// Write applies a batch inside tx; every backend's Commit calls it between
// beginning and committing its transaction. In order:
//
//  0. checkFences: a fenced change whose lease passed on fails with
//     ErrFenced (see Fence).
//  1. lookupDevices: one round trip learns which of the batch's devices
//     exist (those of changes with a DeviceCreator or a DeviceNeeder).
//  2. createAndCheckDevices, change by change in batch order: the
//     DeviceCreator ops create their devices, then a change with an op
//     that needs its device fails with ErrDeviceNotFound unless it exists.
//  3. writeDomains: each domain, in Rank order, writes its ops of the
//     changes still live.
//  4. writeEvents: the events of the changes still live, in batch order.
func Write(ctx context.Context, tx Tx, batch []*Change) error {
	if err := checkFences(ctx, tx, batch); err != nil {
		return err
	}
	if err := lookupDevices(ctx, tx, batch); err != nil {
		return err
	}
	if err := createAndCheckDevices(ctx, tx, batch); err != nil {
		return err
	}
	if err := writeDomains(ctx, tx, batch); err != nil {
		return err
	}
	return writeEvents(ctx, tx, batch)
}

// deviceUse reports whether ch creates its device and whether it needs it.
func deviceUse(ch *Change) (creates, needs bool) {
	for _, op := range ch.Ops {
		if _, ok := op.(DeviceCreator); ok {
			creates = true
		}
		if n, ok := op.(DeviceNeeder); ok && n.NeedsDevice() {
			needs = true
		}
	}
	return creates, needs
}

func lookupDevices(ctx context.Context, tx Tx, batch []*Change) error {
	var ids []string
	var asked map[string]struct{}
	for _, ch := range batch {
		if creates, needs := deviceUse(ch); !creates && !needs {
			continue
		}
		if asked == nil {
			asked = make(map[string]struct{}, len(batch))
		}
		if _, ok := asked[ch.DeviceID]; ok {
			continue
		}
		asked[ch.DeviceID] = struct{}{}
		ids = append(ids, ch.DeviceID)
	}
	if len(ids) == 0 {
		return nil
	}
	if err := tx.LookupDevices(ctx, ids); err != nil {
		return fmt.Errorf("look up devices: %w", err)
	}
	return nil
}

func createAndCheckDevices(ctx context.Context, tx Tx, batch []*Change) error {
	for _, ch := range batch {
		_, needs := deviceUse(ch)
		for _, op := range ch.Ops {
			c, ok := op.(DeviceCreator)
			if !ok {
				continue
			}
			if err := c.CreateDevice(ctx, tx, ch); err != nil {
				return err
			}
			if !ch.Live() {
				break
			}
		}
		if !needs || !ch.Live() {
			continue
		}
		ok, err := tx.DeviceExists(ctx, ch.DeviceID)
		if err != nil {
			return err
		}
		if !ok {
			ch.Err = ErrDeviceNotFound
		}
	}
	return nil
}

// domainOps are the ops of one domain in a batch, in batch order.
type domainOps struct {
	d   *Domain
	ops []Pending
}

func writeDomains(ctx context.Context, tx Tx, batch []*Change) error {
	var groups []domainOps
	for _, ch := range batch {
		if !ch.Live() {
			continue
		}
	ops:
		for _, op := range ch.Ops {
			d := op.Domain()
			for i := range groups {
				if groups[i].d == d {
					groups[i].ops = append(groups[i].ops, Pending{ch, op})
					continue ops
				}
			}
			g := domainOps{d: d, ops: make([]Pending, 0, len(batch))}
			groups = append(groups, domainOps{d: d, ops: append(g.ops, Pending{ch, op})})
		}
	}
	slices.SortFunc(groups, func(a, b domainOps) int {
		return cmp.Or(cmp.Compare(a.d.Rank, b.d.Rank), cmp.Compare(a.d.Name, b.d.Name))
	})
	for _, g := range groups {
		if g.d.Write == nil {
			continue
		}
		if err := g.d.Write(ctx, tx, g.ops); err != nil {
			return fmt.Errorf("%s: %w", g.d.Name, err)
		}
	}
	return nil
}

func writeEvents(ctx context.Context, tx Tx, batch []*Change) error {
	evs := make([]*Event, 0, len(batch))
	for _, ch := range batch {
		if !ch.Live() {
			continue
		}
		for i := range ch.Events {
			evs = append(evs, &ch.Events[i])
		}
	}
	if err := tx.WriteEvents(ctx, evs); err != nil {
		return fmt.Errorf("insert events: %w", err)
	}
	return nil
}
