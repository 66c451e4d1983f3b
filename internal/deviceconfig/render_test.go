package deviceconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func mustJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMerge(t *testing.T) {
	tests := []struct{ name, base, over, want string }{
		{"objects merge deeply", `{"a":{"x":1,"y":{"p":1}}}`, `{"a":{"y":{"q":2}}}`, `{"a":{"x":1,"y":{"p":1,"q":2}}}`},
		{"arrays replace", `{"a":[1,2,3]}`, `{"a":[4]}`, `{"a":[4]}`},
		{"scalar replaces object", `{"a":{"x":1}}`, `{"a":5}`, `{"a":5}`},
		{"object replaces scalar", `{"a":5}`, `{"a":{"x":1}}`, `{"a":{"x":1}}`},
		{"null replaces", `{"a":1}`, `{"a":null}`, `{"a":null}`},
		{"disjoint", `{"a":1}`, `{"b":2}`, `{"a":1,"b":2}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := mustJSON(t, tt.base)
			before, _ := json.Marshal(base)
			got, _ := json.Marshal(Merge(base, mustJSON(t, tt.over)))
			want, _ := json.Marshal(mustJSON(t, tt.want))
			if !bytes.Equal(got, want) {
				t.Fatalf("got %s, want %s", got, want)
			}
			after, _ := json.Marshal(base)
			if !bytes.Equal(before, after) {
				t.Fatal("Merge modified its base")
			}
		})
	}
}

func TestParsePlaceholders(t *testing.T) {
	tests := []struct {
		in    string
		names []string
		err   string
	}{
		{"plain", nil, ""},
		{"{{ ntp }}", []string{"ntp"}, ""},
		{"{{ntp}}:{{ port }}/{{ntp}}", []string{"ntp", "port"}, ""},
		{"a { b } c }}", nil, ""},
		{"{{ }}", nil, "byte 0: expected a variable name"},
		{"x{{ 1a }}", nil, "byte 1: expected a variable name"},
		{"{{ a b }}", nil, `expected }} after variable "a"`},
		{"{{ a ", nil, `expected }} after variable "a"`},
		{"{{ a.b }}", nil, `expected }} after variable "a"`},
		{"ok {{a}} then {{", nil, "byte 14"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			names, err := Placeholders(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || !slices.Equal(names, tt.names) {
				t.Fatalf("names = %v, %v", names, err)
			}
		})
	}
}

func TestRender(t *testing.T) {
	be, _ := NewBackends()
	js, _ := be.Get("json")
	base := &Template{ID: "base", Config: mustJSON(t, `{"ntp":{"server":"{{ ntp_server }}","port":123},"name":"{{ name }}","tags":["a","b"]}`),
		Defaults: map[string]string{"ntp_server": "pool.ntp.org", "zone": "utc"}}
	site := &Template{ID: "site", Config: mustJSON(t, `{"ntp":{"zone":"{{ zone }}"},"tags":["site"]}`),
		Defaults: map[string]string{"zone": "cet"}}
	dev := DeviceInfo{ID: "r1", Name: "Router 1", Type: "router", Group: "g1", ManagementIP: "10.0.0.1"}
	tests := []struct {
		name       string
		in         Input
		want       string
		missing    []string
		errContain string
	}{
		{name: "defaults and builtins", in: Input{Templates: []*Template{base}},
			want: `{"name":"Router 1","ntp":{"port":123,"server":"pool.ntp.org"},"tags":["a","b"]}`},
		{name: "later template wins, arrays replace, later default wins", in: Input{Templates: []*Template{base, site}},
			want: `{"name":"Router 1","ntp":{"port":123,"server":"pool.ntp.org","zone":"cet"},"tags":["site"]}`},
		{name: "group over defaults", in: Input{Templates: []*Template{base}, GroupVars: map[string]string{"ntp_server": "g.ntp"}},
			want: `{"name":"Router 1","ntp":{"port":123,"server":"g.ntp"},"tags":["a","b"]}`},
		{name: "device over group", in: Input{Templates: []*Template{base}, GroupVars: map[string]string{"ntp_server": "g.ntp"}, DeviceVars: map[string]string{"ntp_server": "d.ntp"}},
			want: `{"name":"Router 1","ntp":{"port":123,"server":"d.ntp"},"tags":["a","b"]}`},
		{name: "overrides last, rendered too", in: Input{Templates: []*Template{base}, Overrides: mustJSON(t, `{"ntp":{"port":1123},"ip":"{{ management_ip }}/{{ group }}/{{ type }}/{{ device_id }}"}`)},
			want: `{"ip":"10.0.0.1/g1/router/r1","name":"Router 1","ntp":{"port":1123,"server":"pool.ntp.org"},"tags":["a","b"]}`},
		{name: "keys rendered", in: Input{Templates: []*Template{{ID: "k", Config: mustJSON(t, `{"if_{{ name }}":1}`)}}},
			want: `{"if_Router 1":1}`},
		{name: "missing variables named", in: Input{Templates: []*Template{{ID: "m", Config: mustJSON(t, `{"a":"{{ x }}","b":["{{ y }}","{{ x }}"]}`)}}},
			missing: []string{"x", "y"}},
		{name: "empty config when deactivating", in: Input{Templates: []*Template{base}, Empty: true}, want: `{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Device, tt.in.Backend = dev, js
			out, err := Render(tt.in)
			if tt.missing != nil {
				var mv *MissingVarsError
				if !errors.As(err, &mv) || !slices.Equal(mv.Names, tt.missing) || !errors.Is(err, ErrRender) {
					t.Fatalf("err = %v, want missing %v", err, tt.missing)
				}
				if !strings.Contains(err.Error(), "r1") || !strings.Contains(err.Error(), "x, y") {
					t.Fatalf("error does not name device and variables: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got, want any
			json.Unmarshal(out.Bytes, &got)
			json.Unmarshal([]byte(tt.want), &want)
			gb, _ := json.Marshal(got)
			wb, _ := json.Marshal(want)
			if !bytes.Equal(gb, wb) {
				t.Fatalf("got %s\nwant %s", out.Bytes, tt.want)
			}
			if out.Checksum != Checksum(out.Bytes) || len(out.Checksum) != 64 {
				t.Fatal("checksum is not the SHA-256 of the bytes")
			}
			again, _ := Render(tt.in)
			if again.Checksum != out.Checksum {
				t.Fatal("rendering is not deterministic")
			}
		})
	}
}

