package alerts

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// step is one input of a lifecycle row: a reading at second t, or (when
// ev is set) a presence/status/rejection event or a timer at second t.
type step struct {
	t  int
	v  any
	ev string // "", connect, disconnect, status, rejected, data, timer
}

func r(t int, v any) step { return step{t: t, v: v} }

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func run(rule *Rule, steps []step) []string {
	var st ruleState
	var out []string
	for _, s := range steps {
		at := t0.Add(time.Duration(s.t) * time.Second)
		n := at.UnixNano()
		var tr transition
		switch s.ev {
		case "":
			tr, _ = rule.onReading(&st, at, s.v)
		case "connect":
			tr = rule.onConnect(&st, n)
		case "disconnect":
			tr, _ = rule.onDisconnect(&st, n)
		case "status":
			tr, _ = rule.onStatus(&st, s.v.(string))
		case "rejected":
			k := int64(1)
			if s.v != nil {
				k = int64(s.v.(int))
			}
			tr, _ = rule.onRejected(&st, n, k)
		case "data":
			tr = rule.onData(&st, n)
		case "timer":
			if st.deadline == 0 || n < st.deadline {
				out = append(out, "-")
				continue
			}
			tr, _ = rule.onTimer(&st, n)
		}
		out = append(out, tr.String())
	}
	for i := range out {
		if out[i] == "none" {
			out[i] = "-"
		}
	}
	return out
}

