package hub

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/firmware"
)

// newFirmware builds firmware updates: the artifact directory and signing
// key (in the data directory unless firmware.dir / key_file say
// otherwise) and the rollouts not finished, loaded from the store.
func newFirmware(ctx context.Context, cfg *config.Config, st firmware.Store, c firmware.Committer, pub firmware.Publisher,
	devs firmware.Devices, log *slog.Logger) (*firmware.Service, error) {
	fc := cfg.Firmware
	dir, key := fc.Dir, fc.KeyFile
	if dir == "" {
		dir = filepath.Join(cfg.DataDir, "firmware")
	}
	if key == "" {
		key = filepath.Join(cfg.DataDir, "firmware-signing.key")
	}
	files, err := firmware.NewFiles(dir, key)
	if err != nil {
		return nil, fmt.Errorf("config: firmware.dir: %w", err)
	}
	svc := firmware.New(firmware.Deps{Store: st, Committer: c, Publisher: pub, Devices: devs, Files: files}, firmware.Options{
		URL: fc.URL, MaxArtifactBytes: int64(fc.MaxArtifactBytes), Tick: fc.Tick, RefreshEvery: fc.RefreshEvery,
		ConnectDelay: fc.ConnectDelay, NoticeResend: fc.NoticeResend,
		StepTimeout: fc.StepTimeout, TotalTimeout: fc.TotalTimeout, HealthWindow: fc.HealthWindow, Settle: fc.Settle,
	}, log)
	if err := svc.Load(ctx); err != nil {
		return nil, err
	}
	return svc, nil
}

// observeFirmware feeds the firmware service the connects and disconnects
// it follows until ctx is done.
func observeFirmware(ctx context.Context, bus *eventlog.Bus, svc *firmware.Service) error {
	sub, err := bus.Subscribe(eventlog.SubscribeOptions{Filter: events.Filter{Types: firmware.ObservedTypes}},
		func(e events.Event) { svc.Observe(ctx, e) })
	if err != nil {
		return fmt.Errorf("subscribe firmware: %w", err)
	}
	<-ctx.Done()
	sub.Close()
	return nil
}
