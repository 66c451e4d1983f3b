// Package alerts evaluates alert rules on the committed event stream and
// keeps the alerts they raise: one open alert per (rule, device), through
// the lifecycle pending → active → acknowledged → cleared.
//
// Data flow: the evaluator is one subscriber of the event bus (never a
// step of ingest): it reads device_data_received, presence, status and
// rejection events from its stored cursor, updates the in-memory state of
// each (rule, device) pair, and writes what changed (alerts and their
// alert_* events) through the commit path together with its cursor, in one
// transaction. After a crash it restarts from that cursor, so an event is
// never counted twice and no alert is raised twice; the store's unique
// index on open alerts (rule, device) backs this up.
//
// Timers (offline for a duration, no data, the end of a count window) run
// from Run's ticker on the same state, under the same lock.
//
// Writes do not stop evaluation: the evaluator enqueues its changes
// (the committer applies them in that order, in group commits with ingest)
// and goes on with the next event; the reaper, a goroutine of Run, waits
// for each in order, moves the stored cursor it carried into saved, and
// adopts the store's open alert when an insert was refused (another node
// raised it). The in-memory state is the truth for the next event, as it
// was when each write was waited for: the store only lags by the changes
// in flight, and an operator's action waits for them first.
//
// Lock order: Service.mu, then the committer's queue (a change is
// enqueued with mu held, so that changes are committed in the order they
// were decided), then wmu. The reaper waits for commits without a lock
// and takes mu only to adopt an alert or move saved. Nothing calls into
// the service while holding a lock of its own.
package alerts

