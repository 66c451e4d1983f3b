// Package hub is the composition root: it builds every part of devicehub from
// a validated configuration, wires concrete storage into the domains, and runs
// the long-running parts under one owner with an ordered shutdown.
//
// Shutdown order matters for "ack means stored": first the producers stop
// (the MQTT broker and the HTTP server; devices are disconnected and their
// disconnects recorded), then the committer flushes its last batch, then the
// event bus ends its subscribers, then the store closes.
package hub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/broker"
	"github.com/devicehub/devicehub/internal/brokerauth"
	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/deviceconfig"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/ingest"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/monitors"
	"github.com/devicehub/devicehub/internal/presence"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/store/postgres"
	"github.com/devicehub/devicehub/internal/store/sqlite"
	"github.com/devicehub/devicehub/internal/twin"
	"github.com/devicehub/devicehub/internal/web"
)

// Store is everything the hub needs of a storage backend.
type Store interface {
	commit.Store
	// MaxMessageID returns the largest message id stored, so that message
	// ids can start above it after a restart.
	MaxMessageID(ctx context.Context) (int64, error)
	registry.Store
	readings.Store
	eventlog.Store
	access.Store
	messagelog.Store
	provisioning.Store
	commands.Store
	twin.Store
	monitors.Store
	accounts.Store
	registry.Counter
	eventlog.HistoryStore
	deviceconfig.Store
	Close() error
}

// Hub is a built devicehub. Create it with New, run it with Run.
type Hub struct {
	cfg   *config.Config
	log   *slog.Logger
	reg   *prometheus.Registry
	store Store

	Types     *devicetype.Registry
	Committer *commit.Committer
	Bus       *eventlog.Bus
	Registry  *registry.Service
	Presence  *presence.Tracker
	Ingest    *ingest.Pipeline
	Broker    *broker.Broker
	Access    *access.Service
	// Provisioning runs provisioning tokens, approved operations and
	// self-registration.
	Provisioning *provisioning.Service
	// BrokerAuth answers an external broker's authentication requests.
	BrokerAuth *brokerauth.Handler
	// Commands sends commands to devices; Twin keeps their twins.
	Commands *commands.Service
	Twin     *twin.Service
	// Accounts holds the dashboard's users and sessions.
	Accounts *accounts.Service
	api      *api.API
	// monitors delivers events to push monitors.
	monitors *monitors.Service
	web      *web.Dashboard
	// Config is device configuration management.
	Config *deviceconfig.Service

	httpLn      net.Listener
	authLn      net.Listener
	monLn       net.Listener
	httpRefused *prometheus.CounterVec
	ready       chan struct{}
	readyOnce   sync.Once
	// Admin is what the start found of the admin token: the secret of the
	// one it created, or the other hub's token it found (see
	// access.EnsureAdminToken). Set before Ready is closed.
	Admin access.AdminBootstrap
}

