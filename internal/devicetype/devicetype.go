// Package devicetype holds the declared device types (the seeds' DeviceType
// classes) and validates readings against them.
package devicetype

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"sync"
	"time"
)

// FieldType is the value type of a reading field.
type FieldType string

// The field types a device type may declare.
const (
	Float  FieldType = "float"
	Int    FieldType = "int"
	Bool   FieldType = "bool"
	String FieldType = "string"
	JSON   FieldType = "json" // any JSON value
)

// Field declares one reading field.
type Field struct {
	Type     FieldType `yaml:"type" json:"type"`
	Unit     string    `yaml:"unit,omitempty" json:"unit,omitempty"`
	Min      *float64  `yaml:"min,omitempty" json:"min,omitempty"`
	Max      *float64  `yaml:"max,omitempty" json:"max,omitempty"`
	Required bool      `yaml:"required,omitempty" json:"required,omitempty"`
}

// RateLimit is a token bucket: Rate messages per second, bursts of Burst.
// A zero Rate means unlimited.
type RateLimit struct {
	Rate  float64 `yaml:"rate" json:"rate"`
	Burst int     `yaml:"burst" json:"burst"`
}

// Type is a declared device type.
type Type struct {
	Name              string        `yaml:"-" json:"name"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval" json:"heartbeat_interval"`
	// HeartbeatTimeout is how long the hub waits without hearing from a
	// device before it sets it offline. Zero means 1.5 × HeartbeatInterval;
	// no interval and no timeout means no heartbeat check.
	HeartbeatTimeout time.Duration    `yaml:"heartbeat_timeout,omitempty" json:"heartbeat_timeout,omitempty"`
	Fields           map[string]Field `yaml:"fields" json:"fields"`
	// AllowUnknownFields accepts fields that are not declared. A type that
	// declares no fields accepts every field.
	AllowUnknownFields bool     `yaml:"allow_unknown_fields,omitempty" json:"allow_unknown_fields,omitempty"`
	Commands           []string `yaml:"commands,omitempty" json:"commands,omitempty"`
	// CommandParams declares the parameters of the commands that have
	// any (the mapping form of commands in the configuration), with the
	// readings' field rules. A command without an entry takes any payload.
	CommandParams   map[string]CommandSpec `yaml:"-" json:"command_params,omitempty"`
	RateLimit       *RateLimit             `yaml:"rate_limit,omitempty" json:"rate_limit,omitempty"`
	MaxPayloadBytes int                    `yaml:"max_payload_bytes,omitempty" json:"max_payload_bytes,omitempty"`
}

