package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

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
	pub deviceconfig.Publisher, reg *registry.Service, notified func(string), log *slog.Logger) (*deviceconfig.Service, error) {
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
		deviceconfig.Options{HistoryKeep: cfg.DeviceConfig.HistoryKeep, URL: cfg.DeviceConfig.NoticeURL, Notified: notified}, log)
	if err := svc.Load(ctx); err != nil {
		return nil, err
	}
	return svc, nil
}

// observeConfig feeds configuration management the events it follows (new
// devices, command outcomes, device fields) until ctx is done. It follows
// the durable log from where it stopped (its cursor is stored every
// observerSave and at the end), so the events committed before a crash
// that it had not handled yet are handled after the restart; Observe is
// idempotent, so handling one twice changes nothing. It takes every event
// (skipping the others costs little) so that its cursor moves with the
// log, not only with the events it handles.
//
// With no cursor stored (the first start of this version) it follows from
// logStart, the end of the log when the hub was built, not from the end
// when this goroutine gets to run: the hub serves requests before then,
// and a device provisioned in between must get its default templates.
func observeConfig(ctx context.Context, bus *eventlog.Bus, logStart int64, svc *deviceconfig.Service, log *slog.Logger) error {
	// A hub stopped while this starts is no failure of the hub.
	stopped := func(err error) error {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	from, ok, err := svc.ObserverCursor(ctx)
	if err != nil {
		return stopped(err)
	}
	if !ok {
		from = logStart
		if from > 0 {
			if err := svc.SaveObserverCursor(ctx, from); err != nil {
				return stopped(err)
			}
		}
	}
	// From 0 would mean "only what is published from now on"; -1 replays
	// the log from its start (empty when the hub was built, so only the
	// events committed since).
	if from == 0 {
		from = -1
	}
	observed := map[events.Type]bool{}
	for _, t := range deviceconfig.ObservedTypes {
		observed[t] = true
	}
	sub, err := bus.Subscribe(eventlog.SubscribeOptions{From: from, Buffer: 16384},
		func(e events.Event) {
			if observed[e.Type] {
				svc.Observe(ctx, e)
			}
		})
	if err != nil {
		return fmt.Errorf("subscribe deviceconfig: %w", err)
	}
	saved := max(from, 0)
	save := func(ctx context.Context, level slog.Level) {
		if seq := sub.LastSeq(); seq > saved {
			if err := svc.SaveObserverCursor(ctx, seq); err != nil {
				// A periodic save cut short by the hub's stop is no
				// trouble: the save at the end follows.
				if ctx.Err() == nil {
					log.Log(ctx, level, "save config observer cursor", "err", err)
				}
				return
			}
			saved = seq
		}
	}
	t := time.NewTicker(observerSave)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			save(ctx, slog.LevelWarn)
		case <-ctx.Done():
			sub.Close()
			// The committer may have stopped already: then the events since
			// the last save are handled again after the restart.
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			save(sctx, slog.LevelDebug)
			cancel()
			return nil
		}
	}
}

// observerSave is how often observeConfig stores its cursor.
const observerSave = time.Second
