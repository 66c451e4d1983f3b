package monitors

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
)

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true},
		{"*", "device_connected", true},
		{"device_*", "device_connected", true},
		{"device_*", "config_modified", false},
		{"device_*", "device_", true},
		{"*_changed", "device_status_changed", true},
		{"*_changed", "device_changed_x", false},
		{"d*c*d", "device_connected", true},
		{"d*c*d", "device_connectex", false},
		{"device_connected", "device_connected", true},
		{"device_connected", "device_connecte", false},
		{"a*a*a", "aaa", true},
		{"a*a*a", "aa", false},
	}
	for _, tt := range tests {
		if got := Glob(tt.pattern, tt.s); got != tt.want {
			t.Errorf("Glob(%q, %q) = %v", tt.pattern, tt.s, got)
		}
	}
}

func TestParseTopic(t *testing.T) {
	tests := []struct {
		name, in, want, err string
	}{
		{name: "star", in: "*", want: "*"},
		{name: "prefix", in: " device_* ", want: "device_*"},
		{name: "double star", in: "device_**", want: "device_*"},
		{name: "narrowed", in: "device_*[type=sensor|cam,group=north]", want: "device_*[type=cam|sensor,group=north]"},
		{name: "id synonym", in: "*[device=ws-1]", want: "*[id=ws-1]"},
		{name: "empty", in: "", err: "empty topic"},
		{name: "upper", in: "Device_*", err: "a-z, 0-9"},
		{name: "no pattern", in: "[type=x]", err: "no event type pattern"},
		{name: "unclosed", in: "device_*[type=x", err: "narrowing"},
		{name: "unknown key", in: "*[colour=red]", err: "unknown key"},
		{name: "repeated key", in: "*[type=a,type=b]", err: "given twice"},
		{name: "empty value", in: "*[type=a|]", err: "empty value"},
		{name: "star value", in: "*[id=a*]", err: "has = or *"},
		{name: "empty narrowing", in: "*[]", err: "empty narrowing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tp, err := ParseTopic(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || tp.String() != tt.want {
				t.Fatalf("got %q, %v; want %q", tp.String(), err, tt.want)
			}
		})
	}
}

func TestTopicMatch(t *testing.T) {
	groups := map[string]string{"n1": "north", "s1": "south"}
	ev := func(typ events.Type, id, dt string) *events.Event {
		return &events.Event{Type: typ, DeviceID: id, DeviceType: dt}
	}
	tests := []struct {
		name  string
		topic string
		ev    *events.Event
		want  bool
	}{
		{"all", "*", ev("monitor_status_changed", "", ""), true},
		{"prefix", "device_*", ev("device_connected", "n1", "sensor"), true},
		{"prefix miss", "config_*", ev("device_connected", "n1", "sensor"), false},
		{"type", "*[type=sensor]", ev("device_connected", "n1", "sensor"), true},
		{"type miss", "*[type=cam]", ev("device_connected", "n1", "sensor"), false},
		{"group", "*[group=north]", ev("device_connected", "n1", "sensor"), true},
		{"group miss", "*[group=north]", ev("device_connected", "s1", "sensor"), false},
		{"group of no device", "*[group=north]", ev("monitor_status_changed", "", ""), false},
		{"id", "*[id=s1|n1]", ev("device_connected", "s1", "sensor"), true},
		{"all keys", "device_*[type=sensor,group=south,id=s1]", ev("device_connected", "s1", "sensor"), true},
		{"all keys one miss", "device_*[type=cam,group=south,id=s1]", ev("device_connected", "s1", "sensor"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := newMatcher([]string{tt.topic})
			if err != nil {
				t.Fatal(err)
			}
			if got := m.match(tt.ev, func(id string) string { return groups[id] }); got != tt.want {
				t.Fatalf("match = %v", got)
			}
		})
	}
	if !SameTopics([]string{"device_*[type=b|a]", "*"}, []string{"*", "device_*[type=a|b]"}) || SameTopics([]string{"*"}, []string{"device_*"}) {
		t.Fatal("SameTopics")
	}
}

