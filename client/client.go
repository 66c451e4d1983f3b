// Package client is the Go client of devicehub's REST API. The devicehub
// CLI uses it; other Go programs may too.
//
//	c := client.New("http://127.0.0.1:8080", token, nil)
//	p, err := c.ProvisionDevice(ctx, client.ProvisionRequest{ID: "ws-1", Type: "WeatherStation"})
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls one hub's REST API with an operator token.
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New returns a client of the hub at baseURL (e.g. http://127.0.0.1:8080)
// that authenticates with token. A nil httpClient uses http.DefaultClient.
func New(baseURL, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), token: token, hc: httpClient}
}

// Error is an error answer of the API.
type Error struct {
	Status  int    // HTTP status
	Code    string // stable machine code: not_found, unauthorized, invalid_argument, ...
	Message string
	Field   string // the request field at fault, if any
}

func (e *Error) Error() string {
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	if e.Code != "" {
		return fmt.Sprintf("%s (%s, HTTP %d)", msg, e.Code, e.Status)
	}
	return fmt.Sprintf("%s (HTTP %d)", msg, e.Status)
}

// StatusOf returns the HTTP status of an API error in err's chain, 0 if
// there is none.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Device is a registered device.
type Device struct {
	ID       string         `json:"id"`
	Type     string         `json:"type"`
	Name     string         `json:"name,omitempty"`
	Group    string         `json:"group,omitempty"`
	Tags     []string       `json:"tags,omitempty"`
	Metadata map[string]any `json:"metadata,omitempty"`
	Location *Location      `json:"location,omitempty"`
	// FirmwareVersion, HardwareVersion and ManagementIP are what the
	// operator (or the device's registration) last said.
	FirmwareVersion string         `json:"firmware_version,omitempty"`
	HardwareVersion string         `json:"hardware_version,omitempty"`
	ManagementIP    string         `json:"management_ip,omitempty"`
	Status          string         `json:"status"`
	Connected       bool           `json:"connected"`
	LastSeen        *time.Time     `json:"last_seen,omitempty"` // to a resolution of one second
	Metrics         map[string]any `json:"metrics,omitempty"`
	Disabled        bool           `json:"disabled"`
	CreatedAt       time.Time      `json:"created_at"`
	UpdatedAt       time.Time      `json:"updated_at"`
}

// ProvisionRequest describes a device to provision.
type ProvisionRequest struct {
	ID       string         `json:"id"`
	Type     string         `json:"type"`
	Name     string         `json:"name,omitempty"`
	Group    string         `json:"group,omitempty"`
	Tags     []string       `json:"tags,omitempty"`
	Metadata map[string]any `json:"metadata,omitempty"`
	// Replace re-provisions an existing device: new credentials, the old
	// ones stop working.
	Replace bool `json:"replace,omitempty"`
}

// Credentials are a device's plaintext credentials, shown only once.
type Credentials struct {
	DeviceID     string `json:"device_id"`
	MQTTUsername string `json:"mqtt_username"`
	MQTTPassword string `json:"mqtt_password"`
	APIKey       string `json:"api_key"`
}

// Provisioned is a provisioned device and its credentials.
type Provisioned struct {
	Device      Device      `json:"device"`
	Credentials Credentials `json:"credentials"`
}

// ListOptions filter and page a device listing (by id).
type ListOptions struct {
	Type      string
	Group     string
	Status    string
	Connected *bool
	Tag       string // only devices with this tag
	Query     string // text search on id and name
	Sort      string // "" or "id": by id; "last_seen": most recently seen first, across pages
	After     string // the Next of the previous page
	Limit     int    // 0: the server's default (100)
}

// DeviceList is one page of devices; Next is "" on the last page.
type DeviceList struct {
	Devices []Device `json:"devices"`
	Next    string   `json:"next,omitempty"`
}

// ReadingsQuery selects readings of one device, newest first.
type ReadingsQuery struct {
	DeviceID string
	Stream   string
	Field    string
	From, To time.Time // zero: unbounded; From inclusive, To exclusive
	Limit    int
	Cursor   string // the Next of the previous page
}

