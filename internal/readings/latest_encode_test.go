package readings

import (
	"encoding/json"
	"testing"
	"time"
)

// TestAppendLatest: AppendLatest writes what json.Marshal writes.
func TestAppendLatest(t *testing.T) {
	ts := time.Date(2026, 12, 3, 12, 0, 0, 123456000, time.UTC)
	tests := []struct {
		name string
		vs   []LatestValue
	}{
		{"none", []LatestValue{}},
		{"numbers", []LatestValue{{Field: "h", Time: ts, Value: json.RawMessage(`40`)}, {Field: "t", Time: ts, Value: json.RawMessage(`-21.5e-3`)}}},
		{"stream", []LatestValue{{Stream: "s.1", Field: "t", Time: ts.Truncate(time.Second), Value: json.RawMessage(`0.5`)}}},
		{"literals", []LatestValue{{Field: "a", Time: ts, Value: json.RawMessage(`true`)}, {Field: "b", Time: ts, Value: json.RawMessage(`null`)}}},
		{"string", []LatestValue{{Field: "m", Time: ts, Value: json.RawMessage(`"on"`)}}},
		{"string to escape", []LatestValue{{Field: "m", Time: ts, Value: json.RawMessage(`"<b>&"`)}}},
		{"escaped string", []LatestValue{{Field: "m", Time: ts, Value: json.RawMessage(`"a\"b\u00e9"`)}}},
		{"object", []LatestValue{{Field: "o", Time: ts, Value: json.RawMessage(`{"x": [1, 2]}`)}}},
		{"field to escape", []LatestValue{{Field: "t<é>", Time: ts, Value: json.RawMessage(`1`)}}},
		{"local time", []LatestValue{{Field: "t", Time: ts.In(time.FixedZone("x", 3600)), Value: json.RawMessage(`1`)}}},
		{"bad number", []LatestValue{{Field: "t", Time: ts, Value: json.RawMessage(`01`)}}},
		{"times shared and not", []LatestValue{{Field: "a", Time: ts, Value: json.RawMessage(`1`)}, {Field: "b", Time: ts, Value: json.RawMessage(`2`)},
			{Field: "c", Time: ts.Add(time.Second), Value: json.RawMessage(`3`)}, {Field: "d", Time: ts.Add(time.Second), Value: json.RawMessage(`4`)},
			{Field: "e", Time: ts.In(time.FixedZone("x", 3600)), Value: json.RawMessage(`5`)}, {Field: "f", Time: ts, Value: json.RawMessage(`6`)}}},
		{"a shared time after a value encoding/json wrote", []LatestValue{{Field: "a", Time: ts, Value: json.RawMessage(`1`)},
			{Field: "b", Time: ts.Add(time.Second), Value: json.RawMessage(`{"x": 1}`)}, {Field: "c", Time: ts.Add(time.Second), Value: json.RawMessage(`3`)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, werr := json.Marshal(tt.vs)
			got, err := AppendLatest(nil, tt.vs)
			if (err != nil) != (werr != nil) {
				t.Fatalf("error %v, json.Marshal's %v", err, werr)
			}
			if werr == nil && string(got) != string(want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

// FuzzAppendLatest: for any field name and value, AppendLatest and
// json.Marshal agree.
func FuzzAppendLatest(f *testing.F) {
	for _, s := range [][2]string{{"t", "21.5"}, {"", `"x"`}, {"a<", "-0.0e+1"}, {"é", "[1, 2]"}, {"n", "1."}} {
		f.Add(s[0], s[1], int64(1764763200123456))
	}
	f.Fuzz(func(t *testing.T, name, value string, us int64) {
		at := time.UnixMicro(us).UTC()
		vs := []LatestValue{{Stream: name, Field: name, Time: at, Value: json.RawMessage(value)},
			{Stream: name, Field: name + "2", Time: at, Value: json.RawMessage(`1`)}}
		want, werr := json.Marshal(vs)
		got, err := AppendLatest(nil, vs)
		if (err != nil) != (werr != nil) {
			t.Fatalf("error %v, json.Marshal's %v", err, werr)
		}
		if werr == nil && string(got) != string(want) {
			t.Errorf("got  %s\nwant %s", got, want)
		}
	})
}
