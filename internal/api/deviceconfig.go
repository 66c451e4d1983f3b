package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/deviceconfig"
)

// ConfigTemplates keeps templates and the configuration of groups
// (*deviceconfig.Service).
type ConfigTemplates interface {
	Templates() []*deviceconfig.Template
	Template(id string) (*deviceconfig.Template, bool)
	CreateTemplate(ctx context.Context, in deviceconfig.TemplateInput) (*deviceconfig.Template, error)
	UpdateTemplate(ctx context.Context, in deviceconfig.TemplateInput) (*deviceconfig.Template, *deviceconfig.Job, error)
	DeleteTemplate(ctx context.Context, id string) error
	Group(ctx context.Context, id string) (*deviceconfig.GroupConfig, error)
	SetGroup(ctx context.Context, id string, u deviceconfig.GroupUpdate) (*deviceconfig.GroupConfig, *deviceconfig.Job, error)
	Job(id string) (*deviceconfig.Job, error)
}

// DeviceConfigs is the operators' side of devices' configurations
// (*deviceconfig.Service).
type DeviceConfigs interface {
	Get(ctx context.Context, deviceID string) (*deviceconfig.DeviceConfig, error)
	SetDevice(ctx context.Context, deviceID string, u deviceconfig.Update) (*deviceconfig.Result, error)
	Preview(ctx context.Context, deviceID string, u deviceconfig.Update) (*deviceconfig.DeviceConfig, error)
	List(ctx context.Context, q deviceconfig.ListQuery) ([]deviceconfig.Row, error)
	History(ctx context.Context, deviceID string) ([]deviceconfig.HistoryEntry, error)
	Restore(ctx context.Context, deviceID string, id int64) (*deviceconfig.Result, error)
	Deactivate(ctx context.Context, deviceID string) (*deviceconfig.Result, error)
	Reactivate(ctx context.Context, deviceID string) (*deviceconfig.Result, error)
	Management(ctx context.Context, deviceID string) (*deviceconfig.Management, error)
}

// ConfigDevices is the devices' side (*deviceconfig.Service).
type ConfigDevices interface {
	Checksum(deviceID string) (string, error)
	Download(ctx context.Context, deviceID string) (*deviceconfig.DeviceConfig, string, error)
	Requested(ctx context.Context, typ events.Type, deviceID, deviceType string, args *events.ConfigRequestArgs) error
	RecordReport(ctx context.Context, deviceID, deviceType string, r deviceconfig.Report, msg commit.Op) error
}

// Config is configuration management as the API uses it.
type Config interface {
	ConfigTemplates
	DeviceConfigs
	ConfigDevices
}

