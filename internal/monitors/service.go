// Package monitors delivers committed events to the outside world: push
// monitors, each a subscription of an outside system to topics of events,
// delivered by HTTP (webhooks signed the Standard Webhooks way) or as a
// stream a receiver reads over TCP, TLS or WebSocket, in batches bounded by
// size and by time, as JSON or XML, optionally deflated (the monitor API of
// seed 002).
//
// Data flow: the durable event log (internal/eventlog) → one bus
// subscription, the tail (the latest Options.TailSize events in memory,
// and no more than Options.TailBytes of them, shared; only while a
// monitor's send loop runs) → each running
// monitor's feeder → the monitor's queue (bounded by
// Options.QueueSize events and Options.QueueBytes of their estimated
// memory) → its send loop → the receiver. Each monitor has its own send loop (one
// goroutine, owned by Service.Run), in the manner of Prometheus's
// notifier: a slow or dead receiver fills only its own queue, and its
// feeder waits; once it is further behind than the tail it reads the
// durable log, so neither ingest nor the other monitors wait for it.
//
// Delivery is at least once, in Seq order per monitor. A monitor's cursor
// (the Seq of the last event acknowledged — a 2xx for HTTP, an Ack frame
// or the write for a stream) moves in memory at each acknowledgement and
// is stored with the other monitors' every Options.CursorSave (one
// transaction, not one write per delivery, which would contend with ingest
// for the database) and when the service stops; a (re)started send loop
// resumes after it, so a restart neither loses nor resends acknowledged
// events, and a crash resends at most the deliveries of the last
// CursorSave.
//
// Each event is held once in memory (the tail) and encoded once per format
// (encodeCache, bounded by Options.EncodeCacheBytes) for every monitor
// that delivers it.
//
// Status machine (seed 002): CONNECTING (an HTTP monitor before its first
// delivery) → ACTIVE (delivering); a failing HTTP monitor or a stream
// without a receiver is SUSPENDED with auto_replay_on_connect (the cursor
// stays; the missed events come first once it is back) or INACTIVE without
// (the missed events are skipped); an HTTP monitor that delivered nothing
// for monitors.disable_after, or whose receiver answered 410 Gone, is
// DISABLED until it is enabled again through the API. Every change is a
// monitor_status_changed event in the durable log.
//
// Plaintext credentials of device_provisioned never leave the process: the
// wire format is the events' JSON encoding, in which they do not exist.
//
// Lock order: Service.mu, then entry.mu; encodeCache.fmu, then a slot
// lock of the cache (never the other way). The send loops never hold a
// lock while they deliver.
package monitors

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/monitorclient"
)

// Subscription is a running event subscription (*eventlog.Subscription).
type Subscription interface{ Close() }

// Events is the durable event log as the monitors read it.
type Events interface {
	// Subscribe calls fn with every event after opts.From (see
	// eventlog.Bus.Subscribe), in Seq order.
	Subscribe(opts eventlog.SubscribeOptions, fn func(events.Event)) (Subscription, error)
	// LastSeq is the Seq of the last committed event.
	LastSeq(ctx context.Context) (int64, error)
	// ReadEvents returns up to limit stored events with Seq > after, in
	// Seq order (a monitor further behind than the tail reads them).
	ReadEvents(ctx context.Context, after int64, limit int) ([]events.Event, error)
}

// Groups tells a device's group, for topics narrowed by group.
type Groups interface {
	DeviceGroup(ctx context.Context, deviceID string) (string, error)
}

// Deps are the service's collaborators. Groups may be nil (then a topic
// narrowed by group selects nothing).
type Deps struct {
	Store  Store
	Events Events
	Groups Groups
	// Committer writes status changes with their monitor_status_changed
	// events (see StateChange).
	Committer Committer
}