// New builds a hub: opens the store (running its migrations), loads the
// credential view, and creates every component. Nothing is served until Run.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Hub, error) {
	h := &Hub{cfg: cfg, log: log, reg: prometheus.NewRegistry(), ready: make(chan struct{})}
	h.httpRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "devicehub_http_connections_refused_total",
		Help: "HTTP connections answered 503 and closed because the listener's connection cap was reached.",
	}, []string{"listener"})
	h.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), h.httpRefused)

	h.Types = devicetype.NewRegistry()
	for _, t := range cfg.DeviceTypes {
		if err := h.Types.Register(t); err != nil {
			return nil, err
		}
	}

	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	h.store = st
	ok := false
	defer func() {
		if !ok {
			st.Close()
		}
	}()

	h.Bus = eventlog.NewBus(st, eventlog.BusOptions{Buffer: cfg.Events.SubscriberBuffer}, log.With("component", "eventlog"), h.reg)
	h.Committer = commit.New(st, h.Bus, commit.Options{
		MaxBatch:  cfg.Commit.MaxBatch,
		Linger:    cfg.Commit.Linger,
		QueueSize: cfg.Commit.QueueSize,
	}, log.With("component", "commit"), h.reg)

	ids := &commit.IDs{}
	maxID, err := st.MaxMessageID(ctx)
	if err != nil {
		return nil, fmt.Errorf("read max message id: %w", err)
	}
	ids.Seed(maxID)

	h.Registry = registry.NewService(st, h.Committer, h.Types, log.With("component", "registry"))
	if err := h.Registry.Load(ctx); err != nil {
		return nil, err
	}

	h.Presence = presence.New(h.Committer, h.Types, nil, presence.Options{DeviceType: h.Registry.DeviceType}, log.With("component", "presence"), h.reg)

	brk, err := broker.New(broker.Options{
		Addr:             cfg.MQTT.Addr,
		TLSAddr:          cfg.MQTT.TLS.Addr,
		CertFile:         cfg.MQTT.TLS.CertFile,
		KeyFile:          cfg.MQTT.TLS.KeyFile,
		ClientCAFile:     cfg.MQTT.TLS.ClientCAFile,
		WSAddr:           cfg.MQTT.WSAddr,
		MaxPacketSize:    int(cfg.MQTT.MaxPacketSize),
		MaxClients:       cfg.MQTT.MaxClients,
		MaxConnections:   connBudgets(cfg).MQTT,
		ReceiveMaximum:   cfg.MQTT.ReceiveMaximum,
		MaxSessionExpiry: cfg.MQTT.MaxSessionExpiry,
		WriteQueue:       cfg.MQTT.WriteQueue,
	}, broker.Deps{
		Authenticator:  h.Registry,
		PublishHandler: brokerIngest{h},
		Presence:       h.Presence,
	}, log.With("component", "broker"), h.reg)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	h.Broker = brk
	h.Presence.SetKicker(brk)
	h.Registry.SetKicker(brk)

	h.Provisioning = provisioning.New(st, h.Registry, h.Types, provisioning.Options{
		OperationTTL:     cfg.Provisioning.OperationTTL,
		SharedSecret:     cfg.Registration.SharedSecret,
		RegistrationType: cfg.Registration.DefaultType,
	}, log.With("component", "provisioning"))
	h.Commands = commands.New(commands.Deps{Store: st, Committer: h.Committer, Publisher: brk, Devices: h.Registry, Types: h.Types, Events: h.Bus},
		commands.Options{}, log.With("component", "commands"))
	h.Twin = twin.New(st, h.Committer, brk, h.Registry, log.With("component", "twin"))
	if h.Config, err = newDeviceConfig(ctx, cfg, st, h.Committer, brk, h.Registry, log.With("component", "deviceconfig")); err != nil {
		return nil, err
	}
	h.BrokerAuth = brokerauth.New(h.Registry, h.Presence, brokerauth.Options{}, log.With("component", "brokerauth"), h.reg)

	// In the configuration a rate of 0 means no limit; ingest takes a
	// negative rate for that (its zero value means "the default").
	rateLimit := cfg.Ingest.RateLimit
	if rateLimit.Rate == 0 {
		rateLimit.Rate = -1
	}
	h.Ingest = ingest.New(ingest.Deps{
		Committer: h.Committer,
		Types:     h.Types,
		Publisher: brk,
		Presence:  h.Presence,
		IDs:       ids,
		Commands:  h.Commands,
		Twin:      h.Twin,
		Config:    h.Config,
	}, ingest.Options{
		DefaultMaxPayloadBytes: int(cfg.Ingest.MaxPayloadBytes),
		DefaultRateLimit:       rateLimit,
		MaxReadingsPerMessage:  cfg.Ingest.MaxReadingsPerMessage,
		ChunkMemory:            int(cfg.Ingest.ChunkMemory),
		ChunkTimeout:           cfg.Ingest.ChunkTimeout,
	}, log.With("component", "ingest"), h.reg)

	brk.SetDeviceGone(h.Ingest.ForgetDevice)

	h.Access = access.NewService(st)
	h.Accounts = accounts.New(st, accounts.Options{}, log.With("component", "accounts"))

	mc := cfg.Monitors
	h.monitors = monitors.New(monitors.Deps{
		Store:     st,
		Events:    monitorEvents{bus: h.Bus, st: st},
		Groups:    registryGroups{h.Registry},
		Committer: h.Committer,
	}, monitors.Options{
		AllowPrivateTargets: mc.AllowPrivateTargets,
		DisableAfter:        mc.DisableAfter,
		MinBackoff:          mc.MinBackoff,
		MaxBackoff:          mc.MaxBackoff,
		QueueSize:           mc.QueueSize,
		MaxInFlight:         mc.MaxInFlight,
		AckTimeout:          mc.AckTimeout,
		SecretOverlap:       mc.SecretOverlap,
	}, log.With("component", "monitors"), h.reg)
	if err := h.monitors.Load(ctx); err != nil {
		return nil, err
	}

	h.api = api.New(api.Deps{
		Devices:       h.Registry,
		Registry:      h.Registry,
		Provisioning:  h.Provisioning,
		Readings:      st,
		Messages:      st,
		Events:        busEvents{h.Bus},
		DeviceData:    httpIngest{h},
		DeviceAuth:    h.Registry,
		Tokens:        h.Access,
		Audit:         st,
		Types:         h.Types,
		Commands:      h.Commands,
		Twin:          h.Twin,
		Monitors:      h.monitors,
		MonitorStream: h.monitors.StreamHandler(),
		Sessions:      h.Accounts,
		Users:         h.Accounts,
		Counter:       st,
		History:       st,
		Config:        h.Config,
		Ready:         h.readyErr,
		Metrics:       promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{Registry: h.reg}),
	}, api.Options{RotationOverlap: cfg.Provisioning.RotationOverlap}, log.With("component", "api"))
	h.web, err = web.New(h.api.Handler(), h.Accounts, web.Options{}, log.With("component", "web"))
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	ok = true
	return h, nil
}