func TestNormalize(t *testing.T) {
	ok := func(s Spec) Spec { return s }
	tests := []struct {
		name  string
		spec  Spec
		field string // "" for valid
	}{
		{"http defaults", ok(Spec{Topics: []string{"*"}, Transport: "HTTP", URL: "https://example.com/h"}), ""},
		{"tcp defaults", ok(Spec{Topics: []string{"*"}, Transport: "tcp"}), ""},
		{"no topics", Spec{Transport: "tcp"}, "topics"},
		{"bad topic", Spec{Topics: []string{"*", "X"}, Transport: "tcp"}, "topics[1]"},
		{"duplicate topic", Spec{Topics: []string{"a*", "a**"}, Transport: "tcp"}, "topics[1]"},
		{"no transport", Spec{Topics: []string{"*"}}, "transport"},
		{"bad transport", Spec{Topics: []string{"*"}, Transport: "mqtt"}, "transport"},
		{"http without url", Spec{Topics: []string{"*"}, Transport: "http"}, "url"},
		{"ftp url", Spec{Topics: []string{"*"}, Transport: "http", URL: "ftp://x/y"}, "url"},
		{"url with user", Spec{Topics: []string{"*"}, Transport: "http", URL: "http://u:p@x/y"}, "url"},
		{"bad method", Spec{Topics: []string{"*"}, Transport: "http", URL: "http://x/", Method: "GET"}, "method"},
		{"bad basic auth", Spec{Topics: []string{"*"}, Transport: "http", URL: "http://x/", BasicAuth: "nocolon"}, "basic_auth"},
		{"negative timeout", Spec{Topics: []string{"*"}, Transport: "http", URL: "http://x/", ConnectTimeoutMS: -1}, "connect_timeout_ms"},
		{"ack on http", Spec{Topics: []string{"*"}, Transport: "http", URL: "http://x/", Ack: "off"}, "ack"},
		{"url on tcp", Spec{Topics: []string{"*"}, Transport: "tcp", URL: "http://x/"}, "url"},
		{"bad ack", Spec{Topics: []string{"*"}, Transport: "tcp", Ack: "sometimes"}, "ack"},
		{"batch size", Spec{Topics: []string{"*"}, Transport: "tcp", BatchSize: MaxBatchSize + 1}, "batch_size"},
		{"batch duration", Spec{Topics: []string{"*"}, Transport: "tcp", BatchDuration: ptr(-1.0)}, "batch_duration"},
		{"compression", Spec{Topics: []string{"*"}, Transport: "tcp", Compression: "brotli"}, "compression"},
		{"format", Spec{Topics: []string{"*"}, Transport: "tcp", Format: "csv"}, "format"},
		{"description", Spec{Topics: []string{"*"}, Transport: "tcp", Description: strings.Repeat("x", MaxDescription+1)}, "description"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.spec.Normalize()
			if tt.field == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("err %v, want a FieldError for %s", err, tt.field)
			}
		})
	}
	s := Spec{Topics: []string{"*"}, Transport: "http", URL: "https://example.com/h", Compression: "GZIP"}
	if err := s.Normalize(); err != nil {
		t.Fatal(err)
	}
	if s.Method != "PUT" || s.ConnectTimeoutMS != 5000 || s.ResponseTimeoutMS != 5000 || s.BatchSize != 100 ||
		s.Duration() != 10*time.Second || s.Compression != "zlib" || s.Format != "json" {
		t.Fatalf("defaults: %+v", s)
	}
}

func ptr[T any](v T) *T { return &v }