import (
	"container/heap"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// ObservedTypes are the events the evaluator reads.
var ObservedTypes = []events.Type{events.DeviceDataReceived, events.DeviceConnected, events.DeviceDisconnected,
	events.DeviceStatusChanged, events.MessageRejected}

// Subscriber subscribes to the committed events (*eventlog.Bus).
type Subscriber interface {
	Subscribe(opts eventlog.SubscribeOptions, fn func(events.Event)) (*eventlog.Subscription, error)
}

// Devices reads devices (the registry's store).
type Devices interface {
	GetDevice(ctx context.Context, id string) (*registry.Device, error)
	ListDevices(ctx context.Context, opts registry.ListOptions) ([]registry.Device, error)
}

// EventLog tells the end of the event log (a first start begins there).
type EventLog interface {
	LastSeq(ctx context.Context) (int64, error)
}

// Types tells whether a device type is declared.
type Types interface {
	Known(name string) bool
}

// Deps are the service's collaborators.
type Deps struct {
	Store     Store
	Committer Committer
	Events    Subscriber
	Log       EventLog
	Devices   Devices
	Readings  readings.Store
	Types     Types
}

// Options tune the service. Zero values take the defaults.
type Options struct {
	// Rules are the rules of the configuration file (validated already).
	Rules []RuleSpec
	// DevicePerMinute and GlobalPerMinute cap the alerts raised per minute
	// for one device and in all (defaults 10 and 100; negative: no cap).
	DevicePerMinute int
	GlobalPerMinute int
	// Tick is how often timers are checked (default 250ms).
	Tick time.Duration
	// CursorEvery is how often the cursor is saved when no alert changed
	// (default 2s).
	CursorEvery time.Duration
	// Now is the clock (tests).
	Now func() time.Time

	// crash makes Run return without saving its cursor (tests: a crash).
	crash bool
}

type ruleSet struct{ rules []*Rule }

type openAlert struct {
	Alert
	notified int64 // when it was last written with an event (Unix ns)
}

// devState is the evaluation state of one device: one ruleState per rule of
// its type.
type devState struct {
	id, typ string
	set     *ruleSet
	st      []ruleState
}

// Service evaluates rules and keeps alerts.
type Service struct {
	deps Deps
	opts Options
	log  *slog.Logger
	m    *metrics

	mu        sync.Mutex
	rules     map[string]*Rule
	byType    map[string]*ruleSet
	devs      map[string]*devState
	silences  []Silence
	timers    timerHeap
	cursor    int64 // Seq of the last event handled
	saved     int64 // Seq of the cursor stored
	lastSave  time.Time
	flood     flood
	floodDone []events.AlertFloodSummary
	orphans   []Alert   // open alerts of rules that no longer exist
	started   time.Time // when Load ran
	queued    int64     // the highest cursor enqueued in a change not settled yet
	last      *commit.Ticket

	wmu    sync.Mutex
	writes []pendingWrite // enqueued, for the reaper
	wsig   chan struct{}  // one slot: writes were added
}

// pendingWrite is a change the evaluator enqueued and the reaper has not
// settled yet.
type pendingWrite struct {
	t      *commit.Ticket
	cursor int64 // the cursor it stores, 0 for none
}

// New returns a service; Load it before Run.
func New(deps Deps, opts Options, log *slog.Logger, reg prometheus.Registerer) *Service {
	if opts.DevicePerMinute == 0 {
		opts.DevicePerMinute = 10
	}
	if opts.GlobalPerMinute == 0 {
		opts.GlobalPerMinute = 100
	}
	if opts.Tick <= 0 {
		opts.Tick = 250 * time.Millisecond
	}
	if opts.CursorEvery <= 0 {
		opts.CursorEvery = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Service{deps: deps, opts: opts, log: log, m: newMetrics(reg),
		rules: map[string]*Rule{}, byType: map[string]*ruleSet{}, devs: map[string]*devState{},
		wsig: make(chan struct{}, 1)}
}

// Load reads the rules, silences, open alerts and cursor, and arms the
// timers of presence and no-data rules.
func (s *Service) Load(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, spec := range s.opts.Rules {
		r, err := ParseRule(spec)
		if err != nil {
			return fmt.Errorf("alerts.rules: %w", err)
		}
		r.Source = "config"
		if s.rules[r.Name] != nil {
			return fmt.Errorf("alerts.rules: rule %q declared twice", r.Name)
		}
		s.rules[r.Name] = r
	}
	stored, err := s.deps.Store.ListAlertRules(ctx)
	if err != nil {
		return fmt.Errorf("load alert rules: %w", err)
	}
	for _, sr := range stored {
		r, err := ParseRule(sr.Spec)
		if err != nil || s.rules[sr.Spec.Name] != nil {
			s.log.Error("stored alert rule ignored", "rule", sr.Spec.Name, "err", err)
			continue
		}
		r.Source = "api"
		s.rules[r.Name] = r
	}
	s.rebuild()
	now := s.opts.Now()
	if s.silences, err = s.deps.Store.ListSilences(ctx, now); err != nil {
		return fmt.Errorf("load silences: %w", err)
	}
	open, err := s.deps.Store.OpenAlerts(ctx)
	if err != nil {
		return fmt.Errorf("load open alerts: %w", err)
	}
	for _, a := range open {
		d := s.dev(a.DeviceID, a.DeviceType)
		i := d.index(a.Rule)
		if i < 0 {
			s.orphans = append(s.orphans, a)
			continue
		}
		st := &d.st[i]
		st.alert = &openAlert{Alert: a, notified: a.UpdatedAt.UnixNano()}
		st.phase = firing
		if a.State == StatePending {
			st.phase, st.since = pending, a.StartedAt.UnixNano()
		}
	}
	s.m.open.Set(float64(len(open) - len(s.orphans)))
	s.started = now
	seq, ok, err := s.deps.Store.AlertCursor(ctx)
	if err != nil {
		return fmt.Errorf("load alert cursor: %w", err)
	}
	if !ok {
		// A first start evaluates what happens from now on.
		if seq, err = s.deps.Log.LastSeq(ctx); err != nil {
			return fmt.Errorf("read the end of the event log: %w", err)
		}
		s.saved = -1
	} else {
		s.saved = seq
	}
	s.cursor = seq
	return s.armPresence(ctx, now)
}

// armPresence starts the offline and no-data timers of the devices that
// were seen once and are not connected now.
func (s *Service) armPresence(ctx context.Context, now time.Time) error {
	for typ, set := range s.byType {
		timed := false
		for _, r := range set.rules {
			timed = timed || r.Kind == KindOffline || r.Kind == KindNoData
		}
		if !timed {
			continue
		}
		opts := registry.ListOptions{Type: typ, Limit: 1000}
		for {
			devs, err := s.deps.Devices.ListDevices(ctx, opts)
			if err != nil {
				return fmt.Errorf("list %s devices: %w", typ, err)
			}
			for _, dv := range devs {
				if dv.LastSeen == nil {
					continue
				}
				d := s.dev(dv.ID, dv.Type)
				for i, r := range d.set.rules {
					st := &d.st[i]
					if st.phase != idle || st.deadline != 0 {
						continue
					}
					switch {
					case r.Kind == KindOffline && !dv.Connected:
						// Offline time counts while the hub runs (see observe).
						st.deadline = max(dv.LastSeen.UnixNano(), now.UnixNano()) + int64(r.When.Dur)
					case r.Kind == KindNoData:
						st.deadline = now.UnixNano() + int64(r.When.Dur)
					}
					s.schedule(d, r, st)
				}
			}
			if len(devs) < opts.Limit {
				break
			}
			opts.After = devs[len(devs)-1].ID
		}
	}
	return nil
}

// rebuild groups the rules by device type and moves every device's state
// to its type's new rule set.
func (s *Service) rebuild() {
	by := map[string][]*Rule{}
	for _, r := range s.rules {
		by[r.DeviceType] = append(by[r.DeviceType], r)
	}
	s.byType = map[string]*ruleSet{}
	for t, rs := range by {
		sort.Slice(rs, func(i, j int) bool { return rs[i].Name < rs[j].Name })
		s.byType[t] = &ruleSet{rules: rs}
	}
	for _, d := range s.devs {
		s.remap(d)
	}
}

var emptySet = &ruleSet{}

func (s *Service) remap(d *devState) {
	set := s.byType[d.typ]
	if set == nil {
		set = emptySet
	}
	if d.set == set {
		return
	}
	st := make([]ruleState, len(set.rules))
	for i, r := range set.rules {
		for j, old := range d.set.rules {
			if old == r {
				st[i] = d.st[j]
			}
		}
	}
	d.set, d.st = set, st
	for i, r := range set.rules {
		s.schedule(d, r, &d.st[i])
	}
}

// dev returns the state of a device, created or moved to its type's rules.
func (s *Service) dev(id, typ string) *devState {
	d := s.devs[id]
	if d == nil {
		d = &devState{id: id, typ: typ, set: emptySet}
		s.devs[id] = d
	}
	if d.typ != typ {
		d.typ = typ
	}
	s.remap(d)
	return d
}

func (d *devState) index(rule string) int {
	for i, r := range d.set.rules {
		if r.Name == rule {
			return i
		}
	}
	return -1
}

// Reload forgets the evaluator's state and loads it again from the store:
// in a cluster, the node that takes the alerts lease resumes from what the
// previous owner stored (rules, open alerts, its cursor).
func (s *Service) Reload(ctx context.Context) error {
	s.mu.Lock()
	s.rules, s.byType, s.devs = map[string]*Rule{}, map[string]*ruleSet{}, map[string]*devState{}
	s.silences, s.timers, s.orphans = nil, nil, nil
	s.cursor, s.saved = 0, 0
	s.queued, s.last = 0, nil // the previous Run's reaper settled them
	s.mu.Unlock()
	return s.Load(ctx)
}

// Run evaluates events and timers until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	s.mu.Lock()
	from := s.cursor
	if from == 0 {
		from = -1 // nothing seen yet: from the start of the (empty) log
	}
	orphans := s.orphans
	s.orphans = nil
	s.mu.Unlock()
	stopReaper := make(chan struct{})
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		s.reap(context.WithoutCancel(ctx), stopReaper)
	}()
	defer func() {
		close(stopReaper)
		<-reaped
	}()
	// A queue of several commits' events, so that a burst does not fall
	// back to reading the log.
	sub, err := s.deps.Events.Subscribe(eventlog.SubscribeOptions{Filter: events.Filter{Types: ObservedTypes}, From: from, Buffer: 16384},
		func(e events.Event) { s.observe(ctx, e) })
	if err != nil {
		return fmt.Errorf("subscribe alerts: %w", err)
	}
	defer sub.Close()
	if len(orphans) > 0 {
		s.clearOrphans(ctx, orphans)
	}
	t := time.NewTicker(s.opts.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			sub.Close()
			if s.opts.crash {
				return nil
			}
			// The committer outlives the producers: store where we are
			// (the reaper settles it with the rest before Run returns).
			s.mu.Lock()
			s.saveCursor(context.WithoutCancel(ctx), true)
			s.mu.Unlock()
			return nil
		case <-t.C:
			s.tick(ctx)
		}
	}
}