func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger) (Store, error) {
	switch cfg.Storage.Driver {
	case "postgres":
		st, err := postgres.Open(ctx, postgres.Options{DSN: cfg.Storage.Postgres.DSN, Schema: cfg.Storage.Postgres.Schema, Logger: log.With("component", "store")})
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		return st, nil
	default:
		path := cfg.Storage.SQLite.Path
		if path == "" {
			path = filepath.Join(cfg.DataDir, "devicehub.db")
		}
		st, err := sqlite.Open(ctx, sqlite.Options{Path: path, Synchronous: cfg.Storage.SQLite.Synchronous, Logger: log.With("component", "store")})
		if err != nil {
			return nil, fmt.Errorf("open sqlite %s: %w", path, err)
		}
		return st, nil
	}
}

// ensureAdmin makes sure there is an admin token once the hub serves: a
// start that fails (a port in use) must not create a token that the next
// start would not show.
func (h *Hub) ensureAdmin(ctx context.Context) error {
	path := filepath.Join(h.cfg.DataDir, "admin.token")
	b, err := h.Access.EnsureAdminToken(ctx, path)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	h.Admin = b
	switch {
	case b.Secret != "":
		h.log.Info("admin token created", "file", path, "replaced", b.Replaced)
	case b.Existing != nil:
		h.log.Warn("the database has an admin token that this data directory does not hold; none created",
			"token_id", b.Existing.ID, "created", b.Existing.CreatedAt, "file", path)
	}
	return nil
}

// prepare does the start-up work that needs the store before serving: the
// presence reset after an unclean stop. Run calls it.
func (h *Hub) prepare(ctx context.Context) error {
	// Devices the store still shows connected or online were left so by an
	// unclean stop: nobody is connected to a hub that just started.
	connected := true
	seen := map[string]bool{}
	var stale []string
	types := map[string]string{}
	for _, opts := range []registry.ListOptions{{Connected: &connected}, {Status: "online"}} {
		opts.Limit = 1000
		for {
			devs, err := h.store.ListDevices(ctx, opts)
			if err != nil {
				return fmt.Errorf("list connected devices: %w", err)
			}
			for _, d := range devs {
				if !seen[d.ID] {
					seen[d.ID] = true
					stale = append(stale, d.ID)
					types[d.ID] = d.Type
				}
			}
			if len(devs) < opts.Limit {
				break
			}
			opts.After = devs[len(devs)-1].ID
		}
	}
	if len(stale) > 0 {
		h.log.Info("devices left online by an unclean stop are set offline", "devices", len(stale))
		if err := h.Presence.Restore(ctx, stale, types); err != nil {
			return fmt.Errorf("restore presence: %w", err)
		}
	}
	return nil
}

// Ready is closed once the hub serves MQTT and HTTP.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

func (h *Hub) readyErr() error {
	select {
	case <-h.ready:
		return nil
	default:
		return errors.New("starting")
	}
}

// MQTTAddr is the address the MQTT listener is bound to (after Ready).
func (h *Hub) MQTTAddr() string { return h.Broker.Addr() }

// HTTPAddr is the address the HTTP listener is bound to (after Ready).
func (h *Hub) HTTPAddr() string {
	if h.httpLn == nil {
		return ""
	}
	return h.httpLn.Addr().String()
}

// MonitorAddr is the address of the monitor port (after Ready), "" if it
// is off.
func (h *Hub) MonitorAddr() string {
	if h.monLn == nil {
		return ""
	}
	return h.monLn.Addr().String()
}

// Subscribe calls fn with every committed event that passes f, in order,
// from its own goroutine, until the returned subscription is closed.
func (h *Hub) Subscribe(f events.Filter, from int64, fn func(events.Event)) (*eventlog.Subscription, error) {
	return h.Bus.Subscribe(eventlog.SubscribeOptions{Filter: f, From: from}, fn)
}

// Run serves until ctx is done, then shuts down in order and closes the
// store. It returns the first error of any part.
func (h *Hub) Run(ctx context.Context) error {
	defer h.store.Close()

	// The core (committer and bus) outlives the producers, so that the
	// last disconnects and the last batch are stored and delivered.
	busCtx, stopBus := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBus()
	commitCtx, stopCommit := context.WithCancel(context.WithoutCancel(ctx))
	defer stopCommit()
	var core errgroup.Group
	busDone := make(chan error, 1)
	go func() { busDone <- h.Bus.Run(busCtx) }()
	core.Go(func() error { return h.Committer.Run(commitCtx) })

	err := h.runFront(ctx)

	stopCommit()
	if cerr := core.Wait(); cerr != nil && err == nil {
		err = cerr
	}
	stopBus()
	if berr := <-busDone; berr != nil && err == nil {
		err = berr
	}
	h.log.Info("hub stopped")
	return err
}