// Options tune the service. Zero values take the defaults.
type Options struct {
	// AllowPrivateTargets lets HTTP monitors reach loopback, link-local
	// and private addresses (monitors.allow_private_targets).
	AllowPrivateTargets bool
	// DisableAfter is how long an HTTP monitor may fail before it is
	// DISABLED (default 24h).
	DisableAfter time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed deliveries
	// (defaults 1s and 5m); it doubles per failure, with jitter, and a
	// Retry-After answer is honoured up to MaxRetryAfter (default 1h).
	MinBackoff, MaxBackoff, MaxRetryAfter time.Duration
	// QueueSize bounds each monitor's in-memory queue (default 10000).
	QueueSize int
	// QueueBytes bounds the memory of each monitor's queue too (default
	// 8 MiB), by the events' estimated sizes (retainedSize): a monitor
	// whose queue is full, by count or by bytes, waits and then reads the
	// durable log from where it stopped, as one behind the tail does. An
	// event larger than QueueBytes is queued alone.
	QueueBytes int64
	// EncodeCacheBytes bounds the memory of the events' encodings kept
	// for the monitors to share (default 32 MiB; see encodeCache).
	EncodeCacheBytes int64
	// MaxInFlight bounds a stream's batches sent and not acknowledged
	// (default 8).
	MaxInFlight int
	// AckTimeout is how long a stream receiver may leave its oldest batch
	// unacknowledged (or not read) before the hub drops the connection
	// (default 30s).
	AckTimeout time.Duration
	// SecretOverlap is how long the old signing secret keeps signing after
	// a rotation that names no overlap (default 24h).
	SecretOverlap time.Duration
	// TailSize is how many of the latest events are kept in memory for
	// every monitor to read (default 131072); a monitor further behind
	// reads the durable log.
	TailSize int
	// TailBytes bounds the memory of those events too (default 64 MiB):
	// the tail holds the latest events whose estimated sizes add up to at
	// most TailBytes (see retainedSize), and at least the newest.
	TailBytes int64
	// CursorSave is how often the cursors that moved are stored, all in
	// one transaction (default 1s); they are stored too when the service
	// stops. After a crash, deliveries acknowledged since the last save are
	// sent again (delivery is at least once; receivers deduplicate by
	// sequence number).
	CursorSave time.Duration
	// CursorAtAck stores a monitor's cursor at each acknowledgement,
	// before its next delivery, instead of every CursorSave (cluster mode:
	// a node killed right after an acknowledgement leaves nothing
	// acknowledged for the node taking over to send again, at the price
	// of one write per acknowledged delivery).
	CursorAtAck bool
	// IdleCursorSave is how often a monitor whose topics select nothing
	// moves its cursor over the events it skipped (default 5s).
	IdleCursorSave time.Duration
	// Resolver resolves HTTP targets for the private-address check
	// (default net.DefaultResolver).
	Resolver Resolver
	// Now returns the current time (default time.Now).
	Now func() time.Time
	// Changed, when set, is called with a monitor's id after an operator's
	// change of it was stored (create, update, enable, delete, secret or
	// token rotation): in cluster mode the node running the monitors is
	// told to Sync.
	Changed func(id string)
	// RunsElsewhere, when set, names where the monitors run when this
	// service's Run is not running (cluster mode: the node holding the
	// monitors lease); a stream receiver connecting here is refused with
	// it instead of waiting for a send loop that is not running.
	RunsElsewhere func() string
}

