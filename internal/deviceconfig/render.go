package deviceconfig

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// DeviceInfo is what rendering knows of a device: the built-in variables.
type DeviceInfo struct {
	ID           string
	Name         string
	Type         string
	Group        string
	ManagementIP string
}

func (d DeviceInfo) vars() map[string]string {
	return map[string]string{
		"device_id": d.ID, "name": d.Name, "type": d.Type,
		"group": d.Group, "management_ip": d.ManagementIP,
	}
}

// Input is everything a device's rendered configuration depends on.
type Input struct {
	Device DeviceInfo
	// Templates are the group's templates then the device's own, in
	// order (see Resolve); later ones win.
	Templates  []*Template
	GroupVars  map[string]string
	DeviceVars map[string]string
	// Overrides are merged last, over every template.
	Overrides map[string]any
	Backend   Backend
	// Empty renders the empty configuration (a deactivating device).
	Empty bool
}

// Output is a rendered configuration.
type Output struct {
	Config   map[string]any
	Bytes    []byte
	Checksum string
}

// MissingVarsError is a rendering that uses variables nobody defined.
type MissingVarsError struct {
	DeviceID string
	Names    []string // sorted
}

func (e *MissingVarsError) Error() string {
	return fmt.Sprintf("%v: device %s: missing variables: %s", ErrRender, e.DeviceID, strings.Join(e.Names, ", "))
}

// Unwrap makes a MissingVarsError an ErrRender.
func (e *MissingVarsError) Unwrap() error { return ErrRender }

// Vars returns the variables a device's configuration is rendered with:
// template defaults in template order (later wins), then the group's,
// then the device's, and the built-ins (which nobody may set).
func Vars(in *Input) map[string]string {
	vars := map[string]string{}
	for _, t := range in.Templates {
		maps.Copy(vars, t.Defaults)
	}
	maps.Copy(vars, in.GroupVars)
	maps.Copy(vars, in.DeviceVars)
	maps.Copy(vars, in.Device.vars())
	return vars
}

// Render merges the templates and overrides in order, renders the
// variables, encodes the result with the backend and takes its checksum.
// A missing variable is a *MissingVarsError naming every one.
func Render(in Input) (*Output, error) {
	if in.Backend == nil {
		return nil, fmt.Errorf("%w: no backend", ErrRender)
	}
	cfg := map[string]any{}
	if !in.Empty {
		for _, t := range in.Templates {
			cfg = Merge(cfg, t.Config)
		}
		if in.Overrides != nil {
			cfg = Merge(cfg, in.Overrides)
		}
		missing := map[string]struct{}{}
		out, err := substituteDoc(cfg, "", Vars(&in), missing)
		if err != nil {
			return nil, fmt.Errorf("%w: device %s: %v", ErrRender, in.Device.ID, err)
		}
		if len(missing) > 0 {
			return nil, &MissingVarsError{DeviceID: in.Device.ID, Names: slices.Sorted(maps.Keys(missing))}
		}
		cfg = out.(map[string]any)
	}
	b, err := in.Backend.Encode(cfg, in.Device)
	if err != nil {
		return nil, fmt.Errorf("%w: device %s: backend %s: %v", ErrRender, in.Device.ID, in.Backend.Name(), err)
	}
	return &Output{Config: cfg, Bytes: b, Checksum: Checksum(b)}, nil
}

// Checksum is the hex SHA-256 of the rendered bytes a device downloads.
func Checksum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// Resolve returns the templates a device of type typ is rendered with: its
// group's (those that apply to its type; a group may hold devices of many
// types) then its own, each once (at its first place). get looks a
// template up; a missing one is ErrTemplateNotFound.
func Resolve(groupIDs, deviceIDs []string, typ string, get func(id string) (*Template, bool)) ([]*Template, error) {
	out := make([]*Template, 0, len(groupIDs)+len(deviceIDs))
	seen := make(map[string]bool, len(groupIDs)+len(deviceIDs))
	for i, ids := range [][]string{groupIDs, deviceIDs} {
		for _, id := range ids {
			if seen[id] {
				continue
			}
			t, ok := get(id)
			if !ok {
				return nil, fmt.Errorf("%w: %s", ErrTemplateNotFound, id)
			}
			if !t.AppliesTo(typ) {
				if i == 0 {
					continue
				}
				return nil, fmt.Errorf("%w: template %s does not apply to device type %s", ErrInvalid, id, typ)
			}
			seen[id] = true
			out = append(out, t)
		}
	}
	return out, nil
}