func (h *Hub) runFront(ctx context.Context) error {
	return explainAddrInUse(h.serve(ctx), h.cfg)
}

func (h *Hub) serve(ctx context.Context) error {
	if err := h.prepare(ctx); err != nil {
		return err
	}
	budget := connBudgets(h.cfg).HTTP
	if h.cfg.BrokerAuth.Enabled {
		budget = max(budget-budget/4, 1) // a quarter for the broker's auth requests
	}
	ln, err := h.listenHTTP("http", h.cfg.HTTP.Addr, budget)
	if err != nil {
		return err
	}
	h.httpLn = ln
	handler := h.frontHandler()
	var authSrv *http.Server
	var authLn net.Listener
	// The broker auth endpoints answer password checks without a token of
	// their own: they are served only on their own (private) address,
	// never on the public HTTP one (config requires broker_auth.addr).
	if ba := h.cfg.BrokerAuth; ba.Enabled {
		authLn, err = h.listenHTTP("broker_auth", ba.Addr, max(connBudgets(h.cfg).HTTP/4, 1))
		if err != nil {
			ln.Close()
			return err
		}
		h.authLn = authLn
		mux := http.NewServeMux()
		mux.Handle("/broker/", h.BrokerAuth)
		authSrv = newHTTPServer(mux, h.cfg.HTTP, h.log)
	}
	srv := newHTTPServer(handler, h.cfg.HTTP, h.log)
	if mc := h.cfg.Monitors; mc.Addr != "" {
		h.monLn, err = listenMonitors(mc)
		if err != nil {
			ln.Close()
			if authLn != nil {
				authLn.Close()
			}
			return err
		}
	}

	g, gctx := errgroup.WithContext(ctx)
	// The monitors stop with the other producers, before the committer, so
	// that their last status changes are committed.
	g.Go(func() error { return h.monitors.Run(gctx) })
	if h.monLn != nil {
		g.Go(func() error { return h.monitors.ServeStream(gctx, h.monLn) })
	}
	g.Go(func() error { return h.BrokerAuth.Run(gctx) })
	if authSrv != nil {
		g.Go(func() error {
			if err := authSrv.Serve(authLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("serve broker_auth: %w", err)
			}
			return nil
		})
		g.Go(func() error {
			<-gctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			return authSrv.Shutdown(sctx)
		})
	}
	g.Go(func() error { return h.Broker.Run(gctx) })
	g.Go(func() error { return h.Presence.Run(gctx) })
	g.Go(func() error { return h.Commands.Run(gctx) })
	g.Go(func() error { return h.Config.Run(gctx) })
	g.Go(func() error { return observeConfig(gctx, h.Bus, h.Config) })
	g.Go(func() error {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serve http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		h.api.Shutdown()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error {
		select {
		case <-h.Broker.Ready():
		case <-gctx.Done():
			return nil
		}
		if err := h.Twin.Restore(gctx); err != nil { // retained desired properties after a start
			return err
		}
		if err := h.Config.RestoreNotices(gctx); err != nil { // retained config notices after a start
			return err
		}
		if err := h.ensureAdmin(gctx); err != nil {
			return err
		}
		h.readyOnce.Do(func() { close(h.ready) })
		h.log.Info("devicehub serving", "mqtt", h.MQTTAddr(), "http", h.HTTPAddr(), "broker_auth", h.BrokerAuthAddr())
		return nil
	})
	return g.Wait()
}

// listenMonitors opens the monitor port, with TLS if configured.
func listenMonitors(mc config.MonitorsConfig) (net.Listener, error) {
	var cfg *tls.Config
	if mc.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(mc.TLS.CertFile, mc.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("monitors.tls: %w", err)
		}
		cfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", mc.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen monitors.addr %s: %w", mc.Addr, err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	return ln, nil
}

// Store is the hub's storage backend (for tests, benchmarks and tools that
// run in the same process).
func (h *Hub) Store() Store { return h.store }

// frontHandler serves the API under /api/ and the operational endpoints,
// and the dashboard everywhere else.
func (h *Hub) frontHandler() http.Handler {
	mux := http.NewServeMux()
	a := h.api.Handler()
	for _, p := range []string{"/api/", "/healthz", "/readyz", "/metrics"} {
		mux.Handle(p, a)
	}
	mux.Handle("/", h.web)
	return mux
}