// Reading is one stored reading.
type Reading struct {
	ID         int64          `json:"id"`
	DeviceID   string         `json:"device_id"`
	Stream     string         `json:"stream,omitempty"`
	Time       time.Time      `json:"ts"`
	ReceivedAt time.Time      `json:"received_at"`
	MessageID  int64          `json:"message_id"`
	Values     map[string]any `json:"values"`
}

// ReadingsPage is one page of readings; Next is "" on the last page.
type ReadingsPage struct {
	Readings []Reading `json:"readings"`
	Next     string    `json:"next,omitempty"`
}

// ProvisionDevice creates (or with Replace, re-provisions) a device.
func (c *Client) ProvisionDevice(ctx context.Context, req ProvisionRequest) (*Provisioned, error) {
	var out Provisioned
	if err := c.do(ctx, http.MethodPost, "/api/v1/devices", nil, req, &out); err != nil {
		return nil, fmt.Errorf("provision %s: %w", req.ID, err)
	}
	return &out, nil
}

// GetDevice returns one device.
func (c *Client) GetDevice(ctx context.Context, id string) (*Device, error) {
	var out struct {
		Device Device `json:"device"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/devices/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get device %s: %w", id, err)
	}
	return &out.Device, nil
}

// ListDevices returns one page of devices.
func (c *Client) ListDevices(ctx context.Context, o ListOptions) (*DeviceList, error) {
	q := url.Values{}
	set(q, "type", o.Type)
	set(q, "group", o.Group)
	set(q, "status", o.Status)
	set(q, "tag", o.Tag)
	set(q, "q", o.Query)
	set(q, "after", o.After)
	set(q, "sort", o.Sort)
	if o.Connected != nil {
		q.Set("connected", strconv.FormatBool(*o.Connected))
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	var out DeviceList
	if err := c.do(ctx, http.MethodGet, "/api/v1/devices", q, nil, &out); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return &out, nil
}

// Readings returns one page of a device's readings, newest first.
func (c *Client) Readings(ctx context.Context, rq ReadingsQuery) (*ReadingsPage, error) {
	q := url.Values{}
	set(q, "stream", rq.Stream)
	set(q, "field", rq.Field)
	set(q, "cursor", rq.Cursor)
	if !rq.From.IsZero() {
		q.Set("from", rq.From.Format(time.RFC3339Nano))
	}
	if !rq.To.IsZero() {
		q.Set("to", rq.To.Format(time.RFC3339Nano))
	}
	if rq.Limit > 0 {
		q.Set("limit", strconv.Itoa(rq.Limit))
	}
	var out ReadingsPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/devices/"+url.PathEscape(rq.DeviceID)+"/readings", q, nil, &out); err != nil {
		return nil, fmt.Errorf("readings of %s: %w", rq.DeviceID, err)
	}
	return &out, nil
}

// ListAllDevices follows the pages of a listing to the end.
func (c *Client) ListAllDevices(ctx context.Context, o ListOptions) ([]Device, error) {
	var all []Device
	for {
		page, err := c.ListDevices(ctx, o)
		if err != nil {
			return nil, err
		}
		all = append(all, page.Devices...)
		if page.Next == "" {
			return all, nil
		}
		o.After = page.Next
	}
}

func set(q url.Values, k, v string) {
	if v != "" {
		q.Set(k, v)
	}
}

func (c *Client) newRequest(ctx context.Context, method, path string, q url.Values, body any) (*http.Request, error) {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// do sends a request and decodes a 2xx JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body, out any) error {
	req, err := c.newRequest(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	return c.send(req, out)
}

// send sends a request and decodes a 2xx JSON answer into out.
func (c *Client) send(req *http.Request, out any) error {
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}

// readError turns an error answer into an *Error, whatever its body.
func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Field   string `json:"field"`
		} `json:"error"`
	}
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message, e.Field = body.Error.Code, body.Error.Message, body.Error.Field
	} else {
		e.Message = strings.TrimSpace(string(b))
		if len(e.Message) > 200 {
			e.Message = e.Message[:200]
		}
	}
	return e
}
