package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Alert is an alert: a problem a rule found on a device.
type Alert struct {
	ID         string            `json:"id"`
	Rule       string            `json:"rule"`
	DeviceID   string            `json:"device_id"`
	DeviceType string            `json:"device_type"`
	Severity   string            `json:"severity"`
	State      string            `json:"state"` // pending, active, acknowledged, cleared
	Message    string            `json:"message,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Value      any               `json:"value,omitempty"`
	Count      int64             `json:"count"`
	StartedAt  time.Time         `json:"started_at"`
	RaisedAt   *time.Time        `json:"raised_at,omitempty"`
	LastAt     time.Time         `json:"last_at"`
	AckAt      *time.Time        `json:"acknowledged_at,omitempty"`
	AckBy      string            `json:"acknowledged_by,omitempty"`
	AckNote    string            `json:"acknowledged_note,omitempty"`
	ClearedAt  *time.Time        `json:"cleared_at,omitempty"`
	ClearedBy  string            `json:"cleared_by,omitempty"`
	ClearNote  string            `json:"cleared_note,omitempty"`
	UpdatedAt  time.Time         `json:"updated_at"`
}

// AlertQuery filters alerts; zero fields select all.
type AlertQuery struct {
	States     []string // pending, active, acknowledged, cleared, open
	Severity   string
	DeviceID   string
	DeviceType string
	Rule       string
	Limit      int
}

// Alerts lists alerts, newest first.
func (c *Client) Alerts(ctx context.Context, q AlertQuery) ([]Alert, error) {
	v := url.Values{}
	if len(q.States) > 0 {
		v.Set("state", strings.Join(q.States, ","))
	}
	for k, s := range map[string]string{"severity": q.Severity, "device_id": q.DeviceID, "type": q.DeviceType, "rule": q.Rule} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	var out struct {
		Alerts []Alert `json:"alerts"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/alerts", v, nil, &out); err != nil {
		return nil, err
	}
	return out.Alerts, nil
}

// Alert returns one alert.
func (c *Client) Alert(ctx context.Context, id string) (*Alert, error) {
	var out struct {
		Alert Alert `json:"alert"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/alerts/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out.Alert, nil
}

func (c *Client) alertAction(ctx context.Context, id, action, note string) (*Alert, error) {
	var out struct {
		Alert Alert `json:"alert"`
	}
	body := map[string]string{}
	if note != "" {
		body["note"] = note
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/alerts/"+url.PathEscape(id)+"/"+action, nil, body, &out); err != nil {
		return nil, err
	}
	return &out.Alert, nil
}

// AcknowledgeAlert acknowledges an active alert, with a note.
func (c *Client) AcknowledgeAlert(ctx context.Context, id, note string) (*Alert, error) {
	return c.alertAction(ctx, id, "acknowledge", note)
}

// ClearAlert clears an open alert by hand, with a note.
func (c *Client) ClearAlert(ctx context.Context, id, note string) (*Alert, error) {
	return c.alertAction(ctx, id, "clear", note)
}

// AlertRule is an alert rule (the fields of an entry of alerts.rules in the
// configuration file, with its device type).
type AlertRule struct {
	Name       string            `json:"name"`
	DeviceType string            `json:"device_type,omitempty"`
	When       string            `json:"when"`
	Clear      string            `json:"clear,omitempty"`
	For        string            `json:"for,omitempty"`
	Count      string            `json:"count,omitempty"`
	Severity   string            `json:"severity,omitempty"`
	Message    string            `json:"message,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	Repeat     string            `json:"repeat,omitempty"`
	// Set by the hub.
	Kind   string `json:"kind,omitempty"`
	Source string `json:"source,omitempty"` // config or api
}

// AlertRules lists the rules.
func (c *Client) AlertRules(ctx context.Context) ([]AlertRule, error) {
	var out struct {
		Rules []AlertRule `json:"rules"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/alert-rules", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Rules, nil
}

// CreateAlertRule creates a rule.
func (c *Client) CreateAlertRule(ctx context.Context, r AlertRule) (*AlertRule, error) {
	r.Kind, r.Source = "", ""
	var out struct {
		Rule AlertRule `json:"rule"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/alert-rules", nil, r, &out); err != nil {
		return nil, err
	}
	return &out.Rule, nil
}

// DeleteAlertRule deletes a rule created over the API.
func (c *Client) DeleteAlertRule(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/alert-rules/"+url.PathEscape(name), nil, nil, nil)
}

// AlertRuleTest is how a rule would have behaved on a device's readings.
type AlertRuleTest struct {
	Rule      string    `json:"rule"`
	DeviceID  string    `json:"device_id"`
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	Readings  int       `json:"readings"`
	Fired     int       `json:"fired"`
	Cleared   int       `json:"cleared"`
	Refired   int       `json:"refired"`
	OpenAtEnd bool      `json:"open_at_end"`
	Firings   []struct {
		At      time.Time  `json:"at"`
		Value   any        `json:"value,omitempty"`
		Cleared *time.Time `json:"cleared,omitempty"`
	} `json:"firings"`
	Truncated bool `json:"truncated,omitempty"`
}

// TestAlertRule runs a rule (by name, or rule when name is "") over a
// device's readings of the last hours (0: 24).
func (c *Client) TestAlertRule(ctx context.Context, name string, rule *AlertRule, deviceID string, hours float64) (*AlertRuleTest, error) {
	body := map[string]any{"device_id": deviceID}
	if name != "" {
		body["name"] = name
	}
	if rule != nil {
		r := *rule
		r.Kind, r.Source = "", ""
		body["rule"] = r
	}
	if hours > 0 {
		body["hours"] = hours
	}
	var out AlertRuleTest
	if err := c.do(ctx, http.MethodPost, "/api/v1/alert-rules/test", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Silence keeps a rule, a device, or a rule on a device quiet until Until.
type Silence struct {
	ID        string    `json:"id"`
	Rule      string    `json:"rule,omitempty"`
	DeviceID  string    `json:"device_id,omitempty"`
	Until     time.Time `json:"until"`
	Note      string    `json:"note,omitempty"`
	CreatedBy string    `json:"created_by,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// Silence silences a rule and/or a device for d.
func (c *Client) Silence(ctx context.Context, rule, deviceID string, d time.Duration, note string) (*Silence, error) {
	body := map[string]string{"duration": d.String()}
	for k, v := range map[string]string{"rule": rule, "device_id": deviceID, "note": note} {
		if v != "" {
			body[k] = v
		}
	}
	var out struct {
		Silence Silence `json:"silence"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/alert-silences", nil, body, &out); err != nil {
		return nil, err
	}
	return &out.Silence, nil
}

// Silences lists the silences in force.
func (c *Client) Silences(ctx context.Context) ([]Silence, error) {
	var out struct {
		Silences []Silence `json:"silences"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/alert-silences", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Silences, nil
}

// Unsilence ends a silence.
func (c *Client) Unsilence(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/alert-silences/"+url.PathEscape(id), nil, nil, nil)
}