// reap settles the enqueued changes in order until stop is closed and
// none is left.
func (s *Service) reap(ctx context.Context, stop <-chan struct{}) {
	for {
		s.wmu.Lock()
		ws := s.writes
		s.writes = nil
		s.wmu.Unlock()
		if len(ws) == 0 {
			select {
			case <-s.wsig:
				continue
			case <-stop:
				s.wmu.Lock()
				n := len(s.writes)
				s.wmu.Unlock()
				if n == 0 {
					return
				}
				continue
			}
		}
		for _, w := range ws {
			s.settle(ctx, w)
		}
	}
}

// settle waits for one enqueued change: a stored cursor moves saved; a
// refused insert adopts the store's alert; a failure is counted and
// logged, and its cursor is saved again with the next change.
func (s *Service) settle(ctx context.Context, w pendingWrite) {
	err := w.t.Wait(ctx)
	if err == nil && w.cursor == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err == nil:
		s.saved = max(s.saved, w.cursor)
	case errors.Is(err, commit.ErrConflict):
		s.adopt(ctx, w.t.Change)
	default:
		s.m.errors.Inc()
		s.log.Error("alert change failed", "device", w.t.Change.DeviceID, "err", err)
	}
	if err != nil && w.cursor != 0 && s.queued <= w.cursor {
		s.queued = s.saved // not stored: the next change carries it again
	}
}

