// Package firmware provides firmware updates: artifacts (files with their
// size, SHA-256 and an ed25519 signature), rollouts that send one artifact
// to a set of devices at a bounded rate, in phases, inside a maintenance
// window, and stop themselves when too many devices fail, and the state of
// each device's update, from queued to updated (or failed, timed_out,
// canceled, skipped).
//
// Data flow: operators create artifacts and rollouts through the API; the
// scheduler (Service.Run) starts devices when their turn comes by
// publishing devices/{id}/firmware; devices report on
// devices/{id}/firmware/status (ingest calls RecordStatus); every state
// change, with its firmware_update_status_changed or rollout_status_changed
// event, goes through the commit path (ops.go). The service keeps the
// active rollouts in memory and reloads them from the store at start, so a
// hub restart continues where it was. In cluster mode only the node
// running the scheduler holds them, and the other nodes hand it their
// rollouts, controls and device reports (cluster.go).
//
// Lock order: Service.mu → committer queue (channel send). Nothing waits for
// a commit while holding mu.
package firmware

import (
	"errors"
	"time"
)

// Errors of the package. The API maps them to HTTP statuses.
var (
	// ErrNotFound: no such artifact, rollout or device update.
	ErrNotFound = errors.New("not found")
	// ErrInUse: the artifact is used by a rollout that is not finished.
	ErrInUse = errors.New("artifact in use by an unfinished rollout")
	// ErrInvalid: a request that breaks a rule (the message says which).
	ErrInvalid = errors.New("invalid")
	// ErrBadSignature: a vendor signature that does not verify.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrConflict: the rollout's status does not allow the request
	// (resume a completed rollout).
	ErrConflict = errors.New("conflicting state")
	// ErrNoDevices: the rollout's target holds no compatible device.
	ErrNoDevices = errors.New("no compatible device in the target")
)

// Artifact is an uploaded firmware file.
type Artifact struct {
	ID      string `json:"id"`
	Version string `json:"version"`
	// Type is the device type the firmware is built for; Hardware, when
	// set, the only hardware version it runs on.
	Type     string `json:"type"`
	Hardware string `json:"hardware,omitempty"`
	Size     int64  `json:"size"`
	SHA256   string `json:"sha256"` // hex
	// Signature is ed25519 over the 32 bytes of the file's SHA-256, in
	// standard base64; PublicKey is the key that verifies it (base64).
	Signature string `json:"signature"`
	PublicKey string `json:"public_key"`
	// SignedBy is "hub" (the hub's signing key) or "vendor" (a signature
	// supplied at upload, verified then).
	SignedBy  string    `json:"signed_by"`
	Filename  string    `json:"filename,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// State is where a device's update is.
type State string

// The states of a device's update. Devices report the ones from
// downloading to updated (and failed); the hub sets queued, notified,
// confirming, updated, timed_out, canceled and skipped.
const (
	Queued      State = "queued"
	Notified    State = "notified"
	Downloading State = "downloading"
	Downloaded  State = "downloaded"
	Verifying   State = "verifying"
	Installing  State = "installing"
	Rebooting   State = "rebooting"
	Confirming  State = "confirming"
	Updated     State = "updated"
	Failed      State = "failed"
	TimedOut    State = "timed_out"
	Canceled    State = "canceled"
	Skipped     State = "skipped" // already on the artifact's version
)

// States lists every state in order.
var States = []State{Queued, Notified, Downloading, Downloaded, Verifying, Installing, Rebooting, Confirming, Updated, Failed, TimedOut, Canceled, Skipped}

// Terminal reports whether the state is final for the attempt.
func (s State) Terminal() bool {
	switch s {
	case Updated, Failed, TimedOut, Canceled, Skipped:
		return true
	}
	return false
}

// InProgress reports whether the device has started and not finished.
func (s State) InProgress() bool { return s != Queued && !s.Terminal() }

// failure reports whether the state counts against the abort rule.
func (s State) failure() bool { return s == Failed || s == TimedOut }

// RolloutStatus is where a rollout is.
type RolloutStatus string

// The statuses of a rollout. A running rollout starts devices; a paused or
// aborted one does not (devices already started go on), and can be
// resumed or canceled; completed and canceled are final.
const (
	RolloutRunning   RolloutStatus = "running"
	RolloutPaused    RolloutStatus = "paused"
	RolloutAborted   RolloutStatus = "aborted"
	RolloutCanceled  RolloutStatus = "canceled"
	RolloutCompleted RolloutStatus = "completed"
)

// Final reports whether the rollout can no longer change.
func (s RolloutStatus) Final() bool { return s == RolloutCompleted || s == RolloutCanceled }

// Target says which devices a rollout updates: a group, a filter (type,
// group, hardware version), or a list of ids. Devices of another type than
// the artifact's, or of another hardware version than the artifact's
// Hardware, are left out.
type Target struct {
	Group     string   `json:"group,omitempty"`
	Type      string   `json:"type,omitempty"`
	Hardware  string   `json:"hardware,omitempty"`
	DeviceIDs []string `json:"device_ids,omitempty"`
}

// RateIncrease raises a rollout's rate: every AfterSuccesses updated
// devices multiply it by Factor, up to MaxPerMinute.
type RateIncrease struct {
	AfterSuccesses int     `json:"after_successes"`
	Factor         float64 `json:"factor"`
	MaxPerMinute   int     `json:"max_per_minute,omitempty"`
}

// Window is a daily maintenance window in UTC, "HH:MM" to "HH:MM"; a window
// whose end is before its start spans midnight. Devices are started only
// inside it.
type Window struct {
	Start string `json:"start"`
	End   string `json:"end"`
}

// Spec is what an operator asks of a rollout.
type Spec struct {
	ArtifactID string `json:"artifact_id"`
	Target     Target `json:"target"`
	// IncludeLate adds devices that join the target group (or match the
	// filter) after the rollout started; otherwise the target is fixed at
	// creation.
	IncludeLate bool `json:"include_late,omitempty"`
	// MaxPerMinute bounds the devices started per minute (0: no bound).
	MaxPerMinute int           `json:"max_per_minute,omitempty"`
	RateIncrease *RateIncrease `json:"rate_increase,omitempty"`
	// Phases are cumulative percentages of the target (the last is 100);
	// a phase starts when every device of the previous ones finished.
	Phases []int   `json:"phases,omitempty"`
	Window *Window `json:"window,omitempty"`
	// StepTimeout bounds each step a device is in (from notified to
	// installing); TotalTimeout the whole update from notified on. A device
	// past either is timed_out.
	StepTimeout  time.Duration `json:"step_timeout"`
	TotalTimeout time.Duration `json:"total_timeout"`
	// Retries is how often a device is queued again after a failure
	// (RetryFailed) or a timeout (RetryTimedOut).
	Retries       int  `json:"retries,omitempty"`
	RetryFailed   bool `json:"retry_failed,omitempty"`
	RetryTimedOut bool `json:"retry_timed_out,omitempty"`
	// Abort rule: stop starting devices when failures reach
	// AbortFailurePercent of the finished devices once AbortMinDevices
	// finished, or at any failure of the first phase.
	AbortFailurePercent      float64 `json:"abort_failure_percent,omitempty"`
	AbortMinDevices          int     `json:"abort_min_devices,omitempty"`
	AbortOnFirstPhaseFailure bool    `json:"abort_on_first_phase_failure,omitempty"`
	// Health gate: after it reports rebooting, a device must report the new
	// version as confirmed within HealthWindow, and stay connected for
	// Settle after that, to count as updated.
	HealthWindow time.Duration `json:"health_window"`
	Settle       time.Duration `json:"settle"`
}

// Rollout is one artifact sent to a target.
type Rollout struct {
	ID     string        `json:"id"`
	Spec   Spec          `json:"spec"`
	Status RolloutStatus `json:"status"`
	Reason string        `json:"reason,omitempty"`
	// Version and DeviceType are the artifact's.
	Version    string    `json:"version"`
	DeviceType string    `json:"device_type"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// BaseFinished and BaseFailures are the counts at the last resume: the
	// abort rule looks at what finished after it.
	BaseFinished int `json:"base_finished,omitempty"`
	BaseFailures int `json:"base_failures,omitempty"`
	// AliveAt is when a scheduler last worked on the rollout (written
	// every Options.AliveEvery): at start, the time since then is the
	// hub's downtime, which the timeouts of the devices in progress do not
	// count (see Service.Load).
	AliveAt time.Time `json:"-"`
}

