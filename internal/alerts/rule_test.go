package alerts

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestParseRuleGood(t *testing.T) {
	tests := []struct {
		name string
		spec RuleSpec
		kind Kind
		cond string // Cond.String of when
	}{
		{"threshold", RuleSpec{When: "temperature > 80"}, KindReading, "temperature > 80"},
		{"spaces and floats", RuleSpec{When: "  t>=-1.5e1 "}, KindReading, "t >= -15"},
		{"text", RuleSpec{When: `mode == "fault"`}, KindReading, `mode == "fault"`},
		{"bool", RuleSpec{When: `door != false`}, KindReading, `door != false`},
		{"outside", RuleSpec{When: "humidity outside 20..80"}, KindReading, "humidity outside 20..80"},
		{"inside", RuleSpec{When: "humidity inside -5.5..0"}, KindReading, "humidity inside -5.5..0"},
		{"rate", RuleSpec{When: "rate(temperature) > 2/m"}, KindReading, "rate(temperature) > 2/m"},
		{"rate per second", RuleSpec{When: "rate(temperature) < -0.5"}, KindReading, "rate(temperature) < -0.5"},
		{"dotted field", RuleSpec{When: "power.l1 > 3"}, KindReading, "power.l1 > 3"},
		{"offline", RuleSpec{When: "offline > 5m"}, KindOffline, "offline > 5m0s"},
		{"flapping", RuleSpec{When: "disconnects >= 5 in 10m"}, KindFlapping, "disconnects >= 5 in 10m0s"},
		{"flapping >", RuleSpec{When: "disconnects > 4 in 1h"}, KindFlapping, "disconnects >= 5 in 1h0m0s"},
		{"status", RuleSpec{When: "status == error"}, KindStatus, `status == "error"`},
		{"status quoted", RuleSpec{When: `status != "online"`}, KindStatus, `status != "online"`},
		{"rejected", RuleSpec{When: "rejected > 10 in 1m"}, KindRejected, "rejected > 10 in 1m0s"},
		{"rejected >=", RuleSpec{When: "rejected >= 10 in 1m"}, KindRejected, "rejected > 9 in 1m0s"},
		{"nodata", RuleSpec{When: "nodata(humidity) > 15m"}, KindNoData, "nodata(humidity) > 15m0s"},
		{"full", RuleSpec{When: "temperature > 80", Clear: "temperature < 75", For: "5m", Severity: "critical",
			Message: "{{.Device.Name}} at {{.Value}}", Labels: map[string]string{"team": "ops"}, Repeat: "0s"}, KindReading, "temperature > 80"},
		{"count", RuleSpec{When: "temperature > 80", Count: "3 in 10m"}, KindReading, "temperature > 80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Name, tt.spec.DeviceType = "r1", "T"
			r, err := ParseRule(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			if r.Kind != tt.kind || r.When.String() != tt.cond {
				t.Fatalf("kind %v cond %q, want %v %q", r.Kind, r.When.String(), tt.kind, tt.cond)
			}
			// What String writes parses back to the same condition.
			c, _, err := parseCond(r.When.String())
			if err != nil || c != r.When {
				t.Fatalf("round trip: %+v %v, want %+v", c, err, r.When)
			}
		})
	}
}

