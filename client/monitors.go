package client

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MonitorSpec defines a push monitor (seed 002's monitor attributes).
// Zero values take the hub's defaults: method PUT, timeouts 5000 ms,
// batch_size 100, batch_duration 10 s, compression none, format json,
// ack off.
type MonitorSpec struct {
	Topics              []string `json:"topics"`
	Transport           string   `json:"transport"` // http or tcp
	URL                 string   `json:"url,omitempty"`
	Method              string   `json:"method,omitempty"`
	BasicAuth           string   `json:"basic_auth,omitempty"` // user:password
	ConnectTimeoutMS    int      `json:"connect_timeout_ms,omitempty"`
	ResponseTimeoutMS   int      `json:"response_timeout_ms,omitempty"`
	Ack                 string   `json:"ack,omitempty"` // tcp: explicit or off
	BatchSize           int      `json:"batch_size,omitempty"`
	BatchDuration       *float64 `json:"batch_duration,omitempty"` // seconds
	Compression         string   `json:"compression,omitempty"`    // none, zlib (gzip means zlib)
	Format              string   `json:"format,omitempty"`         // json or xml
	AutoReplayOnConnect bool     `json:"auto_replay_on_connect,omitempty"`
	Description         string   `json:"description,omitempty"`
}

// Monitor is a push monitor: its definition and state (the seed's
// get_metadata).
type Monitor struct {
	ID                  string     `json:"id"`
	Topics              []string   `json:"topics"`
	Transport           string     `json:"transport"`
	URL                 string     `json:"url,omitempty"`
	Method              string     `json:"method,omitempty"`
	BasicAuth           bool       `json:"basic_auth"`
	ConnectTimeoutMS    int        `json:"connect_timeout_ms,omitempty"`
	ResponseTimeoutMS   int        `json:"response_timeout_ms,omitempty"`
	Ack                 string     `json:"ack,omitempty"`
	BatchSize           int        `json:"batch_size"`
	BatchDuration       float64    `json:"batch_duration"`
	Compression         string     `json:"compression"`
	Format              string     `json:"format"`
	AutoReplayOnConnect bool       `json:"auto_replay_on_connect"`
	Description         string     `json:"description,omitempty"`
	Status              string     `json:"status"` // CONNECTING, ACTIVE, INACTIVE, SUSPENDED, DISABLED
	StatusReason        string     `json:"status_reason,omitempty"`
	LastConnect         *time.Time `json:"last_connect,omitempty"`
	LastSent            *time.Time `json:"last_sent,omitempty"`
	FailingSince        *time.Time `json:"failing_since,omitempty"`
	Cursor              int64      `json:"cursor"`
	Backlog             int64      `json:"backlog"`
	LagSeconds          float64    `json:"lag_seconds"`
	CreatedAt           time.Time  `json:"created_at"`
	UpdatedAt           time.Time  `json:"updated_at"`
}

// CreatedMonitor is a new monitor with its secret (http) or stream token
// (tcp), shown only this once.
type CreatedMonitor struct {
	Monitor Monitor `json:"monitor"`
	Secret  string  `json:"secret,omitempty"`
	Token   string  `json:"token,omitempty"`
}

// CreateMonitor creates a monitor.
func (c *Client) CreateMonitor(ctx context.Context, spec MonitorSpec) (*CreatedMonitor, error) {
	var out CreatedMonitor
	if err := c.do(ctx, http.MethodPost, "/api/v1/monitors", nil, spec, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateHTTPMonitor creates an HTTP monitor of topics that sends to url
// (the seed's create_http_monitor); spec may set the other fields.
func (c *Client) CreateHTTPMonitor(ctx context.Context, topics []string, url string, spec MonitorSpec) (*CreatedMonitor, error) {
	spec.Topics, spec.Transport, spec.URL = topics, "http", url
	return c.CreateMonitor(ctx, spec)
}

// CreateTCPMonitor creates a tcp (stream) monitor of topics (the seed's
// create_tcp_monitor); spec may set the other fields.
func (c *Client) CreateTCPMonitor(ctx context.Context, topics []string, spec MonitorSpec) (*CreatedMonitor, error) {
	spec.Topics, spec.Transport = topics, "tcp"
	return c.CreateMonitor(ctx, spec)
}

// Monitors lists the monitors matching condition ("" for all), e.g.
// `status = "DISABLED"` or `transport = "http" and status != "ACTIVE"`.
func (c *Client) Monitors(ctx context.Context, condition string) ([]Monitor, error) {
	q := url.Values{}
	set(q, "condition", condition)
	var out struct {
		Monitors []Monitor `json:"monitors"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/monitors", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Monitors, nil
}

// MonitorByTopics returns the monitor whose topics are exactly topics (in
// any order), or nil if there is none (the seed's get_monitor).
func (c *Client) MonitorByTopics(ctx context.Context, topics []string) (*Monitor, error) {
	q := url.Values{}
	q.Set("topics", strings.Join(topics, ","))
	var out struct {
		Monitors []Monitor `json:"monitors"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/monitors", q, nil, &out); err != nil {
		return nil, err
	}
	if len(out.Monitors) == 0 {
		return nil, nil
	}
	return &out.Monitors[0], nil
}

// Monitor returns a monitor's metadata.
func (c *Client) Monitor(ctx context.Context, id string) (*Monitor, error) {
	var out struct {
		Monitor Monitor `json:"monitor"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/monitors/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out.Monitor, nil
}

// UpdateMonitor changes the fields of patch that are set (a JSON object
// of MonitorSpec fields); a DISABLED monitor is enabled again.
func (c *Client) UpdateMonitor(ctx context.Context, id string, patch map[string]any) (*Monitor, error) {
	var out struct {
		Monitor Monitor `json:"monitor"`
	}
	if err := c.do(ctx, http.MethodPatch, "/api/v1/monitors/"+url.PathEscape(id), nil, patch, &out); err != nil {
		return nil, err
	}
	return &out.Monitor, nil
}

// EnableMonitor enables a DISABLED monitor again.
func (c *Client) EnableMonitor(ctx context.Context, id string) (*Monitor, error) {
	var out struct {
		Monitor Monitor `json:"monitor"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/monitors/"+url.PathEscape(id)+"/enable", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out.Monitor, nil
}

// DeleteMonitor deletes a monitor.
func (c *Client) DeleteMonitor(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/monitors/"+url.PathEscape(id), nil, nil, nil)
}

// RotateMonitorSecret gives an http monitor a new signing secret; the old
// one keeps signing for overlap (0: the hub's default; negative: stops at
// once).
func (c *Client) RotateMonitorSecret(ctx context.Context, id string, overlap time.Duration) (string, error) {
	body := map[string]string{}
	switch {
	case overlap > 0:
		body["overlap"] = overlap.String()
	case overlap < 0:
		body["overlap"] = "0s"
	}
	var out struct {
		Secret string `json:"secret"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/monitors/"+url.PathEscape(id)+"/rotate-secret", nil, body, &out); err != nil {
		return "", err
	}
	return out.Secret, nil
}

// RotateMonitorToken gives a tcp monitor a new stream token.
func (c *Client) RotateMonitorToken(ctx context.Context, id string) (string, error) {
	var out struct {
		Token string `json:"token"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/monitors/"+url.PathEscape(id)+"/rotate-token", nil, nil, &out); err != nil {
		return "", err
	}
	return out.Token, nil
}