// Timeout returns the heartbeat timeout in force for the type, zero for none.
func (t *Type) Timeout() time.Duration {
	if t.HeartbeatTimeout > 0 {
		return t.HeartbeatTimeout
	}
	return t.HeartbeatInterval * 3 / 2
}

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]{0,63}$`)

// Check reports the first problem with the declaration, naming the key.
func (t *Type) Check() error {
	if !nameRE.MatchString(t.Name) {
		return fmt.Errorf("name %q: must match %s", t.Name, nameRE)
	}
	if t.HeartbeatInterval < 0 {
		return errors.New("heartbeat_interval: must not be negative")
	}
	if t.HeartbeatTimeout < 0 {
		return errors.New("heartbeat_timeout: must not be negative")
	}
	if t.MaxPayloadBytes < 0 {
		return errors.New("max_payload_bytes: must not be negative")
	}
	if rl := t.RateLimit; rl != nil {
		if rl.Rate < 0 || math.IsNaN(rl.Rate) {
			return errors.New("rate_limit.rate: must not be negative")
		}
		if rl.Rate > 0 && rl.Burst < 1 {
			return errors.New("rate_limit.burst: must be at least 1")
		}
	}
	for _, name := range sortedKeys(t.Fields) {
		if err := t.Fields[name].checkDecl("fields." + name); err != nil {
			return err
		}
	}
	for i, c := range t.Commands {
		if c == "" {
			return fmt.Errorf("commands[%d]: empty command name", i)
		}
	}
	for _, c := range sortedKeys(t.CommandParams) {
		if !t.HasCommand(c) {
			return fmt.Errorf("commands.%s: parameters of a command the type does not declare", c)
		}
		ps := t.CommandParams[c].Params
		for _, name := range sortedKeys(ps) {
			if err := ps[name].checkDecl("commands." + c + ".params." + name); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkDecl checks a field declaration; key names it in errors.
func (f Field) checkDecl(key string) error {
	switch f.Type {
	case Float, Int, Bool, String, JSON:
	case "":
		return fmt.Errorf("%s.type: missing (float, int, bool, string or json)", key)
	default:
		return fmt.Errorf("%s.type: unknown type %q (float, int, bool, string or json)", key, f.Type)
	}
	if (f.Min != nil || f.Max != nil) && f.Type != Float && f.Type != Int {
		return fmt.Errorf("%s: min and max apply only to float and int", key)
	}
	if f.Min != nil && f.Max != nil && *f.Min > *f.Max {
		return fmt.Errorf("%s: min %v is greater than max %v", key, *f.Min, *f.Max)
	}
	return nil
}

// FieldError says which field broke which rule.
type FieldError struct {
	Field string // the field at fault
	Rule  string // type, min, max, required, unknown
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return fmt.Sprintf("field %q: %s", e.Field, e.Msg)
}

// Validate checks one reading's values against the type. Numbers must be
// float64 (as encoding/json decodes them) or json.Number.
//
// It is on every message's path: a valid reading is told without sorting
// or allocating; only an invalid one is checked again in the order of the
// field names, so that the error reported is always the same one.
func (t *Type) Validate(values map[string]any) error {
	if t.valid(values) {
		return nil
	}
	return t.firstError(values)
}

// valid reports whether values pass every rule, in map order.
func (t *Type) valid(values map[string]any) bool {
	for name, f := range t.Fields {
		v, ok := values[name]
		if !ok || v == nil {
			if f.Required {
				return false
			}
			continue
		}
		if f.check(name, v) != nil {
			return false
		}
	}
	if len(t.Fields) > 0 && !t.AllowUnknownFields {
		for name := range values {
			if _, ok := t.Fields[name]; !ok {
				return false
			}
		}
	}
	return true
}

// firstError is the first rule values break, in the order of the field
// names (declared fields first, then unknown ones).
func (t *Type) firstError(values map[string]any) error {
	for _, name := range sortedKeys(t.Fields) {
		f := t.Fields[name]
		v, ok := values[name]
		if !ok || v == nil {
			if f.Required {
				return &FieldError{Field: name, Rule: "required", Msg: "is required"}
			}
			continue
		}
		if err := f.check(name, v); err != nil {
			return err
		}
	}
	if len(t.Fields) > 0 && !t.AllowUnknownFields {
		for _, name := range sortedKeys(values) {
			if _, ok := t.Fields[name]; !ok {
				return &FieldError{Field: name, Rule: "unknown", Msg: fmt.Sprintf("is not a field of type %s", t.Name)}
			}
		}
	}
	return nil
}

func (f Field) check(name string, v any) error {
	switch f.Type {
	case JSON:
		return nil
	case Bool:
		if _, ok := v.(bool); !ok {
			return &FieldError{Field: name, Rule: "type", Msg: fmt.Sprintf("must be a bool, got %s", kind(v))}
		}
		return nil
	case String:
		if _, ok := v.(string); !ok {
			return &FieldError{Field: name, Rule: "type", Msg: fmt.Sprintf("must be a string, got %s", kind(v))}
		}
		return nil
	}
	n, ok := number(v)
	if !ok {
		return &FieldError{Field: name, Rule: "type", Msg: fmt.Sprintf("must be a%s number, got %s", map[bool]string{true: "n integer", false: ""}[f.Type == Int], kind(v))}
	}
	if f.Type == Int && (n != math.Trunc(n) || math.IsInf(n, 0)) {
		return &FieldError{Field: name, Rule: "type", Msg: fmt.Sprintf("must be an integer, got %v", n)}
	}
	if f.Min != nil && n < *f.Min {
		return &FieldError{Field: name, Rule: "min", Msg: fmt.Sprintf("%v is below the minimum %v", n, *f.Min)}
	}
	if f.Max != nil && n > *f.Max {
		return &FieldError{Field: name, Rule: "max", Msg: fmt.Sprintf("%v is above the maximum %v", n, *f.Max)}
	}
	return nil
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case interface{ Float64() (float64, error) }:
		f, err := x.Float64()
		return f, err == nil
	}
	return 0, false
}

func kind(v any) string {
	switch v.(type) {
	case bool:
		return "a bool"
	case string:
		return "a string"
	case float64, int, int64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ErrUnknownType is returned for a device type that is not declared.
var ErrUnknownType = errors.New("unknown device type")

// Registry holds the declared types. It is safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	types map[string]*Type
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{types: map[string]*Type{}} }

// Register adds or replaces a type after checking it.
func (r *Registry) Register(t Type) error {
	if err := t.Check(); err != nil {
		return fmt.Errorf("device type %s: %w", t.Name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.types[t.Name] = &t
	return nil
}

// Get returns the named type.
func (r *Registry) Get(name string) (*Type, error) {
	r.mu.RLock()
	t, ok := r.types[name]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownType, name)
	}
	return t, nil
}

// List returns the types sorted by name.
func (r *Registry) List() []*Type {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Type, 0, len(r.types))
	for _, k := range sortedKeys(r.types) {
		out = append(out, r.types[k])
	}
	return out
}