func TestParseRuleBad(t *testing.T) {
	tests := []struct {
		name string
		spec RuleSpec
		want string
	}{
		{"no name", RuleSpec{When: "t > 1"}, `name: must match`},
		{"bad name", RuleSpec{Name: "a b", When: "t > 1"}, `rule "a b": name: must match`},
		{"no when", RuleSpec{Name: "r"}, `rule "r": when: required`},
		{"double op", RuleSpec{Name: "r", When: "temperature >> 80"}, `rule "r": when: at column 14: expected a number, found ">"`},
		{"no value", RuleSpec{Name: "r", When: "temperature >"}, `when: at column 14: expected a number, found the end`},
		{"trailing", RuleSpec{Name: "r", When: "t > 1 2"}, `when: at column 7: unexpected "2" after the condition`},
		{"bad char", RuleSpec{Name: "r", When: "t > 1 & u"}, `when: at column 7: unexpected character '&'`},
		{"keyword field", RuleSpec{Name: "r", When: "offline == 1"}, `when: at column 9: expected >`},
		{"offline number", RuleSpec{Name: "r", When: "offline > 5"}, `when: at column 11: expected a positive duration`},
		{"range reversed", RuleSpec{Name: "r", When: "t outside 9..1"}, `when: at column 14: the high bound is below the low bound`},
		{"text with >", RuleSpec{Name: "r", When: `t > "x"`}, `when: at column 5: text and true/false compare only with == and !=`},
		{"bad rate unit", RuleSpec{Name: "r", When: "rate(t) > 1/d"}, `when: at column 13: expected s, m or h after /`},
		{"unterminated", RuleSpec{Name: "r", When: `status == "err`}, `when: at column 11: unterminated string`},
		{"bad duration", RuleSpec{Name: "r", When: "offline > 5parsecs"}, `when: at column 11: "5parsecs" is not a number or a duration`},
		{"flapping no in", RuleSpec{Name: "r", When: "disconnects >= 5 10m"}, `when: at column 18: expected "in"`},
		{"clear other field", RuleSpec{Name: "r", When: "t > 80", Clear: "u < 75"}, `clear: at column 1: must be a condition on the same value as when (t)`},
		{"clear on offline", RuleSpec{Name: "r", When: "offline > 1m", Clear: "t < 1"}, `clear: only reading conditions`},
		{"for on status", RuleSpec{Name: "r", When: "status == error", For: "1m"}, `for: only reading conditions take for`},
		{"bad for", RuleSpec{Name: "r", When: "t > 1", For: "soon"}, `for: "soon" is not a duration`},
		{"for and count", RuleSpec{Name: "r", When: "t > 1", For: "1m", Count: "2 in 5m"}, `count: use for or count, not both`},
		{"bad count", RuleSpec{Name: "r", When: "t > 1", Count: "3 within 5m"}, `count: at column 3: expected "in" after the count`},
		{"zero count", RuleSpec{Name: "r", When: "t > 1", Count: "0 in 5m"}, `count: at column 1: expected "N in D"`},
		{"severity", RuleSpec{Name: "r", When: "t > 1", Severity: "bad"}, `severity: must be one of critical, major, minor, warning, info`},
		{"template", RuleSpec{Name: "r", When: "t > 1", Message: "{{.Value"}, `message: r:1: unclosed action`},
		{"label", RuleSpec{Name: "r", When: "t > 1", Labels: map[string]string{"a-b": "x"}}, `labels.a-b: a label name must match`},
		{"negative repeat", RuleSpec{Name: "r", When: "t > 1", Repeat: "-1s"}, `repeat: must not be negative`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.DeviceType = "T"
			_, err := ParseRule(tt.spec)
			var re *RuleError
			if !errors.As(err, &re) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v, want a *RuleError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error\n  %s\nwant it to contain\n  %s", err, tt.want)
			}
		})
	}
}

func FuzzParseRule(f *testing.F) {
	for _, s := range []string{"temperature > 80", "humidity outside 20..80", "rate(t) > 2/m", "offline > 5m",
		"disconnects >= 5 in 10m", `status == "error"`, "rejected > 10 in 1m", "nodata(h) > 15m", "t >= -1.5e3", `m != "a\"b"`} {
		f.Add(s, "t < 75", "3 in 10m")
	}
	f.Fuzz(func(t *testing.T, when, clear, count string) {
		r, err := ParseRule(RuleSpec{Name: "r", DeviceType: "T", When: when, Clear: clear, Count: count})
		if err != nil {
			var re *RuleError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a *RuleError", err)
			}
			if re.Pos < 0 || re.Pos > len(when)+len(clear)+len(count)+1 {
				t.Fatalf("position %d out of range: %v", re.Pos, err)
			}
			return
		}
		// A valid condition writes back to text that parses to itself.
		c, _, err := parseCond(r.When.String())
		if err != nil {
			t.Fatalf("%q: String %q does not parse: %v", when, r.When.String(), err)
		}
		if c != r.When && !(c.Num != c.Num) { // NaN is not equal to itself
			t.Fatalf("%q: round trip %+v, want %+v", when, c, r.When)
		}
		var st ruleState
		r.onReading(&st, time.Unix(1, 0), 1.0)
		r.onReading(&st, time.Unix(2, 0), "x")
	})
}