func (o *Options) defaults() {
	if o.DisableAfter <= 0 {
		o.DisableAfter = 24 * time.Hour
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = time.Second
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(5*time.Minute, o.MinBackoff)
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = time.Hour
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = 8 << 20
	}
	if o.EncodeCacheBytes <= 0 {
		o.EncodeCacheBytes = 32 << 20
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = 8
	}
	if o.AckTimeout <= 0 {
		o.AckTimeout = 30 * time.Second
	}
	if o.SecretOverlap <= 0 {
		o.SecretOverlap = 24 * time.Hour
	}
	if o.TailSize <= 0 {
		o.TailSize = 1 << 17
	}
	if o.TailBytes <= 0 {
		o.TailBytes = 64 << 20
	}
	if o.CursorSave <= 0 {
		o.CursorSave = time.Second
	}
	if o.IdleCursorSave <= 0 {
		o.IdleCursorSave = 5 * time.Second
	}
	if o.Resolver == nil {
		o.Resolver = defaultResolver{}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Service keeps the monitors and runs their send loops. Create it with
// New, Load it, Run it.
type Service struct {
	deps    Deps
	opts    Options
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	mons    map[string]*entry
	state   int
	startC  chan *sender  // to Run: start this send loop
	stopped chan struct{} // closed when Run stops

	gmu    sync.Mutex
	groups map[string]string // device id → group, for group narrowing

	enc  *encodeCache
	tail *tail
	// running counts the send loops running; the tail follows the bus
	// only while there is one (tailKick is signalled when the count
	// leaves or reaches 0).
	running  atomic.Int64
	tailKick chan struct{}

	cmu   sync.Mutex       // guards dirty
	dirty map[string]int64 // cursors acknowledged and not stored yet
	fmu   sync.RWMutex     // serialises cursor saves (storeCursor shares it), so a cursor stored never moves back
}

const (
	svcIdle = iota
	svcRunning
	svcStopped
)

// entry is one monitor: its stored record and its running send loop.
type entry struct {
	mu     sync.Mutex // guards mon
	mon    Monitor
	sender *sender // nil when not running (DISABLED, or before Run)
}

// New returns a service. reg may be nil.
func New(deps Deps, opts Options, log *slog.Logger, reg prometheus.Registerer) *Service {
	opts.defaults()
	s := &Service{
		deps: deps, opts: opts, log: log,
		mons:     map[string]*entry{},
		startC:   make(chan *sender),
		stopped:  make(chan struct{}),
		groups:   map[string]string{},
		enc:      newEncodeCache(opts.EncodeCacheBytes),
		tail:     newTail(opts.TailSize, opts.TailBytes),
		tailKick: make(chan struct{}, 1),
		dirty:    map[string]int64{},
	}
	s.metrics = newMetrics(s)
	if reg != nil {
		reg.MustRegister(s.metrics)
	}
	return s
}

// Load reads the stored monitors; their send loops start with Run.
func (s *Service) Load(ctx context.Context) error {
	ms, err := s.deps.Store.ListMonitors(ctx)
	if err != nil {
		return fmt.Errorf("load monitors: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range ms {
		e := &entry{mon: m}
		s.mons[m.ID] = e
		if m.Status != Disabled {
			e.sender = s.newSender(e)
		}
	}
	return nil
}

// Run runs the send loops until ctx is done; then it stops them (each
// finishes the delivery in progress, within its timeout) and returns.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.state != svcIdle {
		s.mu.Unlock()
		return errors.New("monitor service already ran")
	}
	s.state = svcRunning
	var pending []*sender
	for _, e := range s.mons {
		if e.sender != nil {
			pending = append(pending, e.sender)
		}
	}
	s.mu.Unlock()

	tailCtx, stopTail := context.WithCancel(context.WithoutCancel(ctx))
	tailDone := make(chan error, 1)
	go func() {
		tailDone <- s.tail.run(tailCtx, s.deps.Events, s.prepare, s.opts.MinBackoff,
			func() bool { return s.running.Load() > 0 }, s.tailKick, s.forgetGroups)
	}()
	defer func() {
		stopTail()
		if err := <-tailDone; err != nil {
			s.log.Warn("monitor tail", "err", err)
		}
	}()

	var wg sync.WaitGroup
	start := func(sd *sender) {
		wg.Add(1)
		sctx, cancel := context.WithCancel(ctx)
		sd.start(cancel)
		s.senderRunning(1)
		go func() {
			defer wg.Done()
			defer s.senderRunning(-1)
			defer cancel()
			sd.run(sctx)
		}()
	}
	for _, sd := range pending {
		start(sd)
	}
	save := time.NewTicker(s.opts.CursorSave)
	defer save.Stop()
	for {
		select {
		case sd := <-s.startC:
			start(sd)
		case <-save.C:
			s.saveCursors(ctx)
		case <-ctx.Done():
			s.mu.Lock()
			s.state = svcStopped
			s.mu.Unlock()
			close(s.stopped)
			wg.Wait()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			s.saveCursors(sctx)
			cancel()
			return nil
		}
	}
}

// markCursor records that monitor id's cursor moved to seq, for the next
// save.
func (s *Service) markCursor(id string, seq int64) {
	s.cmu.Lock()
	if seq > s.dirty[id] {
		s.dirty[id] = seq
	}
	s.cmu.Unlock()
}

// storeCursor stores monitor id's cursor now (Options.CursorAtAck),
// trying again until it is stored or ctx is done; then it is left to the
// save when Run stops. A refused write (commit.ErrFenced: another node
// runs the monitors now) is not retried.
func (s *Service) storeCursor(ctx context.Context, id string, seq int64) {
	for attempt := 0; ; attempt++ {
		// A delivery acknowledged while the loop stops is stored too.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		s.fmu.RLock()
		err := s.deps.Store.SaveCursor(sctx, id, seq)
		if err == nil {
			// A skip marked before is stored by this write.
			s.cmu.Lock()
			if d, ok := s.dirty[id]; ok && d <= seq {
				delete(s.dirty, id)
			}
			s.cmu.Unlock()
		}
		s.fmu.RUnlock()
		cancel()
		switch {
		case err == nil:
			return
		case errors.Is(err, commit.ErrFenced):
			s.log.Warn("monitor cursor refused: another node runs the monitors now", "monitor", id, "seq", seq)
			return
		}
		s.log.Warn("store monitor cursor", "monitor", id, "seq", seq, "attempt", attempt+1, "err", err)
		if ctx.Err() != nil || !wait(ctx, s.backoff(attempt)) {
			s.markCursor(id, seq)
			return
		}
	}
}

// saveCursors stores the cursors that moved since the last save, in one
// transaction; on failure they are kept for the next one.
func (s *Service) saveCursors(ctx context.Context) {
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.cmu.Lock()
	if len(s.dirty) == 0 {
		s.cmu.Unlock()
		return
	}
	batch := s.dirty
	s.dirty = map[string]int64{}
	s.cmu.Unlock()
	if err := s.deps.Store.SaveCursors(ctx, batch); err != nil {
		s.log.Warn("save monitor cursors", "monitors", len(batch), "err", err)
		for id, seq := range batch {
			s.markCursor(id, seq)
		}
	}
}

// launch starts sd's loop if Run runs (else Run starts it). Called without
// s.mu.
func (s *Service) launch(sd *sender) {
	s.mu.Lock()
	running := s.state == svcRunning
	s.mu.Unlock()
	if !running {
		return
	}
	select {
	case s.startC <- sd:
	case <-s.stopped:
	}
}

// changed calls Options.Changed.
func (s *Service) changed(id string) {
	if s.opts.Changed != nil {
		s.opts.Changed(id)
	}
}

// Running reports whether Run runs the send loops in this process.
func (s *Service) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == svcRunning
}

