// Package deviceconfig is configuration management for devices: templates
// (named JSON documents with variables, defaults and two flags), the
// template lists and variables of groups and devices, rendering (deep merge
// in order, then variables), the backends that encode a rendered config
// for the device (json, yaml, env, Go text/template), the SHA-256 checksum
// of the rendered bytes, the per-device status machine, and the rules that
// decide which signal a change fires (signals.go).
//
// The rules of rendering and of the signals are pure functions of the state
// before and after a change; Service (service.go) reads that state from its
// Store, decides with those functions and writes the result with its
// events in one transaction through the commit path.
package deviceconfig

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"time"
)

// Errors of configuration management.
var (
	// ErrInvalid: a field of a request is not acceptable; the error names it.
	ErrInvalid = errors.New("invalid configuration")
	// ErrTemplateNotFound: no template has this id.
	ErrTemplateNotFound = errors.New("template not found")
	// ErrTemplateExists: a template with this id exists already.
	ErrTemplateExists = errors.New("template already exists")
	// ErrNoConfig: the device has no configuration (never configured, or
	// deactivated: its config endpoints answer 404 then).
	ErrNoConfig = errors.New("device has no configuration")
	// ErrDeviceNotFound: the device does not exist.
	ErrDeviceNotFound = errors.New("device not found")
	// ErrGroupNotFound: the group does not exist.
	ErrGroupNotFound = errors.New("group not found")
	// ErrRender: the configuration cannot be rendered (a missing variable,
	// a backend that fails); the error says why.
	ErrRender = errors.New("configuration does not render")
	// ErrRequired: a required template cannot be removed from a device.
	ErrRequired = errors.New("required template")
	// ErrDeactivated: the device's configuration is deactivated (or being
	// deactivated); reactivate it first.
	ErrDeactivated = errors.New("configuration deactivated")
	// ErrInUse: the template is still assigned to groups or devices.
	ErrInUse = errors.New("template in use")
	// ErrUnknownBackend: no backend has this name.
	ErrUnknownBackend = errors.New("unknown backend")
)

// Limits of what an operator may store.
const (
	MaxTemplateBytes = 256 << 10 // a template's config, encoded
	MaxVars          = 256       // variables of one template, group or device
	MaxVarValueBytes = 4096
	MaxTemplates     = 64 // templates of one group or device
)

// idPattern is what template ids match (the device id alphabet).
var idPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// ValidTemplateID reports whether id may name a template.
func ValidTemplateID(id string) bool { return idPattern.MatchString(id) }

// Template is a named JSON document with variables ({{ name }}) and
// defaults for them. Default templates are assigned to every new device
// of a matching type; a required template cannot be removed from a device
// that has it. Types, if set, limits the device types it applies to.
type Template struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Config   map[string]any    `json:"config"`
	Defaults map[string]string `json:"defaults,omitempty"`
	Default  bool              `json:"default"`
	Required bool              `json:"required"`
	Types    []string          `json:"types,omitempty"`
	// Version grows by one at every edit.
	Version   int64     `json:"version"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// AppliesTo reports whether the template may be used by a device of type typ.
func (t *Template) AppliesTo(typ string) bool {
	return len(t.Types) == 0 || slices.Contains(t.Types, typ)
}

// Validate checks the template's fields, naming the first bad one.
func (t *Template) Validate() error {
	if !ValidTemplateID(t.ID) {
		return fmt.Errorf("%w: template id %q: must match %s", ErrInvalid, t.ID, idPattern)
	}
	if t.Config == nil {
		return fmt.Errorf("%w: template %s: config must be a JSON object", ErrInvalid, t.ID)
	}
	if err := ValidateVars("defaults", t.Defaults); err != nil {
		return fmt.Errorf("template %s: %w", t.ID, err)
	}
	if err := checkPlaceholders(t.Config, "config"); err != nil {
		return fmt.Errorf("template %s: %w", t.ID, err)
	}
	return nil
}

// GroupConfig is the configuration part of a registry group: its ordered
// templates and its variables.
type GroupConfig struct {
	GroupID   string            `json:"group_id"`
	Templates []string          `json:"templates"`
	Vars      map[string]string `json:"vars"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// Status is where a device's configuration stands.
type Status string

