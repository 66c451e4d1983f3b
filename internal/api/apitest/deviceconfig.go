package apitest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/deviceconfig"
)

// Configs is an in-memory configuration service for the API's tests:
// template "ntp", ws-1 configured with it, rendered with deviceconfig's
// own Render. The real service is tested in internal/deviceconfig and end
// to end in internal/hub.
type Configs struct {
	mu        sync.Mutex
	templates map[string]*deviceconfig.Template
	configs   map[string]*deviceconfig.DeviceConfig
	groups    map[string]*deviceconfig.GroupConfig
	backends  *deviceconfig.Backends
	Requests  []events.Type // checksum_requested / config_download_requested, in order
}

func newConfigs() *Configs {
	be, _ := deviceconfig.NewBackends()
	c := &Configs{templates: map[string]*deviceconfig.Template{}, configs: map[string]*deviceconfig.DeviceConfig{},
		groups: map[string]*deviceconfig.GroupConfig{}, backends: be}
	at := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	c.templates["ntp"] = &deviceconfig.Template{ID: "ntp", Name: "ntp", Config: map[string]any{"ntp": "{{ server }}"},
		Defaults: map[string]string{"server": "pool"}, Version: 1, CreatedAt: at, UpdatedAt: at}
	cfg := &deviceconfig.DeviceConfig{DeviceID: "ws-1", Backend: "json", Templates: []string{"ntp"}, Vars: map[string]string{},
		Overrides: map[string]any{}, Status: deviceconfig.StatusModified, StatusSince: at, CreatedAt: at, UpdatedAt: at}
	c.render(cfg)
	c.configs["ws-1"] = cfg
	return c
}

func (c *Configs) render(cfg *deviceconfig.DeviceConfig) error {
	be, err := c.backends.Get(cfg.Backend)
	if err != nil {
		return err
	}
	in := deviceconfig.Input{Device: deviceconfig.DeviceInfo{ID: cfg.DeviceID}, DeviceVars: cfg.Vars, Overrides: cfg.Overrides, Backend: be}
	for _, id := range cfg.Templates {
		t, ok := c.templates[id]
		if !ok {
			return fmt.Errorf("%w: %s", deviceconfig.ErrTemplateNotFound, id)
		}
		in.Templates = append(in.Templates, t)
	}
	out, err := deviceconfig.Render(in)
	if err != nil {
		return err
	}
	cfg.Rendered, cfg.Checksum = out.Bytes, out.Checksum
	return nil
}

func (c *Configs) Templates() []*deviceconfig.Template {
	c.mu.Lock()
	defer c.mu.Unlock()
	return []*deviceconfig.Template{c.templates["ntp"]}
}

func (c *Configs) Template(id string) (*deviceconfig.Template, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.templates[id]
	return t, ok
}

func (c *Configs) CreateTemplate(_ context.Context, in deviceconfig.TemplateInput) (*deviceconfig.Template, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &deviceconfig.Template{ID: in.ID, Name: in.Name, Config: in.Config, Defaults: in.Defaults, Version: 1}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	if _, ok := c.templates[in.ID]; ok {
		return nil, fmt.Errorf("%w: %s", deviceconfig.ErrTemplateExists, in.ID)
	}
	c.templates[in.ID] = t
	return t, nil
}

func (c *Configs) UpdateTemplate(_ context.Context, in deviceconfig.TemplateInput) (*deviceconfig.Template, *deviceconfig.Job, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old, ok := c.templates[in.ID]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s", deviceconfig.ErrTemplateNotFound, in.ID)
	}
	t := &deviceconfig.Template{ID: in.ID, Name: in.Name, Config: in.Config, Defaults: in.Defaults, Version: old.Version + 1}
	if err := t.Validate(); err != nil {
		return nil, nil, err
	}
	c.templates[in.ID] = t
	return t, &deviceconfig.Job{ID: "job-1", Affected: 1, Status: deviceconfig.JobQueued}, nil
}

func (c *Configs) DeleteTemplate(_ context.Context, id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.templates[id]; !ok {
		return fmt.Errorf("%w: %s", deviceconfig.ErrTemplateNotFound, id)
	}
	delete(c.templates, id)
	return nil
}

func (c *Configs) Group(_ context.Context, id string) (*deviceconfig.GroupConfig, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if g, ok := c.groups[id]; ok {
		return g, nil
	}
	return &deviceconfig.GroupConfig{GroupID: id, Templates: []string{}, Vars: map[string]string{}}, nil
}

func (c *Configs) SetGroup(_ context.Context, id string, u deviceconfig.GroupUpdate) (*deviceconfig.GroupConfig, *deviceconfig.Job, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := &deviceconfig.GroupConfig{GroupID: id, Templates: []string{}, Vars: map[string]string{}}
	if u.Templates != nil {
		g.Templates = *u.Templates
	}
	if u.Vars != nil {
		g.Vars = *u.Vars
	}
	c.groups[id] = g
	return g, &deviceconfig.Job{ID: "job-2", Status: deviceconfig.JobDone}, nil
}

