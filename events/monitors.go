package events

// MonitorStatusChanged: a push monitor's status changed (seed 002:
// CONNECTING, ACTIVE, INACTIVE, SUSPENDED, DISABLED). It names no device.
const MonitorStatusChanged Type = "monitor_status_changed"

// MonitorStatus is the argument of MonitorStatusChanged.
type MonitorStatus struct {
	MonitorID string `json:"monitor_id"`
	OldStatus string `json:"old_status"`
	NewStatus string `json:"new_status"`
	Reason    string `json:"reason,omitempty"`
}
