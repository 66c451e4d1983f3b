package deviceconfig

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// TemplateInput is an operator's template: to create, or to replace an
// existing one's fields whole (the id stays).
type TemplateInput struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Config   map[string]any    `json:"config"`
	Defaults map[string]string `json:"defaults,omitempty"`
	Default  bool              `json:"default"`
	Required bool              `json:"required"`
	Types    []string          `json:"types,omitempty"`
}

func (s *Service) checkTemplate(in TemplateInput) (*Template, error) {
	cfg, err := Normalize(in.Config)
	if err != nil {
		return nil, fmt.Errorf("%w: template %s: config: %v", ErrInvalid, in.ID, err)
	}
	if in.Config == nil {
		cfg = nil
	}
	if b, _ := EncodeDoc(cfg); len(b) > MaxTemplateBytes {
		return nil, fmt.Errorf("%w: template %s: config larger than %d bytes", ErrInvalid, in.ID, MaxTemplateBytes)
	}
	t := &Template{ID: in.ID, Name: in.Name, Config: cfg, Defaults: maps.Clone(in.Defaults), Default: in.Default,
		Required: in.Required, Types: slices.Clone(in.Types)}
	if t.Name == "" {
		t.Name = t.ID
	}
	if t.Defaults == nil {
		t.Defaults = map[string]string{}
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}

// CreateTemplate stores a new template.
func (s *Service) CreateTemplate(ctx context.Context, in TemplateInput) (*Template, error) {
	t, err := s.checkTemplate(in)
	if err != nil {
		return nil, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, ok := s.Template(t.ID); ok {
		return nil, fmt.Errorf("%w: %s", ErrTemplateExists, t.ID)
	}
	now := s.now()
	t.Version, t.CreatedAt, t.UpdatedAt = 1, now, now
	if err := s.d.Committer.Submit(ctx, &commit.Change{Ops: []commit.Op{&Op{Template: t}},
		Events: templatesEvent(now, &events.TemplatesChangedArgs{Template: t.ID})}); err != nil {
		return nil, fmt.Errorf("store template %s: %w", t.ID, err)
	}
	s.mu.Lock()
	s.templates[t.ID] = t
	s.mu.Unlock()
	return t, nil
}

// Template returns a template (shared: do not modify).
func (s *Service) Template(id string) (*Template, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.template(id)
}

// Templates lists the templates by id.
func (s *Service) Templates() []*Template {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Template, 0, len(s.templates))
	for _, id := range slices.Sorted(maps.Keys(s.templates)) {
		out = append(out, s.templates[id])
	}
	return out
}

// RenderFailure is one device a change would break.
type RenderFailure struct {
	DeviceID string   `json:"device_id"`
	Missing  []string `json:"missing,omitempty"`
	Error    string   `json:"error"`
}

// BreaksError refuses a change that would break rendering for devices
// (all of them are listed).
type BreaksError struct {
	What    string
	Devices []RenderFailure
}

func (e *BreaksError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %s would break %d device(s):", ErrRender, e.What, len(e.Devices))
	for i, d := range e.Devices {
		if i == 10 {
			fmt.Fprintf(&b, " and %d more", len(e.Devices)-10)
			break
		}
		if len(d.Missing) > 0 {
			fmt.Fprintf(&b, " %s (missing %s);", d.DeviceID, strings.Join(d.Missing, ", "))
		} else {
			fmt.Fprintf(&b, " %s (%s);", d.DeviceID, d.Error)
		}
	}
	return strings.TrimSuffix(b.String(), ";")
}

// Unwrap makes a BreaksError an ErrRender.
func (e *BreaksError) Unwrap() error { return ErrRender }

// affected lists the configurations (without bytes) that use template id
// (directly, or through their group), or whose group is group; mu must not
// be held.
func (s *Service) affected(ctx context.Context, match func(r *Row, groupTpl []string) bool) ([]Row, error) {
	var out []Row
	q := ListQuery{Limit: 1000}
	for {
		rows, err := s.d.Store.ListDeviceConfigs(ctx, q)
		if err != nil {
			return nil, err
		}
		s.mu.RLock()
		for i := range rows {
			r := &rows[i]
			var gt []string
			if g, ok := s.groups[r.Device.Group]; ok && r.Device.Group != "" {
				gt = g.Templates
			}
			if r.Status != StatusDeactivated && r.Status != StatusDeactivating && match(r, gt) {
				out = append(out, *r)
			}
		}
		s.mu.RUnlock()
		if len(rows) < q.Limit {
			return out, nil
		}
		q.After = rows[len(rows)-1].DeviceID
	}
}

func usesTemplate(id string) func(r *Row, gt []string) bool {
	return func(r *Row, gt []string) bool { return slices.Contains(r.Templates, id) || slices.Contains(gt, id) }
}

// checkRenders renders every row with the overlay (templates and groups
// replacing the stored ones) and returns the failures.
func (s *Service) checkRenders(rows []Row, tpl *Template, grp *GroupConfig) []RenderFailure {
	var fails []RenderFailure
	s.mu.RLock()
	defer s.mu.RUnlock()
	get := func(id string) (*Template, bool) {
		if tpl != nil && id == tpl.ID {
			return tpl, true
		}
		return s.template(id)
	}
	for i := range rows {
		r := &rows[i]
		gt, gv := []string(nil), map[string]string(nil)
		if grp != nil && r.Device.Group == grp.GroupID {
			gt, gv = grp.Templates, grp.Vars
		} else if g, ok := s.groups[r.Device.Group]; ok && r.Device.Group != "" {
			gt, gv = g.Templates, g.Vars
		}
		be, err := s.d.Backends.Get(r.Backend)
		var out error
		if err == nil {
			var ts []*Template
			ts, err = Resolve(gt, r.Templates, r.Device.Type, get)
			if err == nil {
				_, out = Render(Input{Device: r.Device, Templates: ts, GroupVars: gv, DeviceVars: r.Vars, Overrides: r.Overrides, Backend: be})
			} else {
				out = err
			}
		} else {
			out = err
		}
		if out != nil {
			f := RenderFailure{DeviceID: r.DeviceID, Error: out.Error()}
			var mv *MissingVarsError
			if errors.As(out, &mv) {
				f.Missing = mv.Names
			}
			fails = append(fails, f)
		}
	}
	return fails
}

// UpdateTemplate replaces a template's fields. If the edit would break
// rendering for a device using it, it is refused with a *BreaksError
// naming the devices and their missing variables. Otherwise it is stored,
// and a background job re-renders the devices using it (returned, with
// how many devices it affects).
func (s *Service) UpdateTemplate(ctx context.Context, in TemplateInput) (*Template, *Job, error) {
	t, err := s.checkTemplate(in)
	if err != nil {
		return nil, nil, err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	old, ok := s.Template(t.ID)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", ErrTemplateNotFound, t.ID)
	}
	rows, err := s.affected(ctx, usesTemplate(t.ID))
	if err != nil {
		return nil, nil, err
	}
	if fails := s.checkRenders(rows, t, nil); len(fails) > 0 {
		return nil, nil, &BreaksError{What: "template " + t.ID, Devices: fails}
	}
	now := s.now()
	t.Version, t.CreatedAt, t.UpdatedAt = old.Version+1, old.CreatedAt, now
	if err := s.d.Committer.Submit(ctx, &commit.Change{Ops: []commit.Op{&Op{Template: t}},
		Events: templatesEvent(now, &events.TemplatesChangedArgs{Template: t.ID})}); err != nil {
		return nil, nil, fmt.Errorf("store template %s: %w", t.ID, err)
	}
	s.mu.Lock()
	s.templates[t.ID] = t
	s.mu.Unlock()
	j := s.jobs.start("template "+t.ID, events.ActionRelatedTemplateChanged, ids(rows))
	return t, j, nil
}

// unconfigured returns the devices of group id that have no
// configuration, each with the configuration it would get (no templates of
// its own), when Deps.Groups can list members.
func (s *Service) unconfigured(ctx context.Context, id string) ([]Row, error) {
	gm, ok := s.d.Groups.(GroupMembers)
	if !ok {
		return nil, nil
	}
	members, err := gm.GroupDevices(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("devices of group %s: %w", id, err)
	}
	var out []Row
	for _, m := range members {
		s.mu.RLock()
		_, has := s.view[m]
		s.mu.RUnlock()
		if has {
			continue
		}
		dev, err := s.d.Store.ConfigDevice(ctx, m)
		if errors.Is(err, ErrDeviceNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		next, err := s.apply(dev, nil, Update{})
		if err != nil {
			return nil, err
		}
		out = append(out, Row{DeviceConfig: *next, Device: dev})
	}
	return out, nil
}

// createConfigs stores the new configurations of rows (no signal: they
// are created), group-committed, and notifies their devices (wmu held).
func (s *Service) createConfigs(ctx context.Context, rows []Row) error {
	type pending struct {
		t   *commit.Ticket
		res *Result
	}
	var ps []pending
	for i := range rows {
		r := &rows[i]
		next := r.DeviceConfig.Clone()
		out, err := s.render(r.Device, next)
		if err != nil {
			s.log.Warn("configure a device of a group", "device_id", r.DeviceID, "err", err)
			continue
		}
		ch, res, err := s.buildChange(r.Device, nil, next, out, "")
		if err != nil {
			return err
		}
		if ch == nil {
			continue
		}
		t, err := s.d.Committer.Enqueue(ctx, ch)
		if err != nil {
			return err
		}
		ps = append(ps, pending{t, res})
	}
	for _, p := range ps {
		if err := p.t.Wait(ctx); err != nil {
			if errors.Is(err, commit.ErrDeviceNotFound) {
				continue
			}
			return fmt.Errorf("store config of %s: %w", p.res.Config.DeviceID, err)
		}
		s.committed(p.res.Config)
		s.notify(p.res.Config)
	}
	return nil
}

func ids(rows []Row) []string {
	out := make([]string, len(rows))
	for i := range rows {
		out[i] = rows[i].DeviceID
	}
	return out
}

// DeleteTemplate removes a template that no group or device uses.
func (s *Service) DeleteTemplate(ctx context.Context, id string) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, ok := s.Template(id); !ok {
		return fmt.Errorf("%w: %s", ErrTemplateNotFound, id)
	}
	var users []string
	s.mu.RLock()
	for _, g := range s.groups {
		if slices.Contains(g.Templates, id) {
			users = append(users, "group "+g.GroupID)
		}
	}
	s.mu.RUnlock()
	rows, err := s.affected(ctx, func(r *Row, _ []string) bool { return slices.Contains(r.Templates, id) })
	if err != nil {
		return err
	}
	for i, r := range rows {
		if i == 10 {
			users = append(users, fmt.Sprintf("%d more devices", len(rows)-10))
			break
		}
		users = append(users, "device "+r.DeviceID)
	}
	if len(users) > 0 {
		slices.Sort(users)
		return fmt.Errorf("%w: template %s is used by %s", ErrInUse, id, strings.Join(users, ", "))
	}
	if err := s.d.Committer.Submit(ctx, &commit.Change{Ops: []commit.Op{&Op{DeleteTemplate: id}},
		Events: templatesEvent(s.now(), &events.TemplatesChangedArgs{Template: id, Deleted: true})}); err != nil {
		return fmt.Errorf("delete template %s: %w", id, err)
	}
	s.mu.Lock()
	delete(s.templates, id)
	s.mu.Unlock()
	return nil
}

// DefaultTemplates lists the default templates that apply to type typ.
func (s *Service) DefaultTemplates(typ string) []string {
	var out []string
	for _, t := range s.Templates() {
		if t.Default && t.AppliesTo(typ) {
			out = append(out, t.ID)
		}
	}
	return out
}

// Group returns a group's configuration (empty when it has none).
func (s *Service) Group(ctx context.Context, id string) (*GroupConfig, error) {
	if ok, err := s.d.Groups.GroupExists(ctx, id); err != nil {
		return nil, err
	} else if !ok {
		return nil, fmt.Errorf("%w: %s", ErrGroupNotFound, id)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if g, ok := s.groups[id]; ok {
		c := *g
		return &c, nil
	}
	return &GroupConfig{GroupID: id, Templates: []string{}, Vars: map[string]string{}}, nil
}

// GroupUpdate changes a group's configuration; nil fields stay.
type GroupUpdate struct {
	Templates *[]string          `json:"templates,omitempty"`
	Vars      *map[string]string `json:"vars,omitempty"`
}

// SetGroup changes a group's ordered templates and variables, fires
// group_templates_changed when the list changed, and re-renders the
// group's devices in the background. A change that would break rendering
// for one of them is refused with a *BreaksError.
func (s *Service) SetGroup(ctx context.Context, id string, u GroupUpdate) (*GroupConfig, *Job, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	cur, err := s.Group(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	next := &GroupConfig{GroupID: id, Templates: slices.Clone(cur.Templates), Vars: maps.Clone(cur.Vars)}
	if u.Templates != nil {
		l := slices.Clone(*u.Templates)
		if l == nil {
			l = []string{}
		}
		if err := ValidateTemplateList("templates", l); err != nil {
			return nil, nil, err
		}
		for _, t := range l {
			if _, ok := s.Template(t); !ok {
				return nil, nil, fmt.Errorf("%w: templates: %s", ErrTemplateNotFound, t)
			}
		}
		next.Templates = l
	}
	if u.Vars != nil {
		v := maps.Clone(*u.Vars)
		if v == nil {
			v = map[string]string{}
		}
		if err := ValidateVars("vars", v); err != nil {
			return nil, nil, err
		}
		next.Vars = v
	}
	rows, err := s.affected(ctx, func(r *Row, _ []string) bool { return r.Device.Group == id })
	if err != nil {
		return nil, nil, err
	}
	var fresh []Row // devices of the group without a configuration, given one
	if len(next.Templates) > 0 {
		if fresh, err = s.unconfigured(ctx, id); err != nil {
			return nil, nil, err
		}
	}
	if fails := s.checkRenders(append(slices.Clip(rows), fresh...), nil, next); len(fails) > 0 {
		return nil, nil, &BreaksError{What: "group " + id, Devices: fails}
	}
	now := s.now()
	next.UpdatedAt = now
	ch := &commit.Change{Ops: []commit.Op{&Op{Group: next}}, Events: templatesEvent(now, &events.TemplatesChangedArgs{Group: id})}
	if args, fire := GroupTemplatesSignal(false, id, cur.Templates, next.Templates); fire {
		ev, err := commit.NewEvent(events.Event{Type: events.GroupTemplatesChanged, Time: now, Args: args})
		if err != nil {
			return nil, nil, err
		}
		ch.Events = append(ch.Events, ev)
	}
	if err := s.d.Committer.Submit(ctx, ch); err != nil {
		return nil, nil, fmt.Errorf("store group config %s: %w", id, err)
	}
	s.mu.Lock()
	s.groups[id] = next
	s.mu.Unlock()
	if err := s.createConfigs(ctx, fresh); err != nil {
		return nil, nil, err
	}
	action := events.ActionConfigChanged
	if !slices.Equal(cur.Templates, next.Templates) {
		action = events.ActionM2MTemplatesChanged
	}
	j := s.jobs.start("group "+id, action, ids(rows))
	return next, j, nil
}

// templatesEvent is the config_templates_changed event of a change of
// templates or group configurations: every node of a cluster reads them
// again when it sees it (docs/CLUSTER.md).
func templatesEvent(now time.Time, args *events.TemplatesChangedArgs) []commit.Event {
	ev, err := commit.NewEvent(events.Event{Type: events.ConfigTemplatesChanged, Time: now, Args: args})
	if err != nil {
		return nil // plain strings: cannot happen
	}
	return []commit.Event{ev}
}
