package devicetype

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
)

func paramsType() *Type {
	one, day := 1.0, 86400.0
	return &Type{Name: "T", Commands: []string{"reboot", "set_interval"}, CommandParams: map[string]CommandSpec{
		"set_interval": {Params: map[string]Field{
			"seconds": {Type: Int, Min: &one, Max: &day, Required: true},
			"label":   {Type: String},
		}},
	}}
}

func TestValidateParams(t *testing.T) {
	tests := []struct {
		name, command, payload string
		field, rule            string // "" rule: valid
	}{
		{"good", "set_interval", `{"seconds": 30}`, "", ""},
		{"good with optional", "set_interval", `{"seconds": 86400, "label": "x"}`, "", ""},
		{"missing required", "set_interval", `{"label": "x"}`, "seconds", "required"},
		{"no payload", "set_interval", ``, "seconds", "required"},
		{"null payload", "set_interval", `null`, "seconds", "required"},
		{"below min", "set_interval", `{"seconds": 0}`, "seconds", "min"},
		{"above max", "set_interval", `{"seconds": 86401}`, "seconds", "max"},
		{"not an int", "set_interval", `{"seconds": 1.5}`, "seconds", "type"},
		{"string for int", "set_interval", `{"seconds": "30"}`, "seconds", "type"},
		{"wrong type", "set_interval", `{"seconds": 5, "label": 7}`, "label", "type"},
		{"unknown", "set_interval", `{"seconds": 5, "extra": 1}`, "extra", "unknown"},
		{"array", "set_interval", `[5]`, "", "type"},
		{"two values", "set_interval", `{"seconds": 5} {}`, "", "type"},
		{"names only: anything", "reboot", `[1, "x"]`, "", ""},
	}
	typ := paramsType()
	if err := typ.Check(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := typ.ValidateParams(tt.command, []byte(tt.payload))
			if tt.rule == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || fe.Rule != tt.rule {
				t.Fatalf("err %v (%+v), want field %q rule %s", err, fe, tt.field, tt.rule)
			}
		})
	}
}

func TestCheckCommandParams(t *testing.T) {
	typ := paramsType()
	typ.CommandParams["explode"] = CommandSpec{Params: map[string]Field{"n": {Type: Int}}}
	if err := typ.Check(); err == nil || err.Error() != "commands.explode: parameters of a command the type does not declare" {
		t.Fatalf("undeclared: %v", err)
	}
	typ = paramsType()
	typ.CommandParams["set_interval"].Params["bad"] = Field{Type: "integer"}
	if err := typ.Check(); err == nil || err.Error() != `commands.set_interval.params.bad.type: unknown type "integer" (float, int, bool, string or json)` {
		t.Fatalf("bad type: %v", err)
	}
}

// FuzzValidateParams: any payload is decided without panicking, and an
// accepted one holds the declared rules.
func FuzzValidateParams(f *testing.F) {
	for _, s := range []string{`{"seconds": 30}`, `{"seconds": 0}`, `[1]`, `null`, ``, `{"seconds": 1e400}`, `{"seconds": 5, "label": "é"}`} {
		f.Add(s)
	}
	typ := paramsType()
	f.Fuzz(func(t *testing.T, payload string) {
		err := typ.ValidateParams("set_interval", []byte(payload))
		if err == nil {
			var m map[string]any
			if json.Unmarshal([]byte(payload), &m) != nil {
				t.Fatalf("accepted a payload that is not an object: %q", payload)
			}
			n, ok := m["seconds"].(float64)
			if !ok || n < 1 || n > 86400 || n != math.Trunc(n) {
				t.Fatalf("accepted seconds %v in %q", m["seconds"], payload)
			}
			return
		}
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Rule == "" {
			t.Fatalf("error without a rule: %v", err)
		}
	})
}
