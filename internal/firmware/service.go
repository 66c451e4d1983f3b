package firmware

import (
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
)

// Committer queues changes for the write path (*commit.Committer).
type Committer interface {
	Enqueue(ctx context.Context, ch *commit.Change) (*commit.Ticket, error)
	Submit(ctx context.Context, ch *commit.Change) error
}

// Publisher sends messages to devices (the broker).
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// Devices lists and reads registered devices (*registry.Service).
type Devices interface {
	Get(ctx context.Context, id string) (*registry.Device, error)
	List(ctx context.Context, opts registry.ListOptions) ([]registry.Device, error)
}

// Deps are what the service works with.
type Deps struct {
	Store     Store
	Committer Committer
	Publisher Publisher
	Devices   Devices
	Files     *Files
	// Remote, set in cluster mode, reaches the node running the
	// scheduler (see cluster.go); nil when this process is the only one.
	Remote Remote
}

// Options tune the service. Zero values take the defaults.
type Options struct {
	// URL is the base of the download URL in notices; the artifact id is
	// appended (default "/api/v1/device/firmware/", resolved by devices
	// against the hub's address).
	URL string
	// MaxArtifactBytes bounds an upload (default 1 GiB).
	MaxArtifactBytes int64
	// Tick is how often the scheduler looks at the active rollouts
	// (default 1s); RefreshEvery how often a rollout that includes late
	// joiners lists its target again (default 30s).
	Tick         time.Duration
	RefreshEvery time.Duration
	// Devices connect with a clean session, so a notice can be lost with
	// its connection: it is published again ConnectDelay after the device
	// connects (to let it subscribe; default 1s) while its update is
	// pending, and every NoticeResend (default 30s) until the device
	// reports progress. Devices dedupe by rollout id and attempt.
	ConnectDelay time.Duration
	NoticeResend time.Duration
	// AliveEvery is how often the scheduler notes in each active rollout
	// that it works on it (default 10s), so that the next start knows how
	// long the hub was down (to within AliveEvery).
	AliveEvery time.Duration
	// Defaults of a rollout's timeouts: StepTimeout 10m, TotalTimeout 1h,
	// HealthWindow 10m, Settle 1m.
	StepTimeout, TotalTimeout, HealthWindow, Settle time.Duration
}

