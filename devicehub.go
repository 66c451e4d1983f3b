// Package devicehub embeds the devicehub IoT hub in a Go program: build a Hub
// from a configuration, register device types in code, subscribe to its
// signals, and run it.
//
//	cfg, _ := devicehub.LoadConfig("devicehub.yaml")
//	hub, _ := devicehub.New(ctx, cfg, nil)
//	hub.Subscribe(events.Filter{Types: []events.Type{events.DeviceDataReceived},
//		DeviceTypes: []string{"WeatherStation"}}, func(e events.Event) {
//		d := e.Args.(*events.DataReceived)
//		...
//	})
//	hub.Run(ctx)
//
// Subscribers are called after the change an event describes is committed,
// in order, each from its own goroutine with its own bounded queue: a slow
// subscriber falls back to reading the durable event log and never stalls
// ingest.
package devicehub

import (
	"context"
	"log/slog"
	"os"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/hub"
	"github.com/devicehub/devicehub/internal/registry"
)

// Config is the hub's configuration (see docs and devicehub.example.yaml).
type Config = config.Config

// DeviceType declares a type of device: its reading fields, heartbeat and
// commands.
type DeviceType = devicetype.Type

// Field declares one reading field of a device type.
type Field = devicetype.Field

// Field types.
const (
	Float  = devicetype.Float
	Int    = devicetype.Int
	Bool   = devicetype.Bool
	String = devicetype.String
	JSON   = devicetype.JSON
)

// DefaultConfig returns the embedded defaults: embedded MQTT broker, SQLite
// in ./devicehub-data.
func DefaultConfig() *Config { return config.Default() }

// LoadConfig reads a YAML configuration file, then DEVICEHUB_* environment
// variables, and validates the result.
func LoadConfig(path string) (*Config, error) {
	return config.Load(path, os.LookupEnv, config.Overrides{})
}

// Hub is an embedded devicehub.
type Hub struct{ h *hub.Hub }

// Subscription is a live subscription to the hub's events.
type Subscription interface{ Close() }

// New builds a hub. A nil logger logs to stderr.
func New(ctx context.Context, cfg *Config, log *slog.Logger) (*Hub, error) {
	if log == nil {
		log = slog.Default()
	}
	h, err := hub.New(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	return &Hub{h: h}, nil
}

// RegisterType declares (or replaces) a device type in code.
func (h *Hub) RegisterType(t DeviceType) error { return h.h.RegisterType(t) }

// Subscribe calls fn for every event that passes f, committed from now on.
func (h *Hub) Subscribe(f events.Filter, fn func(events.Event)) (Subscription, error) {
	return h.h.Subscribe(f, 0, fn)
}

// SubscribeFrom is Subscribe that first replays stored events with a
// sequence number above from.
func (h *Hub) SubscribeFrom(f events.Filter, from int64, fn func(events.Event)) (Subscription, error) {
	return h.h.Subscribe(f, from, fn)
}

// Provision creates a device of a declared type and returns its plaintext
// credentials: the only time they are available.
func (h *Hub) Provision(ctx context.Context, deviceID, deviceType string) (events.Credentials, error) {
	return h.h.Registry().Provision(ctx, registry.ProvisionRequest{ID: deviceID, Type: deviceType})
}

// Run serves until ctx is done, then stops devices, flushes the last batch
// and closes the store.
func (h *Hub) Run(ctx context.Context) error { return h.h.Run(ctx) }

// Ready is closed once the hub serves MQTT and HTTP.
func (h *Hub) Ready() <-chan struct{} { return h.h.Ready() }

// MQTTAddr is the bound MQTT address, after Ready.
func (h *Hub) MQTTAddr() string { return h.h.MQTTAddr() }

// HTTPAddr is the bound HTTP address, after Ready.
func (h *Hub) HTTPAddr() string { return h.h.HTTPAddr() }
