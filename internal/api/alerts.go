package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/alerts"
)

// Alerts lists and handles alerts, rules and silences (*alerts.Service).
type Alerts interface {
	List(ctx context.Context, q alerts.Query) ([]alerts.Alert, error)
	Get(ctx context.Context, id string) (*alerts.Alert, error)
	Acknowledge(ctx context.Context, id, by, note string) (*alerts.Alert, error)
	Clear(ctx context.Context, id, by, note string) (*alerts.Alert, error)
	Rules() []alerts.RuleInfo
	Rule(name string) (alerts.RuleInfo, error)
	CreateRule(ctx context.Context, spec alerts.RuleSpec, by string) (alerts.RuleInfo, error)
	DeleteRule(ctx context.Context, name string) error
	TestRule(ctx context.Context, name string, spec *alerts.RuleSpec, deviceID string, since time.Duration) (*alerts.TestResult, error)
	Silence(ctx context.Context, spec alerts.SilenceSpec) (*alerts.Silence, error)
	Silences() []alerts.Silence
	Unsilence(ctx context.Context, id string) error
}

func (a *API) registerAlerts() {
	register(a, permViewer, huma.Operation{
		OperationID: "listAlerts", Method: http.MethodGet, Path: "/api/v1/alerts", Tags: []string{"alerts"},
		Summary:     "List alerts",
		Description: "Newest first, filtered by state (pending, active, acknowledged, cleared, or open for the first three), severity, device, device type and rule.",
	}, a.listAlerts)
	register(a, permViewer, huma.Operation{
		OperationID: "getAlert", Method: http.MethodGet, Path: "/api/v1/alerts/{alert_id}", Tags: []string{"alerts"},
		Summary: "Get an alert",
	}, a.getAlert)
	register(a, permOperator, huma.Operation{
		OperationID: "acknowledgeAlert", Method: http.MethodPost, Path: "/api/v1/alerts/{alert_id}/acknowledge", Tags: []string{"alerts"},
		Summary:     "Acknowledge an active alert",
		Description: "It stays open (and is counted when its rule fires again) until its condition ends or it is cleared. Emits alert_acknowledged.",
	}, a.acknowledgeAlert)
	register(a, permOperator, huma.Operation{
		OperationID: "clearAlert", Method: http.MethodPost, Path: "/api/v1/alerts/{alert_id}/clear", Tags: []string{"alerts"},
		Summary:     "Clear an open alert by hand",
		Description: "Its rule does not fire again for the device until the condition has ended once. Emits alert_cleared.",
	}, a.clearAlert)
	register(a, permViewer, huma.Operation{
		OperationID: "listAlertRules", Method: http.MethodGet, Path: "/api/v1/alert-rules", Tags: []string{"alerts"},
		Summary: "List alert rules", Description: "The rules of the configuration file (source config) and those created over the API (source api).",
	}, a.listAlertRules)
	register(a, permViewer, huma.Operation{
		OperationID: "getAlertRule", Method: http.MethodGet, Path: "/api/v1/alert-rules/{rule}", Tags: []string{"alerts"},
		Summary: "Get an alert rule",
	}, a.getAlertRule)
	register(a, permOperator, huma.Operation{
		OperationID: "createAlertRule", Method: http.MethodPost, Path: "/api/v1/alert-rules", Tags: []string{"alerts"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Create an alert rule",
		Description: "Checked by the same parser as the configuration file's alerts.rules; evaluated from the next event on. " +
			"Conditions: `temperature > 80`, `humidity outside 20..80`, `rate(temperature) > 2/m`, `offline > 5m`, " +
			"`disconnects >= 5 in 10m`, `status == error`, `rejected > 10 in 1m`, `nodata(temperature) > 15m`.",
	}, a.createAlertRule)
	register(a, permOperator, huma.Operation{
		OperationID: "deleteAlertRule", Method: http.MethodDelete, Path: "/api/v1/alert-rules/{rule}", Tags: []string{"alerts"},
		Summary:     "Delete an alert rule created over the API",
		Description: "Its open alerts are cleared. Rules of the configuration file are refused (409 read_only).",
	}, a.deleteAlertRule)
	register(a, permViewer, huma.Operation{
		OperationID: "testAlertRule", Method: http.MethodPost, Path: "/api/v1/alert-rules/test", Tags: []string{"alerts"},
		Summary: "Test a rule against a device's readings",
		Description: "Runs a rule (by name, or given in full) over the device's stored readings of the last hours (default 24), " +
			"with fresh state and no flood control or silences, and says how often it would have fired. Reading and nodata rules only.",
	}, a.testAlertRule)
	register(a, permViewer, huma.Operation{
		OperationID: "listAlertSilences", Method: http.MethodGet, Path: "/api/v1/alert-silences", Tags: []string{"alerts"},
		Summary: "List the silences in force",
	}, a.listSilences)
	register(a, permOperator, huma.Operation{
		OperationID: "createAlertSilence", Method: http.MethodPost, Path: "/api/v1/alert-silences", Tags: []string{"alerts"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Silence a rule, a device, or a rule on a device for a time",
		Description:   "No new alert is raised for what the silence covers, and open alerts are not announced again (alert_updated); they still clear.",
	}, a.createSilence)
	register(a, permOperator, huma.Operation{
		OperationID: "deleteAlertSilence", Method: http.MethodDelete, Path: "/api/v1/alert-silences/{silence_id}", Tags: []string{"alerts"},
		Summary: "End a silence",
	}, a.deleteSilence)
}

// alertsError maps the alerts' errors (errors.go calls it).
func alertsError(err error) (int, ErrorDetail, bool) {
	var re *alerts.RuleError
	switch {
	case errors.As(err, &re):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: err.Error(), Field: re.Field}, true
	case errors.Is(err, alerts.ErrInvalid):
		return http.StatusBadRequest, ErrorDetail{Code: "invalid_argument", Message: err.Error()}, true
	case errors.Is(err, alerts.ErrNotFound):
		return http.StatusNotFound, ErrorDetail{Code: "not_found", Message: err.Error()}, true
	case errors.Is(err, alerts.ErrExists):
		return http.StatusConflict, ErrorDetail{Code: "already_exists", Message: err.Error(), Field: "name"}, true
	case errors.Is(err, alerts.ErrState):
		return http.StatusConflict, ErrorDetail{Code: "conflict", Message: err.Error()}, true
	case errors.Is(err, alerts.ErrReadOnly):
		return http.StatusConflict, ErrorDetail{Code: "read_only", Message: err.Error()}, true
	}
	return 0, ErrorDetail{}, false
}

// caller names who asks, for the alerts' acknowledged_by and the like.
func caller(ctx context.Context) string {
	if t := infoFrom(ctx).token; t != nil {
		if t.Name != "" {
			return t.Name
		}
		return t.ID
	}
	return ""
}

type listAlertsInput struct {
	State      string `query:"state" doc:"Comma separated: pending, active, acknowledged, cleared, open." example:"open"`
	Severity   string `query:"severity" enum:"critical,major,minor,warning,info,"`
	DeviceID   string `query:"device_id" maxLength:"128"`
	DeviceType string `query:"type" maxLength:"64"`
	Rule       string `query:"rule" maxLength:"64"`
	Limit      int    `query:"limit" minimum:"0" maximum:"1000" doc:"Default 100."`
}

// AlertList is the answer of GET /api/v1/alerts.
type AlertList struct {
	Alerts []alerts.Alert `json:"alerts"`
}

type alertListOutput struct{ Body AlertList }

func (a *API) listAlerts(ctx context.Context, in *listAlertsInput) (*alertListOutput, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	q := alerts.Query{Severity: in.Severity, DeviceID: in.DeviceID, DeviceType: in.DeviceType, Rule: in.Rule, Limit: in.Limit}
	if in.State != "" {
		q.States = strings.Split(in.State, ",")
	}
	list, err := a.deps.Alerts.List(ctx, q)
	if err != nil {
		return nil, err
	}
	return &alertListOutput{Body: AlertList{Alerts: list}}, nil
}

// AlertIDInput is the alert in an operation's path.
type AlertIDInput struct {
	ID string `path:"alert_id" maxLength:"64" example:"alr_3f2a9c1b7d4e5f60a1b2"`
}

// AlertAnswer is the answer of the operations on one alert.
type AlertAnswer struct {
	Alert alerts.Alert `json:"alert"`
}

type alertOutput struct{ Body AlertAnswer }

func (a *API) getAlert(ctx context.Context, in *AlertIDInput) (*alertOutput, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	al, err := a.deps.Alerts.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &alertOutput{Body: AlertAnswer{Alert: *al}}, nil
}

// AlertNote is the optional body of acknowledge and clear.
type AlertNote struct {
	Note string `json:"note,omitempty" maxLength:"1024" doc:"What the operator says about it."`
}

type alertNoteInput struct {
	AlertIDInput
	Body *AlertNote
}

func (in *alertNoteInput) note() string {
	if in.Body == nil {
		return ""
	}
	return in.Body.Note
}

func (a *API) acknowledgeAlert(ctx context.Context, in *alertNoteInput) (*alertOutput, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	setTarget(ctx, in.ID)
	al, err := a.deps.Alerts.Acknowledge(ctx, in.ID, caller(ctx), in.note())
	if err != nil {
		return nil, err
	}
	return &alertOutput{Body: AlertAnswer{Alert: *al}}, nil
}

func (a *API) clearAlert(ctx context.Context, in *alertNoteInput) (*alertOutput, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	setTarget(ctx, in.ID)
	al, err := a.deps.Alerts.Clear(ctx, in.ID, caller(ctx), in.note())
	if err != nil {
		return nil, err
	}
	return &alertOutput{Body: AlertAnswer{Alert: *al}}, nil
}

// AlertRuleSpec is a rule as the API takes it (the same fields as an entry
// of alerts.rules in the configuration file, with its device type).
type AlertRuleSpec struct {
	Name       string            `json:"name" maxLength:"64" example:"too_hot"`
	DeviceType string            `json:"device_type,omitempty" maxLength:"64" example:"Thermostat" doc:"Required to create a rule."`
	When       string            `json:"when" maxLength:"512" example:"temperature > 80" doc:"The condition."`
	Clear      string            `json:"clear,omitempty" maxLength:"512" example:"temperature < 75" doc:"Reading rules: the condition that ends the alert (hysteresis); default: when no longer holds."`
	For        string            `json:"for,omitempty" maxLength:"32" example:"5m" doc:"Reading rules: how long (in the readings' own times) the condition must hold; pending meanwhile."`
	Count      string            `json:"count,omitempty" maxLength:"32" example:"3 in 10m" doc:"Reading rules: N readings within D."`
	Severity   string            `json:"severity,omitempty" enum:"critical,major,minor,warning,info," doc:"Default warning."`
	Message    string            `json:"message,omitempty" maxLength:"1024" example:"{{.Device.Name}} is at {{.Value}}°C" doc:"Go template with .Device (.ID .Name .Type .Group .Status .Tags .Metadata), .Value, .Rule, .Severity, .Labels."`
	Labels     map[string]string `json:"labels,omitempty"`
	Repeat     string            `json:"repeat,omitempty" maxLength:"32" example:"10m" doc:"Least time between two alert_updated events of an alert (default 1m; 0s: at every firing)."`
}

func (s *AlertRuleSpec) spec() alerts.RuleSpec {
	return alerts.RuleSpec{Name: s.Name, DeviceType: s.DeviceType, When: s.When, Clear: s.Clear, For: s.For, Count: s.Count,
		Severity: s.Severity, Message: s.Message, Labels: s.Labels, Repeat: s.Repeat}
}

// AlertRule is a rule as the API shows it.
type AlertRule struct {
	AlertRuleSpec
	Kind   string `json:"kind" enum:"reading,offline,flapping,status,rejected,nodata"`
	Source string `json:"source" enum:"config,api"`
}

func ruleOut(r alerts.RuleInfo) AlertRule {
	s := r.RuleSpec
	return AlertRule{AlertRuleSpec: AlertRuleSpec{Name: s.Name, DeviceType: s.DeviceType, When: s.When, Clear: s.Clear, For: s.For,
		Count: s.Count, Severity: s.Severity, Message: s.Message, Labels: s.Labels, Repeat: s.Repeat}, Kind: r.Kind, Source: r.Source}
}

// AlertRuleList is the answer of GET /api/v1/alert-rules.
type AlertRuleList struct {
	Rules []AlertRule `json:"rules"`
}

type alertRuleListOutput struct{ Body AlertRuleList }

func (a *API) listAlertRules(ctx context.Context, _ *struct{}) (*alertRuleListOutput, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	out := AlertRuleList{Rules: []AlertRule{}}
	for _, r := range a.deps.Alerts.Rules() {
		out.Rules = append(out.Rules, ruleOut(r))
	}
	return &alertRuleListOutput{Body: out}, nil
}

// AlertRuleInput is the rule in an operation's path.
type AlertRuleInput struct {
	Rule string `path:"rule" maxLength:"64"`
}

// AlertRuleAnswer is the answer of the operations on one rule.
type AlertRuleAnswer struct {
	Rule AlertRule `json:"rule"`
}

type alertRuleOutput struct{ Body AlertRuleAnswer }

func (a *API) getAlertRule(ctx context.Context, in *AlertRuleInput) (*alertRuleOutput, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	r, err := a.deps.Alerts.Rule(in.Rule)
	if err != nil {
		return nil, err
	}
	return &alertRuleOutput{Body: AlertRuleAnswer{Rule: ruleOut(r)}}, nil
}

type createAlertRuleInput struct{ Body AlertRuleSpec }

func (a *API) createAlertRule(ctx context.Context, in *createAlertRuleInput) (*alertRuleOutput, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	setTarget(ctx, in.Body.Name)
	r, err := a.deps.Alerts.CreateRule(ctx, in.Body.spec(), caller(ctx))
	if err != nil {
		return nil, err
	}
	return &alertRuleOutput{Body: AlertRuleAnswer{Rule: ruleOut(r)}}, nil
}

func (a *API) deleteAlertRule(ctx context.Context, in *AlertRuleInput) (*struct{ Body DeletedAnswer }, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	setTarget(ctx, in.Rule)
	if err := a.deps.Alerts.DeleteRule(ctx, in.Rule); err != nil {
		return nil, err
	}
	return &struct{ Body DeletedAnswer }{Body: DeletedAnswer{Deleted: in.Rule}}, nil
}

// AlertRuleTest asks how a rule would have behaved.
type AlertRuleTest struct {
	Name     string         `json:"name,omitempty" maxLength:"64" doc:"A rule by name; or give rule."`
	Rule     *AlertRuleSpec `json:"rule,omitempty" doc:"A rule to try before creating it (its device_type may be left out)."`
	DeviceID string         `json:"device_id" maxLength:"128"`
	Hours    float64        `json:"hours,omitempty" minimum:"0" maximum:"720" doc:"How far back to read (default 24)."`
}

type testAlertRuleInput struct{ Body AlertRuleTest }

type testAlertRuleOutput struct{ Body alerts.TestResult }

func (a *API) testAlertRule(ctx context.Context, in *testAlertRuleInput) (*testAlertRuleOutput, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	b := in.Body
	if (b.Name == "") == (b.Rule == nil) {
		return nil, invalidArg("name", "give either name or rule")
	}
	if b.DeviceID == "" {
		return nil, invalidArg("device_id", "required")
	}
	var spec *alerts.RuleSpec
	if b.Rule != nil {
		s := b.Rule.spec()
		spec = &s
	}
	res, err := a.deps.Alerts.TestRule(ctx, b.Name, spec, b.DeviceID, time.Duration(b.Hours*float64(time.Hour)))
	if err != nil {
		return nil, err
	}
	return &testAlertRuleOutput{Body: *res}, nil
}

// SilenceList is the answer of GET /api/v1/alert-silences.
type SilenceList struct {
	Silences []alerts.Silence `json:"silences"`
}

type silenceListOutput struct{ Body SilenceList }

func (a *API) listSilences(ctx context.Context, _ *struct{}) (*silenceListOutput, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	out := SilenceList{Silences: a.deps.Alerts.Silences()}
	if out.Silences == nil {
		out.Silences = []alerts.Silence{}
	}
	return &silenceListOutput{Body: out}, nil
}

// SilenceSpec asks for a silence.
type SilenceSpec struct {
	Rule     string `json:"rule,omitempty" maxLength:"64"`
	DeviceID string `json:"device_id,omitempty" maxLength:"128"`
	Duration string `json:"duration" maxLength:"32" example:"2h" doc:"How long: 90s, 30m, 2h (at most 720h)."`
	Note     string `json:"note,omitempty" maxLength:"1024"`
}

type createSilenceInput struct{ Body SilenceSpec }

// SilenceAnswer is the answer of POST /api/v1/alert-silences.
type SilenceAnswer struct {
	Silence alerts.Silence `json:"silence"`
}

type silenceOutput struct{ Body SilenceAnswer }

func (a *API) createSilence(ctx context.Context, in *createSilenceInput) (*silenceOutput, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	d, err := time.ParseDuration(in.Body.Duration)
	if err != nil {
		return nil, invalidArg("duration", "%q is not a duration (like 30m, 2h)", in.Body.Duration)
	}
	sl, err := a.deps.Alerts.Silence(ctx, alerts.SilenceSpec{Rule: in.Body.Rule, DeviceID: in.Body.DeviceID, For: d, Note: in.Body.Note, By: caller(ctx)})
	if err != nil {
		return nil, err
	}
	setTarget(ctx, sl.ID)
	return &silenceOutput{Body: SilenceAnswer{Silence: *sl}}, nil
}

type silenceIDInput struct {
	ID string `path:"silence_id" maxLength:"64"`
}

func (a *API) deleteSilence(ctx context.Context, in *silenceIDInput) (*struct{ Body DeletedAnswer }, error) {
	if a.deps.Alerts == nil {
		return nil, errNotImplemented
	}
	setTarget(ctx, in.ID)
	if err := a.deps.Alerts.Unsilence(ctx, in.ID); err != nil {
		return nil, err
	}
	return &struct{ Body DeletedAnswer }{Body: DeletedAnswer{Deleted: in.ID}}, nil
}