// TestLifecycle: the state machine of one (rule, device) pair, input by
// input: pending and its for period (on the readings' own times), raise,
// re-fire, hysteresis, clear, count windows, rate of change, presence,
// status, refused messages and no data.
func TestLifecycle(t *testing.T) {
	tests := []struct {
		name  string
		spec  RuleSpec
		steps []step
		want  string
	}{
		{"threshold raises, re-fires, clears",
			RuleSpec{When: "temperature > 80"},
			[]step{r(0, 70), r(1, 81), r(2, 85), r(3, 80), r(4, 90)},
			"- raise refire clear raise"},
		{"no repeat while idle below",
			RuleSpec{When: "temperature > 80"},
			[]step{r(0, 1), r(1, 2), r(2, 3)},
			"- - -"},
		{"hysteresis: stays open between the bounds",
			RuleSpec{When: "temperature > 80", Clear: "temperature < 75"},
			[]step{r(0, 81), r(1, 78), r(2, 76), r(3, 82), r(4, 74), r(5, 78)},
			"raise - - refire clear -"},
		{"for: pending until the period passes, on reading times",
			RuleSpec{When: "temperature > 80", For: "5m"},
			[]step{r(0, 81), r(60, 82), r(299, 83), r(300, 84), r(301, 85), r(400, 70)},
			"pending - - raise refire clear"},
		{"for: a dip drops the pending alert and restarts the period",
			RuleSpec{When: "temperature > 80", For: "5m"},
			[]step{r(0, 81), r(200, 79), r(250, 81), r(500, 81), r(550, 81)},
			"pending drop pending - raise"},
		{"for with hysteresis",
			RuleSpec{When: "temperature > 80", For: "1m", Clear: "temperature < 75"},
			[]step{r(0, 81), r(60, 81), r(70, 77), r(80, 74)},
			"pending raise - clear"},
		{"count: 3 in 10m",
			RuleSpec{When: "temperature > 80", Count: "3 in 10m"},
			[]step{r(0, 81), r(100, 70), r(200, 82), r(900, 83), r(950, 84), r(1000, 85), r(1010, 70), r(1020, 90)},
			"- - - - - raise clear -"},
		{"range",
			RuleSpec{When: "humidity outside 20..80"},
			[]step{r(0, 50), r(1, 10), r(2, 30), r(3, 81)},
			"- raise clear raise"},
		{"text values are compared as text; numbers are unknown",
			RuleSpec{When: `mode == "fault"`},
			[]step{r(0, "ok"), r(1, "fault"), r(2, 3.0), r(3, "ok")},
			"- raise - clear"},
		{"numbers ignore text values",
			RuleSpec{When: "temperature > 80"},
			[]step{r(0, "hot"), r(1, 81), r(2, "cold"), r(3, 79)},
			"- raise - clear"},
		{"rate of change per minute",
			RuleSpec{When: "rate(temperature) > 5/m"},
			[]step{r(0, 20), r(60, 24), r(120, 30), r(180, 40), r(240, 41), r(240, 99)},
			"- - raise refire clear -"},
		{"offline for longer than a duration: timer, reconnect clears",
			RuleSpec{When: "offline > 60s"},
			[]step{{t: 0, ev: "disconnect"}, {t: 30, ev: "timer"}, {t: 60, ev: "timer"}, {t: 90, ev: "timer"}, {t: 100, ev: "connect"}},
			"- - raise - clear"},
		{"offline: reconnecting in time raises nothing",
			RuleSpec{When: "offline > 60s"},
			[]step{{t: 0, ev: "disconnect"}, {t: 30, ev: "connect"}, {t: 61, ev: "timer"}},
			"- - -"},
		{"flapping: N disconnects in a window; clears when the window empties",
			RuleSpec{When: "disconnects >= 3 in 10m"},
			[]step{{t: 0, ev: "disconnect"}, {t: 100, ev: "disconnect"}, {t: 700, ev: "disconnect"}, {t: 710, ev: "disconnect"},
				{t: 720, ev: "disconnect"}, {t: 730, ev: "disconnect"}, {t: 1400, ev: "timer"}},
			"- - - - raise refire clear"},
		{"status equals a value",
			RuleSpec{When: "status == error"},
			[]step{{t: 0, v: "online", ev: "status"}, {t: 1, v: "error", ev: "status"}, {t: 2, v: "maintenance", ev: "status"}},
			"- raise clear"},
		{"rejected messages above a rate",
			RuleSpec{When: "rejected > 2 in 1m"},
			[]step{{t: 0, ev: "rejected"}, {t: 1, ev: "rejected"}, {t: 2, ev: "rejected"}, {t: 3, ev: "rejected"}, {t: 70, ev: "timer"}},
			"- - raise refire clear"},
		{"rejected: a recorded refusal counts those it sums up",
			RuleSpec{When: "rejected > 5 in 1m"},
			[]step{{t: 0, ev: "rejected"}, {t: 1, v: 4, ev: "rejected"}, {t: 2, v: 1, ev: "rejected"}},
			"- - raise"},
		{"no data: timer after the last reading with the field",
			RuleSpec{When: "nodata(humidity) > 60s"},
			[]step{{t: 0, ev: "data"}, {t: 30, ev: "data"}, {t: 80, ev: "timer"}, {t: 90, ev: "timer"}, {t: 100, ev: "data"}},
			"- - - raise clear"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.spec.Name, tt.spec.DeviceType = "r", "T"
			rule, err := ParseRule(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			got := run(rule, tt.steps)
			if want := strings.Fields(tt.want); !reflect.DeepEqual(got, want) {
				t.Fatalf("\n got %v\nwant %v", got, want)
			}
		})
	}
}

// An operator's clear holds the pair until its condition ends once.
func TestClearHoldsUntilConditionEnds(t *testing.T) {
	rule, err := ParseRule(RuleSpec{Name: "r", DeviceType: "T", When: "t > 80"})
	if err != nil {
		t.Fatal(err)
	}
	st := ruleState{phase: firing}
	st.phase, st.hold = idle, true // what Service.Clear does
	var got []string
	for i, v := range []float64{85, 90, 70, 85} {
		tr, _ := rule.onReading(&st, t0.Add(time.Duration(i)*time.Second), v)
		got = append(got, tr.String())
	}
	if want := []string{"none", "none", "none", "raise"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