func (o *Options) setDefaults() {
	if o.URL == "" {
		o.URL = "/api/v1/device/firmware/"
	}
	if o.MaxArtifactBytes <= 0 {
		o.MaxArtifactBytes = 1 << 30
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	if o.RefreshEvery <= 0 {
		o.RefreshEvery = 30 * time.Second
	}
	if o.ConnectDelay <= 0 {
		o.ConnectDelay = time.Second
	}
	if o.NoticeResend <= 0 {
		o.NoticeResend = 30 * time.Second
	}
	if o.AliveEvery <= 0 {
		o.AliveEvery = 10 * time.Second
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.StepTimeout, 10*time.Minute)
	def(&o.TotalTimeout, time.Hour)
	def(&o.HealthWindow, 10*time.Minute)
	def(&o.Settle, time.Minute)
}

// Service runs artifacts and rollouts. Create it with New, load the active
// rollouts with Load, run the scheduler with Run.
type Service struct {
	d    Deps
	opts Options
	log  *slog.Logger
	now  func() time.Time

	wake chan struct{} // one slot: look at the rollouts now
	// owner is set while this node runs the scheduler (cluster mode).
	owner atomic.Bool

	mu         sync.Mutex
	active     map[string]*active  // rollout id → state, for rollouts not completed or canceled
	inProgress map[string]*active  // device id → the rollout updating it now
	artifacts  map[string]Artifact // of the active rollouts
}

// active is a rollout the scheduler works on.
type active struct {
	r         Rollout
	art       Artifact
	updates   []*DeviceUpdate // in rollout order
	byDevice  map[string]*DeviceUpdate
	versions  map[string]string    // device id → firmware version, as last known
	starts    []time.Time          // devices started in the last minute
	due       map[string]time.Time // device id → when its notice is published again
	refreshed time.Time
	// shifted are the updates whose clocks Load moved past the hub's
	// downtime, stored by the first pass.
	shifted []string

	// The indexes of the pass (index.go).
	count        map[State]int  // updates by state
	open         []int          // per phase: updates not finished
	phase0Failed int            // failed or timed out updates of phase 0
	queued       []qHeap        // per phase: queued updates by order
	deadlines    dlHeap         // updates in progress by next deadline
	gen          map[string]int // device id → generation of its update
	dueQ         dlHeap         // notices to publish again, by time
}

// New returns a service.
func New(d Deps, opts Options, log *slog.Logger) *Service {
	opts.setDefaults()
	return &Service{d: d, opts: opts, log: log, now: func() time.Time { return time.Now().UTC() },
		wake: make(chan struct{}, 1), active: map[string]*active{}, inProgress: map[string]*active{}, artifacts: map[string]Artifact{}}
}

// Load reads the rollouts that are not finished from the store, so that
// the scheduler continues them after a restart (or, in cluster mode, on
// the node that takes the scheduler over). It replaces what was held.
func (s *Service) Load(ctx context.Context) error {
	rs, err := s.d.Store.ListRollouts(ctx, true)
	if err != nil {
		return fmt.Errorf("load rollouts: %w", err)
	}
	s.mu.Lock()
	s.active, s.inProgress, s.artifacts = map[string]*active{}, map[string]*active{}, map[string]Artifact{}
	s.mu.Unlock()
	for _, r := range rs {
		if err := s.loadRollout(ctx, r); err != nil {
			return err
		}
	}
	return nil
}

// loadRollout reads a rollout's updates and adds it to the active ones,
// unless it is held already.
func (s *Service) loadRollout(ctx context.Context, r Rollout) error {
	art, err := s.d.Store.GetArtifact(ctx, r.Spec.ArtifactID)
	if err != nil {
		return fmt.Errorf("load rollout %s: %w", r.ID, err)
	}
	us, err := s.d.Store.ListDeviceUpdates(ctx, r.ID)
	if err != nil {
		return fmt.Errorf("load rollout %s: %w", r.ID, err)
	}
	a := newActive(r, *art)
	now := s.now()
	// The hub was down since the scheduler last worked on the
	// rollout (or the last change of it or of its devices, if later):
	// the clocks of the devices in progress move forward by that
	// time, so that a hub that was down for ten minutes does not time
	// out every device at start. The first pass stores them.
	last := r.AliveAt
	for _, t := range append([]time.Time{r.UpdatedAt}, updateTimes(us)...) {
		if t.After(last) {
			last = t
		}
	}
	down := now.Sub(last)
	for i := range us {
		u := &us[i]
		if down > 0 && u.State.InProgress() {
			shift(u, down)
			a.shifted = append(a.shifted, u.DeviceID)
		}
		a.add(u)
		// Devices reconnect to a restarted hub; their notices go out
		// again in case the connect came before this service listened.
		switch u.State {
		case Notified, Downloading, Downloaded, Verifying, Installing:
			a.setDue(u.DeviceID, now.Add(s.opts.ConnectDelay))
		}
	}
	// The devices' versions, for the skipped rule.
	devs, err := s.resolve(ctx, r.Spec, *art)
	if err != nil {
		return fmt.Errorf("load rollout %s: %w", r.ID, err)
	}
	for _, d := range devs {
		a.versions[d.ID] = d.FirmwareVersion
	}
	a.refreshed = s.now()
	s.mu.Lock()
	if _, known := s.active[r.ID]; !known {
		s.addActive(a)
	}
	s.mu.Unlock()
	if len(a.shifted) > 0 {
		s.log.Info("firmware timeouts moved past the hub's downtime", "rollout", r.ID, "downtime", down.Round(time.Second), "devices", len(a.shifted))
	}
	return nil
}

func updateTimes(us []DeviceUpdate) []time.Time {
	out := make([]time.Time, len(us))
	for i := range us {
		out[i] = us[i].UpdatedAt
	}
	return out
}

// shift moves the clocks of an update in progress d later: its step,
// total timeout, health window and settle time do not count d.
func shift(u *DeviceUpdate, d time.Duration) {
	u.StateSince = u.StateSince.Add(d)
	for _, t := range []**time.Time{&u.StartedAt, &u.RebootAt, &u.ConfirmedAt} {
		if *t != nil {
			v := (*t).Add(d)
			*t = &v
		}
	}
}

func newActive(r Rollout, art Artifact) *active {
	return &active{r: r, art: art, byDevice: map[string]*DeviceUpdate{}, versions: map[string]string{}, due: map[string]time.Time{},
		count: map[State]int{}, gen: map[string]int{}}
}

func (a *active) add(u *DeviceUpdate) {
	a.updates = append(a.updates, u)
	a.byDevice[u.DeviceID] = u
	a.tally(u, 1)
	if u.State == Queued {
		heap.Push(&a.queued[u.Phase], qEntry{u.Order, u.DeviceID})
	}
	a.track(u)
}

// addActive registers a with the service (mu held).
func (s *Service) addActive(a *active) {
	s.active[a.r.ID] = a
	for _, u := range a.updates {
		if u.State.InProgress() {
			s.inProgress[u.DeviceID] = a
		}
	}
}

// PublicKey returns the hub's public signing key (base64), creating the
// key on first use.
func (s *Service) PublicKey() (string, error) { return s.d.Files.PublicKey() }

// UploadArtifact stores a new artifact read from r.
func (s *Service) UploadArtifact(ctx context.Context, r io.Reader, u Upload) (*Artifact, error) {
	id := newID("fw_")
	a, err := s.d.Files.Store(id, r, s.opts.MaxArtifactBytes, u)
	if err != nil {
		return nil, err
	}
	a.CreatedAt = s.now()
	if err := s.d.Committer.Submit(ctx, &commit.Change{Ops: []commit.Op{&Op{Artifact: a}}}); err != nil {
		s.d.Files.Remove(id)
		return nil, fmt.Errorf("store artifact: %w", err)
	}
	s.log.Info("firmware artifact stored", "artifact", id, "version", a.Version, "type", a.Type, "size", a.Size, "signed_by", a.SignedBy)
	return a, nil
}

// ListArtifacts lists the artifacts.
func (s *Service) ListArtifacts(ctx context.Context) ([]Artifact, error) {
	return s.d.Store.ListArtifacts(ctx)
}

// GetArtifact returns an artifact.
func (s *Service) GetArtifact(ctx context.Context, id string) (*Artifact, error) {
	return s.d.Store.GetArtifact(ctx, id)
}

// DeleteArtifact deletes an artifact and its file; refused (ErrInUse)
// while a rollout that is not completed or canceled uses it.
func (s *Service) DeleteArtifact(ctx context.Context, id string) error {
	ch := &commit.Change{Ops: []commit.Op{&Op{DeleteArtifact: id}}}
	if err := s.d.Committer.Submit(ctx, ch); err != nil {
		return err
	}
	if ch.Err != nil {
		return ch.Err
	}
	if err := s.d.Files.Remove(id); err != nil {
		s.log.Warn("artifact file not removed", "artifact", id, "err", err)
	}
	return nil
}

// OpenArtifact opens the file of an artifact a device may download: one
// of the device's type.
func (s *Service) OpenArtifact(ctx context.Context, id, deviceType string) (*Artifact, *os.File, error) {
	a, err := s.d.Store.GetArtifact(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	if a.Type != deviceType {
		return nil, nil, fmt.Errorf("artifact %s: %w", id, ErrNotFound)
	}
	f, err := s.d.Files.Open(id)
	if err != nil {
		return nil, nil, err
	}
	return a, f, nil
}

// validate fills a spec's defaults and checks it.
func (s *Service) validate(sp *Spec) error {
	t := &sp.Target
	n := 0
	if t.Group != "" || t.Type != "" || t.Hardware != "" {
		n++
	}
	if len(t.DeviceIDs) > 0 {
		n++
	}
	if n != 1 {
		return fmt.Errorf("%w: target: name a group or a filter (group, type, hardware), or a list of device ids", ErrInvalid)
	}
	for _, id := range t.DeviceIDs {
		if !registry.ValidID(id) {
			return fmt.Errorf("%w: target.device_ids: %q is not a device id", ErrInvalid, id)
		}
	}
	if sp.IncludeLate && len(t.DeviceIDs) > 0 {
		return fmt.Errorf("%w: include_late needs a group or a filter, not a list", ErrInvalid)
	}
	if sp.MaxPerMinute < 0 {
		return fmt.Errorf("%w: max_per_minute must not be negative", ErrInvalid)
	}
	if ri := sp.RateIncrease; ri != nil {
		if ri.AfterSuccesses < 1 || ri.Factor <= 1 || ri.Factor > 5 || sp.MaxPerMinute == 0 {
			return fmt.Errorf("%w: rate_increase needs max_per_minute, after_successes >= 1 and a factor above 1 and at most 5", ErrInvalid)
		}
	}
	prev := 0
	for i, p := range sp.Phases {
		if p <= prev || p > 100 {
			return fmt.Errorf("%w: phases[%d]: phases are increasing percentages up to 100", ErrInvalid, i)
		}
		prev = p
	}
	if len(sp.Phases) > 0 && prev != 100 {
		sp.Phases = append(sp.Phases, 100)
	}
	if w := sp.Window; w != nil {
		if _, err := clock(w.Start); err != nil {
			return fmt.Errorf("%w: window.start: %v", ErrInvalid, err)
		}
		if _, err := clock(w.End); err != nil {
			return fmt.Errorf("%w: window.end: %v", ErrInvalid, err)
		}
	}
	def := func(d *time.Duration, v time.Duration, name string) error {
		if *d < 0 {
			return fmt.Errorf("%w: %s must not be negative", ErrInvalid, name)
		}
		if *d == 0 {
			*d = v
		}
		return nil
	}
	for _, d := range []struct {
		p    *time.Duration
		v    time.Duration
		name string
	}{{&sp.StepTimeout, s.opts.StepTimeout, "step_timeout"}, {&sp.TotalTimeout, s.opts.TotalTimeout, "total_timeout"},
		{&sp.HealthWindow, s.opts.HealthWindow, "health_window"}, {&sp.Settle, s.opts.Settle, "settle"}} {
		if err := def(d.p, d.v, d.name); err != nil {
			return err
		}
	}
	if sp.Retries < 0 || sp.Retries > 100 {
		return fmt.Errorf("%w: retries must be from 0 to 100", ErrInvalid)
	}
	if sp.Retries > 0 && !sp.RetryFailed && !sp.RetryTimedOut {
		sp.RetryFailed, sp.RetryTimedOut = true, true
	}
	if sp.AbortFailurePercent < 0 || sp.AbortFailurePercent > 100 || sp.AbortMinDevices < 0 {
		return fmt.Errorf("%w: abort_failure_percent must be from 0 to 100 and abort_min_devices not negative", ErrInvalid)
	}
	return nil
}

// clock parses "HH:MM" into minutes after midnight.
func clock(s string) (int, error) {
	h, m, ok := strings.Cut(s, ":")
	hh, err1 := strconv.Atoi(h)
	mm, err2 := strconv.Atoi(m)
	if !ok || err1 != nil || err2 != nil || hh < 0 || hh > 23 || mm < 0 || mm > 59 || len(m) != 2 {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return hh*60 + mm, nil
}

// inWindow reports whether t is inside the daily window w (nil: always).
func inWindow(w *Window, t time.Time) bool {
	if w == nil {
		return true
	}
	start, _ := clock(w.Start)
	end, _ := clock(w.End)
	now := t.UTC().Hour()*60 + t.UTC().Minute()
	if start <= end {
		return now >= start && now < end
	}
	return now >= start || now < end
}

// compatible reports whether an artifact runs on a device.
func compatible(art Artifact, d registry.Device) bool {
	return d.Type == art.Type && (art.Hardware == "" || d.HardwareVersion == art.Hardware)
}

// resolve lists the compatible devices of a target, sorted by id.
func (s *Service) resolve(ctx context.Context, sp Spec, art Artifact) ([]registry.Device, error) {
	var out []registry.Device
	t := sp.Target
	if len(t.DeviceIDs) > 0 {
		for _, id := range t.DeviceIDs {
			d, err := s.d.Devices.Get(ctx, id)
			if errors.Is(err, registry.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("target device %s: %w", id, err)
			}
			if compatible(art, *d) {
				out = append(out, *d)
			}
		}
		sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
		return slices.CompactFunc(out, func(a, b registry.Device) bool { return a.ID == b.ID }), nil
	}
	typ := t.Type
	if typ == "" {
		typ = art.Type
	}
	opts := registry.ListOptions{Type: typ, Group: t.Group, Limit: 1000}
	for {
		devs, err := s.d.Devices.List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("list target devices: %w", err)
		}
		for _, d := range devs {
			if compatible(art, d) && (t.Hardware == "" || d.HardwareVersion == t.Hardware) && !d.Disabled {
				out = append(out, d)
			}
		}
		if len(devs) < opts.Limit {
			return out, nil
		}
		opts.After = devs[len(devs)-1].ID
	}
}

// phaseOf returns the phase of the i-th of n devices.
func phaseOf(phases []int, i, n int) int {
	for p, pct := range phases {
		if i < int(math.Ceil(float64(pct)*float64(n)/100)) {
			return p
		}
	}
	return max(len(phases)-1, 0)
}

// StartRollout creates a rollout and starts it.
func (s *Service) StartRollout(ctx context.Context, sp Spec) (*Progress, error) {
	if err := s.validate(&sp); err != nil {
		return nil, err
	}
	art, err := s.d.Store.GetArtifact(ctx, sp.ArtifactID)
	if err != nil {
		return nil, fmt.Errorf("artifact %s: %w", sp.ArtifactID, err)
	}
	if sp.Target.Type != "" && sp.Target.Type != art.Type {
		return nil, fmt.Errorf("%w: target.type %s is not the artifact's type %s", ErrInvalid, sp.Target.Type, art.Type)
	}
	devs, err := s.resolve(ctx, sp, *art)
	if err != nil {
		return nil, err
	}
	if len(devs) == 0 && !sp.IncludeLate {
		return nil, fmt.Errorf("artifact %s for %s: %w", art.ID, art.Type, ErrNoDevices)
	}
	now := s.now()
	r := Rollout{ID: newID("ro_"), Spec: sp, Status: RolloutRunning, Version: art.Version, DeviceType: art.Type, CreatedAt: now, UpdatedAt: now, AliveAt: now}
	a := newActive(r, *art)
	a.refreshed = now
	for i, d := range devs {
		a.add(&DeviceUpdate{RolloutID: r.ID, DeviceID: d.ID, DeviceType: d.Type, Order: i, Phase: phaseOf(sp.Phases, i, len(devs)),
			State: Queued, StateSince: now, UpdatedAt: now})
		a.versions[d.ID] = d.FirmwareVersion
	}
	ev, err := rolloutEvent(&r, "", "")
	if err != nil {
		return nil, err
	}
	ups := make([]DeviceUpdate, len(a.updates))
	for i, u := range a.updates {
		ups[i] = *u
	}
	ch := &commit.Change{Ops: []commit.Op{&Op{Rollout: &r, CreateRollout: true, Updates: ups}}, Events: []commit.Event{ev}}
	if err := s.d.Committer.Submit(ctx, ch); err != nil {
		return nil, fmt.Errorf("start rollout: %w", err)
	}
	if ch.Err != nil {
		return nil, ch.Err
	}
	// In cluster mode a node that does not run the scheduler does not hold
	// the rollout: the owner loads it when its event comes (Follow).
	s.mu.Lock()
	if _, known := s.active[r.ID]; s.local() && !known {
		s.addActive(a)
	}
	p := a.progress()
	s.mu.Unlock()
	s.poke()
	s.log.Info("rollout started", "rollout", r.ID, "artifact", art.ID, "version", art.Version, "devices", len(devs))
	return p, nil
}

func (s *Service) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// progress counts a's devices by state (mu held).
func (a *active) progress() *Progress {
	p := &Progress{Rollout: a.r, Counts: map[State]int{}, Total: len(a.updates)}
	for st, n := range a.count {
		if n > 0 {
			p.Counts[st] = n
		}
	}
	return p
}

// GetRollout returns a rollout with its counts.
func (s *Service) GetRollout(ctx context.Context, id string) (*Progress, error) {
	s.mu.Lock()
	if a, ok := s.active[id]; ok {
		p := a.progress()
		s.mu.Unlock()
		return p, nil
	}
	s.mu.Unlock()
	r, err := s.d.Store.GetRollout(ctx, id)
	if err != nil {
		return nil, err
	}
	us, err := s.d.Store.ListDeviceUpdates(ctx, id)
	if err != nil {
		return nil, err
	}
	p := &Progress{Rollout: *r, Counts: map[State]int{}, Total: len(us)}
	for _, u := range us {
		p.Counts[u.State]++
	}
	return p, nil
}

// ListRollouts lists rollouts, newest first, with their counts.
func (s *Service) ListRollouts(ctx context.Context) ([]Progress, error) {
	rs, err := s.d.Store.ListRollouts(ctx, false)
	if err != nil {
		return nil, err
	}
	out := make([]Progress, 0, len(rs))
	for _, r := range rs {
		p, err := s.GetRollout(ctx, r.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, *p)
	}
	return out, nil
}

// RolloutDevices lists a rollout's device updates.
func (s *Service) RolloutDevices(ctx context.Context, id string) ([]DeviceUpdate, error) {
	s.mu.Lock()
	if a, ok := s.active[id]; ok {
		out := make([]DeviceUpdate, len(a.updates))
		for i, u := range a.updates {
			out[i] = *u
		}
		s.mu.Unlock()
		return out, nil
	}
	s.mu.Unlock()
	if _, err := s.d.Store.GetRollout(ctx, id); err != nil {
		return nil, err
	}
	return s.d.Store.ListDeviceUpdates(ctx, id)
}

// History lists the states a device's updates went through; rolloutID ""
// means every rollout.
func (s *Service) History(ctx context.Context, deviceID, rolloutID string) ([]HistoryEntry, error) {
	return s.d.Store.UpdateHistory(ctx, deviceID, rolloutID)
}

func rolloutEvent(r *Rollout, old RolloutStatus, reason string) (commit.Event, error) {
	return commit.NewEvent(events.Event{Type: events.RolloutStatusChanged, Time: r.UpdatedAt,
		Args: &events.RolloutStatus{RolloutID: r.ID, Status: string(r.Status), OldStatus: string(old), Reason: reason}})
}

// noticeTopic is where a device's notices go.
func noticeTopic(deviceID string) string { return "devices/" + deviceID + "/firmware" }

func (s *Service) notice(a *active, u *DeviceUpdate) []byte {
	b, _ := json.Marshal(Notice{RolloutID: a.r.ID, ArtifactID: a.art.ID, Version: a.art.Version, URL: s.opts.URL + a.art.ID,
		Size: a.art.Size, SHA256: a.art.SHA256, Signature: a.art.Signature, Attempt: u.Attempt})
	return b
}
