package hub

import (
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/alerts"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventlog"
)

// knownTypes tells alerts which device types are declared.
type knownTypes struct{ r *devicetype.Registry }

func (k knownTypes) Known(name string) bool {
	_, err := k.r.Get(name)
	return err == nil
}

// newAlerts builds the alert evaluator; Load it before Run.
func newAlerts(cfg *config.Config, st Store, c *commit.Committer, bus *eventlog.Bus, types *devicetype.Registry,
	log *slog.Logger, reg prometheus.Registerer) *alerts.Service {
	return alerts.New(alerts.Deps{
		Store: st, Committer: c, Events: bus, Log: st, Devices: st, Readings: st, Types: knownTypes{types},
	}, alerts.Options{
		Rules:           cfg.Alerts.RuleSpecs(),
		DevicePerMinute: cfg.Alerts.Flood.PerDevicePerMinute,
		GlobalPerMinute: cfg.Alerts.Flood.GlobalPerMinute,
	}, log, reg)
}
