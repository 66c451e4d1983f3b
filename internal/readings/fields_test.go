package readings

import (
	"encoding/json"
	"maps"
	"testing"
)

// fieldsMap is what eachField gives, as a map (the last of equal names
// wins, as in json.Unmarshal).
func fieldsMap(b []byte) (map[string]json.RawMessage, bool) {
	m := map[string]json.RawMessage{}
	ok := eachField(b, func(name string, v json.RawMessage) { m[name] = v })
	return m, ok
}

func TestEachField(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"empty", `{}`, true},
		{"numbers", `{"humidity":40,"temperature":-21.25e+2}`, true},
		{"literals and strings", `{"a":true,"b":false,"c":null,"d":"on","e":""}`, true},
		{"unicode string", `{"m":"é"}`, true},
		{"equal names", `{"a":1,"a":2}`, true},
		{"nested", `{"a":{"b":1}}`, false},
		{"array", `{"a":[1]}`, false},
		{"white space", `{"a": 1}`, false},
		{"escaped name", `{"\u0061":1}`, false},
		{"escaped value", `{"a":"\""}`, false},
		{"bad number", `{"a":01}`, false},
		{"bad literal", `{"a":tru}`, false},
		{"trailing", `{"a":1}x`, false},
		{"unterminated", `{"a":1`, false},
		{"trailing comma", `{"a":1,}`, false},
		{"empty name", `{"":1}`, false},
		{"not an object", `[1]`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := fieldsMap([]byte(tt.in))
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			var want map[string]json.RawMessage
			if err := json.Unmarshal([]byte(tt.in), &want); err != nil {
				t.Fatal(err)
			}
			if !maps.EqualFunc(got, want, func(a, b json.RawMessage) bool { return string(a) == string(b) }) {
				t.Errorf("got %q, want %q", got, want)
			}
		})
	}
}

// FuzzEachField: whatever eachField accepts, json.Unmarshal reads to the
// same fields.
func FuzzEachField(f *testing.F) {
	for _, s := range []string{`{}`, `{"t":21.5,"h":40}`, `{"a":"x","b":null}`, `{"a":{"b":1}}`, `{"a":1e5,"a":-0}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := fieldsMap(b)
		if !ok {
			return
		}
		var want map[string]json.RawMessage
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatalf("eachField accepted %q, json.Unmarshal: %v", b, err)
		}
		if !maps.EqualFunc(got, want, func(a, b json.RawMessage) bool { return string(a) == string(b) }) {
			t.Errorf("%q: got %q, want %q", b, got, want)
		}
	})
}