func (a *API) registerConfig() {
	tags := []string{"configuration"}
	register(a, permViewer, huma.Operation{OperationID: "listTemplates", Method: http.MethodGet, Path: "/api/v1/templates", Tags: tags,
		Summary: "List configuration templates"}, a.listTemplates)
	register(a, permOperator, huma.Operation{OperationID: "createTemplate", Method: http.MethodPost, Path: "/api/v1/templates", Tags: tags,
		Summary: "Create a configuration template", DefaultStatus: http.StatusCreated,
		Description: "A named JSON document with variables ({{ name }}) and defaults for them. default: assigned to every new " +
			"device of a matching type; required: cannot be removed from a device that has it; types: the device types it applies to (empty: all)."}, a.createTemplate)
	register(a, permViewer, huma.Operation{OperationID: "getTemplate", Method: http.MethodGet, Path: "/api/v1/templates/{id}", Tags: tags,
		Summary: "Get a configuration template"}, a.getTemplate)
	register(a, permOperator, huma.Operation{OperationID: "updateTemplate", Method: http.MethodPut, Path: "/api/v1/templates/{id}", Tags: tags,
		Summary: "Edit a configuration template",
		Description: "Replaces the template's fields. An edit that would break rendering for a device using it is refused (422 render_failed, " +
			"naming the devices and their missing variables). Otherwise it is stored and a background job re-renders the devices using it: " +
			"the answer has the job's id and how many devices it affects; each device whose checksum changes gets one config_modified and its notice."}, a.updateTemplate)
	register(a, permOperator, huma.Operation{OperationID: "deleteTemplate", Method: http.MethodDelete, Path: "/api/v1/templates/{id}", Tags: tags,
		Summary:     "Delete a configuration template",
		Description: "Refused (409 template_in_use) while a group or a device uses it."}, a.deleteTemplate)
	register(a, permViewer, huma.Operation{OperationID: "getConfigJob", Method: http.MethodGet, Path: "/api/v1/config/jobs/{id}", Tags: tags,
		Summary: "Get a re-render job's progress"}, a.getConfigJob)
	register(a, permViewer, huma.Operation{OperationID: "getGroupConfig", Method: http.MethodGet, Path: "/api/v1/groups/{id}/config", Tags: tags,
		Summary: "Get a group's templates and variables"}, a.getGroupConfig)
	register(a, permOperator, huma.Operation{OperationID: "setGroupConfig", Method: http.MethodPut, Path: "/api/v1/groups/{id}/config", Tags: tags,
		Summary:     "Set a group's ordered templates and variables",
		Description: "Omitted fields stay. A changed template list fires group_templates_changed; the group's devices are re-rendered by a job."}, a.setGroupConfig)
	register(a, permViewer, huma.Operation{OperationID: "listConfigs", Method: http.MethodGet, Path: "/api/v1/configs", Tags: tags,
		Summary:     "List devices' configurations by status",
		Description: "With not_applied=true: the devices whose configuration is not applied, and since when (status_since)."}, a.listConfigs)
	register(a, permViewer, huma.Operation{OperationID: "getDeviceConfig", Method: http.MethodGet, Path: "/api/v1/devices/{id}/config", Tags: tags,
		Summary: "Get a device's configuration", Description: "Its templates, variables, overrides, backend, status, checksum and rendered bytes."}, a.getDeviceConfig)
	register(a, permOperator, huma.Operation{OperationID: "setDeviceConfig", Method: http.MethodPut, Path: "/api/v1/devices/{id}/config", Tags: tags,
		Summary: "Set a device's templates, variables, overrides or backend",
		Description: "Omitted fields stay. Creates the configuration if the device has none. The configuration is rendered (device variables over " +
			"group variables over template defaults, plus device_id, name, type, group, management_ip); a missing variable is refused (422 " +
			"render_failed naming it). When the rendered bytes change, the device is told at once on devices/{id}/config (retained)."}, a.setDeviceConfig)
	register(a, permViewer, huma.Operation{OperationID: "previewDeviceConfig", Method: http.MethodPost, Path: "/api/v1/devices/{id}/config/preview", Tags: tags,
		Summary: "Preview a device's rendered configuration", Description: "Renders it as it would be with the body's changes, and saves nothing."}, a.previewDeviceConfig)
	register(a, permOperator, huma.Operation{OperationID: "deactivateDeviceConfig", Method: http.MethodPost, Path: "/api/v1/devices/{id}/config/deactivate", Tags: tags,
		Summary: "Deactivate a device's configuration",
		Description: "Status deactivating: the device is served an empty configuration; once it reports applying it the status is deactivated " +
			"and its configuration endpoints answer 404."}, a.deactivateDeviceConfig)
	register(a, permOperator, huma.Operation{OperationID: "reactivateDeviceConfig", Method: http.MethodPost, Path: "/api/v1/devices/{id}/config/reactivate", Tags: tags,
		Summary: "Reactivate a device's configuration"}, a.reactivateDeviceConfig)
	register(a, permViewer, huma.Operation{OperationID: "getDeviceConfigHistory", Method: http.MethodGet, Path: "/api/v1/devices/{id}/config/history", Tags: tags,
		Summary: "List a device's previous rendered configurations", Description: "The last N kept (config_history.keep), newest first."}, a.configHistory)
	register(a, permOperator, huma.Operation{OperationID: "restoreDeviceConfig", Method: http.MethodPost, Path: "/api/v1/devices/{id}/config/history/{entry}/restore", Tags: tags,
		Summary: "Restore a previous configuration",
		Description: "Sets the device's backend, templates, variables and overrides back to that entry's and renders them; the checksum is the " +
			"entry's unless a template it uses was edited since."}, a.restoreDeviceConfig)

	dtags := []string{"device"}
	register(a, permDevice, huma.Operation{OperationID: "getDeviceConfigChecksum", Method: http.MethodGet, Path: "/api/v1/device/config/checksum", Tags: dtags,
		Responses: rawResponses("The checksum, 64 hex digits.", "text/plain"),
		Summary:   "Get the checksum of the device's configuration",
		Description: "The SHA-256 of the bytes GET /api/v1/device/config returns, as text. ETag is the checksum: with If-None-Match the answer is " +
			"304 and empty while it is unchanged. 404 when the device has no configuration or it is deactivated."}, a.deviceConfigChecksum)
	register(a, permDevice, huma.Operation{OperationID: "getDeviceConfigDownload", Method: http.MethodGet, Path: "/api/v1/device/config", Tags: dtags,
		Responses: rawResponses("The rendered bytes: JSON, YAML, a dotenv file or the text of a text/template backend.",
			"application/json", "application/yaml", "text/plain"),
		Summary:     "Download the device's configuration",
		Description: "The rendered bytes in the device's backend format. ETag is the checksum; If-None-Match answers 304 while unchanged."}, a.deviceConfigDownload)
	register(a, permDevice, huma.Operation{OperationID: "postDeviceConfigStatus", Method: http.MethodPost, Path: "/api/v1/device/config/status", Tags: dtags,
		Summary:     "Report the configuration the device applied",
		Description: "Same payload as on devices/{id}/config/status. A report on another checksum than the current one changes nothing (409 stale_checksum)."}, a.deviceConfigStatus)
}

