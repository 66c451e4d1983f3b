package presence

import (
	"context"
	"fmt"

	"github.com/devicehub/devicehub/internal/registry"
)

// DeviceLister lists stored devices (the store's registry view).
type DeviceLister interface {
	ListDevices(ctx context.Context, opts registry.ListOptions) ([]registry.Device, error)
}

// resetPage is how many devices a listing round reads.
const resetPage = 1000

// ResetAfterStart sets offline (reason hub_restart) the devices that the
// store still shows connected or online: an unclean stop left them so,
// and nobody is connected to a hub that just started. It returns how many
// it reset. Call it before devices can connect.
func (t *Tracker) ResetAfterStart(ctx context.Context, devs DeviceLister) (int, error) {
	connected := true
	seen := map[string]bool{}
	var stale []string
	types := map[string]string{}
	for _, opts := range []registry.ListOptions{{Connected: &connected}, {Status: StatusOnline}} {
		opts.Limit = resetPage
		for {
			page, err := devs.ListDevices(ctx, opts)
			if err != nil {
				return 0, fmt.Errorf("list connected devices: %w", err)
			}
			for _, d := range page {
				if !seen[d.ID] {
					seen[d.ID] = true
					stale = append(stale, d.ID)
					types[d.ID] = d.Type
				}
			}
			if len(page) < opts.Limit {
				break
			}
			opts.After = page[len(page)-1].ID
		}
	}
	if len(stale) == 0 {
		return 0, nil
	}
	t.log.Info("devices left online by an unclean stop are set offline", "devices", len(stale))
	if err := t.Restore(ctx, stale, types); err != nil {
		return 0, fmt.Errorf("restore presence: %w", err)
	}
	return len(stale), nil
}
