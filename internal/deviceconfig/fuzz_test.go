package deviceconfig

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzPlaceholders: the variable parser never panics, and what it accepts
// renders back to the input when every variable renders as its own
// placeholder.
func FuzzPlaceholders(f *testing.F) {
	for _, s := range []string{"", "plain", "{{ a }}", "{{a}}{{b}}", "{{", "}}", "{{ }}", "{ {a} }", "{{ a b }}", "x{{_1}}y", "{{{{a}}}}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		names, err := Placeholders(s)
		if err != nil {
			var pe *PlaceholderError
			if !errors.As(err, &pe) || pe.Offset < 0 || pe.Offset > len(s) {
				t.Fatalf("bad error %v", err)
			}
			return
		}
		vars := map[string]string{}
		for _, n := range names {
			if !varName.MatchString(n) {
				t.Fatalf("accepted variable name %q", n)
			}
			vars[n] = "<" + n + ">"
		}
		missing := map[string]struct{}{}
		out, err := substitute(s, vars, missing)
		if err != nil || len(missing) > 0 {
			t.Fatalf("substitute after a successful parse: %v %v", err, missing)
		}
		if len(names) == 0 && out != s {
			t.Fatalf("text without variables changed: %q -> %q", s, out)
		}
	})
}

// FuzzRender: any JSON template with any variables renders or fails with
// ErrRender/ErrInvalid, never panics; a successful render is valid JSON
// whose checksum matches.
func FuzzRender(f *testing.F) {
	f.Add(`{"a":"{{ x }}","b":{"c":[1,"{{ y }}"]}}`, `{"ntp":{"server":"x"}}`, "x", "1")
	f.Add(`{"{{ x }}":1}`, `{"{{ x }}":2}`, "x", "k")
	f.Add(`{"a":"{{ missing }}"}`, `{}`, "x", "")
	f.Add(`{"a":"{{"}`, `[]`, "x", "")
	be, _ := NewBackends()
	f.Fuzz(func(t *testing.T, tpl, over, name, value string) {
		var cfg, ov map[string]any
		if json.Unmarshal([]byte(tpl), &cfg) != nil || cfg == nil {
			return
		}
		json.Unmarshal([]byte(over), &ov)
		vars := map[string]string{name: value}
		if ValidateVars("vars", vars) != nil {
			vars = nil
		}
		for _, bn := range []string{"json", "yaml", "env"} {
			b, _ := be.Get(bn)
			out, err := Render(Input{Device: DeviceInfo{ID: "d"}, Templates: []*Template{{ID: "t", Config: cfg}},
				DeviceVars: vars, Overrides: ov, Backend: b})
			if err != nil {
				if !errors.Is(err, ErrRender) {
					t.Fatalf("%s: error not ErrRender: %v", bn, err)
				}
				continue
			}
			if out.Checksum != Checksum(out.Bytes) {
				t.Fatal("checksum mismatch")
			}
			if bn == "json" && !json.Valid(out.Bytes) {
				t.Fatalf("invalid JSON rendered: %s", out.Bytes)
			}
			if bn == "json" && strings.Contains(string(out.Bytes), "{{") {
				// Only possible through a variable's value.
				if !strings.Contains(value, "{") {
					t.Fatalf("placeholder left in %s", out.Bytes)
				}
			}
		}
	})
}
