package ingest

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

var testNow = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

func testLimits() dataLimits {
	return dataLimits{now: testNow, maxReadings: 3, maxSkew: 24 * time.Hour}
}

func TestDecodeData(t *testing.T) {
	type reading struct {
		ts     time.Time
		values string // JSON
	}
	tests := []struct {
		name     string
		payload  string
		msgID    string
		readings []reading
		code     string // rejection, "" for none
		field    string
	}{
		{name: "object", payload: `{"temp": 21.5, "ok": true, "label": "a"}`, readings: []reading{{testNow, `{"label":"a","ok":true,"temp":21.5}`}}},
		{name: "white space", payload: " \n\t{\"temp\":1}\r\n ", readings: []reading{{testNow, `{"temp":1}`}}},
		{name: "array", payload: `[{"temp": 1}, {"temp": 2}]`, readings: []reading{{testNow, `{"temp":1}`}, {testNow, `{"temp":2}`}}},
		{name: "ts rfc3339", payload: `{"temp": 1, "ts": "2025-06-01T10:00:00Z"}`, readings: []reading{{time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC), `{"temp":1}`}}},
		{name: "ts rfc3339 offset and fraction", payload: `{"temp": 1, "ts": "2025-06-01T12:00:00.123456789+02:00"}`, readings: []reading{{time.Date(2025, 6, 1, 10, 0, 0, 123456789, time.UTC), `{"temp":1}`}}},
		{name: "ts unix ms", payload: `{"temp": 1, "ts": 1748772000000}`, readings: []reading{{time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC), `{"temp":1}`}}},
		{name: "ts unix ms fraction", payload: `{"temp": 1, "ts": 1748772000000.5}`, readings: []reading{{time.Date(2025, 6, 1, 10, 0, 0, 500000, time.UTC), `{"temp":1}`}}},
		{name: "ts null is now", payload: `{"temp": 1, "ts": null}`, readings: []reading{{testNow, `{"temp":1}`}}},
		{name: "ts per reading", payload: `[{"temp": 1, "ts": 1748772000000}, {"temp": 2}]`, readings: []reading{{time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC), `{"temp":1}`}, {testNow, `{"temp":2}`}}},
		{name: "ts slightly ahead", payload: `{"temp": 1, "ts": "2025-06-02T11:00:00Z"}`, readings: []reading{{time.Date(2025, 6, 2, 11, 0, 0, 0, time.UTC), `{"temp":1}`}}},
		{name: "bad ts string", payload: `{"temp": 1, "ts": "yesterday"}`, code: CodeInvalidTimestamp, field: "ts"},
		{name: "bad ts type", payload: `{"temp": 1, "ts": true}`, code: CodeInvalidTimestamp, field: "ts"},
		{name: "negative ts", payload: `{"temp": 1, "ts": -1}`, code: CodeInvalidTimestamp, field: "ts"},
		{name: "ts before 1970", payload: `{"temp": 1, "ts": "1969-12-31T23:59:59Z"}`, code: CodeInvalidTimestamp, field: "ts"},
		{name: "ts far future", payload: `{"temp": 1, "ts": "2025-06-03T12:00:00Z"}`, code: CodeInvalidTimestamp, field: "ts"},
		{name: "ts huge", payload: `{"temp": 1, "ts": 1e300}`, code: CodeInvalidTimestamp, field: "ts"},
		{name: "bad ts in array", payload: `[{"temp": 1}, {"temp": 1, "ts": "x"}]`, code: CodeInvalidTimestamp, field: "ts"},
		{name: "msg_id", payload: `{"temp": 1, "msg_id": "m-1"}`, msgID: "m-1", readings: []reading{{testNow, `{"temp":1}`}}},
		{name: "msg_id in array", payload: `[{"temp": 1, "msg_id": "m"}, {"temp": 2}, {"temp": 3, "msg_id": "m"}]`, msgID: "m", readings: []reading{{testNow, `{"temp":1}`}, {testNow, `{"temp":2}`}, {testNow, `{"temp":3}`}}},
		{name: "msg_id null", payload: `{"temp": 1, "msg_id": null}`, readings: []reading{{testNow, `{"temp":1}`}}},
		{name: "msg_id 128", payload: `{"temp": 1, "msg_id": "` + strings.Repeat("é", 128) + `"}`, msgID: strings.Repeat("é", 128), readings: []reading{{testNow, `{"temp":1}`}}},
		{name: "msg_id too long", payload: `{"temp": 1, "msg_id": "` + strings.Repeat("a", 129) + `"}`, code: CodeInvalidPayload, field: "msg_id"},
		{name: "msg_id empty", payload: `{"temp": 1, "msg_id": ""}`, code: CodeInvalidPayload, field: "msg_id"},
		{name: "msg_id number", payload: `{"temp": 1, "msg_id": 7}`, code: CodeInvalidPayload, field: "msg_id"},
		{name: "msg_id differs", payload: `[{"temp": 1, "msg_id": "a"}, {"temp": 2, "msg_id": "b"}]`, code: CodeInvalidPayload, field: "msg_id", msgID: "a"},
		{name: "nested json field", payload: `{"meta": {"b": [1, "x", null, {"c": false}], "a": 1e-7}}`, readings: []reading{{testNow, `{"meta":{"a":1e-7,"b":[1,"x",null,{"c":false}]}}`}}},
		{name: "escapes", payload: `{"s": "a\"b\\c\/d\n\u00e9\ud83d\ude00\ud800 <&>"}`, readings: []reading{{testNow, `{"s":"a\"b\\c/d\né😀` + "\ufffd" + ` \u003c\u0026\u003e"}`}}},
		{name: "escaped key", payload: `{"te\u006dp": 1}`, readings: []reading{{testNow, `{"temp":1}`}}},
		{name: "duplicate key", payload: `{"temp": 1, "temp": 2}`, readings: []reading{{testNow, `{"temp":2}`}}},
		{name: "numbers", payload: `{"a": -0, "b": 123456789012345678, "c": 1.5e3, "d": -2E-2, "e": 0.1}`, readings: []reading{{testNow, `{"a":-0,"b":123456789012345680,"c":1500,"d":-0.02,"e":0.1}`}}},
		{name: "too many readings", payload: `[{"a":1},{"a":1},{"a":1},{"a":1}]`, code: CodePayloadTooLarge},
		{name: "max readings", payload: `[{"a":1},{"a":1},{"a":1}]`, readings: []reading{{testNow, `{"a":1}`}, {testNow, `{"a":1}`}, {testNow, `{"a":1}`}}},
		{name: "non-object", payload: `42`, code: CodeInvalidPayload},
		{name: "string", payload: `"temp"`, code: CodeInvalidPayload},
		{name: "array of numbers", payload: `[1, 2]`, code: CodeInvalidPayload},
		{name: "empty array", payload: `[]`, code: CodeInvalidPayload},
		{name: "empty object", payload: `{}`, code: CodeInvalidPayload},
		{name: "only ts", payload: `{"ts": 1748772000000}`, code: CodeInvalidPayload},
		{name: "number out of range", payload: `{"a": 1e400}`, code: CodeInvalidPayload},
		{name: "empty", payload: ``, code: CodeInvalidJSON},
		{name: "blank", payload: "  \n", code: CodeInvalidJSON},
		{name: "truncated", payload: `{"temp": 1`, code: CodeInvalidJSON},
		{name: "trailing data", payload: `{"temp": 1} x`, code: CodeInvalidJSON},
		{name: "two objects", payload: `{"temp": 1}{"temp": 2}`, code: CodeInvalidJSON},
		{name: "single quotes", payload: `{'temp': 1}`, code: CodeInvalidJSON},
		{name: "trailing comma", payload: `{"temp": 1,}`, code: CodeInvalidJSON},
		{name: "leading zero", payload: `{"temp": 01}`, code: CodeInvalidJSON},
		{name: "bad escape", payload: `{"s": "\x"}`, code: CodeInvalidJSON},
		{name: "control char", payload: "{\"s\": \"a\x01\"}", code: CodeInvalidJSON},
		{name: "NaN", payload: `{"temp": NaN}`, code: CodeInvalidJSON},
		{name: "bad later in array", payload: `[1, {"a": }]`, code: CodeInvalidJSON},
		{name: "too deep", payload: `{"a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, code: CodeInvalidJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, rej := decodeData([]byte(tt.payload), testLimits(), nil)
			if d.msgID != tt.msgID {
				t.Errorf("msg_id %q, want %q", d.msgID, tt.msgID)
			}
			if tt.code != "" {
				if rej == nil {
					t.Fatalf("accepted, want %s", tt.code)
				}
				if rej.Code != tt.code || rej.Field != tt.field {
					t.Fatalf("rejected %s field %q (%s), want %s field %q", rej.Code, rej.Field, rej.Reason, tt.code, tt.field)
				}
				return
			}
			if rej != nil {
				t.Fatalf("rejected: %v", rej)
			}
			if len(d.readings) != len(tt.readings) {
				t.Fatalf("%d readings, want %d", len(d.readings), len(tt.readings))
			}
			for i, want := range tt.readings {
				got := d.readings[i]
				if !got.Time.Equal(want.ts) || got.Time.Location() != time.UTC {
					t.Errorf("reading %d: ts %v, want %v in UTC", i, got.Time, want.ts)
				}
				b, err := appendObject(nil, got.Values)
				if err != nil {
					t.Fatal(err)
				}
				if string(b) != want.values {
					t.Errorf("reading %d: values %s, want %s", i, b, want.values)
				}
				std, _ := json.Marshal(got.Values)
				if !bytes.Equal(b, std) {
					t.Errorf("reading %d: encoded %s, encoding/json %s", i, b, std)
				}
			}
		})
	}
}

func TestDecodeInternsKeys(t *testing.T) {
	lim := testLimits()
	lim.intern = map[string]string{"temp": "temp"}
	d, rej := decodeData([]byte(`{"temp": 1}`), lim, nil)
	if rej != nil {
		t.Fatal(rej)
	}
	if _, ok := d.readings[0].Values["temp"]; !ok {
		t.Fatal("no temp")
	}
}

func TestAppendJSONMatchesEncodingJSON(t *testing.T) {
	for _, v := range []any{
		nil, true, false, 0.0, math.Copysign(0, -1), 1.0, 1e21, 1e20, 1e-6, 1e-7, 123.456, -5e-324, 1.7976931348623157e308,
		"", "plain", "\"\\/\b\f\n\r\t\x00\x1f", "<script>&amp;", "\u2028\u2029", "é😀", "\xff\xfe",
		map[string]any{"b": 1.0, "a": []any{"x", nil, map[string]any{}}, "<": ">"},
		[]any{}, map[string]any{},
	} {
		got, err := appendJSON(nil, v)
		if err != nil {
			t.Fatalf("%#v: %v", v, err)
		}
		want, _ := json.Marshal(v)
		if !bytes.Equal(got, want) {
			t.Errorf("%#v: got %s, encoding/json %s", v, got, want)
		}
	}
}

// TestDataArgsMatchNewEvent: the arguments the pipeline encodes itself
// are what commit.NewEvent would encode.
func TestDataArgsMatchNewEvent(t *testing.T) {
	for _, tc := range []struct {
		name, payload, stream string
	}{
		{"one", `{"temp": 21.5, "label": "<a>", "meta": {"x": [1, 2]}, "msg_id": "m1"}`, ""},
		{"array with stream", `[{"temp": 1, "ts": 1748772000123}, {"temp": 2, "ts": "2025-06-01T11:00:00.5+01:00"}]`, "power"},
		{"many", `[` + strings.Repeat(`{"a": 1},`, 11) + `{"a": 2}]`, "s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := testLimits()
			lim.maxReadings = 100
			d, rej := decodeData([]byte(tc.payload), lim, nil)
			if rej != nil {
				t.Fatal(rej)
			}
			for i := range d.readings {
				d.readings[i].Stream = tc.stream
			}
			r := &Request{Topic: "devices/d/data", Transport: "mqtt", Payload: []byte(tc.payload)}
			args, rows, err := appendDataArgs(r, 1234, d.msgID, tc.stream, d.readings, nil)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := commit.NewEvent(events.Event{Args: &events.DataReceived{
				MessageID: 1234, MsgID: d.msgID, Topic: r.Topic, Stream: tc.stream, Transport: "mqtt", Readings: d.readings,
			}})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(args, ev.Args) {
				t.Errorf("args\n%s\nNewEvent\n%s", args, ev.Args)
			}
			if len(rows) != len(d.readings) {
				t.Fatalf("%d rows for %d readings", len(rows), len(d.readings))
			}
			for i, row := range rows {
				want, _ := json.Marshal(d.readings[i].Values)
				if !bytes.Equal(row.Values, want) || row.Stream != tc.stream || !row.Time.Equal(d.readings[i].Time) {
					t.Errorf("row %d: %s %q %v", i, row.Values, row.Stream, row.Time)
				}
				if cap(row.Values) != len(row.Values) {
					t.Errorf("row %d: values can be appended to in place", i)
				}
			}
			var back events.DataReceived
			if err := json.Unmarshal(args, &back); err != nil {
				t.Fatal(err)
			}
			if len(back.Readings) != len(d.readings) {
				t.Fatal("readings lost in the args")
			}
		})
	}
}

func FuzzDecodeData(f *testing.F) {
	for _, s := range []string{
		`{"temp": 21.5}`, `[{"a": 1, "ts": 1748772000000}, {"b": "x", "msg_id": "m"}]`,
		`{"a": {"b": [1, 2, {"c": null}]}, "ts": "2025-06-01T10:00:00Z"}`, `{"s": "\ud83d\ude00\u00e9\\"}`,
		`[]`, `{}`, `1`, `{"a": 1e400}`, "{\"a\":\"\xff\"}", `{"a":-0.0e-0}`, `[{"a":1},2]`, `{"a":1,"a":[]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		lim := testLimits()
		lim.maxReadings = 50
		d, rej := decodeData(b, lim, nil)
		valid := json.Valid(b)
		if rej != nil {
			switch {
			case rej.Code == CodeInvalidJSON && valid && !strings.Contains(rej.Reason, "nesting"):
				t.Fatalf("valid JSON refused as invalid: %v", rej)
			case rej.Code != CodeInvalidJSON && !valid:
				t.Fatalf("invalid JSON refused as %s: %v", rej.Code, rej)
			}
			return
		}
		if !valid {
			t.Fatalf("invalid JSON accepted")
		}
		// The same values as encoding/json, minus ts and msg_id.
		var std any
		if err := json.Unmarshal(b, &std); err != nil {
			t.Fatalf("accepted what encoding/json refuses: %v", err)
		}
		objs, ok := std.([]any)
		if !ok {
			objs = []any{std}
		}
		if len(objs) != len(d.readings) {
			t.Fatalf("%d readings, encoding/json %d objects", len(d.readings), len(objs))
		}
		for i, o := range objs {
			m := o.(map[string]any)
			delete(m, "ts")
			delete(m, "msg_id")
			if !reflect.DeepEqual(m, d.readings[i].Values) {
				t.Fatalf("reading %d: %#v, encoding/json %#v", i, d.readings[i].Values, m)
			}
			// Round trip: encode, decode again, same values.
			enc, err := appendObject(nil, d.readings[i].Values)
			if err != nil {
				t.Fatal(err)
			}
			std2, _ := json.Marshal(d.readings[i].Values)
			if !bytes.Equal(enc, std2) {
				t.Fatalf("encoded %s, encoding/json %s", enc, std2)
			}
			d2, rej := decodeData(enc, lim, nil)
			if rej != nil {
				t.Fatalf("re-decode %s: %v", enc, rej)
			}
			if !reflect.DeepEqual(d2.readings[0].Values, d.readings[i].Values) {
				t.Fatalf("round trip changed %s", enc)
			}
		}
	})
}