// Sync brings the monitors in memory in line with the store after other
// processes changed them (cluster mode: operators' changes made through
// another node): a monitor created there is added and started, one
// deleted there is stopped and dropped, one whose definition (spec,
// secrets, token) changed there takes it (a spec change restarts its send
// loop from its cursor), and a DISABLED one enabled there (stored more
// recently than this process's record) starts again from the stored
// cursor. The state the send loops keep (status, cursor, times) is this
// process's own and is not read back.
func (s *Service) Sync(ctx context.Context) error {
	ms, err := s.deps.Store.ListMonitors(ctx)
	if err != nil {
		return fmt.Errorf("sync monitors: %w", err)
	}
	stored := make(map[string]Monitor, len(ms))
	for _, m := range ms {
		stored[m.ID] = m
	}
	s.mu.Lock()
	var gone []*entry
	var goneIDs []string
	for id, e := range s.mons {
		if _, ok := stored[id]; !ok {
			gone = append(gone, e)
			goneIDs = append(goneIDs, id)
			delete(s.mons, id)
		}
	}
	var added []*sender
	current := make(map[string]*entry, len(s.mons))
	for _, m := range ms {
		e, ok := s.mons[m.ID]
		if !ok {
			e = &entry{mon: m}
			if m.Status != Disabled {
				e.sender = s.newSender(e)
				added = append(added, e.sender)
			}
			s.mons[m.ID] = e
			s.log.Info("monitor created through another node", "monitor", m.ID)
			continue
		}
		current[m.ID] = e
	}
	s.mu.Unlock()
	for i, e := range gone {
		e.mu.Lock()
		sd := e.sender
		e.sender = nil
		e.mu.Unlock()
		if sd != nil {
			sd.stop()
		}
		s.metrics.forget(goneIDs[i])
		s.log.Info("monitor deleted through another node", "monitor", goneIDs[i])
	}
	for _, sd := range added {
		s.launch(sd)
	}
	for id, e := range current {
		s.syncOne(e, stored[id])
	}
	return nil
}