// settled waits until the changes enqueued so far are committed (or
// failed). Called with mu held: the committer never waits for mu.
func (s *Service) settled(ctx context.Context) {
	if s.last != nil {
		_ = s.last.Wait(ctx)
	}
}

// clearOrphans clears the open alerts of rules that were removed from the
// configuration file.
func (s *Service) clearOrphans(ctx context.Context, orphans []Alert) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*commit.Change
	now := s.opts.Now()
	for _, a := range orphans {
		a.State, a.ClearedAt, a.ClearedBy, a.ClearNote, a.UpdatedAt = StateCleared, &now, "rule", "the rule no longer exists", now
		out = append(out, s.change(a.DeviceID, &AlertOp{Kind: OpUpdate, Alert: a}, eventOf(events.AlertCleared, &a, now)))
	}
	s.submit(ctx, out)
}

// observe handles one committed event (the bus's goroutine).
func (s *Service) observe(ctx context.Context, e events.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Seq <= s.cursor {
		return
	}
	s.cursor = e.Seq
	set := s.byType[e.DeviceType]
	if set == nil {
		return
	}
	s.m.evaluated.Inc()
	d := s.dev(e.DeviceID, e.DeviceType)
	now := s.opts.Now()
	var out []*commit.Change
	emit := func(i int, tr transition, val any, at time.Time) {
		if tr == tNone {
			return
		}
		if ch := s.decide(ctx, d, i, tr, val, at, now); ch != nil {
			out = append(out, ch)
		}
	}
	switch a := e.Args.(type) {
	case *events.DataReceived:
		for _, rd := range a.Readings {
			for i, r := range set.rules {
				switch r.Kind {
				case KindReading:
					v, ok := rd.Values[r.When.Field]
					if !ok {
						continue
					}
					tr, val := r.onReading(&d.st[i], rd.Time, v)
					emit(i, tr, val, rd.Time)
				case KindNoData:
					if _, ok := rd.Values[r.When.Field]; !ok {
						continue
					}
					tr := r.onData(&d.st[i], e.Time.UnixNano())
					s.schedule(d, r, &d.st[i])
					emit(i, tr, nil, e.Time)
				}
			}
		}
	case *events.Connected:
		for i, r := range set.rules {
			tr := r.onConnect(&d.st[i], e.Time.UnixNano())
			s.schedule(d, r, &d.st[i])
			emit(i, tr, nil, e.Time)
		}
	case *events.Disconnected:
		// Offline time counts while this hub runs: the disconnects of a
		// shutdown, replayed after a long stop, do not raise at once; and a
		// hub's own restart is not a device flapping.
		at := e.Time
		if at.Before(s.started) {
			at = s.started
		}
		for i, r := range set.rules {
			if r.Kind == KindFlapping && a.Reason == events.ReasonShutdown {
				continue
			}
			tr, val := r.onDisconnect(&d.st[i], at.UnixNano())
			s.schedule(d, r, &d.st[i])
			emit(i, tr, val, e.Time)
		}
	case *events.StatusChanged:
		for i, r := range set.rules {
			if r.Kind == KindStatus {
				tr, val := r.onStatus(&d.st[i], a.NewStatus)
				emit(i, tr, val, e.Time)
			}
		}
	case *events.Rejected:
		for i, r := range set.rules {
			if r.Kind == KindRejected {
				// A flood of refusals is recorded as one with the count of
				// those not recorded (Suppressed): count them all.
				tr, val := r.onRejected(&d.st[i], e.Time.UnixNano(), 1+a.Suppressed)
				s.schedule(d, r, &d.st[i])
				emit(i, tr, val, e.Time)
			}
		}
	}
	if ch := s.floodChange(now); ch != nil {
		out = append(out, ch)
	}
	s.submit(ctx, out)
}