// Progress is a rollout with its devices counted by state.
type Progress struct {
	Rollout
	Counts map[State]int `json:"counts"`
	Total  int           `json:"total"`
}

// DeviceUpdate is one device's update in a rollout.
type DeviceUpdate struct {
	RolloutID  string    `json:"rollout_id"`
	DeviceID   string    `json:"device_id"`
	DeviceType string    `json:"device_type"`
	Order      int       `json:"order"`
	Phase      int       `json:"phase"`
	State      State     `json:"state"`
	Attempt    int       `json:"attempt"`
	Message    string    `json:"message,omitempty"`
	Progress   int       `json:"progress,omitempty"`
	StateSince time.Time `json:"state_since"`
	// StartedAt is when this attempt was notified; RebootAt when the device
	// reported rebooting (the health window starts); ConfirmedAt when it
	// reported the new version confirmed (the settle time starts).
	StartedAt   *time.Time `json:"started_at,omitempty"`
	RebootAt    *time.Time `json:"reboot_at,omitempty"`
	ConfirmedAt *time.Time `json:"confirmed_at,omitempty"`
	UpdatedAt   time.Time  `json:"updated_at"`
}

// HistoryEntry is one state a device's update went through.
type HistoryEntry struct {
	RolloutID string    `json:"rollout_id"`
	DeviceID  string    `json:"device_id"`
	State     State     `json:"state"`
	Attempt   int       `json:"attempt"`
	Message   string    `json:"message,omitempty"`
	At        time.Time `json:"at"`
}

// Notice is what the hub publishes on devices/{id}/firmware. A notice with
// Cancel set tells the device to stop the rollout's update.
type Notice struct {
	RolloutID  string `json:"rollout_id"`
	ArtifactID string `json:"artifact_id,omitempty"`
	Version    string `json:"version,omitempty"`
	URL        string `json:"url,omitempty"`
	Size       int64  `json:"size,omitempty"`
	SHA256     string `json:"sha256,omitempty"`
	Signature  string `json:"signature,omitempty"`
	// Attempt counts the device's retries in the rollout, from 0; the
	// device names it in its reports ("attempt"), so that a late report of
	// an earlier attempt is told from the current one.
	Attempt int  `json:"attempt"`
	Cancel  bool `json:"cancel,omitempty"`
}
