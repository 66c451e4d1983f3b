package devicetype

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// CommandSpec declares one command's parameters: the keys of its payload
// object, with the same rules as reading fields (type, required, min,
// max).
type CommandSpec struct {
	Params map[string]Field `yaml:"params,omitempty" json:"params,omitempty"`
}

// HasCommand reports whether the type declares the command.
func (t *Type) HasCommand(name string) bool { return slices.Contains(t.Commands, name) }

// CommandNames returns the declared commands.
func (t *Type) CommandNames() []string { return t.Commands }

// ValidateParams checks a command's payload (JSON, or empty for none)
// against its declared parameters: a command with parameters takes a JSON
// object whose keys are declared parameters, each of the declared type
// and within its bounds, with every required one present. A command
// declared without parameters takes any payload. The error is a
// *FieldError naming the parameter and the rule; a payload that is not an
// object names no field ("" with rule "type").
func (t *Type) ValidateParams(command string, payload []byte) error {
	spec, ok := t.CommandParams[command]
	if !ok || spec.Params == nil {
		return nil
	}
	var values map[string]any
	payload = bytes.TrimSpace(payload)
	if len(payload) > 0 && !bytes.Equal(payload, []byte("null")) {
		d := json.NewDecoder(bytes.NewReader(payload))
		d.UseNumber()
		if err := d.Decode(&values); err != nil || values == nil {
			return &FieldError{Rule: "type", Msg: "the payload must be a JSON object of the command's parameters"}
		}
		if d.More() {
			return &FieldError{Rule: "type", Msg: "the payload must be one JSON object"}
		}
	}
	for _, name := range sortedKeys(spec.Params) {
		f := spec.Params[name]
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
	for _, name := range sortedKeys(values) {
		if _, ok := spec.Params[name]; !ok {
			return &FieldError{Field: name, Rule: "unknown", Msg: fmt.Sprintf("is not a parameter of command %s", command)}
		}
	}
	return nil
}