// tick runs the timers that are due, ends flood windows and silences, and
// saves the cursor now and then.
func (s *Service) tick(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	n := now.UnixNano()
	var out []*commit.Change
	for len(s.timers) > 0 && s.timers[0].at <= n {
		tm := heap.Pop(&s.timers).(timer)
		d := tm.d
		if s.devs[d.id] != d {
			continue
		}
		i := -1
		for j, r := range d.set.rules {
			if r == tm.r {
				i = j
			}
		}
		if i < 0 || d.st[i].armed != tm.at {
			continue // a timer replaced since
		}
		st := &d.st[i]
		st.armed = 0
		if st.deadline == 0 {
			continue // stopped
		}
		if st.deadline > n {
			s.schedule(d, tm.r, st) // moved later
			continue
		}
		tr, val := tm.r.onTimer(st, n)
		s.schedule(d, tm.r, st)
		if tr != tNone {
			if ch := s.decide(ctx, d, i, tr, val, now, now); ch != nil {
				out = append(out, ch)
			}
		}
	}
	if ch := s.floodChange(now); ch != nil {
		out = append(out, ch)
	}
	kept := s.silences[:0]
	for _, sl := range s.silences {
		if sl.Until.After(now) {
			kept = append(kept, sl)
		}
	}
	s.silences = kept
	if len(out) > 0 {
		s.submit(ctx, out)
		return
	}
	if now.Sub(s.lastSave) >= s.opts.CursorEvery {
		s.saveCursor(ctx, false)
	}
}

// saveCursor stores the cursor if it moved (and is not on its way to the
// store already).
func (s *Service) saveCursor(ctx context.Context, final bool) {
	if s.cursor <= max(s.saved, s.queued) {
		return
	}
	s.submit(ctx, []*commit.Change{{Ops: []commit.Op{}}})
	if final {
		s.log.Debug("alert cursor saved", "seq", s.saved)
	}
}

func newID() string {
	b := make([]byte, 10)
	rand.Read(b)
	return "alr_" + hex.EncodeToString(b)
}

func eventOf(t events.Type, a *Alert, now time.Time) commit.Event {
	args := &events.Alert{AlertID: a.ID, Rule: a.Rule, Severity: a.Severity, State: a.State, Value: a.Value, Count: a.Count,
		Message: a.Message, Labels: a.Labels, StartedAt: a.StartedAt, RaisedAt: a.RaisedAt, LastAt: a.LastAt, ClearedAt: a.ClearedAt}
	switch t {
	case events.AlertAcknowledged:
		args.By, args.Note = a.AckBy, a.AckNote
	case events.AlertCleared:
		args.By, args.Note = a.ClearedBy, a.ClearNote
	}
	ev, err := commit.NewEvent(events.Event{Type: t, Time: now, DeviceID: a.DeviceID, DeviceType: a.DeviceType, Args: args})
	if err != nil {
		// The arguments are plain values: this cannot happen.
		panic(err)
	}
	return ev
}