func (c *Configs) Job(id string) (*deviceconfig.Job, error) {
	if id != "job-1" {
		return nil, fmt.Errorf("%w: %s", deviceconfig.ErrJobNotFound, id)
	}
	return &deviceconfig.Job{ID: id, Affected: 1, Done: 1, Changed: 1, Status: deviceconfig.JobDone}, nil
}

func (c *Configs) Get(_ context.Context, id string) (*deviceconfig.DeviceConfig, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg, ok := c.configs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", deviceconfig.ErrNoConfig, id)
	}
	return cfg.Clone(), nil
}

func (c *Configs) set(id string, u deviceconfig.Update, save bool) (*deviceconfig.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.configs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", deviceconfig.ErrNoConfig, id)
	}
	next := cur.Clone()
	if u.Backend != nil {
		next.Backend = *u.Backend
	}
	if u.Templates != nil {
		next.Templates = *u.Templates
	}
	if u.Vars != nil {
		next.Vars = *u.Vars
	}
	if u.Overrides != nil {
		next.Overrides = *u.Overrides
	}
	if err := c.render(next); err != nil {
		return nil, err
	}
	if save {
		c.configs[id] = next
	}
	return &deviceconfig.Result{Config: next, OldChecksum: cur.Checksum, Changed: next.Checksum != cur.Checksum}, nil
}

func (c *Configs) SetDevice(_ context.Context, id string, u deviceconfig.Update) (*deviceconfig.Result, error) {
	return c.set(id, u, true)
}

func (c *Configs) Preview(_ context.Context, id string, u deviceconfig.Update) (*deviceconfig.DeviceConfig, error) {
	r, err := c.set(id, u, false)
	if err != nil {
		return nil, err
	}
	return r.Config, nil
}

func (c *Configs) List(_ context.Context, q deviceconfig.ListQuery) ([]deviceconfig.Row, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []deviceconfig.Row
	for _, cfg := range c.configs {
		if q.NotApplied && cfg.Status == deviceconfig.StatusApplied {
			continue
		}
		out = append(out, deviceconfig.Row{DeviceConfig: *cfg, Device: deviceconfig.DeviceInfo{ID: cfg.DeviceID, Type: "WeatherStation"}})
	}
	return out, nil
}

func (c *Configs) History(ctx context.Context, id string) ([]deviceconfig.HistoryEntry, error) {
	cfg, err := c.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return []deviceconfig.HistoryEntry{{ID: 1, DeviceID: id, Checksum: cfg.Checksum, Backend: cfg.Backend, Rendered: cfg.Rendered,
		Templates: cfg.Templates, CreatedAt: cfg.CreatedAt}}, nil
}

func (c *Configs) Restore(ctx context.Context, id string, entry int64) (*deviceconfig.Result, error) {
	if entry != 1 {
		return nil, fmt.Errorf("%w: %d", deviceconfig.ErrNotFoundHistory, entry)
	}
	return c.set(id, deviceconfig.Update{}, true)
}

func (c *Configs) setStatus(id string, st deviceconfig.Status) (*deviceconfig.Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := c.configs[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", deviceconfig.ErrNoConfig, id)
	}
	cur.Status = st
	return &deviceconfig.Result{Config: cur.Clone(), OldChecksum: cur.Checksum}, nil
}

func (c *Configs) Deactivate(_ context.Context, id string) (*deviceconfig.Result, error) {
	return c.setStatus(id, deviceconfig.StatusDeactivating)
}

func (c *Configs) Reactivate(_ context.Context, id string) (*deviceconfig.Result, error) {
	return c.setStatus(id, deviceconfig.StatusModified)
}

func (c *Configs) Management(_ context.Context, id string) (*deviceconfig.Management, error) {
	return &deviceconfig.Management{DeviceID: id}, nil
}

func (c *Configs) Checksum(id string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg, ok := c.configs[id]
	if !ok || cfg.Status == deviceconfig.StatusDeactivated {
		return "", fmt.Errorf("%w: %s", deviceconfig.ErrNoConfig, id)
	}
	return cfg.Checksum, nil
}

func (c *Configs) Download(ctx context.Context, id string) (*deviceconfig.DeviceConfig, string, error) {
	cfg, err := c.Get(ctx, id)
	if err != nil {
		return nil, "", err
	}
	return cfg, "application/json", nil
}

func (c *Configs) Requested(_ context.Context, typ events.Type, _, _ string, _ *events.ConfigRequestArgs) error {
	c.mu.Lock()
	c.Requests = append(c.Requests, typ)
	c.mu.Unlock()
	return nil
}

func (c *Configs) RecordReport(_ context.Context, id, _ string, r deviceconfig.Report, _ commit.Op) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	cfg, ok := c.configs[id]
	if !ok {
		return fmt.Errorf("%w: %s", deviceconfig.ErrNoConfig, id)
	}
	o := deviceconfig.ApplyReport(deviceconfig.SnapshotOf(cfg), r)
	if o.Stale {
		return deviceconfig.ErrStale
	}
	cfg.Status, cfg.Error = o.Status, o.Error
	return nil
}
