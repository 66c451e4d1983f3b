package events

// The signals of firmware updates (internal/firmware).
const (
	// FirmwareUpdateStatusChanged: a device's update in a rollout changed
	// state (queued, notified, downloading, ..., updated, failed,
	// timed_out, canceled, skipped).
	FirmwareUpdateStatusChanged Type = "firmware_update_status_changed"
	// RolloutStatusChanged: a rollout's status changed (running, paused,
	// aborted, canceled, completed). It names no device.
	RolloutStatusChanged Type = "rollout_status_changed"
	// FirmwareStatusReported: a device reported on its firmware update
	// (cluster mode only: the node the device is connected to commits the
	// report with this event, and the node running the rollout scheduler
	// applies it, exactly once, from the event log; a single node applies
	// a report at once and writes no such event).
	FirmwareStatusReported Type = "firmware_status_reported"
)

// FirmwareUpdateStatus is the argument of FirmwareUpdateStatusChanged.
type FirmwareUpdateStatus struct {
	RolloutID string `json:"rollout_id"`
	State     string `json:"state"`
	OldState  string `json:"old_state"`
	Version   string `json:"version"`
	Attempt   int    `json:"attempt"`
	Message   string `json:"message,omitempty"`
	Progress  int    `json:"progress,omitempty"`
}

// RolloutStatus is the argument of RolloutStatusChanged.
type RolloutStatus struct {
	RolloutID string `json:"rollout_id"`
	Status    string `json:"status"`
	OldStatus string `json:"old_status"`
	Reason    string `json:"reason,omitempty"`
}

// FirmwareReport is the argument of FirmwareStatusReported: the device's
// report as it sent it.
type FirmwareReport struct {
	RolloutID string `json:"rollout_id,omitempty"`
	Attempt   *int   `json:"attempt,omitempty"`
	Status    string `json:"status,omitempty"`
	Version   string `json:"version,omitempty"`
	Progress  int    `json:"progress,omitempty"`
	Message   string `json:"message,omitempty"`
}

func firmwareArgs(t Type) any {
	switch t {
	case FirmwareUpdateStatusChanged:
		return &FirmwareUpdateStatus{}
	case RolloutStatusChanged:
		return &RolloutStatus{}
	case FirmwareStatusReported:
		return &FirmwareReport{}
	}
	return nil
}
