package deviceconfig

import (
	"slices"

	"github.com/devicehub/devicehub/events"
)

// The signal rules, as the seed states them, as pure functions of the
// state before and after a change. The service never fires a signal
// another way, so signals_test.go's table is the whole truth of when each
// fires and when it must not.

// Snapshot is what the rules look at of a device's configuration.
type Snapshot struct {
	Exists   bool // false: the device had no configuration (this change creates it)
	Backend  string
	Checksum string
	Status   Status
	Error    string
}

// SnapshotOf returns the snapshot of c (nil: no configuration).
func SnapshotOf(c *DeviceConfig) Snapshot {
	if c == nil {
		return Snapshot{}
	}
	return Snapshot{Exists: true, Backend: c.Backend, Checksum: c.Checksum, Status: c.Status, Error: c.Error}
}

// Transition is one change of a device's configuration. Action is the
// config_modified action of an operator's or a template's change, "" for
// a change that is not a modification (a device's report, a deactivation).
type Transition struct {
	Before, After Snapshot
	Action        string
}

// Signal is an event to fire: its type and arguments.
type Signal struct {
	Type events.Type
	Args any
}

// ConfigSignals returns what a transition fires, in this order:
// config_backend_changed, config_modified, config_status_changed,
// config_deactivating, config_deactivated.
//
//   - Nothing fires when the change creates the configuration.
//   - config_modified fires when the rendered bytes changed (their
//     checksum), with the status before as previous_status, whatever it
//     was (modified included); a change whose render is unchanged (a
//     reorder of templates that do not overlap, a variable nobody uses)
//     fires nothing. A transition is a whole change, so a reorder fires
//     once, never once for a clear and once for an add.
//   - config_status_changed fires only when the status differs.
func ConfigSignals(t Transition) []Signal {
	b, a := t.Before, t.After
	if !b.Exists || !a.Exists {
		return nil
	}
	var out []Signal
	if b.Backend != a.Backend {
		out = append(out, Signal{events.ConfigBackendChanged, &events.ConfigBackendArgs{Backend: a.Backend, OldBackend: b.Backend}})
	}
	if t.Action != "" && b.Checksum != a.Checksum {
		out = append(out, Signal{events.ConfigModified, &events.ConfigModifiedArgs{
			PreviousStatus: string(b.Status), Action: t.Action, Checksum: a.Checksum, OldChecksum: b.Checksum}})
	}
	if b.Status != a.Status {
		out = append(out, Signal{events.ConfigStatusChanged, &events.ConfigStatusArgs{
			Status: string(a.Status), OldStatus: string(b.Status), Checksum: a.Checksum, Error: a.Error}})
		switch a.Status {
		case StatusDeactivating:
			out = append(out, Signal{events.ConfigDeactivating, &events.ConfigDeactivationArgs{Checksum: a.Checksum}})
		case StatusDeactivated:
			out = append(out, Signal{events.ConfigDeactivated, &events.ConfigDeactivationArgs{Checksum: a.Checksum}})
		}
	}
	return out
}

// StatusAfterRender is the status once the rendered configuration was
// computed again: modified when it changed, unless the configuration is
// being deactivated or is deactivated.
func StatusAfterRender(cur Status, changed bool) Status {
	if !changed || cur == StatusDeactivating || cur == StatusDeactivated {
		return cur
	}
	return StatusModified
}

// Report is what a device says of a configuration it tried to apply.
type Report struct {
	Checksum string
	Applied  bool   // false: it failed
	Error    string // why it failed
}

// ReportOutcome is what a report does to a configuration.
type ReportOutcome struct {
	Status Status
	Error  string
	// Stale: the report is about another checksum than the current one
	// (an old configuration, or one not rendered yet): the status stays.
	Stale bool
	// Working is the management channel's state the report shows (nil: it
	// shows nothing, a stale report or a deactivated configuration).
	Working *bool
	Reason  string
}

// ApplyReport decides what a device's report does. A report of an old
// checksum never marks the current one applied (nor failed); applying the
// empty configuration of a deactivating device deactivates it.
func ApplyReport(cur Snapshot, r Report) ReportOutcome {
	o := ReportOutcome{Status: cur.Status, Error: cur.Error}
	if !cur.Exists || cur.Status == StatusDeactivated || r.Checksum != cur.Checksum {
		o.Stale = true
		return o
	}
	working := r.Applied
	o.Working = &working
	switch {
	case r.Applied && cur.Status == StatusDeactivating:
		o.Status, o.Error = StatusDeactivated, ""
	case r.Applied:
		o.Status, o.Error = StatusApplied, ""
	case cur.Status == StatusDeactivating:
		o.Error = r.Error
		o.Reason = failureReason(r.Error)
	default:
		o.Status, o.Error = StatusError, r.Error
		o.Reason = failureReason(r.Error)
	}
	return o
}

func failureReason(s string) string {
	if s == "" {
		return "the device failed to apply its configuration"
	}
	return s
}

// WorkingSignal decides is_working_changed: it fires when the channel's
// state changes, with null old values for a device that had none; a new
// failure reason while it stays failing fires nothing.
func WorkingSignal(old *Management, isWorking bool, reason string) (*events.IsWorkingArgs, bool) {
	if isWorking {
		reason = ""
	}
	args := &events.IsWorkingArgs{IsWorking: isWorking, FailureReason: reason}
	if old == nil || old.IsWorking == nil {
		return args, true
	}
	if *old.IsWorking == isWorking {
		return nil, false
	}
	w, r := *old.IsWorking, old.FailureReason
	args.OldIsWorking, args.OldFailureReason = &w, &r
	return args, true
}

// GroupTemplatesSignal decides group_templates_changed: when an existing
// group's ordered list changes (a reorder is a change); never when the
// group is created.
func GroupTemplatesSignal(created bool, groupID string, old, cur []string) (*events.GroupTemplatesArgs, bool) {
	if created || slices.Equal(old, cur) {
		return nil, false
	}
	if old == nil {
		old = []string{}
	}
	if cur == nil {
		cur = []string{}
	}
	return &events.GroupTemplatesArgs{GroupID: groupID, Templates: cur, OldTemplates: old}, true
}

// RequestSignal decides checksum_requested and config_download_requested:
// just before a successful (2xx) answer. An error answer fires nothing,
// and neither does 304 Not Modified: nothing was sent, and a fleet
// polling with If-None-Match must cost almost nothing.
func RequestSignal(status int) bool { return status >= 200 && status < 300 }

// ModifyAction names the config_modified action of an operator's change of
// a device's own settings: m2m_templates_changed when its template list
// changed (added, removed or reordered), config_changed otherwise.
func ModifyAction(before, after *DeviceConfig) string {
	if before != nil && !slices.Equal(before.Templates, after.Templates) {
		return events.ActionM2MTemplatesChanged
	}
	return events.ActionConfigChanged
}
