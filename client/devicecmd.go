package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Command is a command sent to a device.
type Command struct {
	ID          string          `json:"id"`
	DeviceID    string          `json:"device_id"`
	Command     string          `json:"command"`
	Payload     json.RawMessage `json:"payload,omitempty"`
	Status      string          `json:"status"` // queued, sent, delivered, succeeded, failed, expired, canceled
	Result      json.RawMessage `json:"result,omitempty"`
	Sends       int             `json:"sends"`
	Resends     int             `json:"resends"`
	CreatedAt   time.Time       `json:"created_at"`
	ExpiresAt   time.Time       `json:"expires_at"`
	FirstSentAt *time.Time      `json:"first_sent_at,omitempty"`
	SentAt      *time.Time      `json:"sent_at,omitempty"` // the last hand-over to the broker
	DeliveredAt *time.Time      `json:"delivered_at,omitempty"`
	FinishedAt  *time.Time      `json:"finished_at,omitempty"`
	UpdatedAt   time.Time       `json:"updated_at"`
	JobID       string          `json:"job_id,omitempty"`
}

// Finished reports whether the command has a final status.
func (c *Command) Finished() bool {
	switch c.Status {
	case "succeeded", "failed", "expired", "canceled":
		return true
	}
	return false
}

// SendCommandRequest is a command to send.
type SendCommandRequest struct {
	Command   string          `json:"command"`
	Payload   json.RawMessage `json:"payload,omitempty"`
	ExpiresIn time.Duration   `json:"-"` // 0: the hub's default
	// Wait holds the answer until the command finished or Wait passed
	// (at most MaxWait; ?wait=).
	Wait time.Duration `json:"-"`
}

// MaxWait is the longest ?wait= the hub takes in one request (below its
// HTTP write timeout).
const MaxWait = 50 * time.Second

func waitQuery(d time.Duration) url.Values {
	if d <= 0 {
		return nil
	}
	return url.Values{"wait": {min(d, MaxWait).String()}}
}

type commandAnswer struct {
	Command Command `json:"command"`
}

// SendCommand sends a command to a device (POST
// /api/v1/devices/{id}/commands).
func (c *Client) SendCommand(ctx context.Context, deviceID string, req SendCommandRequest) (*Command, error) {
	body := struct {
		Command   string          `json:"command"`
		Payload   json.RawMessage `json:"payload,omitempty"`
		ExpiresIn string          `json:"expires_in,omitempty"`
	}{Command: req.Command, Payload: req.Payload}
	if req.ExpiresIn > 0 {
		body.ExpiresIn = req.ExpiresIn.String()
	}
	var out commandAnswer
	if err := c.do(ctx, http.MethodPost, devicePath(deviceID)+"/commands", waitQuery(req.Wait), body, &out); err != nil {
		return nil, fmt.Errorf("send command to %s: %w", deviceID, err)
	}
	return &out.Command, nil
}

// GetCommand returns a command (GET /api/v1/commands/{id}).
func (c *Client) GetCommand(ctx context.Context, id string) (*Command, error) {
	var out commandAnswer
	if err := c.do(ctx, http.MethodGet, "/api/v1/commands/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get command %s: %w", id, err)
	}
	return &out.Command, nil
}

// WaitCommand waits until a command has a final status or ctx ends; then
// it returns the command as last seen (nil if never) with ctx's error. It
// holds requests on the hub (?wait=) rather than polling; interval is
// only the shortest wait it asks for.
func (c *Client) WaitCommand(ctx context.Context, id string, interval time.Duration) (*Command, error) {
	var last *Command
	for {
		d := MaxWait
		if dl, ok := ctx.Deadline(); ok {
			d = max(min(time.Until(dl), MaxWait), interval)
		}
		cmd, err := c.AwaitCommand(ctx, id, d)
		switch {
		case err != nil && ctx.Err() != nil:
			return last, fmt.Errorf("wait for command %s: %w", id, ctx.Err())
		case err != nil:
			return nil, err
		case cmd.Finished():
			return cmd, nil
		}
		last = cmd
		if ctx.Err() != nil {
			return last, fmt.Errorf("wait for command %s: %w", id, ctx.Err())
		}
	}
}

