package client

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Artifact is an uploaded firmware file.
type Artifact struct {
	ID        string    `json:"id"`
	Version   string    `json:"version"`
	Type      string    `json:"type"`
	Hardware  string    `json:"hardware,omitempty"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	Signature string    `json:"signature"`
	PublicKey string    `json:"public_key"`
	SignedBy  string    `json:"signed_by"`
	Filename  string    `json:"filename,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// UploadArtifact names an artifact to upload. Signature and PublicKey
// (base64) are a vendor's; empty, the hub signs.
type UploadArtifact struct {
	Version, Type, Hardware, Filename string
	Signature, PublicKey              string
}

// FirmwareKey returns the hub's public firmware signing key (base64).
func (c *Client) FirmwareKey(ctx context.Context) (string, error) {
	var out struct {
		PublicKey string `json:"public_key"`
	}
	err := c.do(ctx, http.MethodGet, "/api/v1/firmware/key", nil, nil, &out)
	return out.PublicKey, err
}

// UploadArtifact streams a firmware file to the hub.
func (c *Client) UploadArtifact(ctx context.Context, r io.Reader, u UploadArtifact) (*Artifact, error) {
	q := url.Values{}
	set(q, "version", u.Version)
	set(q, "type", u.Type)
	set(q, "hardware", u.Hardware)
	set(q, "filename", u.Filename)
	set(q, "signature", u.Signature)
	set(q, "public_key", u.PublicKey)
	req, err := c.newRequest(ctx, http.MethodPost, "/api/v1/firmware/artifacts", q, nil)
	if err != nil {
		return nil, err
	}
	req.Body = io.NopCloser(r)
	req.Header.Set("Content-Type", "application/octet-stream")
	var out Artifact
	if err := c.send(req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ListArtifacts lists the firmware artifacts.
func (c *Client) ListArtifacts(ctx context.Context) ([]Artifact, error) {
	var out struct {
		Artifacts []Artifact `json:"artifacts"`
	}
	return out.Artifacts, c.do(ctx, http.MethodGet, "/api/v1/firmware/artifacts", nil, nil, &out)
}

// DeleteArtifact deletes an artifact (409 artifact_in_use while a rollout
// uses it).
func (c *Client) DeleteArtifact(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/firmware/artifacts/"+url.PathEscape(id), nil, nil, nil)
}

// RolloutRequest starts a rollout; see the API's document for each field.
// Durations are Go durations ("90s").
type RolloutRequest struct {
	ArtifactID          string   `json:"artifact_id"`
	Group               string   `json:"group,omitempty"`
	Type                string   `json:"type,omitempty"`
	Hardware            string   `json:"hardware,omitempty"`
	DeviceIDs           []string `json:"device_ids,omitempty"`
	IncludeLate         bool     `json:"include_late,omitempty"`
	MaxPerMinute        int      `json:"max_per_minute,omitempty"`
	RateIncreaseAfter   int      `json:"rate_increase_after,omitempty"`
	RateIncreaseFactor  float64  `json:"rate_increase_factor,omitempty"`
	RateIncreaseMax     int      `json:"rate_increase_max,omitempty"`
	Phases              []int    `json:"phases,omitempty"`
	WindowStart         string   `json:"window_start,omitempty"`
	WindowEnd           string   `json:"window_end,omitempty"`
	StepTimeout         string   `json:"step_timeout,omitempty"`
	TotalTimeout        string   `json:"total_timeout,omitempty"`
	Retries             int      `json:"retries,omitempty"`
	RetryOn             []string `json:"retry_on,omitempty"`
	AbortFailurePercent float64  `json:"abort_failure_percent,omitempty"`
	AbortMinDevices     int      `json:"abort_min_devices,omitempty"`
	AbortFirstPhase     bool     `json:"abort_on_first_phase_failure,omitempty"`
	HealthWindow        string   `json:"health_window,omitempty"`
	Settle              string   `json:"settle,omitempty"`
}

// Rollout is a rollout with its devices counted by state.
type Rollout struct {
	ID           string         `json:"id"`
	ArtifactID   string         `json:"artifact_id"`
	Version      string         `json:"version"`
	DeviceType   string         `json:"device_type"`
	Status       string         `json:"status"`
	Reason       string         `json:"reason,omitempty"`
	Total        int            `json:"total"`
	Counts       map[string]int `json:"counts"`
	MaxPerMinute int            `json:"max_per_minute"`
	Phases       []int          `json:"phases,omitempty"`
	CreatedAt    time.Time      `json:"created_at"`
	UpdatedAt    time.Time      `json:"updated_at"`
}

// Finished counts the devices whose update ended (updated, failed,
// timed_out, canceled, skipped).
func (r *Rollout) Finished() int {
	n := 0
	for _, s := range []string{"updated", "failed", "timed_out", "canceled", "skipped"} {
		n += r.Counts[s]
	}
	return n
}

// DeviceUpdate is one device's update in a rollout.
type DeviceUpdate struct {
	RolloutID   string     `json:"rollout_id"`
	DeviceID    string     `json:"device_id"`
	DeviceType  string     `json:"device_type"`
	Phase       int        `json:"phase"`
	State       string     `json:"state"`
	Attempt     int        `json:"attempt"`
	Message     string     `json:"message,omitempty"`
	Progress    int        `json:"progress,omitempty"`
	StateSince  time.Time  `json:"state_since"`
	StartedAt   *time.Time `json:"started_at,omitempty"`
	ConfirmedAt *time.Time `json:"confirmed_at,omitempty"`
}

// UpdateHistoryEntry is one state a device's update went through.
type UpdateHistoryEntry struct {
	RolloutID string    `json:"rollout_id"`
	DeviceID  string    `json:"device_id"`
	State     string    `json:"state"`
	Attempt   int       `json:"attempt"`
	Message   string    `json:"message,omitempty"`
	At        time.Time `json:"at"`
}

// StartRollout starts a rollout.
func (c *Client) StartRollout(ctx context.Context, req RolloutRequest) (*Rollout, error) {
	var out Rollout
	return &out, c.do(ctx, http.MethodPost, "/api/v1/firmware/rollouts", nil, req, &out)
}

// ListRollouts lists rollouts, newest first.
func (c *Client) ListRollouts(ctx context.Context) ([]Rollout, error) {
	var out struct {
		Rollouts []Rollout `json:"rollouts"`
	}
	return out.Rollouts, c.do(ctx, http.MethodGet, "/api/v1/firmware/rollouts", nil, nil, &out)
}

// GetRollout returns a rollout with its counts.
func (c *Client) GetRollout(ctx context.Context, id string) (*Rollout, error) {
	var out Rollout
	return &out, c.do(ctx, http.MethodGet, "/api/v1/firmware/rollouts/"+url.PathEscape(id), nil, nil, &out)
}

// RolloutDevices lists a rollout's device updates.
func (c *Client) RolloutDevices(ctx context.Context, id string) ([]DeviceUpdate, error) {
	var out struct {
		Devices []DeviceUpdate `json:"devices"`
	}
	return out.Devices, c.do(ctx, http.MethodGet, "/api/v1/firmware/rollouts/"+url.PathEscape(id)+"/devices", nil, nil, &out)
}

// RolloutAction pauses, resumes or cancels a rollout (action "pause",
// "resume", "cancel").
func (c *Client) RolloutAction(ctx context.Context, id, action string) (*Rollout, error) {
	var out Rollout
	return &out, c.do(ctx, http.MethodPost, "/api/v1/firmware/rollouts/"+url.PathEscape(id)+"/"+url.PathEscape(action), nil, nil, &out)
}

// FirmwareHistory lists the states of a device's updates, oldest first
// (rolloutID "": every rollout).
func (c *Client) FirmwareHistory(ctx context.Context, deviceID, rolloutID string) ([]UpdateHistoryEntry, error) {
	q := url.Values{}
	set(q, "rollout", rolloutID)
	var out struct {
		History []UpdateHistoryEntry `json:"history"`
	}
	return out.History, c.do(ctx, http.MethodGet, "/api/v1/devices/"+url.PathEscape(deviceID)+"/firmware/history", q, nil, &out)
}
