package events

import "time"

// The signals of alerting (internal/alerts). The device of an alert event
// is the device the alert is about; alert_flood names no device.
const (
	// AlertRaised: a rule's condition held (for its `for` period or its
	// count) and a new alert became active.
	AlertRaised Type = "alert_raised"
	// AlertUpdated: an open alert's rule fired again: its count and last
	// value changed (at most once per the rule's repeat interval).
	AlertUpdated Type = "alert_updated"
	// AlertAcknowledged: an operator acknowledged an open alert.
	AlertAcknowledged Type = "alert_acknowledged"
	// AlertCleared: an alert's condition ended, or an operator cleared it.
	AlertCleared Type = "alert_cleared"
	// AlertFlood: more alerts would have been raised in a minute than the
	// per-device or global caps allow; this one event sums up the ones
	// that were not.
	AlertFlood Type = "alert_flood"
)

// Alert is the argument of the alert_* events: the alert as it is after
// the change.
type Alert struct {
	AlertID  string            `json:"alert_id"`
	Rule     string            `json:"rule"`
	Severity string            `json:"severity"`
	State    string            `json:"state"` // pending, active, acknowledged, cleared
	Value    any               `json:"value,omitempty"`
	Count    int64             `json:"count"`
	Message  string            `json:"message,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// StartedAt is when the condition first held; RaisedAt when the alert
	// became active; LastAt when the rule last fired.
	StartedAt time.Time  `json:"started_at"`
	RaisedAt  *time.Time `json:"raised_at,omitempty"`
	LastAt    time.Time  `json:"last_at"`
	ClearedAt *time.Time `json:"cleared_at,omitempty"`
	// By is who acknowledged or cleared it ("rule" when the condition
	// ended), Note what they said.
	By   string `json:"by,omitempty"`
	Note string `json:"note,omitempty"`
}

// AlertFloodSummary is the argument of AlertFlood: the alerts not raised in
// one window because a cap was reached.
type AlertFloodSummary struct {
	WindowStart time.Time        `json:"window_start"`
	WindowEnd   time.Time        `json:"window_end"`
	Suppressed  int64            `json:"suppressed"`
	ByReason    map[string]int64 `json:"by_reason"` // device_cap, global_cap
	ByRule      map[string]int64 `json:"by_rule"`
	// Devices are some of the devices whose alerts were suppressed (at
	// most 20), DeviceCount how many there were.
	Devices     []string `json:"devices"`
	DeviceCount int      `json:"device_count"`
}

func alertArgs(t Type) any {
	switch t {
	case AlertRaised, AlertUpdated, AlertAcknowledged, AlertCleared:
		return &Alert{}
	case AlertFlood:
		return &AlertFloodSummary{}
	}
	return nil
}