// AwaitCommand waits until a command finished or d passed, with the
// hub's ?wait= (in requests of at most MaxWait), and returns it as it then
// is: running out of time is not an error.
func (c *Client) AwaitCommand(ctx context.Context, id string, d time.Duration) (*Command, error) {
	deadline := time.Now().Add(d)
	for {
		left := time.Until(deadline).Round(time.Millisecond)
		var out commandAnswer
		if err := c.do(ctx, http.MethodGet, "/api/v1/commands/"+url.PathEscape(id), waitQuery(max(left, time.Millisecond)), nil, &out); err != nil {
			return nil, fmt.Errorf("wait for command %s: %w", id, err)
		}
		if out.Command.Finished() || time.Until(deadline) <= 0 {
			return &out.Command, nil
		}
	}
}

// CancelCommand cancels a command that has not finished (POST
// /api/v1/commands/{id}/cancel).
func (c *Client) CancelCommand(ctx context.Context, id string) (*Command, error) {
	var out commandAnswer
	if err := c.do(ctx, http.MethodPost, "/api/v1/commands/"+url.PathEscape(id)+"/cancel", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("cancel command %s: %w", id, err)
	}
	return &out.Command, nil
}

// ListCommands lists a device's commands, newest first; status "" lists
// every status, limit 0 takes the hub's default.
func (c *Client) ListCommands(ctx context.Context, deviceID, status string, limit int) ([]Command, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Commands []Command `json:"commands"`
	}
	if err := c.do(ctx, http.MethodGet, devicePath(deviceID)+"/commands", q, nil, &out); err != nil {
		return nil, fmt.Errorf("list commands of %s: %w", deviceID, err)
	}
	return out.Commands, nil
}

// TwinProperties are one side of a device twin.
type TwinProperties struct {
	Version   int64                `json:"version"`
	Values    map[string]any       `json:"values"`
	UpdatedAt *time.Time           `json:"updated_at,omitempty"`
	KeyTimes  map[string]time.Time `json:"key_times,omitempty"` // reported: when each key was last reported
}

// DeltaEntry is a desired key the reported properties do not match.
type DeltaEntry struct {
	Desired       any  `json:"desired"`
	Reported      any  `json:"reported,omitempty"`
	NeverReported bool `json:"never_reported,omitempty"`
}

// Twin is a device's twin: desired properties with their version,
// reported properties, and the delta between them.
type Twin struct {
	DeviceID string                `json:"device_id"`
	Desired  TwinProperties        `json:"desired"`
	Reported TwinProperties        `json:"reported"`
	Delta    map[string]DeltaEntry `json:"delta"`
}

type twinAnswer struct {
	Twin Twin `json:"twin"`
}

// GetTwin returns a device's twin (GET /api/v1/devices/{id}/twin).
func (c *Client) GetTwin(ctx context.Context, deviceID string) (*Twin, error) {
	var out twinAnswer
	if err := c.do(ctx, http.MethodGet, devicePath(deviceID)+"/twin", nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get twin of %s: %w", deviceID, err)
	}
	return &out.Twin, nil
}