// rawResponses documents an answer of raw bytes (200) or 304.
func rawResponses(desc string, types ...string) map[string]*huma.Response {
	content := map[string]*huma.MediaType{}
	for _, t := range types {
		if t == "application/json" {
			content[t] = &huma.MediaType{Schema: &huma.Schema{Description: "The rendered configuration."}}
			continue
		}
		content[t] = &huma.MediaType{Schema: &huma.Schema{Type: "string"}}
	}
	etag := map[string]*huma.Param{"ETag": {Description: "The checksum, quoted.", Schema: &huma.Schema{Type: "string"}}}
	return map[string]*huma.Response{
		"200":     {Description: desc, Content: content, Headers: etag},
		"304":     {Description: "Unchanged: If-None-Match named the current checksum.", Headers: etag},
		"default": {Description: "Error", Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{Ref: "#/components/schemas/ErrorResponse"}}}},
	}
}

func (a *API) config() (Config, error) {
	if a.deps.Config == nil {
		return nil, errNotImplemented
	}
	return a.deps.Config, nil
}

// TemplateIDInput is a template id in a path.
type TemplateIDInput struct {
	ID string `path:"id" doc:"Template id." example:"ntp"`
}

// TemplateBody is a template as operators write it.
type TemplateBody struct {
	Name     string            `json:"name,omitempty" doc:"Display name (default: the id)."`
	Config   map[string]any    `json:"config" doc:"The JSON document; strings and keys may use {{ variable }}."`
	Defaults map[string]string `json:"defaults,omitempty" doc:"Default values of its variables."`
	Default  bool              `json:"default,omitempty" doc:"Assigned to every new device of a matching type."`
	Required bool              `json:"required,omitempty" doc:"Cannot be removed from a device that has it."`
	Types    []string          `json:"types,omitempty" doc:"Device types it applies to; empty: all."`
}

// CreateTemplateRequest is the body of POST /api/v1/templates.
type CreateTemplateRequest struct {
	ID string `json:"id" doc:"Template id." example:"ntp"`
	TemplateBody
}

// TemplateAnswer is one template, with the re-render job an edit started.
type TemplateAnswer struct {
	Template *deviceconfig.Template `json:"template"`
	Job      *deviceconfig.Job      `json:"job,omitempty"`
}

type templateOutput struct{ Body TemplateAnswer }

// TemplateList is the answer of GET /api/v1/templates.
type TemplateList struct {
	Templates []*deviceconfig.Template `json:"templates"`
}

