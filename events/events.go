// Package events defines devicehub's signals: the typed events the hub writes
// to its durable event log and hands to in-process subscribers and monitors.
//
// Every event has a sequence number (assigned when it is committed), a type,
// a time, the device id and the device type, and typed arguments. Events are
// only ever delivered after the change they describe is stored.
package events

import (
	"encoding/json"
	"fmt"
	"time"
)

// Type names a signal.
type Type string

// The signals of the device-hub core.
const (
	DeviceDataReceived  Type = "device_data_received"
	DeviceStatusChanged Type = "device_status_changed"
	DeviceConnected     Type = "device_connected"
	DeviceDisconnected  Type = "device_disconnected"
	DeviceProvisioned   Type = "device_provisioned"
	MessageRejected     Type = "message_rejected"
)

// The signals of the device registry (seed 001).
const (
	// DeviceRegistered: a device registered itself with the shared secret;
	// IsNew tells a new device from a known one that registered again
	// (after a factory reset).
	DeviceRegistered Type = "device_registered"
	// DeviceNameChanged: an existing device's name changed (never on
	// creation).
	DeviceNameChanged Type = "device_name_changed"
	// DeviceGroupChanged: an existing device moved to another group (never
	// on creation).
	DeviceGroupChanged Type = "device_group_changed"
	// ManagementIPChanged: an existing device's management IP changed
	// (never on creation).
	ManagementIPChanged Type = "management_ip_changed"
	// DeviceCredentialsRevoked: a device's credentials were revoked; it
	// cannot connect until it is provisioned again.
	DeviceCredentialsRevoked Type = "device_credentials_revoked"
	// DeviceDisabledChanged: a device was disabled or enabled again.
	DeviceDisabledChanged Type = "device_disabled_changed"
	// DeviceRegistrationRefused: a device whose credentials were revoked
	// tried to register itself again; it stays revoked until an operator
	// provisions it again.
	DeviceRegistrationRefused Type = "device_registration_refused"
)

// The signals of commands and the device twin.
const (
	// DeviceCommandSent: a command was sent to the device (seed 000:
	// device_command_sent(command, payload)); again at every resend.
	DeviceCommandSent Type = "device_command_sent"
	// DeviceCommandResult: the device answered a command.
	DeviceCommandResult Type = "device_command_result"
	// DeviceCommandExpired: a command expired before the device answered.
	DeviceCommandExpired Type = "device_command_expired"
	// DeviceCommandDelivered: the device's MQTT client acknowledged the
	// command's publish (PUBACK).
	DeviceCommandDelivered Type = "device_command_delivered"
	// DeviceCommandCanceled: an operator canceled a command before it
	// finished.
	DeviceCommandCanceled Type = "device_command_canceled"
	// DeviceCommandQueued: a command was stored for a device whose
	// connection, if any, is on another node (cluster mode only): the
	// node holding the connection hands it over.
	DeviceCommandQueued Type = "device_command_queued"
	// TwinDesiredChanged: an operator set the device's desired properties.
	TwinDesiredChanged Type = "twin_desired_changed"
	// TwinReportedChanged: the device reported a patch of its properties.
	TwinReportedChanged Type = "twin_reported_changed"
	// TwinDeltaChanged: the set of desired keys the reported properties
	// do not match (differ, or never reported) changed; InStep when none
	// is left.
	TwinDeltaChanged Type = "twin_delta_changed"
)

// Event is one signal. Args holds a pointer to the argument struct of its
// type (*DataReceived for DeviceDataReceived, and so on).
type Event struct {
	Seq        int64     `json:"seq"`
	Type       Type      `json:"type"`
	Time       time.Time `json:"time"`
	DeviceID   string    `json:"device_id"`
	DeviceType string    `json:"device_type"`
	Args       any       `json:"args"`
}

// Reading is one set of field values a device reported at one time.
type Reading struct {
	Time   time.Time      `json:"ts"`
	Stream string         `json:"stream,omitempty"`
	Values map[string]any `json:"values"`
}

// DataReceived is the argument of DeviceDataReceived: the parsed readings and
// the message log record of the message that carried them.
type DataReceived struct {
	MessageID int64     `json:"message_id"`
	MsgID     string    `json:"msg_id,omitempty"`
	Topic     string    `json:"topic"`
	Stream    string    `json:"stream,omitempty"`
	Transport string    `json:"transport"`
	Readings  []Reading `json:"readings"`
}

// StatusChanged is the argument of DeviceStatusChanged.
type StatusChanged struct {
	OldStatus string `json:"old_status"`
	NewStatus string `json:"new_status"`
}

