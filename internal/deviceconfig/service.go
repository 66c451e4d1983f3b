package deviceconfig

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// Committer submits changes to the commit path.
type Committer interface {
	Submit(ctx context.Context, ch *commit.Change) error
	Enqueue(ctx context.Context, ch *commit.Change) (*commit.Ticket, error)
}

// Publisher sends messages to devices (the broker).
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// Groups tells whether a registry group exists.
type Groups interface {
	GroupExists(ctx context.Context, id string) (bool, error)
}

// GroupMembers is an optional capability of Deps.Groups: it lists the ids
// of a group's devices, so that the devices of a group that gets templates
// and have no configuration yet are given one.
type GroupMembers interface {
	GroupDevices(ctx context.Context, id string) ([]string, error)
}

// Deps are the service's collaborators.
type Deps struct {
	Store     Store
	Committer Committer
	Publisher Publisher // nil: no MQTT notices (HTTP polling only)
	Groups    Groups
	Backends  *Backends
}

// Options tune the service. Zero values take the defaults.
type Options struct {
	// HistoryKeep is how many rendered configurations are kept per device
	// (default 10).
	HistoryKeep int
	// URL is the download URL devices are told in the notice (default
	// "/api/v1/device/config": a path on the hub they reach).
	URL string
	// JobChunk is how many devices a re-render job renders and commits at
	// a time (default 500).
	JobChunk int
	// Notified, when set, is called with a device's id after its changed
	// notice was published here (cluster mode: the other nodes are told
	// to Refresh it). RestoreNotices does not call it.
	Notified func(deviceID string)
}

// Service is configuration management. Create it with New, fill it with
// Load, run its background jobs with Run.
//
// Lock order: wmu (serialises every read-modify-write of configurations,
// taken per chunk by re-render jobs) before mu (the in-memory templates,
// groups and per-device view). Nothing is submitted while mu is held.
type Service struct {
	d    Deps
	opts Options
	log  *slog.Logger
	now  func() time.Time

	wmu sync.Mutex

	mu        sync.RWMutex
	templates map[string]*Template
	groups    map[string]*GroupConfig
	view      map[string]viewEntry

	jobs *jobs
}

// viewEntry is what the hot paths (checksum polling, notices) need of a
// device's configuration.
type viewEntry struct {
	checksum string
	status   Status
	backend  string
}

// New returns a service.
func New(d Deps, opts Options, log *slog.Logger) *Service {
	if opts.HistoryKeep <= 0 {
		opts.HistoryKeep = 10
	}
	if opts.URL == "" {
		opts.URL = "/api/v1/device/config"
	}
	if opts.JobChunk <= 0 {
		opts.JobChunk = 500
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{d: d, opts: opts, log: log, now: func() time.Time { return time.Now().UTC() },
		templates: map[string]*Template{}, groups: map[string]*GroupConfig{}, view: map[string]viewEntry{},
		jobs: newJobs()}
}

// ReloadTemplates reads the templates and group configurations from the
// store again, replacing what is in memory: in cluster mode another node
// changed them. Devices' configurations are not rendered again here (the
// node that made the change re-renders them and relays their notices).
func (s *Service) ReloadTemplates(ctx context.Context) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	ts, gs, err := s.loadTemplates(ctx)
	if err != nil {
		return err
	}
	templates, groups := make(map[string]*Template, len(ts)), make(map[string]*GroupConfig, len(gs))
	for i := range ts {
		templates[ts[i].ID] = &ts[i]
	}
	for i := range gs {
		groups[gs[i].GroupID] = &gs[i]
	}
	s.mu.Lock()
	s.templates, s.groups = templates, groups
	s.mu.Unlock()
	return nil
}

func (s *Service) loadTemplates(ctx context.Context) ([]Template, []GroupConfig, error) {
	ts, err := s.d.Store.ListTemplates(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("load templates: %w", err)
	}
	gs, err := s.d.Store.ListGroupConfigs(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("load group configs: %w", err)
	}
	return ts, gs, nil
}