func (a *API) listTemplates(ctx context.Context, _ *struct{}) (*struct{ Body TemplateList }, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	return &struct{ Body TemplateList }{Body: TemplateList{Templates: c.Templates()}}, nil
}

func (a *API) createTemplate(ctx context.Context, in *struct{ Body CreateTemplateRequest }) (*templateOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	setTarget(ctx, in.Body.ID)
	t, err := c.CreateTemplate(ctx, templateInput(in.Body.ID, in.Body.TemplateBody))
	if err != nil {
		return nil, err
	}
	return &templateOutput{Body: TemplateAnswer{Template: t}}, nil
}

func templateInput(id string, b TemplateBody) deviceconfig.TemplateInput {
	return deviceconfig.TemplateInput{ID: id, Name: b.Name, Config: b.Config, Defaults: b.Defaults, Default: b.Default, Required: b.Required, Types: b.Types}
}

func (a *API) getTemplate(ctx context.Context, in *TemplateIDInput) (*templateOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	t, ok := c.Template(in.ID)
	if !ok {
		return nil, &Error{Status: http.StatusNotFound, Code: "not_found", Message: "template not found: " + in.ID}
	}
	return &templateOutput{Body: TemplateAnswer{Template: t}}, nil
}

func (a *API) updateTemplate(ctx context.Context, in *struct {
	TemplateIDInput
	Body TemplateBody
}) (*templateOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	setTarget(ctx, in.ID)
	t, j, err := c.UpdateTemplate(ctx, templateInput(in.ID, in.Body))
	if err != nil {
		return nil, err
	}
	return &templateOutput{Body: TemplateAnswer{Template: t, Job: j}}, nil
}

// DeletedAnswer names what was deleted.
type DeletedAnswer struct {
	Deleted string `json:"deleted" example:"ntp"`
}

func (a *API) deleteTemplate(ctx context.Context, in *TemplateIDInput) (*struct{ Body DeletedAnswer }, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	setTarget(ctx, in.ID)
	if err := c.DeleteTemplate(ctx, in.ID); err != nil {
		return nil, err
	}
	return &struct{ Body DeletedAnswer }{Body: DeletedAnswer{Deleted: in.ID}}, nil
}

// JobAnswer is a re-render job.
type JobAnswer struct {
	Job *deviceconfig.Job `json:"job"`
}

func (a *API) getConfigJob(ctx context.Context, in *struct {
	ID string `path:"id" doc:"Job id."`
}) (*struct{ Body JobAnswer }, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	j, err := c.Job(in.ID)
	if err != nil {
		return nil, err
	}
	return &struct{ Body JobAnswer }{Body: JobAnswer{Job: j}}, nil
}

// GroupConfigAnswer is a group's configuration, with the re-render job a
// change started.
type GroupConfigAnswer struct {
	Group *deviceconfig.GroupConfig `json:"group"`
	Job   *deviceconfig.Job         `json:"job,omitempty"`
}

type groupConfigOutput struct{ Body GroupConfigAnswer }

