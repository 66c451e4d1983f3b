package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Template is a configuration template: a JSON document with {{ variables }}
// and their default values.
type Template struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Config    map[string]any    `json:"config"`
	Defaults  map[string]string `json:"defaults,omitempty"`
	Default   bool              `json:"default"`  // assigned to every new device of a matching type
	Required  bool              `json:"required"` // cannot be removed from a device that has it
	Types     []string          `json:"types,omitempty"`
	Version   int64             `json:"version"`
	CreatedAt time.Time         `json:"created_at"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// TemplateSpec is a template as an operator writes it (create and edit).
type TemplateSpec struct {
	ID       string            `json:"id,omitempty"` // create only
	Name     string            `json:"name,omitempty"`
	Config   map[string]any    `json:"config"`
	Defaults map[string]string `json:"defaults,omitempty"`
	Default  bool              `json:"default,omitempty"`
	Required bool              `json:"required,omitempty"`
	Types    []string          `json:"types,omitempty"`
}

// ConfigJob is a background re-render of the devices a change affects.
type ConfigJob struct {
	ID         string     `json:"id"`
	What       string     `json:"what"`
	Action     string     `json:"action"`
	Affected   int        `json:"affected"`
	Done       int        `json:"done"`
	Changed    int        `json:"changed"`
	Failed     int        `json:"failed"`
	Status     string     `json:"status"` // queued, running, done, failed
	Error      string     `json:"error,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// TemplateResult is a template with the re-render job an edit started.
type TemplateResult struct {
	Template Template   `json:"template"`
	Job      *ConfigJob `json:"job,omitempty"`
}

