package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/deviceconfig"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/registry"
)

// groupLookup tells deviceconfig whether a registry group exists.
type groupLookup struct{ r *registry.Service }

func (g groupLookup) GroupExists(ctx context.Context, id string) (bool, error) {
	_, err := g.r.GetGroup(ctx, id)
	if errors.Is(err, registry.ErrGroupNotFound) {
		return false, nil
	}
	return err == nil, err
}

// GroupDevices lists the ids of a group's devices.
func (g groupLookup) GroupDevices(ctx context.Context, id string) ([]string, error) {
	var out []string
	opts := registry.ListOptions{Limit: 1000}
	for {
		ds, err := g.r.ListGroupDevices(ctx, id, opts)
		if err != nil {
			return nil, err
		}
		for _, d := range ds {
			out = append(out, d.ID)
		}
		if len(ds) < opts.Limit {
			return out, nil
		}
		opts.After = ds[len(ds)-1].ID
	}
}

var _ deviceconfig.GroupMembers = groupLookup{}

// newDeviceConfig builds configuration management with its backends and
// loads its state.
func newDeviceConfig(ctx context.Context, cfg *config.Config, st deviceconfig.Store, c deviceconfig.Committer,
	pub deviceconfig.Publisher, reg *registry.Service, log *slog.Logger) (*deviceconfig.Service, error) {
	var extra []deviceconfig.Backend
	for i, p := range cfg.DeviceConfig.BackendTemplates {
		b, err := deviceconfig.LoadTextTemplate(p)
		if err != nil {
			return nil, fmt.Errorf("config: device_config.backend_templates[%d]: %w", i, err)
		}
		extra = append(extra, b)
	}
	be, err := deviceconfig.NewBackends(extra...)
	if err != nil {
		return nil, fmt.Errorf("config: device_config.backend_templates: %w", err)
	}
	svc := deviceconfig.New(deviceconfig.Deps{Store: st, Committer: c, Publisher: pub, Groups: groupLookup{reg}, Backends: be},
		deviceconfig.Options{HistoryKeep: cfg.DeviceConfig.HistoryKeep, URL: cfg.DeviceConfig.NoticeURL}, log)
	if err := svc.Load(ctx); err != nil {
		return nil, err
	}
	return svc, nil
}

// observeConfig feeds configuration management the events it follows (new
// devices, command outcomes, device fields) until ctx is done.
func observeConfig(ctx context.Context, bus *eventlog.Bus, svc *deviceconfig.Service) error {
	sub, err := bus.Subscribe(eventlog.SubscribeOptions{Filter: events.Filter{Types: deviceconfig.ObservedTypes}},
		func(e events.Event) { svc.Observe(ctx, e) })
	if err != nil {
		return fmt.Errorf("subscribe deviceconfig: %w", err)
	}
	<-ctx.Done()
	sub.Close()
	return nil
}
