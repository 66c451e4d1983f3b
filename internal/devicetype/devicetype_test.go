package devicetype

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func f(v float64) *float64 { return &v }

func weather() Type {
	return Type{
		Name:              "WeatherStation",
		HeartbeatInterval: time.Minute,
		Fields: map[string]Field{
			"temperature": {Type: Float, Unit: "celsius", Min: f(-60), Max: f(70)},
			"humidity":    {Type: Float, Min: f(0), Max: f(100)},
			"count":       {Type: Int, Min: f(0)},
			"ok":          {Type: Bool},
			"label":       {Type: String},
			"extra":       {Type: JSON},
			"serial":      {Type: String, Required: true},
		},
	}
}

func TestValidate(t *testing.T) {
	typ := weather()
	tests := []struct {
		name        string
		values      map[string]any
		field, rule string // "" for valid
	}{
		{"valid", map[string]any{"serial": "a", "temperature": 21.5, "humidity": 40.0}, "", ""},
		{"json number", map[string]any{"serial": "a", "temperature": json.Number("21.5")}, "", ""},
		{"json field takes anything", map[string]any{"serial": "a", "extra": map[string]any{"x": []any{1.0}}}, "", ""},
		{"missing required", map[string]any{"temperature": 1.0}, "serial", "required"},
		{"null required", map[string]any{"serial": nil}, "serial", "required"},
		{"below min", map[string]any{"serial": "a", "temperature": -61.0}, "temperature", "min"},
		{"above max", map[string]any{"serial": "a", "humidity": 100.5}, "humidity", "max"},
		{"at bounds", map[string]any{"serial": "a", "temperature": 70.0, "humidity": 0.0}, "", ""},
		{"string for float", map[string]any{"serial": "a", "temperature": "hot"}, "temperature", "type"},
		{"fraction for int", map[string]any{"serial": "a", "count": 1.5}, "count", "type"},
		{"int ok", map[string]any{"serial": "a", "count": 3.0}, "", ""},
		{"number for bool", map[string]any{"serial": "a", "ok": 1.0}, "ok", "type"},
		{"bool for string", map[string]any{"serial": "a", "label": true}, "label", "type"},
		{"unknown field", map[string]any{"serial": "a", "pressure": 1000.0}, "pressure", "unknown"},
		// With several faults the first declared field in name order is
		// told, then the first unknown one: always the same error.
		{"two faults, first by name", map[string]any{"serial": "a", "temperature": 99.0, "humidity": -1.0, "count": 0.5}, "count", "type"},
		{"declared fault before unknown", map[string]any{"serial": "a", "aaa": 1.0, "temperature": 99.0}, "temperature", "max"},
		{"unknown fields by name", map[string]any{"serial": "a", "zz": 1.0, "bb": 1.0, "mm": 1.0}, "bb", "unknown"},
		{"required before unknown", map[string]any{"aa": 1.0}, "serial", "required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := typ.Validate(tt.values)
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate = %v, want a *FieldError", err)
			}
			if fe.Field != tt.field || fe.Rule != tt.rule {
				t.Fatalf("FieldError = %+v, want field %s rule %s", fe, tt.field, tt.rule)
			}
			if !strings.Contains(fe.Error(), tt.field) {
				t.Fatalf("message %q does not name the field", fe.Error())
			}
		})
	}
}

func TestValidateStableError(t *testing.T) {
	typ := weather()
	values := map[string]any{"serial": "a", "temperature": 99.0, "humidity": -1.0, "ok": "yes", "pressure": 1.0, "wind": 2.0}
	want := typ.Validate(values).Error()
	for range 50 { // map order differs from call to call
		if got := typ.Validate(values).Error(); got != want {
			t.Fatalf("Validate = %q, earlier %q", got, want)
		}
	}
}

func TestValidateDoesNotAllocate(t *testing.T) {
	typ := weather()
	values := map[string]any{"serial": "a", "temperature": 21.5, "humidity": 40.0, "count": 3.0, "ok": true}
	if n := testing.AllocsPerRun(100, func() {
		if err := typ.Validate(values); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Validate of a valid reading allocates %v times, want 0 (it is on every message's path)", n)
	}
}

func TestAllowUnknownAndUntyped(t *testing.T) {
	open := Type{Name: "Open"}
	if err := open.Validate(map[string]any{"anything": 1.0}); err != nil {
		t.Fatalf("a type without fields refused a field: %v", err)
	}
	typ := weather()
	typ.AllowUnknownFields = true
	if err := typ.Validate(map[string]any{"serial": "a", "pressure": 1.0}); err != nil {
		t.Fatalf("AllowUnknownFields refused a field: %v", err)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Type)
		want string // substring of the error, "" for none
	}{
		{"valid", func(*Type) {}, ""},
		{"bad name", func(t *Type) { t.Name = "1bad" }, "name"},
		{"missing field type", func(t *Type) { t.Fields["x"] = Field{} }, "fields.x.type"},
		{"unknown field type", func(t *Type) { t.Fields["x"] = Field{Type: "floot"} }, `unknown type "floot"`},
		{"min on string", func(t *Type) { t.Fields["x"] = Field{Type: String, Min: f(1)} }, "fields.x"},
		{"min above max", func(t *Type) { t.Fields["x"] = Field{Type: Int, Min: f(2), Max: f(1)} }, "greater than max"},
		{"negative interval", func(t *Type) { t.HeartbeatInterval = -time.Second }, "heartbeat_interval"},
		{"rate without burst", func(t *Type) { t.RateLimit = &RateLimit{Rate: 5} }, "rate_limit.burst"},
		{"empty command", func(t *Type) { t.Commands = []string{"reboot", ""} }, "commands[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ := weather()
			tt.mod(&typ)
			err := typ.Check()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Check = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	typ := Type{HeartbeatInterval: 10 * time.Second}
	if got := typ.Timeout(); got != 15*time.Second {
		t.Fatalf("Timeout = %v, want 15s", got)
	}
	typ.HeartbeatTimeout = 12 * time.Second
	if got := typ.Timeout(); got != 12*time.Second {
		t.Fatalf("Timeout = %v, want 12s", got)
	}
	if got := (&Type{}).Timeout(); got != 0 {
		t.Fatalf("Timeout = %v, want 0", got)
	}
}

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	if err := r.Register(weather()); err != nil {
		t.Fatal(err)
	}
	if err := r.Register(Type{Name: "Bad", Fields: map[string]Field{"x": {}}}); err == nil {
		t.Fatal("registered a bad type")
	}
	if _, err := r.Get("Nope"); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("Get = %v, want ErrUnknownType", err)
	}
	got, err := r.Get("WeatherStation")
	if err != nil || got.Name != "WeatherStation" {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if l := r.List(); len(l) != 1 {
		t.Fatalf("List = %d types", len(l))
	}
}