// SetDesired replaces a device's desired properties with values whatever
// they are now: it reads the current version and replaces that one (a
// change made in between is refused, not overwritten: the error's code is
// version_conflict). See SetDesiredIf.
func (c *Client) SetDesired(ctx context.Context, deviceID string, values map[string]any) (*Twin, error) {
	cur, err := c.GetTwin(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	return c.SetDesiredIf(ctx, deviceID, values, cur.Desired.Version)
}

// SetDesiredIf replaces a device's desired properties if they are still
// at version (PUT /api/v1/devices/{id}/twin/desired) and returns the twin
// with the new version.
func (c *Client) SetDesiredIf(ctx context.Context, deviceID string, values map[string]any, version int64) (*Twin, error) {
	if values == nil {
		values = map[string]any{}
	}
	var out twinAnswer
	body := struct {
		Values  map[string]any `json:"values"`
		Version int64          `json:"version"`
	}{values, version}
	if err := c.do(ctx, http.MethodPut, devicePath(deviceID)+"/twin/desired", nil, body, &out); err != nil {
		return nil, fmt.Errorf("set desired of %s: %w", deviceID, err)
	}
	return &out.Twin, nil
}

// PatchDesired applies a JSON merge patch (RFC 7396) to a device's
// desired properties if they are still at version (PATCH
// /api/v1/devices/{id}/twin/desired); a negative version reads the
// current one first.
func (c *Client) PatchDesired(ctx context.Context, deviceID string, patch map[string]any, version int64) (*Twin, error) {
	if version < 0 {
		cur, err := c.GetTwin(ctx, deviceID)
		if err != nil {
			return nil, err
		}
		version = cur.Desired.Version
	}
	var out twinAnswer
	body := struct {
		Patch   map[string]any `json:"patch"`
		Version int64          `json:"version"`
	}{patch, version}
	if err := c.do(ctx, http.MethodPatch, devicePath(deviceID)+"/twin/desired", nil, body, &out); err != nil {
		return nil, fmt.Errorf("patch desired of %s: %w", deviceID, err)
	}
	return &out.Twin, nil
}

// FleetTarget selects the devices of a fleet command: the listed ids, or
// the devices every given filter selects.
type FleetTarget struct {
	DeviceIDs  []string `json:"device_ids,omitempty"`
	Group      string   `json:"group,omitempty"`
	Type       string   `json:"type,omitempty"`
	Tag        string   `json:"tag,omitempty"`
	OnlineOnly bool     `json:"online_only,omitempty"`
}

// FleetJob is a fleet command: one command sent to many devices.
type FleetJob struct {
	ID         string          `json:"id"`
	Command    string          `json:"command"`
	Payload    json.RawMessage `json:"payload,omitempty"`
	ExpiresIn  string          `json:"expires_in"`
	Target     FleetTarget     `json:"target"`
	Status     string          `json:"status"` // running, done
	Targets    int             `json:"targets"`
	Refused    int             `json:"refused"`
	Refusal    string          `json:"refusal,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
}

// FleetJobSummary counts a fleet job's commands by status.
type FleetJobSummary struct {
	Queued    int `json:"queued"`
	Sent      int `json:"sent"`
	Delivered int `json:"delivered"`
	Succeeded int `json:"succeeded"`
	Failed    int `json:"failed"`
	Expired   int `json:"expired"`
	Canceled  int `json:"canceled"`
}

// FleetJobAnswer is a fleet job with its summary (nil when just started).
type FleetJobAnswer struct {
	Job     FleetJob         `json:"job"`
	Summary *FleetJobSummary `json:"summary,omitempty"`
}

// SendFleetCommand starts a fleet job (POST /api/v1/fleet/commands); it
// fans out in the background.
func (c *Client) SendFleetCommand(ctx context.Context, target FleetTarget, req SendCommandRequest) (*FleetJob, error) {
	body := struct {
		Command   string          `json:"command"`
		Payload   json.RawMessage `json:"payload,omitempty"`
		ExpiresIn string          `json:"expires_in,omitempty"`
		Target    FleetTarget     `json:"target"`
	}{Command: req.Command, Payload: req.Payload, Target: target}
	if req.ExpiresIn > 0 {
		body.ExpiresIn = req.ExpiresIn.String()
	}
	var out FleetJobAnswer
	if err := c.do(ctx, http.MethodPost, "/api/v1/fleet/commands", nil, body, &out); err != nil {
		return nil, fmt.Errorf("send fleet command: %w", err)
	}
	return &out.Job, nil
}

// GetFleetCommand returns a fleet job with its summary.
func (c *Client) GetFleetCommand(ctx context.Context, id string) (*FleetJobAnswer, error) {
	var out FleetJobAnswer
	if err := c.do(ctx, http.MethodGet, "/api/v1/fleet/commands/"+url.PathEscape(id), nil, nil, &out); err != nil {
		return nil, fmt.Errorf("get fleet job %s: %w", id, err)
	}
	return &out, nil
}

// ListFleetCommandDevices returns a page of a fleet job's commands by
// device id, and the cursor of the next page ("" on the last).
func (c *Client) ListFleetCommandDevices(ctx context.Context, id, status, after string, limit int) ([]Command, string, error) {
	q := url.Values{}
	if status != "" {
		q.Set("status", status)
	}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Commands []Command `json:"commands"`
		Next     string    `json:"next"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/fleet/commands/"+url.PathEscape(id)+"/devices", q, nil, &out); err != nil {
		return nil, "", fmt.Errorf("list devices of fleet job %s: %w", id, err)
	}
	return out.Commands, out.Next, nil
}