func (s *Service) change(deviceID string, op *AlertOp, ev ...commit.Event) *commit.Change {
	ch := &commit.Change{DeviceID: deviceID, Events: ev}
	if op != nil {
		ch.Ops = []commit.Op{op}
	}
	return ch
}

// decide turns a transition of pair (d, i) into the change that writes it,
// or nil. at is when the input happened (a reading's own time), now the
// clock.
func (s *Service) decide(ctx context.Context, d *devState, i int, tr transition, val any, at, now time.Time) *commit.Change {
	r := d.set.rules[i]
	st := &d.st[i]
	switch tr {
	case tPending:
		a := &openAlert{Alert: Alert{ID: newID(), Rule: r.Name, DeviceID: d.id, DeviceType: d.typ, Severity: r.Severity,
			State: StatePending, Labels: r.Spec.Labels, Value: val, StartedAt: at, LastAt: at, UpdatedAt: now}}
		st.alert = a
		return s.change(d.id, &AlertOp{Kind: OpInsert, Alert: a.Alert})
	case tDrop:
		a := st.alert
		st.alert = nil
		if a == nil {
			return nil
		}
		return s.change(d.id, &AlertOp{Kind: OpDelete, Alert: a.Alert})
	case tRaise:
		if reason := s.suppress(r, d.id, now); reason != "" {
			st.phase = idle
			if st.alert != nil && st.alert.State == StatePending {
				st.phase = pending
			}
			if reason != "silenced" && (r.Kind == KindOffline || r.Kind == KindNoData) {
				// Try again when the next flood window starts.
				st.deadline = now.Truncate(time.Minute).Add(time.Minute).UnixNano()
				s.schedule(d, r, st)
			}
			return nil
		}
		a, kind := st.alert, OpUpdate
		if a == nil {
			a = &openAlert{Alert: Alert{ID: newID(), Rule: r.Name, DeviceID: d.id, DeviceType: d.typ, Severity: r.Severity,
				Labels: r.Spec.Labels, StartedAt: at}}
			kind = OpInsert
		}
		raised := at
		a.State, a.RaisedAt, a.Count, a.Value, a.LastAt, a.UpdatedAt = StateActive, &raised, 1, val, at, now
		a.Message = s.message(ctx, r, d, val)
		a.notified = now.UnixNano()
		st.alert = a
		s.m.raised.WithLabelValues(r.Severity).Inc()
		s.m.open.Inc()
		return s.change(d.id, &AlertOp{Kind: kind, Alert: a.Alert}, eventOf(events.AlertRaised, &a.Alert, now))
	case tRefire:
		a := st.alert
		if a == nil {
			return nil
		}
		a.Count++
		a.Value, a.LastAt = val, at
		if now.UnixNano()-a.notified < int64(r.Repeat) {
			return nil // written at the next repeat, or when it clears
		}
		a.notified, a.UpdatedAt = now.UnixNano(), now
		if s.silenced(r.Name, d.id, now) {
			return s.change(d.id, &AlertOp{Kind: OpUpdate, Alert: a.Alert})
		}
		return s.change(d.id, &AlertOp{Kind: OpUpdate, Alert: a.Alert}, eventOf(events.AlertUpdated, &a.Alert, now))
	case tClear:
		a := st.alert
		st.alert = nil
		if a == nil {
			return nil
		}
		if val != nil {
			a.Value = val
		}
		a.State, a.ClearedAt, a.ClearedBy, a.UpdatedAt = StateCleared, &now, "rule", now
		s.m.open.Dec()
		return s.change(d.id, &AlertOp{Kind: OpUpdate, Alert: a.Alert}, eventOf(events.AlertCleared, &a.Alert, now))
	}
	return nil
}