// Connected is the argument of DeviceConnected.
type Connected struct {
	Generation uint64 `json:"generation"`
	Transport  string `json:"transport"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	// Node is the cluster node holding the connection (cluster mode).
	Node string `json:"node,omitempty"`
}

// Disconnect reasons.
const (
	ReasonClientDisconnect = "client_disconnect" // the device sent DISCONNECT
	ReasonConnectionLost   = "connection_lost"   // the network connection broke or keepalive expired
	ReasonLastWill         = "last_will"         // the device's last will said offline
	ReasonHeartbeatTimeout = "heartbeat_timeout" // nothing heard within the type's heartbeat timeout
	ReasonKicked           = "kicked"            // the hub closed the connection (disabled, revoked)
	ReasonShutdown         = "shutdown"          // the hub is stopping
	ReasonStatusMessage    = "status_message"    // the device published status offline
	ReasonNodeLost         = "node_lost"         // the cluster node holding the connection died (cluster mode)
)

// Disconnected is the argument of DeviceDisconnected.
type Disconnected struct {
	Generation uint64 `json:"generation"`
	Reason     string `json:"reason"`
	Error      string `json:"error,omitempty"`
}

// Credentials are a device's plaintext credentials. They exist only in the
// process: they are never persisted in the event log, logged or sent to a
// monitor.
type Credentials struct {
	MQTTUsername string `json:"mqtt_username"`
	MQTTPassword string `json:"mqtt_password"`
	APIKey       string `json:"api_key"`
}

// Provisioned is the argument of DeviceProvisioned. Credentials is set only
// for in-process subscribers that receive the event live; it is never
// serialised.
type Provisioned struct {
	Reprovisioned bool `json:"reprovisioned"`
	// Via says how the credentials came to be: ViaOperator, ViaToken,
	// ViaRegistration or ViaRotation ("" in events of older hubs).
	Via string `json:"via,omitempty"`
	// OldValidUntil is set by a rotation with an overlap: the old
	// credentials stay valid until then, or until the new ones are first
	// used.
	OldValidUntil *time.Time   `json:"old_valid_until,omitempty"`
	Credentials   *Credentials `json:"-"`
}

// How a device got its credentials (Provisioned.Via).
const (
	ViaOperator     = "operator"     // an operator provisioned or re-provisioned it
	ViaToken        = "token"        // a provisioning operation with a token was approved
	ViaRegistration = "registration" // it registered itself with the shared secret
	ViaRotation     = "rotation"     // its credentials were rotated
)

// Registered is the argument of DeviceRegistered.
type Registered struct {
	IsNew bool `json:"is_new"`
}

// RegistrationRefused is the argument of DeviceRegistrationRefused.
type RegistrationRefused struct {
	Reason string `json:"reason"`
}

// NameChanged is the argument of DeviceNameChanged.
type NameChanged struct {
	Name    string `json:"name"`
	OldName string `json:"old_name"`
}

// GroupChanged is the argument of DeviceGroupChanged: the ids of the new
// and the previous group ("" for none).
type GroupChanged struct {
	GroupID    string `json:"group_id"`
	OldGroupID string `json:"old_group_id"`
}

// ManagementIP is the argument of ManagementIPChanged.
type ManagementIP struct {
	IP    string `json:"ip"`
	OldIP string `json:"old_ip"`
}

// CredentialsRevoked is the argument of DeviceCredentialsRevoked.
type CredentialsRevoked struct {
	Reason string `json:"reason,omitempty"`
}

// DisabledChanged is the argument of DeviceDisabledChanged.
type DisabledChanged struct {
	Disabled bool   `json:"disabled"`
	Reason   string `json:"reason,omitempty"`
}

// Rejected is the argument of MessageRejected: why a device's message was
// refused.
type Rejected struct {
	MessageID int64  `json:"message_id,omitempty"`
	Topic     string `json:"topic"`
	Transport string `json:"transport"`
	Code      string `json:"code"`
	Field     string `json:"field,omitempty"`
	Reason    string `json:"reason"`
	// Suppressed is how many refusals of the device were counted but not
	// recorded since the last recorded one (a flood is summed up, not
	// written out).
	Suppressed int64 `json:"suppressed,omitempty"`
}

// CommandSent is the argument of DeviceCommandSent.
type CommandSent struct {
	CommandID string          `json:"command_id"`
	Command   string          `json:"command"`
	Payload   json.RawMessage `json:"payload,omitempty"`
	ExpiresAt time.Time       `json:"expires_at"`
	Resend    bool            `json:"resend,omitempty"` // sent again (after a reconnect, or no answer)
}

// CommandResult is the argument of DeviceCommandResult.
type CommandResult struct {
	CommandID string          `json:"command_id"`
	Command   string          `json:"command"`
	Status    string          `json:"status"` // succeeded or failed
	Result    json.RawMessage `json:"result,omitempty"`
	MessageID int64           `json:"message_id,omitempty"`
}

// CommandExpired is the argument of DeviceCommandExpired.
type CommandExpired struct {
	CommandID string `json:"command_id"`
	Command   string `json:"command"`
	Status    string `json:"status"` // the status it had: queued, sent or delivered
}

// CommandDelivered is the argument of DeviceCommandDelivered.
type CommandDelivered struct {
	CommandID string `json:"command_id"`
	Command   string `json:"command"`
}

// CommandQueued is the argument of DeviceCommandQueued.
type CommandQueued struct {
	CommandID string `json:"command_id"`
	Command   string `json:"command"`
}

// CommandCanceled is the argument of DeviceCommandCanceled.
type CommandCanceled struct {
	CommandID string `json:"command_id"`
	Command   string `json:"command"`
	Status    string `json:"status"`       // the status it had: queued, sent or delivered
	By        string `json:"by,omitempty"` // who canceled it (the operator's token or user)
}

// TwinDesired is the argument of TwinDesiredChanged: the new desired
// properties, whole, and their version.
type TwinDesired struct {
	Version int64          `json:"version"`
	Patch   map[string]any `json:"patch"` // the change, as a JSON merge patch (RFC 7396)
	Values  map[string]any `json:"values"`
}

// TwinReported is the argument of TwinReportedChanged: the patch the device
// reported (a null value removes a property).
type TwinReported struct {
	Version   int64          `json:"version"` // how many patches the reported properties merged, this one included
	Patch     map[string]any `json:"patch"`
	MessageID int64          `json:"message_id,omitempty"`
}

// TwinDelta is the argument of TwinDeltaChanged: the desired keys now out
// of step with the reported properties, sorted.
type TwinDelta struct {
	Keys   []string `json:"keys"`
	InStep bool     `json:"in_step"`
}

// NewArgs returns a new zero argument value for t, or nil for an unknown type.
func NewArgs(t Type) any {
	switch t {
	case DeviceDataReceived:
		return &DataReceived{}
	case DeviceStatusChanged:
		return &StatusChanged{}
	case DeviceConnected:
		return &Connected{}
	case DeviceDisconnected:
		return &Disconnected{}
	case DeviceProvisioned:
		return &Provisioned{}
	case MessageRejected:
		return &Rejected{}
	case DeviceRegistered:
		return &Registered{}
	case DeviceNameChanged:
		return &NameChanged{}
	case DeviceGroupChanged:
		return &GroupChanged{}
	case ManagementIPChanged:
		return &ManagementIP{}
	case DeviceCredentialsRevoked:
		return &CredentialsRevoked{}
	case DeviceDisabledChanged:
		return &DisabledChanged{}
	case DeviceRegistrationRefused:
		return &RegistrationRefused{}
	case DeviceCommandSent:
		return &CommandSent{}
	case DeviceCommandResult:
		return &CommandResult{}
	case DeviceCommandExpired:
		return &CommandExpired{}
	case DeviceCommandDelivered:
		return &CommandDelivered{}
	case DeviceCommandQueued:
		return &CommandQueued{}
	case DeviceCommandCanceled:
		return &CommandCanceled{}
	case TwinDesiredChanged:
		return &TwinDesired{}
	case TwinReportedChanged:
		return &TwinReported{}
	case TwinDeltaChanged:
		return &TwinDelta{}
	case MonitorStatusChanged:
		return &MonitorStatus{}
	case StorageLow, StorageRecovered:
		return &Storage{}
	}
	if a := firmwareArgs(t); a != nil {
		return a
	}
	if a := alertArgs(t); a != nil {
		return a
	}
	return configArgs(t)
}

// DecodeArgs parses raw JSON arguments of an event of type t into its typed
// argument struct. Unknown types decode to map[string]any so that events
// written by a newer hub can still be read.
func DecodeArgs(t Type, raw []byte) (any, error) {
	v := NewArgs(t)
	if v == nil {
		var m map[string]any
		if len(raw) == 0 {
			return m, nil
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("decode %s args: %w", t, err)
		}
		return m, nil
	}
	if len(raw) == 0 {
		return v, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return nil, fmt.Errorf("decode %s args: %w", t, err)
	}
	return v, nil
}

// UnmarshalJSON decodes an event and its typed arguments.
func (e *Event) UnmarshalJSON(b []byte) error {
	var w struct {
		Seq        int64           `json:"seq"`
		Type       Type            `json:"type"`
		Time       time.Time       `json:"time"`
		DeviceID   string          `json:"device_id"`
		DeviceType string          `json:"device_type"`
		Args       json.RawMessage `json:"args"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	args, err := DecodeArgs(w.Type, w.Args)
	if err != nil {
		return err
	}
	*e = Event{Seq: w.Seq, Type: w.Type, Time: w.Time, DeviceID: w.DeviceID, DeviceType: w.DeviceType, Args: args}
	return nil
}

// Filter selects events. The zero Filter selects every event.
type Filter struct {
	Types       []Type   // empty: every type
	DeviceTypes []string // empty: every device type (the seeds' sender=)
	DeviceIDs   []string // empty: every device
}

// Match reports whether e passes the filter.
func (f Filter) Match(e *Event) bool {
	if len(f.Types) > 0 && !contains(f.Types, e.Type) {
		return false
	}
	if len(f.DeviceTypes) > 0 && !contains(f.DeviceTypes, e.DeviceType) {
		return false
	}
	if len(f.DeviceIDs) > 0 && !contains(f.DeviceIDs, e.DeviceID) {
		return false
	}
	return true
}

func contains[T comparable](s []T, v T) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