// Templates lists the configuration templates.
func (c *Client) Templates(ctx context.Context) ([]Template, error) {
	var out struct {
		Templates []Template `json:"templates"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/templates", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Templates, nil
}

// Template returns one template.
func (c *Client) Template(ctx context.Context, id string) (*Template, error) {
	var out TemplateResult
	if err := c.do(ctx, http.MethodGet, "/api/v1/templates/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out.Template, nil
}

// CreateTemplate creates a template (spec.ID is its id).
func (c *Client) CreateTemplate(ctx context.Context, spec TemplateSpec) (*Template, error) {
	var out TemplateResult
	if err := c.do(ctx, http.MethodPost, "/api/v1/templates", nil, spec, &out); err != nil {
		return nil, err
	}
	return &out.Template, nil
}

// UpdateTemplate replaces a template's fields. The devices using it are
// re-rendered by the job of the answer; an edit that would break a
// device's rendering is refused (HTTP 422, render_failed).
func (c *Client) UpdateTemplate(ctx context.Context, id string, spec TemplateSpec) (*TemplateResult, error) {
	spec.ID = ""
	var out TemplateResult
	if err := c.do(ctx, http.MethodPut, "/api/v1/templates/"+url.PathEscape(id), nil, spec, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteTemplate deletes a template no group or device uses.
func (c *Client) DeleteTemplate(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/templates/"+url.PathEscape(id), nil, nil, nil)
}

// ConfigJob returns a re-render job's progress.
func (c *Client) ConfigJob(ctx context.Context, id string) (*ConfigJob, error) {
	var out struct {
		Job ConfigJob `json:"job"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/config/jobs/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out.Job, nil
}

// GroupConfig is a group's ordered templates and variables.
type GroupConfig struct {
	GroupID   string            `json:"group_id"`
	Templates []string          `json:"templates"`
	Vars      map[string]string `json:"vars"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// GroupConfigUpdate changes a group's configuration: nil fields stay.
type GroupConfigUpdate struct {
	Templates *[]string          `json:"templates,omitempty"`
	Vars      *map[string]string `json:"vars,omitempty"`
}

// GroupConfigResult is a group's configuration with the re-render job a
// change started.
type GroupConfigResult struct {
	Group GroupConfig `json:"group"`
	Job   *ConfigJob  `json:"job,omitempty"`
}

// GroupConfig returns a group's templates and variables.
func (c *Client) GroupConfig(ctx context.Context, group string) (*GroupConfig, error) {
	var out GroupConfigResult
	if err := c.do(ctx, http.MethodGet, "/api/v1/groups/"+url.PathEscape(group)+"/config", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out.Group, nil
}

// SetGroupConfig sets a group's ordered templates and/or variables.
func (c *Client) SetGroupConfig(ctx context.Context, group string, u GroupConfigUpdate) (*GroupConfigResult, error) {
	var out GroupConfigResult
	if err := c.do(ctx, http.MethodPut, "/api/v1/groups/"+url.PathEscape(group)+"/config", nil, u, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeviceConfig is a device's configuration: what it is made of, its status
// and its rendered bytes.
type DeviceConfig struct {
	DeviceID        string            `json:"device_id"`
	Backend         string            `json:"backend"`
	Templates       []string          `json:"templates"`
	Vars            map[string]string `json:"vars"`
	Overrides       map[string]any    `json:"overrides"`
	Status          string            `json:"status"` // modified, applied, error, deactivating, deactivated
	Error           string            `json:"error,omitempty"`
	StatusSince     time.Time         `json:"status_since"`
	Checksum        string            `json:"checksum"`
	AppliedChecksum string            `json:"applied_checksum,omitempty"`
	Rendered        *string           `json:"rendered,omitempty"`
	IsWorking       *bool             `json:"is_working,omitempty"`
	FailureReason   string            `json:"failure_reason,omitempty"`
}

// DeviceConfigUpdate changes a device's configuration: nil fields stay.
type DeviceConfigUpdate struct {
	Backend   *string            `json:"backend,omitempty"`
	Templates *[]string          `json:"templates,omitempty"`
	Vars      *map[string]string `json:"vars,omitempty"`
	Overrides *map[string]any    `json:"overrides,omitempty"`
}

// DeviceConfigResult is a device's configuration after a change, with the
// checksum before it and whether the rendered bytes changed.
type DeviceConfigResult struct {
	Config      DeviceConfig `json:"config"`
	OldChecksum string       `json:"old_checksum,omitempty"`
	Changed     *bool        `json:"changed,omitempty"`
}

func (c *Client) deviceConfigCall(ctx context.Context, method, id, suffix string, body any) (*DeviceConfigResult, error) {
	var out DeviceConfigResult
	if err := c.do(ctx, method, "/api/v1/devices/"+url.PathEscape(id)+"/config"+suffix, nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeviceConfig returns a device's configuration.
func (c *Client) DeviceConfig(ctx context.Context, id string) (*DeviceConfig, error) {
	r, err := c.deviceConfigCall(ctx, http.MethodGet, id, "", nil)
	if err != nil {
		return nil, err
	}
	return &r.Config, nil
}

// SetDeviceConfig changes a device's templates, variables, overrides or
// backend (creating its configuration if it has none).
func (c *Client) SetDeviceConfig(ctx context.Context, id string, u DeviceConfigUpdate) (*DeviceConfigResult, error) {
	return c.deviceConfigCall(ctx, http.MethodPut, id, "", u)
}

// PreviewDeviceConfig renders a device's configuration as u would make it,
// saving nothing.
func (c *Client) PreviewDeviceConfig(ctx context.Context, id string, u DeviceConfigUpdate) (*DeviceConfig, error) {
	r, err := c.deviceConfigCall(ctx, http.MethodPost, id, "/preview", u)
	if err != nil {
		return nil, err
	}
	return &r.Config, nil
}

// DeactivateDeviceConfig deactivates a device's configuration.
func (c *Client) DeactivateDeviceConfig(ctx context.Context, id string) (*DeviceConfigResult, error) {
	return c.deviceConfigCall(ctx, http.MethodPost, id, "/deactivate", nil)
}

// ReactivateDeviceConfig reactivates a device's configuration.
func (c *Client) ReactivateDeviceConfig(ctx context.Context, id string) (*DeviceConfigResult, error) {
	return c.deviceConfigCall(ctx, http.MethodPost, id, "/reactivate", nil)
}

// ConfigHistoryEntry is one of a device's previous rendered configurations.
type ConfigHistoryEntry struct {
	ID        int64             `json:"id"`
	Checksum  string            `json:"checksum"`
	Backend   string            `json:"backend"`
	Rendered  string            `json:"rendered"`
	Templates []string          `json:"templates"`
	Vars      map[string]string `json:"vars"`
	Overrides map[string]any    `json:"overrides"`
	CreatedAt time.Time         `json:"created_at"`
}

// DeviceConfigHistory lists a device's kept configurations, newest first.
func (c *Client) DeviceConfigHistory(ctx context.Context, id string) ([]ConfigHistoryEntry, error) {
	var out struct {
		History []ConfigHistoryEntry `json:"history"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/devices/"+url.PathEscape(id)+"/config/history", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.History, nil
}

// RestoreDeviceConfig sets a device's configuration back to a history
// entry.
func (c *Client) RestoreDeviceConfig(ctx context.Context, id string, entry int64) (*DeviceConfigResult, error) {
	return c.deviceConfigCall(ctx, http.MethodPost, id, "/history/"+strconv.FormatInt(entry, 10)+"/restore", nil)
}

// ConfigStatusRow is one device's configuration status.
type ConfigStatusRow struct {
	DeviceID    string    `json:"device_id"`
	DeviceType  string    `json:"device_type"`
	Group       string    `json:"group,omitempty"`
	Backend     string    `json:"backend"`
	Status      string    `json:"status"`
	Error       string    `json:"error,omitempty"`
	StatusSince time.Time `json:"status_since"`
	Checksum    string    `json:"checksum"`
}

// ConfigListOptions select configurations.
type ConfigListOptions struct {
	Status     string // only this status
	NotApplied bool   // only those not applied
	After      string // device ids after this one
	Limit      int    // default 100, at most 1000
}

// ConfigList is one page of configurations; Next is the After of the next
// page ("" at the end).
type ConfigList struct {
	Configs []ConfigStatusRow `json:"configs"`
	Next    string            `json:"next,omitempty"`
}

// DeviceConfigs lists devices' configurations by status.
func (c *Client) DeviceConfigs(ctx context.Context, o ConfigListOptions) (*ConfigList, error) {
	q := url.Values{}
	set(q, "status", o.Status)
	if o.NotApplied {
		q.Set("not_applied", "true")
	}
	set(q, "after", o.After)
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var out ConfigList
	if err := c.do(ctx, http.MethodGet, "/api/v1/configs", q, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