func TestCondition(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	mons := []Monitor{
		{ID: "mon_a", Spec: Spec{Topics: []string{"device_*"}, Transport: "http", URL: "http://x/", Method: "PUT", BatchSize: 100, Format: "json", Compression: "none"}, Status: Active, LastSent: &now},
		{ID: "mon_b", Spec: Spec{Topics: []string{"*"}, Transport: "http", URL: "http://y/", Method: "POST", BatchSize: 10, Format: "xml", Compression: "zlib", AutoReplayOnConnect: true}, Status: Disabled},
		{ID: "mon_c", Spec: Spec{Topics: []string{"*", "config_*"}, Transport: "tcp", Ack: "explicit", BatchSize: 1, Format: "json", Compression: "zlib", Description: `say "hi"`}, Status: Inactive},
	}
	tests := []struct {
		cond string
		want string
	}{
		{``, "mon_a mon_b mon_c"},
		{`status = "DISABLED"`, "mon_b"},
		{`monStatus == "disabled"`, "mon_b"},
		{`transport = "http" and status != "ACTIVE"`, "mon_b"},
		{`transport = "tcp" or format = 'xml'`, "mon_b mon_c"},
		{`not (transport = "tcp" or format = "xml")`, "mon_a"},
		{`batch_size >= 10 and batch_size < 100`, "mon_b"},
		{`batch_size <> 1`, "mon_a mon_b"},
		{`auto_replay_on_connect = true`, "mon_b"},
		{`topic = "*"`, "mon_b mon_c"},
		{`topic != "*"`, "mon_a"},
		{`description = "say \"hi\""`, "mon_c"},
		{`last_sent > "2026-01-01T00:00:00Z"`, "mon_a"},
		{`last_sent != "2026-01-02T03:04:05Z"`, "mon_b mon_c"},
		{`id > "mon_a" and ack = "EXPLICIT"`, "mon_c"},
		{`compression = "zlib" and (status = "INACTIVE" or status = "DISABLED") and not batch_size = 10`, "mon_c"},
	}
	for _, tt := range tests {
		t.Run(tt.cond, func(t *testing.T) {
			c, err := ParseCondition(tt.cond)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for i := range mons {
				if c.Match(&mons[i]) {
					got = append(got, mons[i].ID)
				}
			}
			if strings.Join(got, " ") != tt.want {
				t.Fatalf("got %v, want %s", got, tt.want)
			}
		})
	}
	bad := []struct{ cond, err string }{
		{`status`, "expected an operator"},
		{`status =`, "compares with a \"string\""},
		{`colour = "red"`, "unknown attribute"},
		{`status = "ACTIVE" and`, "expected an attribute"},
		{`(status = "ACTIVE"`, "expected ')'"},
		{`status = "ACTIVE")`, "unexpected ')'"},
		{`status = "ACTIVE`, "string not closed"},
		{`batch_size = "ten"`, "compares with a number"},
		{`auto_replay_on_connect > true`, "= or != only"},
		{`auto_replay_on_connect = yes`, "true or false"},
		{`last_sent > "yesterday"`, "RFC 3339"},
		{`topic = "X"`, "a-z"},
		{`status ! "A"`, "'!' must be followed"},
		{`status = "A" # x`, "unexpected character"},
		{strings.Repeat("(", 60) + `status = "A"` + strings.Repeat(")", 60), "nested deeper"},
	}
	for _, tt := range bad {
		_, err := ParseCondition(tt.cond)
		if err == nil || !strings.Contains(err.Error(), tt.err) || !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseCondition(%q) = %v, want an error with %q", tt.cond, err, tt.err)
		}
	}
}

func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{`status = "DISABLED"`, `transport = "http" and status != "ACTIVE"`, `not (a = 1)`,
		`batch_size >= 1e3 or topic = "device_*[type=a]"`, `last_sent < "2026-01-01T00:00:00Z"`, `((((`, `"\`, `monStatus <> 'x'`} {
		f.Add(s)
	}
	m := Monitor{ID: "mon_x", Spec: Spec{Topics: []string{"*"}, Transport: "http", BatchSize: 1}, Status: Active}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCondition(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		c.Match(&m) // must not panic
	})
}

func FuzzMonitorDefinition(f *testing.F) {
	for _, s := range []string{
		`{"topics":["*"],"transport":"tcp"}`,
		`{"topics":["device_*[type=a|b,group=g]"],"transport":"http","url":"https://x.example/h","method":"post","basic_auth":"u:p","batch_size":5,"batch_duration":0.5,"compression":"gzip","format":"xml"}`,
		`{"topics":[],"transport":"http"}`,
		`{"topics":["*"],"transport":"http","url":"http://[::1]:80/"}`,
		`{"topics":["a*"],"transport":"tcp","ack":"explicit","batch_duration":1e308}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var s Spec
		if json.Unmarshal(b, &s) != nil {
			return
		}
		if err := s.Normalize(); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		// A valid definition is stable: normalising again changes nothing,
		// and its stored form reads back the same.
		again := s
		again.Topics = append([]string(nil), s.Topics...)
		if err := again.Normalize(); err != nil {
			t.Fatalf("normalised definition invalid: %v", err)
		}
		enc, err := EncodeSpec(&s)
		if err != nil {
			t.Fatal(err)
		}
		var back Spec
		if err := DecodeSpec(enc, &back); err != nil {
			t.Fatal(err)
		}
		if _, err := newMatcher(back.Topics); err != nil {
			t.Fatalf("stored topics do not parse: %v", err)
		}
		if s.BatchSize < 1 || s.BatchSize > MaxBatchSize || s.Duration() < 0 {
			t.Fatalf("bad limits %+v", s)
		}
	})
}
