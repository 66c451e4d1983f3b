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
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/alerts"
	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/broker"
	"github.com/devicehub/devicehub/internal/brokerauth"
	"github.com/devicehub/devicehub/internal/cluster"
	"github.com/devicehub/devicehub/internal/commands"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/deviceconfig"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/extbroker"
	"github.com/devicehub/devicehub/internal/firmware"
	"github.com/devicehub/devicehub/internal/ingest"
	"github.com/devicehub/devicehub/internal/lease"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/monitors"
	"github.com/devicehub/devicehub/internal/presence"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/retention"
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
	commands.JobStore
	twin.Store
	monitors.Store
	accounts.Store
	registry.Counter
	eventlog.HistoryStore
	deviceconfig.Store
	firmware.Store
	alerts.Store
	retention.Store
	retention.RollupStore
	// DiskSize returns the bytes the store takes on disk.
	DiskSize(ctx context.Context) (int64, error)
	Close() error
}

// Hub is a built devicehub. Create it with New, run it with Run; a hub
// that is not run is released with Close. Its parts are its own: callers
// use its methods.
type Hub struct {
	cfg   *config.Config
	log   *slog.Logger
	reg   *prometheus.Registry
	store Store
	// closeStore closes the store once, whether Run or Close gets there
	// first.
	closeStore func() error
	// storeStuck: Run stopped with a commit of the store that never
	// returned (commit.ErrStoreStuck); the store is left open.
	storeStuck atomic.Bool
	// frontStop is how long Run's stop waits for the producers before it
	// stops the committer anyway (defaultFrontStop).
	frontStop time.Duration

	types     *devicetype.Registry
	committer *commit.Committer
	bus       *eventlog.Bus
	registry  *registry.Service
	presence  *presence.Tracker
	ingest    *ingest.Pipeline
	broker    *broker.Broker
	access    *access.Service
	// provisioning runs provisioning tokens, approved operations and
	// self-registration.
	provisioning *provisioning.Service
	// brokerAuth answers an external broker's authentication requests.
	brokerAuth *brokerauth.Handler
	// ext replaces the broker with an external one (mqtt.external).
	ext *extbroker.Client
	// commands sends commands to devices; twin keeps their twins.
	commands *commands.Service
	twin     *twin.Service
	// accounts holds the dashboard's users and sessions.
	accounts *accounts.Service
	api      *api.API
	// monitors delivers events to push monitors.
	monitors *monitors.Service
	web      *web.Dashboard
	// deviceConfig is device configuration management.
	deviceConfig *deviceconfig.Service
	// logStart is the Seq of the last event stored when New ran (0: none).
	logStart int64
	// observerHold, if not nil, holds the configuration observer back
	// until it is closed (tests: the observer starting after the first
	// requests were served).
	observerHold <-chan struct{}
	// firmware runs firmware artifacts and rollouts.
	firmware *firmware.Service
	// alerts evaluates alert rules and keeps alerts.
	alerts *alerts.Service

	// slot is this node's message id slot (cluster mode).
	slot int
	// leases runs single-owner work in cluster mode (nil outside it);
	// fanout relays committed events between the nodes: the committer
	// publishes to it, and it to the bus.
	leases *lease.Manager
	fanout *cluster.Fanout

	expirer *retention.Expirer
	roller  *retention.Roller // nil without retention.rollups
	// compactor is nil for a store without blocks.
	compactor *retention.Compactor
	space     *retention.Space

	httpLn      net.Listener
	authLn      net.Listener
	monLn       net.Listener
	httpRefused *prometheus.CounterVec
	ready       chan struct{}
	readyOnce   sync.Once
	// admin is what the start found of the admin token: the secret of the
	// one it created, or the other hub's token it found (see
	// access.EnsureAdminToken). Set before Ready is closed.
	admin access.AdminBootstrap
}

// New builds a hub: opens the store (running its migrations), loads the
// credential view, and creates every component. Nothing is served until Run.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Hub, error) {
	return newHub(ctx, cfg, log, testOptions{})
}