func (a *API) getGroupConfig(ctx context.Context, in *DeviceIDInputGroup) (*groupConfigOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	g, err := c.Group(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &groupConfigOutput{Body: GroupConfigAnswer{Group: g}}, nil
}

// DeviceIDInputGroup is a group id in a path.
type DeviceIDInputGroup struct {
	ID string `path:"id" doc:"Group id." example:"north"`
}

func (a *API) setGroupConfig(ctx context.Context, in *struct {
	DeviceIDInputGroup
	Body deviceconfig.GroupUpdate
}) (*groupConfigOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	setTarget(ctx, in.ID)
	g, j, err := c.SetGroup(ctx, in.ID, in.Body)
	if err != nil {
		return nil, err
	}
	return &groupConfigOutput{Body: GroupConfigAnswer{Group: g, Job: j}}, nil
}

// ConfigView is a device's configuration as the API shows it.
type ConfigView struct {
	DeviceID        string            `json:"device_id"`
	Backend         string            `json:"backend"`
	Templates       []string          `json:"templates"`
	Vars            map[string]string `json:"vars"`
	Overrides       map[string]any    `json:"overrides"`
	Status          string            `json:"status" enum:"modified,applied,error,deactivating,deactivated"`
	Error           string            `json:"error,omitempty" doc:"The device's error text, when status is error."`
	StatusSince     time.Time         `json:"status_since"`
	Checksum        string            `json:"checksum" doc:"SHA-256 of the rendered bytes."`
	AppliedChecksum string            `json:"applied_checksum,omitempty"`
	Rendered        *string           `json:"rendered,omitempty" doc:"The rendered bytes the device downloads."`
	IsWorking       *bool             `json:"is_working,omitempty" doc:"Whether the hub's management channel to the device worked last (null: not known yet)."`
	FailureReason   string            `json:"failure_reason,omitempty"`
}

func configView(c *deviceconfig.DeviceConfig, withRendered bool) ConfigView {
	v := ConfigView{DeviceID: c.DeviceID, Backend: c.Backend, Templates: c.Templates, Vars: c.Vars, Overrides: c.Overrides,
		Status: string(c.Status), Error: c.Error, StatusSince: c.StatusSince, Checksum: c.Checksum, AppliedChecksum: c.AppliedChecksum}
	if v.Templates == nil {
		v.Templates = []string{}
	}
	if v.Vars == nil {
		v.Vars = map[string]string{}
	}
	if v.Overrides == nil {
		v.Overrides = map[string]any{}
	}
	if withRendered {
		s := string(c.Rendered)
		v.Rendered = &s
	}
	return v
}

// ConfigAnswer is one device's configuration; a change also says the
// checksum before it and whether the rendered bytes changed.
type ConfigAnswer struct {
	Config      ConfigView `json:"config"`
	OldChecksum string     `json:"old_checksum,omitempty"`
	Changed     *bool      `json:"changed,omitempty"`
}

type configOutput struct{ Body ConfigAnswer }

func resultOutput(ctx context.Context, r *deviceconfig.Result) *configOutput {
	ch := r.Changed
	setAuditDetail(ctx, "checksum "+orNone(r.OldChecksum)+" -> "+r.Config.Checksum)
	return &configOutput{Body: ConfigAnswer{Config: configView(r.Config, true), OldChecksum: r.OldChecksum, Changed: &ch}}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func (a *API) getDeviceConfig(ctx context.Context, in *DeviceIDInput) (*configOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	cfg, err := c.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	v := configView(cfg, true)
	if m, err := c.Management(ctx, in.ID); err == nil {
		v.IsWorking, v.FailureReason = m.IsWorking, m.FailureReason
	}
	return &configOutput{Body: ConfigAnswer{Config: v}}, nil
}

type deviceConfigInput struct {
	DeviceIDInput
	Body deviceconfig.Update
}

func (a *API) setDeviceConfig(ctx context.Context, in *deviceConfigInput) (*configOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	setTarget(ctx, in.ID)
	r, err := c.SetDevice(ctx, in.ID, in.Body)
	if err != nil {
		return nil, err
	}
	return resultOutput(ctx, r), nil
}

func (a *API) previewDeviceConfig(ctx context.Context, in *deviceConfigInput) (*configOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	p, err := c.Preview(ctx, in.ID, in.Body)
	if err != nil {
		return nil, err
	}
	return &configOutput{Body: ConfigAnswer{Config: configView(p, true)}}, nil
}

func (a *API) deactivateDeviceConfig(ctx context.Context, in *DeviceIDInput) (*configOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	setTarget(ctx, in.ID)
	r, err := c.Deactivate(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return resultOutput(ctx, r), nil
}

func (a *API) reactivateDeviceConfig(ctx context.Context, in *DeviceIDInput) (*configOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	setTarget(ctx, in.ID)
	r, err := c.Reactivate(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return resultOutput(ctx, r), nil
}

// HistoryView is one kept rendered configuration.
type HistoryView struct {
	ID        int64             `json:"id"`
	Checksum  string            `json:"checksum"`
	Backend   string            `json:"backend"`
	Rendered  string            `json:"rendered"`
	Templates []string          `json:"templates"`
	Vars      map[string]string `json:"vars"`
	Overrides map[string]any    `json:"overrides"`
	CreatedAt time.Time         `json:"created_at"`
}

// HistoryAnswer lists a device's kept configurations, newest first.
type HistoryAnswer struct {
	History []HistoryView `json:"history"`
}

func (a *API) configHistory(ctx context.Context, in *DeviceIDInput) (*struct{ Body HistoryAnswer }, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	hs, err := c.History(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	out := HistoryAnswer{History: make([]HistoryView, 0, len(hs))}
	for _, h := range hs {
		v := HistoryView{ID: h.ID, Checksum: h.Checksum, Backend: h.Backend, Rendered: string(h.Rendered),
			Templates: h.Templates, Vars: h.Vars, Overrides: h.Overrides, CreatedAt: h.CreatedAt}
		if v.Templates == nil {
			v.Templates = []string{}
		}
		if v.Vars == nil {
			v.Vars = map[string]string{}
		}
		if v.Overrides == nil {
			v.Overrides = map[string]any{}
		}
		out.History = append(out.History, v)
	}
	return &struct{ Body HistoryAnswer }{Body: out}, nil
}

func (a *API) restoreDeviceConfig(ctx context.Context, in *struct {
	DeviceIDInput
	Entry int64 `path:"entry" doc:"History entry id."`
}) (*configOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	setTarget(ctx, in.ID)
	r, err := c.Restore(ctx, in.ID, in.Entry)
	if err != nil {
		return nil, err
	}
	return resultOutput(ctx, r), nil
}

// ListConfigsInput selects configurations.
type ListConfigsInput struct {
	Status     string `query:"status" enum:"modified,applied,error,deactivating,deactivated," doc:"Only this status."`
	NotApplied bool   `query:"not_applied" doc:"Only those whose status is not applied."`
	After      string `query:"after" doc:"Cursor: device ids after this one."`
	Limit      int    `query:"limit" minimum:"0" maximum:"1000" doc:"At most this many (default 100)."`
}

// ConfigListItem is one device's configuration status.
type ConfigListItem struct {
	DeviceID    string    `json:"device_id"`
	DeviceType  string    `json:"device_type"`
	Group       string    `json:"group,omitempty"`
	Backend     string    `json:"backend"`
	Status      string    `json:"status"`
	Error       string    `json:"error,omitempty"`
	StatusSince time.Time `json:"status_since"`
	Checksum    string    `json:"checksum"`
}

// ConfigList is the answer of GET /api/v1/configs.
type ConfigList struct {
	Configs []ConfigListItem `json:"configs"`
	Next    string           `json:"next,omitempty" doc:"Pass as after for the next page."`
}

func (a *API) listConfigs(ctx context.Context, in *ListConfigsInput) (*struct{ Body ConfigList }, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	limit := in.Limit
	if limit == 0 {
		limit = 100
	}
	rows, err := c.List(ctx, deviceconfig.ListQuery{Status: deviceconfig.Status(in.Status), NotApplied: in.NotApplied, After: in.After, Limit: limit})
	if err != nil {
		return nil, err
	}
	out := ConfigList{Configs: make([]ConfigListItem, 0, len(rows))}
	for _, r := range rows {
		out.Configs = append(out.Configs, ConfigListItem{DeviceID: r.DeviceID, DeviceType: r.Device.Type, Group: r.Device.Group, Backend: r.Backend,
			Status: string(r.Status), Error: r.Error, StatusSince: r.StatusSince, Checksum: r.Checksum})
	}
	if len(rows) == limit {
		out.Next = rows[len(rows)-1].DeviceID
	}
	return &struct{ Body ConfigList }{Body: out}, nil
}

// ConditionalInput carries If-None-Match.
type ConditionalInput struct {
	IfNoneMatch string `header:"If-None-Match" doc:"The checksum (ETag) the device has; unchanged: 304."`
	UserAgent   string `header:"User-Agent"`
}

// rawOutput is a body of bytes with its validators.
type rawOutput struct {
	Status      int
	ETag        string `header:"ETag"`
	ContentType string `header:"Content-Type"`
	Checksum    string `header:"X-Config-Checksum"`
	Body        []byte
}

// etagMatches reports whether If-None-Match names the checksum (quoted or
// not, in a list, or *).
func etagMatches(h, sum string) bool {
	if h == "" {
		return false
	}
	for _, p := range strings.Split(h, ",") {
		p = strings.TrimSpace(p)
		p = strings.TrimPrefix(p, "W/")
		if p == "*" || strings.Trim(p, `"`) == sum {
			return true
		}
	}
	return false
}

func (a *API) deviceConfigChecksum(ctx context.Context, in *ConditionalInput) (*rawOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	dev := infoFrom(ctx).device
	sum, err := c.Checksum(dev.id)
	if err != nil {
		return nil, err
	}
	etag := `"` + sum + `"`
	if etagMatches(in.IfNoneMatch, sum) {
		return &rawOutput{Status: http.StatusNotModified, ETag: etag}, nil
	}
	if err := c.Requested(ctx, events.ChecksumRequested, dev.id, dev.typ, a.requestArgs(ctx, sum, in.UserAgent)); err != nil {
		return nil, err
	}
	return &rawOutput{Status: http.StatusOK, ETag: etag, ContentType: "text/plain; charset=utf-8", Body: []byte(sum)}, nil
}

func (a *API) requestArgs(ctx context.Context, sum, ua string) *events.ConfigRequestArgs {
	args := &events.ConfigRequestArgs{Checksum: sum, Transport: "http", UserAgent: ua}
	if r := infoFrom(ctx).r; r != nil {
		args.RemoteAddr = r.RemoteAddr
	}
	return args
}

func (a *API) deviceConfigDownload(ctx context.Context, in *ConditionalInput) (*rawOutput, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	dev := infoFrom(ctx).device
	// The checksum from memory answers a poll without touching the store.
	if sum, err := c.Checksum(dev.id); err == nil && etagMatches(in.IfNoneMatch, sum) {
		return &rawOutput{Status: http.StatusNotModified, ETag: `"` + sum + `"`}, nil
	}
	cfg, ct, err := c.Download(ctx, dev.id)
	if err != nil {
		return nil, err
	}
	etag := `"` + cfg.Checksum + `"`
	if etagMatches(in.IfNoneMatch, cfg.Checksum) {
		return &rawOutput{Status: http.StatusNotModified, ETag: etag}, nil
	}
	if err := c.Requested(ctx, events.ConfigDownloadRequested, dev.id, dev.typ, a.requestArgs(ctx, cfg.Checksum, in.UserAgent)); err != nil {
		return nil, err
	}
	return &rawOutput{Status: http.StatusOK, ETag: etag, ContentType: ct, Checksum: cfg.Checksum, Body: cfg.Rendered}, nil
}

// ConfigStatusRequest is what a device reports of a configuration.
type ConfigStatusRequest struct {
	Checksum string `json:"checksum" minLength:"1" maxLength:"128" doc:"The checksum of the configuration the device tried to apply."`
	Status   string `json:"status" enum:"applied,error"`
	Error    string `json:"error,omitempty" maxLength:"4096" doc:"Why it failed (status error)."`
}

// ConfigStatusAnswer is the answer to a device's report.
type ConfigStatusAnswer struct {
	Status string `json:"status" doc:"The configuration's status now."`
}

func (a *API) deviceConfigStatus(ctx context.Context, in *struct{ Body ConfigStatusRequest }) (*struct{ Body ConfigStatusAnswer }, error) {
	c, err := a.config()
	if err != nil {
		return nil, err
	}
	dev := infoFrom(ctx).device
	r := deviceconfig.Report{Checksum: in.Body.Checksum, Applied: in.Body.Status == "applied", Error: in.Body.Error}
	if err := c.RecordReport(ctx, dev.id, dev.typ, r, nil); err != nil {
		return nil, err
	}
	st := "error"
	if r.Applied {
		st = "applied"
	}
	if cur, err := c.Get(ctx, dev.id); err == nil {
		st = string(cur.Status)
	}
	return &struct{ Body ConfigStatusAnswer }{Body: ConfigStatusAnswer{Status: st}}, nil
}