// syncOne applies to e the definition stored in m (see Sync).
func (s *Service) syncOne(e *entry, m Monitor) {
	e.mu.Lock()
	cur := e.mon
	specChanged := !sameSpec(&cur.Spec, &m.Spec)
	enabled := cur.Status == Disabled && m.Status != Disabled && m.UpdatedAt.After(cur.UpdatedAt)
	secrets := cur.Secret != m.Secret || cur.PrevSecret != m.PrevSecret || !slices.Equal(cur.TokenHash, m.TokenHash) ||
		!sameTime(cur.PrevSecretUntil, m.PrevSecretUntil)
	if !specChanged && !enabled {
		if secrets {
			e.mon.Secret, e.mon.PrevSecret, e.mon.PrevSecretUntil, e.mon.TokenHash = m.Secret, m.PrevSecret, m.PrevSecretUntil, m.TokenHash
		}
		e.mu.Unlock()
		return
	}
	old := e.sender
	e.sender = nil
	e.mu.Unlock()
	if old != nil {
		old.stop()
	}
	e.mu.Lock()
	next := e.mon
	next.Spec = m.Spec
	next.Secret, next.PrevSecret, next.PrevSecretUntil, next.TokenHash = m.Secret, m.PrevSecret, m.PrevSecretUntil, m.TokenHash
	next.Status, next.StatusReason, next.UpdatedAt = m.Status, m.StatusReason, m.UpdatedAt
	if enabled {
		next.Cursor, next.FailingSince = m.Cursor, nil
	} else {
		next.Cursor = max(next.Cursor, m.Cursor)
	}
	e.mon = next
	var sd *sender
	if next.Status != Disabled {
		e.sender = s.newSender(e)
		sd = e.sender
	}
	e.mu.Unlock()
	s.log.Info("monitor changed through another node", "monitor", m.ID, "spec_changed", specChanged, "enabled", enabled)
	if sd != nil {
		s.launch(sd)
	}
}