// Load reads templates, group configurations and every device's checksum
// into memory.
func (s *Service) Load(ctx context.Context) error {
	ts, gs, err := s.loadTemplates(ctx)
	if err != nil {
		return err
	}
	view := map[string]viewEntry{}
	q := ListQuery{Limit: 1000}
	for {
		rows, err := s.d.Store.ListDeviceConfigs(ctx, q)
		if err != nil {
			return fmt.Errorf("load device configs: %w", err)
		}
		for _, r := range rows {
			view[r.DeviceID] = viewEntry{checksum: r.Checksum, status: r.Status, backend: r.Backend}
		}
		if len(rows) < q.Limit {
			break
		}
		q.After = rows[len(rows)-1].DeviceID
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range ts {
		s.templates[ts[i].ID] = &ts[i]
	}
	for i := range gs {
		s.groups[gs[i].GroupID] = &gs[i]
	}
	s.view = view
	return nil
}

// Run runs the re-render jobs until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case j := <-s.jobs.queue:
			s.runJob(ctx, j)
		}
	}
}

func (s *Service) template(id string) (*Template, bool) {
	t, ok := s.templates[id]
	return t, ok
}

// input builds the render input of a device's configuration (mu held for
// reading by the caller).
func (s *Service) inputLocked(dev DeviceInfo, c *DeviceConfig) (*Input, error) {
	be, err := s.d.Backends.Get(c.Backend)
	if err != nil {
		return nil, err
	}
	in := &Input{Device: dev, DeviceVars: c.Vars, Overrides: c.Overrides, Backend: be}
	var groupTpl []string
	if g, ok := s.groups[dev.Group]; ok && dev.Group != "" {
		groupTpl, in.GroupVars = g.Templates, g.Vars
	}
	in.Templates, err = Resolve(groupTpl, c.Templates, dev.Type, s.template)
	if err != nil {
		return nil, err
	}
	in.Empty = c.Status == StatusDeactivating || c.Status == StatusDeactivated
	return in, nil
}

func (s *Service) render(dev DeviceInfo, c *DeviceConfig) (*Output, error) {
	s.mu.RLock()
	in, err := s.inputLocked(dev, c)
	s.mu.RUnlock()
	if err != nil {
		return nil, err
	}
	return Render(*in)
}

// Update is an operator's change of a device's own configuration; nil
// fields stay as they are.
type Update struct {
	Backend   *string            `json:"backend,omitempty"`
	Templates *[]string          `json:"templates,omitempty"`
	Vars      *map[string]string `json:"vars,omitempty"`
	Overrides *map[string]any    `json:"overrides,omitempty"`
}

// apply returns cur with u applied (cur nil: a new configuration), checked.
func (s *Service) apply(dev DeviceInfo, cur *DeviceConfig, u Update) (*DeviceConfig, error) {
	var next *DeviceConfig
	if cur == nil {
		next = &DeviceConfig{DeviceID: dev.ID, Backend: DefaultBackend, Templates: []string{}, Vars: map[string]string{},
			Overrides: map[string]any{}, Status: StatusModified}
	} else {
		next = cur.Clone()
	}
	if u.Backend != nil {
		b := *u.Backend
		if b == "" {
			b = DefaultBackend
		}
		if _, err := s.d.Backends.Get(b); err != nil {
			return nil, fmt.Errorf("%w: backend: %v", ErrInvalid, err)
		}
		next.Backend = b
	}
	if u.Templates != nil {
		ids := slices.Clone(*u.Templates)
		if ids == nil {
			ids = []string{}
		}
		if err := ValidateTemplateList("templates", ids); err != nil {
			return nil, err
		}
		s.mu.RLock()
		for _, id := range ids {
			t, ok := s.templates[id]
			if !ok {
				s.mu.RUnlock()
				return nil, fmt.Errorf("%w: templates: %s", ErrTemplateNotFound, id)
			}
			if !t.AppliesTo(dev.Type) {
				s.mu.RUnlock()
				return nil, fmt.Errorf("%w: templates: template %s does not apply to device type %s", ErrInvalid, id, dev.Type)
			}
		}
		if cur != nil {
			for _, id := range cur.Templates {
				if t, ok := s.templates[id]; ok && t.Required && !slices.Contains(ids, id) {
					s.mu.RUnlock()
					return nil, fmt.Errorf("%w: template %s cannot be removed from device %s", ErrRequired, id, dev.ID)
				}
			}
		}
		s.mu.RUnlock()
		next.Templates = ids
	}
	if u.Vars != nil {
		v := maps.Clone(*u.Vars)
		if v == nil {
			v = map[string]string{}
		}
		if err := ValidateVars("vars", v); err != nil {
			return nil, err
		}
		next.Vars = v
	}
	if u.Overrides != nil {
		o, err := Normalize(*u.Overrides)
		if err != nil {
			return nil, fmt.Errorf("%w: overrides: %v", ErrInvalid, err)
		}
		if b, _ := EncodeDoc(o); len(b) > MaxTemplateBytes {
			return nil, fmt.Errorf("%w: overrides larger than %d bytes", ErrInvalid, MaxTemplateBytes)
		}
		if err := checkPlaceholders(o, "overrides"); err != nil {
			return nil, err
		}
		next.Overrides = o
	}
	return next, nil
}