// submit enqueues changes in order (the cursor with the last, unless it
// is on its way to the store already) without waiting for them: the
// reaper settles them (see reap).
func (s *Service) submit(ctx context.Context, out []*commit.Change) {
	if len(out) == 0 {
		return
	}
	cursor := s.cursor
	withCursor := cursor > max(s.saved, s.queued)
	if withCursor {
		last := out[len(out)-1]
		last.Ops = append(last.Ops, &CursorOp{Seq: cursor})
	}
	ws := make([]pendingWrite, 0, len(out))
	for i, ch := range out {
		t, err := s.deps.Committer.Enqueue(ctx, ch)
		if err != nil {
			s.m.errors.Inc()
			s.log.Error("alert change not written", "device", ch.DeviceID, "err", err)
			break
		}
		w := pendingWrite{t: t}
		if withCursor && i == len(out)-1 {
			w.cursor = cursor
			s.queued = cursor
			s.lastSave = s.opts.Now()
		}
		ws = append(ws, w)
		s.last = t
	}
	if len(ws) == 0 {
		return
	}
	s.wmu.Lock()
	s.writes = append(s.writes, ws...)
	s.wmu.Unlock()
	select {
	case s.wsig <- struct{}{}:
	default:
	}
}

// adopt takes over the open alert the store has for a (rule, device) whose
// insert was refused.
func (s *Service) adopt(ctx context.Context, ch *commit.Change) {
	op, ok := commit.Find[*AlertOp](ch)
	if !ok {
		return
	}
	d := s.devs[ch.DeviceID]
	if d == nil {
		return
	}
	i := d.index(op.Alert.Rule)
	if i < 0 {
		return
	}
	st := &d.st[i]
	st.alert = nil
	st.phase = idle
	as, err := s.deps.Store.ListAlerts(ctx, Query{Rule: op.Alert.Rule, DeviceID: ch.DeviceID, States: []string{StatePending, StateActive, StateAcknowledged}, Limit: 1})
	if err != nil || len(as) == 0 {
		s.log.Warn("alert conflict not resolved", "rule", op.Alert.Rule, "device", ch.DeviceID, "err", err)
		return
	}
	st.alert = &openAlert{Alert: as[0], notified: as[0].UpdatedAt.UnixNano()}
	st.phase = firing
	if as[0].State == StatePending {
		st.phase = pending
	}
}

// MessageData is what a rule's message template sees.
type MessageData struct {
	Rule     string
	Severity string
	Value    any
	Labels   map[string]string
	Device   MessageDevice
}

// MessageDevice is the device in MessageData.
type MessageDevice struct {
	ID, Name, Type, Group, Status string
	Tags                          []string
	Metadata                      map[string]any
}

type limitedWriter struct {
	b strings.Builder
	n int
}

func (w *limitedWriter) Write(p []byte) (int, error) {
	if w.b.Len()+len(p) > w.n {
		return 0, errors.New("message longer than 2048 bytes")
	}
	return w.b.Write(p)
}

func (s *Service) message(ctx context.Context, r *Rule, d *devState, val any) string {
	def := fmt.Sprintf("%s: %s", r.Name, r.When.String())
	if val != nil {
		def += fmt.Sprintf(" (value %v)", val)
	}
	if r.msg == nil {
		return def
	}
	data := MessageData{Rule: r.Name, Severity: r.Severity, Value: val, Labels: r.Spec.Labels, Device: MessageDevice{ID: d.id, Type: d.typ}}
	if dv, err := s.deps.Devices.GetDevice(ctx, d.id); err == nil {
		data.Device = MessageDevice{ID: dv.ID, Name: dv.Name, Type: dv.Type, Group: dv.Group, Status: dv.Status, Tags: dv.Tags, Metadata: dv.Metadata}
	}
	return render(r.msg, data, def)
}

func render(t *template.Template, data MessageData, def string) string {
	w := &limitedWriter{n: 2048}
	if err := t.Execute(w, data); err != nil {
		return def + " [message template: " + err.Error() + "]"
	}
	return w.b.String()
}

// schedule arms the pair's timer if it has a deadline.
// A pair has at most one timer in the heap (armed): a deadline that moves
// later is found when that timer fires, and armed again then, so that a
// no-data rule's deadline moving at every reading costs no heap push.
func (s *Service) schedule(d *devState, r *Rule, st *ruleState) {
	if st.deadline != 0 && (st.armed == 0 || st.deadline < st.armed) {
		st.armed = st.deadline
		heap.Push(&s.timers, timer{at: st.deadline, d: d, r: r})
	}
}

type timer struct {
	at int64
	d  *devState
	r  *Rule
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}