// The statuses of a device's configuration.
const (
	// StatusModified: the rendered configuration changed and the device
	// has not reported applying it yet.
	StatusModified Status = "modified"
	// StatusApplied: the device reported applying the current checksum.
	StatusApplied Status = "applied"
	// StatusError: the device reported failing to apply the current
	// checksum (Error says why).
	StatusError Status = "error"
	// StatusDeactivating: an operator deactivated the configuration; the
	// device is served an empty one until it reports applying it.
	StatusDeactivating Status = "deactivating"
	// StatusDeactivated: the device applied the empty configuration; its
	// configuration endpoints answer 404.
	StatusDeactivated Status = "deactivated"
)

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	switch s {
	case StatusModified, StatusApplied, StatusError, StatusDeactivating, StatusDeactivated:
		return true
	}
	return false
}

// DeviceConfig is a device's configuration: what an operator set (backend,
// templates, variables, overrides) and what the hub rendered from it
// (Rendered, Checksum) with the status the device reported.
type DeviceConfig struct {
	DeviceID  string            `json:"device_id"`
	Backend   string            `json:"backend"`
	Templates []string          `json:"templates"`
	Vars      map[string]string `json:"vars"`
	Overrides map[string]any    `json:"overrides"`

	Status      Status    `json:"status"`
	Error       string    `json:"error,omitempty"`
	StatusSince time.Time `json:"status_since"`
	Checksum    string    `json:"checksum"`
	Rendered    []byte    `json:"-"`
	// AppliedChecksum is the last checksum the device reported applied.
	AppliedChecksum string    `json:"applied_checksum,omitempty"`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

// Clone returns a deep copy of the operator-set parts and a copy of the rest.
func (c *DeviceConfig) Clone() *DeviceConfig {
	n := *c
	n.Templates = slices.Clone(c.Templates)
	n.Vars = maps.Clone(c.Vars)
	n.Overrides, _ = deepCopy(c.Overrides).(map[string]any)
	return &n
}

// HistoryEntry is one rendered configuration a device had.
type HistoryEntry struct {
	ID        int64             `json:"id"`
	DeviceID  string            `json:"device_id"`
	Checksum  string            `json:"checksum"`
	Backend   string            `json:"backend"`
	Rendered  []byte            `json:"-"`
	Templates []string          `json:"templates"`
	Vars      map[string]string `json:"vars"`
	Overrides map[string]any    `json:"overrides"`
	CreatedAt time.Time         `json:"created_at"`
}

// Management is the state of the hub's management channel to a device:
// whether a config push or a command last reached it. IsWorking is nil for
// a device that had none yet.
type Management struct {
	DeviceID      string    `json:"device_id"`
	IsWorking     *bool     `json:"is_working"`
	FailureReason string    `json:"failure_reason,omitempty"`
	UpdatedAt     time.Time `json:"updated_at"`
}

// varName is what a variable name matches.
var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// BuiltinVars are the variables every device has; they cannot be set.
var BuiltinVars = []string{"device_id", "name", "type", "group", "management_ip"}

// ValidateVars checks a set of variables (what names the set in errors).
func ValidateVars(what string, vars map[string]string) error {
	if len(vars) > MaxVars {
		return fmt.Errorf("%w: %s: more than %d variables", ErrInvalid, what, MaxVars)
	}
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		if !varName.MatchString(k) {
			return fmt.Errorf("%w: %s: variable name %q: must match %s", ErrInvalid, what, k, varName)
		}
		if slices.Contains(BuiltinVars, k) {
			return fmt.Errorf("%w: %s: variable %q is built in and cannot be set", ErrInvalid, what, k)
		}
		if len(vars[k]) > MaxVarValueBytes {
			return fmt.Errorf("%w: %s: variable %q longer than %d bytes", ErrInvalid, what, k, MaxVarValueBytes)
		}
	}
	return nil
}

// ValidateTemplateList checks an ordered list of template ids.
func ValidateTemplateList(what string, ids []string) error {
	if len(ids) > MaxTemplates {
		return fmt.Errorf("%w: %s: more than %d templates", ErrInvalid, what, MaxTemplates)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if !ValidTemplateID(id) {
			return fmt.Errorf("%w: %s: template id %q: must match %s", ErrInvalid, what, id, idPattern)
		}
		if seen[id] {
			return fmt.Errorf("%w: %s: template %q listed twice", ErrInvalid, what, id)
		}
		seen[id] = true
	}
	return nil
}