func sameSpec(a, b *Spec) bool {
	ea, err1 := EncodeSpec(a)
	eb, err2 := EncodeSpec(b)
	return err1 == nil && err2 == nil && string(ea) == string(eb)
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

// CreateResult is a new monitor with the secrets shown only once.
type CreateResult struct {
	Monitor Monitor
	// Secret signs the deliveries of an HTTP monitor (whsec_…); Token
	// authenticates the stream of a tcp monitor.
	Secret string
	Token  string
}

func newID(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func newToken() (string, []byte) {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	tok := "mtk_" + base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(tok))
	return tok, h[:]
}

// Create validates spec, stores a new monitor and starts it. Its cursor
// starts at the end of the log: it delivers the events committed from now
// on.
func (s *Service) Create(ctx context.Context, spec Spec) (*CreateResult, error) {
	if err := spec.Normalize(); err != nil {
		return nil, err
	}
	if err := s.checkTarget(ctx, &spec); err != nil {
		return nil, err
	}
	head, err := s.deps.Events.LastSeq(ctx)
	if err != nil {
		return nil, fmt.Errorf("create monitor: %w", err)
	}
	now := s.opts.Now().UTC()
	m := Monitor{ID: newID("mon_", 10), Spec: spec, CreatedAt: now, UpdatedAt: now, Cursor: head}
	res := &CreateResult{}
	if spec.Transport == TransportHTTP {
		m.Status = Connecting
		m.Secret = monitorclient.NewSecret()
		res.Secret = m.Secret
	} else {
		m.Status = s.streamIdleStatus(&spec)
		res.Token, m.TokenHash = newToken()
	}
	if err := s.deps.Store.InsertMonitor(ctx, &m); err != nil {
		return nil, err
	}
	e := &entry{mon: m}
	e.sender = s.newSender(e)
	s.mu.Lock()
	s.mons[m.ID] = e
	s.mu.Unlock()
	s.launch(e.sender)
	s.changed(m.ID)
	res.Monitor = m
	s.log.Info("monitor created", "monitor", m.ID, "transport", m.Transport, "topics", m.Topics)
	return res, nil
}

func (s *Service) streamIdleStatus(spec *Spec) Status {
	if spec.AutoReplayOnConnect {
		return Suspended
	}
	return Inactive
}

func (s *Service) entry(id string) (*entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.mons[id]
	if !ok {
		return nil, fmt.Errorf("monitor %s: %w", id, ErrNotFound)
	}
	return e, nil
}

// Get returns a monitor.
func (s *Service) Get(ctx context.Context, id string) (*Monitor, error) {
	e, err := s.entry(id)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	m := e.mon
	e.mu.Unlock()
	return &m, nil
}

// ListOptions select monitors.
type ListOptions struct {
	Condition *Condition // nil: every monitor
	// Topics, if set, selects the monitors whose topics are exactly these
	// (in any order and spelling), as the seed's get_monitor(topics).
	Topics []string
}

// List returns the monitors that match opts, by id.
func (s *Service) List(ctx context.Context, opts ListOptions) ([]Monitor, error) {
	s.mu.Lock()
	es := make([]*entry, 0, len(s.mons))
	for _, e := range s.mons {
		es = append(es, e)
	}
	s.mu.Unlock()
	out := []Monitor{}
	for _, e := range es {
		e.mu.Lock()
		m := e.mon
		e.mu.Unlock()
		if len(opts.Topics) > 0 && !SameTopics(m.Topics, opts.Topics) {
			continue
		}
		if opts.Condition.Match(&m) {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b Monitor) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	return out, nil
}

// Update replaces a monitor's definition (the transport cannot change)
// and restarts its send loop, which resumes after its cursor. A DISABLED
// monitor is enabled again.
func (s *Service) Update(ctx context.Context, id string, spec Spec) (*Monitor, error) {
	e, err := s.entry(id)
	if err != nil {
		return nil, err
	}
	if err := spec.Normalize(); err != nil {
		return nil, err
	}
	e.mu.Lock()
	transport := e.mon.Transport
	e.mu.Unlock()
	if spec.Transport != transport {
		return nil, fieldErr("transport", "cannot change from %s to %s: create a new monitor", transport, spec.Transport)
	}
	if err := s.checkTarget(ctx, &spec); err != nil {
		return nil, err
	}
	return s.restart(ctx, e, func(m *Monitor) { m.Spec = spec })
}

// Enable enables a DISABLED monitor again (any other monitor is left as
// it is). Events committed while it was disabled are not delivered.
func (s *Service) Enable(ctx context.Context, id string) (*Monitor, error) {
	e, err := s.entry(id)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	disabled := e.mon.Status == Disabled
	m := e.mon
	e.mu.Unlock()
	if !disabled {
		return &m, nil
	}
	return s.restart(ctx, e, nil)
}

// restart stops e's send loop, applies change to its record (under e.mu),
// stores it and starts a new loop.
func (s *Service) restart(ctx context.Context, e *entry, change func(m *Monitor)) (*Monitor, error) {
	e.mu.Lock()
	old := e.sender
	e.sender = nil
	e.mu.Unlock()
	if old != nil {
		old.stop()
	}
	e.mu.Lock()
	wasDisabled := e.mon.Status == Disabled
	m := e.mon
	if change != nil {
		change(&m)
	}
	m.UpdatedAt = s.opts.Now().UTC()
	if wasDisabled {
		// Nothing was kept while it was disabled: start at the end.
		head, err := s.deps.Events.LastSeq(ctx)
		if err != nil {
			e.mu.Unlock()
			return nil, fmt.Errorf("enable monitor %s: %w", m.ID, err)
		}
		m.Cursor = head
		m.FailingSince = nil
	}
	prevStatus := m.Status
	if m.Transport == TransportHTTP {
		m.Status = Connecting
	} else {
		m.Status = s.streamIdleStatus(&m.Spec)
	}
	m.StatusReason = ""
	if prevStatus != m.Status {
		m.StatusReason = "reconfigured"
	}
	err := s.deps.Store.UpdateMonitor(ctx, &m)
	if err == nil && wasDisabled {
		// Through the pending saves, so that none of them moves it back.
		s.fmu.Lock()
		s.cmu.Lock()
		delete(s.dirty, m.ID)
		s.cmu.Unlock()
		err = s.deps.Store.SaveCursor(ctx, m.ID, m.Cursor)
		s.fmu.Unlock()
	}
	if err != nil {
		// Keep the old definition running.
		e.sender = s.newSender(e)
		sd := e.sender
		e.mu.Unlock()
		s.launch(sd)
		return nil, err
	}
	e.mon = m
	e.sender = s.newSender(e)
	sd := e.sender
	e.mu.Unlock()
	if prevStatus != m.Status {
		s.commitStatus(ctx, &m, prevStatus)
	}
	s.launch(sd)
	s.changed(m.ID)
	return &m, nil
}

// Delete stops and removes a monitor.
func (s *Service) Delete(ctx context.Context, id string) error {
	e, err := s.entry(id)
	if err != nil {
		return err
	}
	if err := s.deps.Store.DeleteMonitor(ctx, id); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.mons, id)
	s.mu.Unlock()
	e.mu.Lock()
	sd := e.sender
	e.sender = nil
	e.mu.Unlock()
	if sd != nil {
		sd.stop()
	}
	s.metrics.forget(id)
	s.changed(id)
	s.log.Info("monitor deleted", "monitor", id)
	return nil
}

// RotateSecret gives an HTTP monitor a new signing secret; the old one
// keeps signing too (deliveries carry both signatures) for overlap
// (0: Options.SecretOverlap; negative: it stops at once).
func (s *Service) RotateSecret(ctx context.Context, id string, overlap time.Duration) (string, error) {
	e, err := s.entry(id)
	if err != nil {
		return "", err
	}
	if overlap == 0 {
		overlap = s.opts.SecretOverlap
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mon.Transport != TransportHTTP {
		return "", fieldErr("transport", "only http monitors have a signing secret")
	}
	m := e.mon
	if overlap > 0 {
		until := s.opts.Now().UTC().Add(overlap)
		m.PrevSecret, m.PrevSecretUntil = m.Secret, &until
	} else {
		m.PrevSecret, m.PrevSecretUntil = "", nil
	}
	m.Secret = monitorclient.NewSecret()
	m.UpdatedAt = s.opts.Now().UTC()
	if err := s.deps.Store.UpdateMonitor(ctx, &m); err != nil {
		return "", err
	}
	e.mon = m
	s.changed(m.ID)
	return m.Secret, nil
}

// RotateToken gives a tcp monitor a new stream token; the old one stops
// working for new connections at once.
func (s *Service) RotateToken(ctx context.Context, id string) (string, error) {
	e, err := s.entry(id)
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.mon.Transport != TransportTCP {
		return "", fieldErr("transport", "only tcp monitors have a stream token")
	}
	m := e.mon
	var tok string
	tok, m.TokenHash = newToken()
	m.UpdatedAt = s.opts.Now().UTC()
	if err := s.deps.Store.UpdateMonitor(ctx, &m); err != nil {
		return "", err
	}
	e.mon = m
	s.changed(m.ID)
	return tok, nil
}

// signingSecrets returns the secrets that sign a delivery now.
func (e *entry) signingSecrets(now time.Time) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := []string{e.mon.Secret}
	if e.mon.PrevSecret != "" && e.mon.PrevSecretUntil != nil && now.Before(*e.mon.PrevSecretUntil) {
		out = append(out, e.mon.PrevSecret)
	}
	return out
}

// authenticate finds the running send loop of a tcp monitor by its id and
// token.
func (s *Service) authenticate(id, token string) (*sender, error) {
	e, err := s.entry(id)
	if err != nil {
		return nil, ErrBadToken
	}
	h := sha256.Sum256([]byte(token))
	e.mu.Lock()
	defer e.mu.Unlock()
	if subtle.ConstantTimeCompare(h[:], e.mon.TokenHash) != 1 {
		return nil, ErrBadToken
	}
	if e.mon.Transport != TransportTCP {
		return nil, ErrNotStream
	}
	if e.sender == nil {
		return nil, ErrClosed
	}
	return e.sender, nil
}

// update applies fn to e's record and stores it if it changed; fn returns
// the reason of a status change. A status change is written through the
// write path with its monitor_status_changed event, in one transaction.
func (s *Service) update(ctx context.Context, e *entry, fn func(m *Monitor) string) {
	e.mu.Lock()
	m := e.mon
	old := m
	reason := fn(&m)
	if m.Status != old.Status {
		m.StatusReason = reason
	}
	if sameState(&m, &old) {
		e.mu.Unlock()
		return
	}
	m.UpdatedAt = s.opts.Now().UTC()
	e.mon = m
	e.mu.Unlock()
	if m.Status != old.Status {
		s.log.Info("monitor status changed", "monitor", m.ID, "from", old.Status, "to", m.Status, "reason", reason)
		s.commitStatus(ctx, &m, old.Status)
		return
	}
	// The state columns only: a definition changed meanwhile through
	// another cluster node is not overwritten with this one's.
	if err := s.deps.Committer.Submit(context.WithoutCancel(ctx), &commit.Change{Ops: []commit.Op{&StateChange{Monitor: m}}}); err != nil &&
		!errors.Is(err, ErrNotFound) && ctx.Err() == nil {
		s.log.Warn("store monitor state", "monitor", m.ID, "err", err)
	}
}

// sameState reports whether the state a send loop changes is the same
// (LastSent is compared at one-second resolution, so that a busy monitor
// does not write its record at every delivery).
func sameState(a, b *Monitor) bool {
	eqT := func(x, y *time.Time, res time.Duration) bool {
		if x == nil || y == nil {
			return x == y
		}
		return x.Truncate(res).Equal(y.Truncate(res))
	}
	return a.Status == b.Status && a.StatusReason == b.StatusReason &&
		eqT(a.LastConnect, b.LastConnect, 0) && eqT(a.LastSent, b.LastSent, time.Second) && eqT(a.FailingSince, b.FailingSince, 0)
}

// commitStatus writes m's state and a monitor_status_changed event (from
// → m.Status) in one transaction.
func (s *Service) commitStatus(ctx context.Context, m *Monitor, from Status) {
	ev, err := commit.NewEvent(events.Event{Type: events.MonitorStatusChanged, Time: m.UpdatedAt, Args: &events.MonitorStatus{
		MonitorID: m.ID, OldStatus: string(from), NewStatus: string(m.Status), Reason: m.StatusReason,
	}})
	if err == nil {
		// Written even while the loop stops: the change happened.
		err = s.deps.Committer.Submit(context.WithoutCancel(ctx), &commit.Change{Ops: []commit.Op{&StateChange{Monitor: *m}}, Events: []commit.Event{ev}})
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		s.log.Warn("commit monitor status change", "monitor", m.ID, "err", err)
	}
}

// group returns a device's group, cached; the cache entry of a device is
// dropped when an event says its group may have changed.
func (s *Service) group(id string) string {
	if s.deps.Groups == nil || id == "" {
		return ""
	}
	s.gmu.Lock()
	g, ok := s.groups[id]
	s.gmu.Unlock()
	if ok {
		return g
	}
	g, err := s.deps.Groups.DeviceGroup(context.Background(), id)
	if err != nil {
		return ""
	}
	s.gmu.Lock()
	if len(s.groups) > 100000 {
		clear(s.groups)
	}
	s.groups[id] = g
	s.gmu.Unlock()
	return g
}

// senderRunning counts a send loop that starts (1) or ends (-1), and
// tells the tail when the count leaves or reaches 0.
func (s *Service) senderRunning(d int64) {
	if n := s.running.Add(d); (d > 0 && n == 1) || (d < 0 && n == 0) {
		select {
		case s.tailKick <- struct{}{}:
		default:
		}
	}
}

// forgetGroups empties the cache of the devices' groups: the tail, which
// drops a device's entry when an event says its group may have changed,
// starts following the bus again after a time it did not.
func (s *Service) forgetGroups() {
	s.gmu.Lock()
	clear(s.groups)
	s.gmu.Unlock()
}

func (s *Service) forgetGroup(e *events.Event) {
	switch e.Type {
	case events.DeviceGroupChanged, events.DeviceProvisioned, events.DeviceRegistered:
		s.gmu.Lock()
		delete(s.groups, e.DeviceID)
		s.gmu.Unlock()
	}
}