func TestResolve(t *testing.T) {
	all := map[string]*Template{
		"a": {ID: "a"}, "b": {ID: "b", Types: []string{"router"}}, "c": {ID: "c", Types: []string{"sensor"}},
	}
	get := func(id string) (*Template, bool) { t, ok := all[id]; return t, ok }
	ids := func(ts []*Template) (out []string) {
		for _, t := range ts {
			out = append(out, t.ID)
		}
		return out
	}
	got, err := Resolve([]string{"a", "c"}, []string{"b", "a"}, "router", get)
	if err != nil || !slices.Equal(ids(got), []string{"a", "b"}) {
		t.Fatalf("%v %v (group template of another type skipped, duplicates once)", ids(got), err)
	}
	if _, err := Resolve(nil, []string{"c"}, "router", get); !errors.Is(err, ErrInvalid) {
		t.Fatalf("device template of another type: %v", err)
	}
	if _, err := Resolve(nil, []string{"zz"}, "router", get); !errors.Is(err, ErrTemplateNotFound) {
		t.Fatalf("unknown template: %v", err)
	}
}

func TestBackends(t *testing.T) {
	cfg := mustJSON(t, `{"net":{"ip":"10.0.0.1","mtu":1500,"dns":["a","b"]},"debug":true,"motd":"say \"hi\" $HOME\nbye","ratio":0.5}`)
	tt, err := NewTextTemplate("uci", "", "{{ range $k, $v := .Config.net }}option {{ $k }} {{ json $v }}\n{{ end }}# {{ .Device.ID }}\n")
	if err != nil {
		t.Fatal(err)
	}
	be, err := NewBackends(tt)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"json": "{\n  \"debug\": true,\n  \"motd\": \"say \\\"hi\\\" $HOME\\nbye\",\n  \"net\": {\n    \"dns\": [\n      \"a\",\n      \"b\"\n    ],\n    \"ip\": \"10.0.0.1\",\n    \"mtu\": 1500\n  },\n  \"ratio\": 0.5\n}\n",
		"yaml": "debug: true\nmotd: |-\n  say \"hi\" $HOME\n  bye\nnet:\n  dns:\n    - a\n    - b\n  ip: 10.0.0.1\n  mtu: 1500\nratio: 0.5\n",
		"env":  "DEBUG=\"true\"\nMOTD=\"say \\\"hi\\\" \\$HOME\\nbye\"\nNET_DNS_0=\"a\"\nNET_DNS_1=\"b\"\nNET_IP=\"10.0.0.1\"\nNET_MTU=\"1500\"\nRATIO=\"0.5\"\n",
		"uci":  "option dns [\"a\",\"b\"]\noption ip \"10.0.0.1\"\noption mtu 1500\n# r1\n",
	}
	for name, w := range want {
		t.Run(name, func(t *testing.T) {
			b, err := be.Get(name)
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.Encode(cfg, DeviceInfo{ID: "r1"})
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != w {
				t.Fatalf("got\n%q\nwant\n%q", got, w)
			}
		})
	}
	if _, err := be.Get("nope"); !errors.Is(err, ErrUnknownBackend) || !strings.Contains(err.Error(), "env, json, uci, yaml") {
		t.Fatalf("unknown backend: %v", err)
	}
	env, _ := be.Get("env")
	if _, err := env.Encode(mustJSON(t, `{"a-b":1,"a_b":2}`), DeviceInfo{}); err == nil || !strings.Contains(err.Error(), "A_B") {
		t.Fatalf("env key collision: %v", err)
	}
	if _, err := NewTextTemplate("bad", "", "{{ .Config.x "); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad text template: %v", err)
	}
	uci, _ := be.Get("uci")
	if _, err := uci.Encode(map[string]any{}, DeviceInfo{}); err == nil {
		t.Fatal("a missing key must fail the text template")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		tpl  Template
		err  string
	}{
		{"ok", Template{ID: "a", Config: map[string]any{"x": "{{ v }}"}, Defaults: map[string]string{"v": "1"}}, ""},
		{"bad id", Template{ID: "a b", Config: map[string]any{}}, "template id"},
		{"no config", Template{ID: "a"}, "config must be a JSON object"},
		{"bad var name", Template{ID: "a", Config: map[string]any{}, Defaults: map[string]string{"1x": ""}}, `variable name "1x"`},
		{"builtin var", Template{ID: "a", Config: map[string]any{}, Defaults: map[string]string{"name": ""}}, `"name" is built in`},
		{"malformed placeholder", Template{ID: "a", Config: map[string]any{"k": []any{"{{ x"}}}, "/k/0: malformed placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tpl.Validate()
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("err = %v, want %q", err, tt.err)
			}
		})
	}
}