// Preview renders a device's configuration as it would be with u applied,
// without saving anything. A missing variable is a *MissingVarsError.
func (s *Service) Preview(ctx context.Context, deviceID string, u Update) (*DeviceConfig, error) {
	dev, err := s.d.Store.ConfigDevice(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	cur, err := s.current(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	next, err := s.apply(dev, cur, u)
	if err != nil {
		return nil, err
	}
	out, err := s.render(dev, next)
	if err != nil {
		return nil, err
	}
	next.Rendered, next.Checksum = out.Bytes, out.Checksum
	return next, nil
}

// current returns the device's configuration, nil when it has none.
func (s *Service) current(ctx context.Context, deviceID string) (*DeviceConfig, error) {
	c, err := s.d.Store.GetDeviceConfig(ctx, deviceID)
	if errors.Is(err, ErrNoConfig) {
		return nil, nil
	}
	return c, err
}

// Result is the outcome of a change of one device's configuration.
type Result struct {
	Config      *DeviceConfig `json:"config"`
	OldChecksum string        `json:"old_checksum"`
	Changed     bool          `json:"changed"` // the rendered configuration changed
}

// SetDevice changes a device's own configuration (creating it if it has
// none), renders it, and stores it with its signals. A configuration that
// does not render is refused (a *MissingVarsError names the variables).
func (s *Service) SetDevice(ctx context.Context, deviceID string, u Update) (*Result, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	dev, err := s.d.Store.ConfigDevice(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	cur, err := s.current(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	if cur != nil && (cur.Status == StatusDeactivating || cur.Status == StatusDeactivated) {
		return nil, fmt.Errorf("config of %s: %w", deviceID, ErrDeactivated)
	}
	next, err := s.apply(dev, cur, u)
	if err != nil {
		return nil, err
	}
	return s.commitDevice(ctx, dev, cur, next, ModifyAction(cur, next))
}

// commitDevice renders next, decides its status and signals against cur,
// commits, and notifies the device when its checksum changed (wmu held).
func (s *Service) commitDevice(ctx context.Context, dev DeviceInfo, cur, next *DeviceConfig, action string) (*Result, error) {
	out, err := s.render(dev, next)
	if err != nil {
		return nil, err
	}
	ch, res, err := s.buildChange(dev, cur, next, out, action)
	if err != nil {
		return nil, err
	}
	if ch == nil {
		return res, nil
	}
	if err := s.d.Committer.Submit(ctx, ch); err != nil {
		return nil, fmt.Errorf("store config of %s: %w", dev.ID, err)
	}
	s.committed(res.Config)
	if res.Changed {
		s.notify(res.Config)
	}
	return res, nil
}

// buildChange is the change that stores next with its rendering out; nil
// when nothing would change.
func (s *Service) buildChange(dev DeviceInfo, cur, next *DeviceConfig, out *Output, action string) (*commit.Change, *Result, error) {
	now := s.now()
	changed := cur == nil || cur.Checksum != out.Checksum
	next.Rendered, next.Checksum = out.Bytes, out.Checksum
	if cur != nil {
		next.Status = StatusAfterRender(next.Status, changed)
		next.CreatedAt = cur.CreatedAt
		if next.Status != cur.Status {
			next.StatusSince = now
		}
		if next.Status == StatusModified {
			next.Error = ""
		}
	} else {
		next.CreatedAt, next.StatusSince = now, now
	}
	next.UpdatedAt = now
	res := &Result{Config: next, Changed: changed}
	if cur != nil {
		res.OldChecksum = cur.Checksum
		if !changed && settingsEqual(cur, next) {
			return nil, res, nil
		}
	}
	op := &Op{Device: next}
	if changed {
		op.History = &HistoryEntry{DeviceID: dev.ID, Checksum: out.Checksum, Backend: next.Backend, Rendered: out.Bytes,
			Templates: next.Templates, Vars: next.Vars, Overrides: next.Overrides, CreatedAt: now}
		op.Keep = s.opts.HistoryKeep
	}
	evs, err := s.events(dev, Transition{Before: SnapshotOf(cur), After: SnapshotOf(next), Action: action}, now)
	if err != nil {
		return nil, nil, err
	}
	return &commit.Change{DeviceID: dev.ID, Ops: []commit.Op{op}, Events: evs}, res, nil
}

func settingsEqual(a, b *DeviceConfig) bool {
	if a.Backend != b.Backend || !slices.Equal(a.Templates, b.Templates) || !maps.Equal(a.Vars, b.Vars) ||
		a.Status != b.Status || a.Error != b.Error {
		return false
	}
	ao, _ := EncodeDoc(a.Overrides)
	bo, _ := EncodeDoc(b.Overrides)
	return string(ao) == string(bo)
}

func (s *Service) events(dev DeviceInfo, t Transition, now time.Time) ([]commit.Event, error) {
	var evs []commit.Event
	for _, sg := range ConfigSignals(t) {
		ev, err := commit.NewEvent(events.Event{Type: sg.Type, Time: now, DeviceID: dev.ID, DeviceType: dev.Type, Args: sg.Args})
		if err != nil {
			return nil, err
		}
		evs = append(evs, ev)
	}
	return evs, nil
}

// committed puts a stored configuration in the view.
func (s *Service) committed(c *DeviceConfig) {
	s.mu.Lock()
	s.view[c.DeviceID] = viewEntry{checksum: c.Checksum, status: c.Status, backend: c.Backend}
	s.mu.Unlock()
}

// Notice is what a device receives, retained, on devices/{id}/config.
type Notice struct {
	Checksum string `json:"checksum"`
	URL      string `json:"url"`
	Backend  string `json:"backend"`
}

// notify publishes the device's notice, retained, so that a device that is
// offline learns of its configuration when it subscribes.
func (s *Service) notify(c *DeviceConfig) {
	if s.d.Publisher == nil {
		return
	}
	s.publishNotice(c)
	if s.opts.Notified != nil {
		s.opts.Notified(c.DeviceID)
	}
}

// publishNotice publishes c's notice, retained, on this node's broker.
func (s *Service) publishNotice(c *DeviceConfig) {
	if s.d.Publisher == nil {
		return
	}
	b, _ := json.Marshal(Notice{Checksum: c.Checksum, URL: s.opts.URL, Backend: c.Backend})
	if err := s.d.Publisher.Publish("devices/"+c.DeviceID+"/config", b, true, 1); err != nil {
		s.log.Warn("publish config notice", "device_id", c.DeviceID, "err", err)
	}
}

// Refresh reads a device's configuration from the store into the view
// and publishes its notice again, retained, on this node's broker (not
// calling Notified): in cluster mode another node changed it, or the
// device connected to this node and must find what is pending for it. A
// device without a configuration, or with a deactivated one, gets no
// notice.
func (s *Service) Refresh(ctx context.Context, deviceID string) error {
	// Under wmu: a change committed here meanwhile is not overwritten in
	// the view by the older row read before it.
	s.wmu.Lock()
	defer s.wmu.Unlock()
	c, err := s.current(ctx, deviceID)
	if err != nil {
		return fmt.Errorf("refresh config of %s: %w", deviceID, err)
	}
	if c == nil {
		s.mu.Lock()
		delete(s.view, deviceID)
		s.mu.Unlock()
		return nil
	}
	s.committed(c)
	if c.Status != StatusDeactivated {
		s.publishNotice(c)
	}
	return nil
}

// RestoreNotices publishes every configured device's notice again: the
// broker keeps retained messages in memory only, so the hub calls it once
// its broker serves after a start.
func (s *Service) RestoreNotices(ctx context.Context) error {
	s.mu.RLock()
	list := make([]*DeviceConfig, 0, len(s.view))
	for id, v := range s.view {
		if v.status == StatusDeactivated {
			continue
		}
		list = append(list, &DeviceConfig{DeviceID: id, Checksum: v.checksum, Backend: v.backend})
	}
	s.mu.RUnlock()
	for _, c := range list {
		if ctx.Err() != nil {
			return nil
		}
		s.publishNotice(c)
	}
	return nil
}

// Get returns a device's configuration with its rendered bytes.
func (s *Service) Get(ctx context.Context, deviceID string) (*DeviceConfig, error) {
	return s.d.Store.GetDeviceConfig(ctx, deviceID)
}

// List lists device configurations (by status, or those not applied).
func (s *Service) List(ctx context.Context, q ListQuery) ([]Row, error) {
	return s.d.Store.ListDeviceConfigs(ctx, q)
}

// History lists a device's kept rendered configurations, newest first.
func (s *Service) History(ctx context.Context, deviceID string) ([]HistoryEntry, error) {
	if _, err := s.d.Store.ConfigDevice(ctx, deviceID); err != nil {
		return nil, err
	}
	return s.d.Store.ConfigHistory(ctx, deviceID)
}

// Restore sets a device's own configuration (backend, templates,
// variables, overrides) back to what it was in history entry id, and
// renders it. The result's checksum equals the entry's unless a template
// it uses was edited since.
func (s *Service) Restore(ctx context.Context, deviceID string, id int64) (*Result, error) {
	hs, err := s.History(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(hs, func(h HistoryEntry) bool { return h.ID == id })
	if i < 0 {
		return nil, fmt.Errorf("%w: device %s has no history entry %d", ErrNotFoundHistory, deviceID, id)
	}
	h := hs[i]
	return s.SetDevice(ctx, deviceID, Update{Backend: &h.Backend, Templates: &h.Templates, Vars: &h.Vars, Overrides: &h.Overrides})
}

// ErrNotFoundHistory: no kept configuration has this id.
var ErrNotFoundHistory = errors.New("history entry not found")

// Deactivate starts deactivating a device's configuration: the device is
// served the empty configuration until it reports applying it, then its
// configuration endpoints answer 404.
func (s *Service) Deactivate(ctx context.Context, deviceID string) (*Result, error) {
	return s.setActive(ctx, deviceID, false)
}

// Reactivate renders a deactivated (or deactivating) configuration again.
func (s *Service) Reactivate(ctx context.Context, deviceID string) (*Result, error) {
	return s.setActive(ctx, deviceID, true)
}

func (s *Service) setActive(ctx context.Context, deviceID string, active bool) (*Result, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	dev, err := s.d.Store.ConfigDevice(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	cur, err := s.d.Store.GetDeviceConfig(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	inactive := cur.Status == StatusDeactivating || cur.Status == StatusDeactivated
	if active == !inactive {
		return &Result{Config: cur, OldChecksum: cur.Checksum}, nil
	}
	next := cur.Clone()
	action := ""
	if active {
		next.Status, action = StatusModified, events.ActionConfigChanged
	} else {
		next.Status = StatusDeactivating
	}
	next.StatusSince, next.Error = s.now(), ""
	out, err := s.render(dev, next)
	if err != nil {
		return nil, err
	}
	ch, res, err := s.buildChange(dev, cur, next, out, action)
	if err != nil {
		return nil, err
	}
	if err := s.d.Committer.Submit(ctx, ch); err != nil {
		return nil, fmt.Errorf("store config of %s: %w", deviceID, err)
	}
	s.committed(res.Config)
	s.notify(res.Config)
	return res, nil
}