// testOptions are what tests change of a hub that the configuration does
// not hold (export_test.go); zero for every real hub.
type testOptions struct {
	// wrapCommits wraps the store the committer writes to.
	wrapCommits func(commit.Store) commit.Store
	// shutdownGrace, commitStop and frontStop replace the broker's
	// ShutdownGrace, the committer's StopTimeout and defaultFrontStop
	// when set.
	shutdownGrace, commitStop, frontStop time.Duration
}

// defaultFrontStop is how long the stop waits for the producers before it
// stops the committer anyway: the HTTP server's own shutdown bound, and
// twice the broker's default ShutdownGrace. A healthy hub's producers stop
// well within it; past it only a producer waiting for a store that
// stopped answering is left, and the committer's stop is what ends that
// wait.
const defaultFrontStop = 10 * time.Second

func newHub(ctx context.Context, cfg *config.Config, log *slog.Logger, to testOptions) (*Hub, error) {
	h := &Hub{cfg: cfg, log: log, reg: prometheus.NewRegistry(), ready: make(chan struct{}), frontStop: defaultFrontStop}
	if to.frontStop > 0 {
		h.frontStop = to.frontStop
	}
	h.httpRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "devicehub_http_connections_refused_total",
		Help: "HTTP connections answered 503 and closed because the listener's connection cap was reached.",
	}, []string{"listener"})
	// The scheduler's latencies and the GC's stop-the-world pauses tell a
	// slow acknowledgement that waited for a CPU or for the GC apart from
	// one that waited for the store (docs/BENCHMARKS.md).
	goc := collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/sched/(latencies|pauses/total/gc):seconds$`)}))
	h.reg.MustRegister(goc, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), h.httpRefused)

	h.types = devicetype.NewRegistry()
	for _, t := range cfg.DeviceTypes {
		if err := h.types.Register(t); err != nil {
			return nil, err
		}
	}

	if err := secureDataDir(cfg.DataDir, log); err != nil {
		return nil, err
	}
	keySecret, newKeySecret, err := provisioning.LoadKeySecret(filepath.Join(cfg.DataDir, provisioning.KeySecretFile))
	if err != nil {
		return nil, fmt.Errorf("registration key secret: %w", err)
	}
	st, err := openStore(ctx, cfg, log, h.reg)
	if err != nil {
		return nil, err
	}
	h.store = st
	h.closeStore = sync.OnceValue(st.Close)
	ok := false
	defer func() {
		if !ok {
			if h.fanout != nil {
				h.fanout.Close()
			}
			h.closeStore()
		}
	}()

	if err := h.newLeases(); err != nil {
		return nil, err
	}
	h.bus = eventlog.NewBus(st, eventlog.BusOptions{Buffer: cfg.Events.SubscriberBuffer}, log.With("component", "eventlog"), h.reg)
	// Taken before anything can commit an event: where the configuration
	// observer starts when it has no cursor yet (see observeConfig).
	logStart, err := st.LastSeq(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the end of the event log: %w", err)
	}
	h.logStart = logStart
	var pub commit.Publisher = h.bus
	if h.leases != nil {
		if err := h.newFanout(ctx); err != nil {
			return nil, err
		}
		pub = h.fanout
	}
	var commits commit.Store = st
	if to.wrapCommits != nil {
		commits = to.wrapCommits(st)
	}
	h.committer = commit.New(commits, pub, commit.Options{
		MaxBatch:    cfg.Commit.MaxBatch,
		Linger:      cfg.Commit.Linger,
		QueueSize:   cfg.Commit.QueueSize,
		StopTimeout: cmp.Or(to.commitStop, cfg.Commit.StopTimeout),
	}, log.With("component", "commit"), h.reg)

	ids := &commit.IDs{}
	maxID, err := st.MaxMessageID(ctx)
	if err != nil {
		return nil, fmt.Errorf("read max message id: %w", err)
	}
	ids.Seed(maxID)
	if h.leases != nil {
		if err := h.takeSlot(ctx, ids); err != nil {
			return nil, err
		}
	}

	h.registry = registry.NewService(st, h.committer, h.types, sessionKicker{h}, log.With("component", "registry"))
	if err := h.registry.Load(ctx); err != nil {
		return nil, err
	}
	if h.leases != nil {
		h.registry.ReadMisses(h.clusterStore())
	}
	h.presence = presence.New(h.committer, h.types, sessionKicker{h}, presence.Options{DeviceType: h.registry.DeviceType, Node: cfg.Cluster.NodeID, ActivityTransport: activityTransport(cfg)}, log.With("component", "presence"), h.reg)
	var generation func(context.Context) (uint64, error)
	if h.leases != nil {
		generation = h.clusterStore().NextSessionGeneration
	}

	bopts := brokerOptions(cfg, generation)
	bopts.ShutdownGrace = cmp.Or(to.shutdownGrace, cfg.MQTT.ShutdownGrace)
	emb, err := broker.New(bopts, broker.Deps{
		Authenticator:  h.registry,
		PublishHandler: brokerIngest{h},
		Presence:       h.presence,
		DeviceGone:     func(id string) { h.ingest.ForgetDevice(id) },
		Delivered:      func(id, topic string) { h.commands.Delivered(id, topic) },
	}, log.With("component", "broker"), h.reg)
	if err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	h.broker = emb
	brk, err := h.outbound(emb)
	if err != nil {
		return nil, fmt.Errorf("mqtt.external: %w", err)
	}

	h.provisioning = provisioning.New(st, h.registry, h.types, provisioning.Options{
		OperationTTL:     cfg.Provisioning.OperationTTL,
		SharedSecret:     cfg.Registration.SharedSecret,
		RegistrationType: cfg.Registration.DefaultType,
		KeySecret:        keySecret,
	}, log.With("component", "provisioning"))
	if err := h.provisioning.PrepareKeys(ctx, newKeySecret); err != nil {
		return nil, err
	}
	h.commands = commands.New(commands.Deps{Store: st, Committer: h.committer, Publisher: brk, Devices: h.registry, Types: h.types, Events: h.bus,
		Jobs: st, Fleet: h.registry},
		commands.Options{ConnectDelay: cfg.Commands.ConnectDelay, ResendInterval: cfg.Commands.ResendInterval, FleetChunk: cfg.Commands.FleetConcurrency, Node: cfg.Cluster.NodeID},
		log.With("component", "commands"))
	h.twin = twin.New(st, h.committer, brk, h.registry, log.With("component", "twin"))
	// In cluster mode notices reach the device on whichever node holds its
	// connection (see cluster.go).
	var configNotified func(string)
	var fwPub firmware.Publisher = brk
	// With an external broker every node reaches every device there:
	// nothing to relay.
	if h.fanout != nil && h.ext == nil {
		configNotified, fwPub = h.relayConfigNotice, relayPublisher{h}
	}
	if h.deviceConfig, err = newDeviceConfig(ctx, cfg, st, h.committer, brk, h.registry, configNotified, log.With("component", "deviceconfig")); err != nil {
		return nil, err
	}
	var fwRemote firmware.Remote
	if h.fanout != nil {
		fwRemote = firmwareRemote{h}
	}
	if h.firmware, err = newFirmware(ctx, cfg, st, h.committer, fwPub, h.registry, fwRemote, log.With("component", "firmware")); err != nil {
		return nil, err
	}
	h.brokerAuth = brokerauth.New(h.registry, h.presence, brokerauth.Options{}, log.With("component", "brokerauth"), h.reg)

	// In the configuration a rate of 0 means no limit; ingest takes a
	// negative rate for that (its zero value means "the default").
	rateLimit := cfg.Ingest.RateLimit
	if rateLimit.Rate == 0 {
		rateLimit.Rate = -1
	}
	h.space = retention.NewSpace(retention.SpaceOptions{
		Dir: spaceDir(cfg), MinFree: uint64(cfg.Storage.MinFreeBytes), Interval: cfg.Storage.SpaceCheckInterval, Size: st.DiskSize,
	}, h.committer, log.With("component", "space"), h.reg)
	h.expirer = retention.New(st, retentionOptions(cfg.Retention), log.With("component", "retention"), h.reg)
	if cfg.Retention.Rollups {
		h.roller = retention.NewRoller(st, retention.RollupOptions{Batch: cfg.Retention.Batch}, log.With("component", "rollups"), h.reg)
	}
	if cs, ok := st.(retention.CompactStore); ok {
		h.compactor = retention.NewCompactor(cs, retention.CompactOptions{
			After: cfg.Retention.CompactAfter, Interval: cfg.Retention.CompactInterval, Rollups: cfg.Retention.Rollups, Batch: cfg.Retention.Batch,
		}, log.With("component", "compaction"), h.reg)
	}
	h.ingest = ingest.New(ingest.Deps{
		Space:     h.space,
		Committer: h.committer,
		Types:     h.types,
		Publisher: brk,
		Presence:  h.presence,
		IDs:       ids,
		Commands:  h.commands,
		Twin:      h.twin,
		Config:    h.deviceConfig,
		Firmware:  h.firmware,
	}, ingest.Options{
		DefaultMaxPayloadBytes: int(cfg.Ingest.MaxPayloadBytes),
		DefaultRateLimit:       rateLimit,
		MaxReadingsPerMessage:  cfg.Ingest.MaxReadingsPerMessage,
		ChunkMemory:            int(cfg.Ingest.ChunkMemory),
		ChunkTimeout:           cfg.Ingest.ChunkTimeout,
	}, log.With("component", "ingest"), h.reg)

	h.access = access.NewService(st)
	h.accounts = accounts.New(st, accounts.Options{}, log.With("component", "accounts"))

	mc := cfg.Monitors
	var monChanged func(string)
	var monElsewhere func() string
	if h.fanout != nil {
		monChanged, monElsewhere = h.relayMonitorChanged, h.monitorsElsewhere
	}
	h.monitors = monitors.New(monitors.Deps{
		Store:     st,
		Events:    monitorEvents{bus: h.bus, st: st},
		Groups:    registryGroups{h.registry},
		Committer: h.committer,
	}, monitors.Options{
		AllowPrivateTargets: mc.AllowPrivateTargets,
		DisableAfter:        mc.DisableAfter,
		MinBackoff:          mc.MinBackoff,
		MaxBackoff:          mc.MaxBackoff,
		QueueSize:           mc.QueueSize,
		QueueBytes:          int64(mc.QueueBytes),
		EncodeCacheBytes:    int64(mc.EncodeCacheBytes),
		MaxInFlight:         mc.MaxInFlight,
		AckTimeout:          mc.AckTimeout,
		SecretOverlap:       mc.SecretOverlap,
		TailBytes:           int64(mc.TailBytes),
		CursorAtAck:         h.fanout != nil,
		Changed:             monChanged,
		RunsElsewhere:       monElsewhere,
	}, log.With("component", "monitors"), h.reg)
	if err := h.monitors.Load(ctx); err != nil {
		return nil, err
	}

	h.alerts = newAlerts(cfg, st, h.committer, h.bus, h.types, log.With("component", "alerts"), h.reg)
	if err := h.alerts.Load(ctx); err != nil {
		return nil, err
	}

	h.api = api.New(api.Deps{
		Devices:        h.registry,
		Control:        h.registry,
		Groups:         h.registry,
		Import:         h.registry,
		Registration:   h.provisioning,
		Readings:       st,
		ReadingQueries: st,
		Messages:       st,
		Events:         busEvents{h.bus},
		DeviceData:     httpIngest{h},
		DeviceAuth:     h.registry,
		Tokens:         h.access,
		Audit:          st,
		Types:          h.types,
		Commands:       h.commands,
		Twin:           h.twin,
		Monitors:       h.monitors,
		MonitorStream:  h.monitors.StreamHandler(),
		Sessions:       h.accounts,
		Users:          h.accounts,
		Counter:        st,
		History:        st,
		Config:         h.deviceConfig,
		Firmware:       h.firmware,
		Alerts:         h.alerts,
		Ready:          h.readyErr,
		Metrics:        promhttp.HandlerFor(h.reg, promhttp.HandlerOpts{Registry: h.reg}),

		ProvisioningTokens: h.provisioning,
		ProvisioningOps:    h.provisioning,
	}, api.Options{RotationOverlap: cfg.Provisioning.RotationOverlap, Registerer: h.reg}, log.With("component", "api"))
	h.web, err = web.New(h.api.Handler(), h.accounts, web.Options{}, log.With("component", "web"))
	if err != nil {
		return nil, fmt.Errorf("dashboard: %w", err)
	}
	ok = true
	return h, nil
}

// brokerOptions are the embedded broker's options from the mqtt section;
// generation numbers sessions in cluster mode (nil: the broker's own
// counter).
func brokerOptions(cfg *config.Config, generation func(context.Context) (uint64, error)) broker.Options {
	return broker.Options{
		Addr:             embeddedAddr(cfg),
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
		WriterIdle:       cfg.MQTT.WriterIdle,
		ReadBufferSize:   int(cfg.MQTT.ReadBufferBytes),
		Generation:       generation,
	}
}

func openStore(ctx context.Context, cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (Store, error) {
	switch cfg.Storage.Driver {
	case "postgres":
		st, err := postgres.Open(ctx, postgres.Options{DSN: cfg.Storage.Postgres.DSN, Schema: cfg.Storage.Postgres.Schema, Logger: log.With("component", "store")})
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		return st, nil
	default:
		path := sqlitePath(cfg)
		ml, rh := cfg.Storage.SQLite.MessageLog, cfg.Storage.SQLite.ReadingsHead
		st, err := sqlite.Open(ctx, sqlite.Options{Path: path, Synchronous: cfg.Storage.SQLite.Synchronous, CacheSize: int64(cfg.Storage.SQLite.CacheSize), Logger: log.With("component", "store"), Registerer: reg,
			MessageLog: sqlite.MessageLogOptions{HeadMessages: ml.HeadMessages, HeadBytes: int64(ml.HeadBytes), HeadAge: ml.HeadAge,
				DedupeWindow: ml.DedupeWindow, DedupeIdle: ml.DedupeIdle},
			ReadingsHead: sqlite.ReadingsHeadOptions{MaxReadings: rh.MaxReadings, MaxBytes: int64(rh.MaxBytes), MaxAge: rh.MaxAge,
				Rollups: cfg.Retention.Rollups}})
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
	b, err := h.access.EnsureAdminToken(ctx, path)
	if err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	h.admin = b
	switch {
	case b.Secret != "":
		h.log.Info("admin token created", "file", path, "replaced", b.Replaced)
	case b.Existing != nil:
		h.log.Warn("the database has an admin token that this data directory does not hold; none created",
			"token_id", b.Existing.ID, "created", b.Existing.CreatedAt, "file", path)
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
func (h *Hub) MQTTAddr() string { return h.broker.Addr() }

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
	return h.bus.Subscribe(eventlog.SubscribeOptions{Filter: f, From: from}, fn)
}

// storeRunner is a store with a long-running part of its own (SQLite's
// checkpointer, PostgreSQL's maker of readings partitions).
type storeRunner interface {
	Run(ctx context.Context) error
}

// Run serves until ctx is done, then shuts down in order and closes the
// store. It returns the first error of any part; an error of any part
// stops the others.
//
// Every long-running part runs in one errgroup, stopped in stages: the
// producers (runFront) first; then the committer, which stores the last
// disconnects and batch; then the event bus, which delivers their events;
// then the store's own work. Each stage's part stops the next one when it
// returns.
//
// A store that stopped answering bounds the stop instead of hanging it
// (docs/ARCHITECTURE.md, "Shutdown"): the broker gives up on the publishes
// awaiting their commit after its shutdown grace, unacknowledged, and the
// committer on the stuck commit after twice its StopTimeout; then Run
// returns an error that names the store and wraps commit.ErrStoreStuck,
// and leaves the commit's goroutine behind, and the store open until that
// commit returns, since closing it would wait for the commit.
func (h *Hub) Run(ctx context.Context) error {
	defer func() {
		if !h.storeStuck.Load() {
			h.closeStore()
		}
	}()
	g, gctx := errgroup.WithContext(ctx)
	keep := context.WithoutCancel(ctx)
	commitCtx, stopCommit := context.WithCancel(keep)
	busCtx, stopBus := context.WithCancel(keep)
	storeCtx, stopStore := context.WithCancel(keep)
	defer stopStore()
	g.Go(func() error {
		defer stopCommit()
		return h.runFront(gctx)
	})
	// A producer that waits for a commit as it stops (the alert
	// evaluator stores where it got to) would wait for ever on a store
	// that stopped answering: the committer's stop, which bounds that
	// wait (commit.Options.StopTimeout), begins frontStop after the
	// front was told to stop even if it has not.
	g.Go(func() error {
		<-gctx.Done()
		t := time.NewTimer(h.frontStop)
		defer t.Stop()
		select {
		case <-commitCtx.Done(): // the front stopped
		case <-t.C:
			h.log.Warn("producers not stopped in time (waiting for the store?): stopping the committer anyway", "waited", h.frontStop)
			stopCommit()
		}
		return nil
	})
	// In cluster mode the committer publishes to the fan-out, which
	// publishes to the bus: each stops the next.
	fanCtx, stopFan := context.WithCancel(keep)
	defer stopFan()
	g.Go(func() error {
		if h.fanout == nil {
			defer stopBus()
		} else {
			defer stopFan()
		}
		err := h.committer.Run(commitCtx)
		if errors.Is(err, commit.ErrStoreStuck) {
			h.storeStuck.Store(true)
			h.log.Warn("stopping with the store's commit stuck: the store is closed only if that commit returns", "store", h.storeName())
			// Closing it now would wait for the stuck commit (it holds
			// the writer); the one goroutine left behind besides the
			// committer's closes it if the commit ever returns.
			go func() {
				<-h.committer.Done()
				h.closeStore()
			}()
			return fmt.Errorf("storage %s: %w", h.storeName(), err)
		}
		return err
	})
	if h.fanout != nil {
		g.Go(func() error {
			defer stopBus()
			return h.fanout.Run(fanCtx)
		})
	}
	g.Go(func() error {
		defer stopStore()
		return h.bus.Run(busCtx)
	})
	if r, ok := h.store.(storeRunner); ok {
		g.Go(func() error { return r.Run(storeCtx) })
	}
	// A core part that fails stops the front (gctx), and so the rest.
	err := g.Wait()
	h.log.Info("hub stopped")
	return err
}

// Close releases what New acquired (the store) for a hub that is not run;
// after Run it does nothing (after a Run that left a stuck store open
// neither: it is closed if its commit returns). It is safe to call more
// than once.
func (h *Hub) Close() error {
	if h.fanout != nil {
		h.fanout.Close()
	}
	if h.storeStuck.Load() {
		return nil
	}
	return h.closeStore()
}

// storeName names the store for the logs and errors of a stuck one: its
// driver and, for SQLite, its file (a PostgreSQL DSN may hold a password).
func (h *Hub) storeName() string {
	if h.cfg.Storage.Driver == "postgres" {
		return "postgres"
	}
	return "sqlite " + sqlitePath(h.cfg)
}

// sqlitePath is the SQLite database's file.
func sqlitePath(cfg *config.Config) string {
	if cfg.Storage.SQLite.Path != "" {
		return cfg.Storage.SQLite.Path
	}
	return filepath.Join(cfg.DataDir, "devicehub.db")
}

func (h *Hub) runFront(ctx context.Context) error {
	return explainAddrInUse(h.serve(ctx), h.cfg)
}

func (h *Hub) serve(ctx context.Context) error {
	// In cluster mode the devices marked connected may be on other nodes:
	// those of a dead node are reset by the survivor holding the reaper
	// lease (see cluster.go), never by a starting node.
	if h.leases == nil {
		if _, err := h.presence.ResetAfterStart(ctx, h.store); err != nil {
			return err
		}
	} else if err := h.resetOwnDevices(ctx); err != nil {
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
		mux.Handle("/broker/", h.brokerAuth)
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
	g.Go(func() error { return h.single("monitors", h.monitors.Load, h.runMonitors)(gctx) })
	if h.monLn != nil {
		g.Go(func() error { return h.monitors.ServeStream(gctx, h.monLn) })
	}
	g.Go(func() error { return h.brokerAuth.Run(gctx) })
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
	g.Go(func() error { return h.runDevices(gctx) })
	if h.leases != nil {
		g.Go(func() error { return h.runNodeLease(gctx) })
		g.Go(func() error { return h.runSlotLease(gctx) })
		g.Go(func() error { return h.followCluster(gctx) })
		g.Go(func() error { return h.followOutbound(gctx) })
		g.Go(func() error { return h.single("reaper", nil, h.reap)(gctx) })
	}
	g.Go(func() error { return h.presence.Run(gctx) })
	g.Go(func() error { return h.commands.Run(gctx) })
	g.Go(func() error { return h.deviceConfig.Run(gctx) })
	g.Go(func() error { return h.single("retention", nil, h.expirer.Run)(gctx) })
	if h.roller != nil {
		g.Go(func() error { return h.single("rollups", nil, h.roller.Run)(gctx) })
	}
	if h.compactor != nil {
		g.Go(func() error { return h.single("compaction", nil, h.compactor.Run)(gctx) })
	}
	g.Go(func() error { return h.space.Run(gctx) })
	g.Go(func() error {
		return h.single("config-observer", nil, func(ctx context.Context) error {
			if h.observerHold != nil {
				select {
				case <-h.observerHold:
				case <-ctx.Done():
					return nil
				}
			}
			return observeConfig(ctx, h.bus, h.logStart, h.deviceConfig, h.log.With("component", "deviceconfig"))
		})(gctx)
	})
	// The scheduler and what it observes of devices (a disconnect can fail
	// a health gate: a write) run on one node, which loads the rollouts
	// when it takes them over (in cluster mode; runFirmware).
	g.Go(func() error { return h.single("firmware", nil, h.runFirmware)(gctx) })
	g.Go(func() error { return h.single("alerts", h.alerts.Reload, h.alerts.Run)(gctx) })
	if h.leases != nil {
		g.Go(func() error { return h.single("command-jobs", nil, h.commands.RunJobs)(gctx) })
	}
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
		case <-h.devicesReady():
		case <-gctx.Done():
			return nil
		}
		if err := h.twin.Restore(gctx); err != nil { // retained desired properties after a start
			return err
		}
		if err := h.deviceConfig.RestoreNotices(gctx); err != nil { // retained config notices after a start
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

// RegisterType adds a device type at run time.
func (h *Hub) RegisterType(t devicetype.Type) error { return h.types.Register(t) }

// Registry is the device registry (for the root package's Provision,
// tests and tools in the same process).
func (h *Hub) Registry() *registry.Service { return h.registry }

// Broker is the embedded MQTT broker (for tests that act as the hub
// towards devices).
func (h *Hub) Broker() *broker.Broker { return h.broker }

// Accounts is the dashboard's users and sessions (for tests and tools in
// the same process).
func (h *Hub) Accounts() *accounts.Service { return h.accounts }

// Firmware returns the firmware service (artifacts and rollouts).
func (h *Hub) Firmware() *firmware.Service { return h.firmware }

// Admin is what the start found of the admin token (after Ready): the
// secret of the one it created, or the other hub's token it found.
func (h *Hub) Admin() access.AdminBootstrap { return h.admin }

// AlertCursor is the Seq of the last event the alert evaluator handled
// (tests wait for it).
func (h *Hub) AlertCursor() int64 { return h.alerts.Cursor() }

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
