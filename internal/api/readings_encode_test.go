package api

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/readings"
)

// encodeReadingsPage is what the API wrote before appendReadingsPage: the
// page converted to ReadingsPage and encoded by huma's JSON format
// (encoding/json without HTML escaping), less its final newline.
func encodeReadingsPage(t testing.TB, page readings.Page) ([]byte, error) {
	t.Helper()
	out := ReadingsPage{Readings: make([]Reading, 0, len(page.Readings)), Next: page.Next}
	for _, r := range page.Readings {
		v := Reading{ID: r.ID, DeviceID: r.DeviceID, Stream: r.Stream, Time: r.Time, ReceivedAt: r.ReceivedAt, MessageID: r.MessageID, Values: r.Values}
		if v.Values == nil {
			v.Values = map[string]any{}
		}
		out.Readings = append(out.Readings, v)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// TestAppendReadingsPage: the page written by hand is byte for byte what
// encoding/json writes for it, for every kind of value a reading decodes
// into, floats at the edges of encoding/json's formats, strings to
// escape, times with and without fractions, streams and cursors.
func TestAppendReadingsPage(t *testing.T) {
	ts := time.Date(2026, 12, 3, 10, 0, 0, 123456000, time.UTC)
	rec := func(id int64, values map[string]any) readings.Record {
		return readings.Record{ID: id, DeviceID: "dev-1", Time: ts, ReceivedAt: ts.Add(50 * time.Millisecond), MessageID: id + 100, Values: values}
	}
	tests := []struct {
		name    string
		page    readings.Page
		wantErr bool
	}{
		{"empty", readings.Page{Readings: []readings.Record{}}, false},
		{"nil readings", readings.Page{}, false},
		{"numbers", readings.Page{Readings: []readings.Record{rec(1, map[string]any{
			"temperature": 21.5, "humidity": 40.25, "battery": 87.0, "zero": 0.0, "neg": -3.0, "negzero": math.Copysign(0, -1),
			"tiny": 1e-7, "small": 0.000001, "big": 1e21, "below_big": 999999999999999900000.0, "huge": 1.7976931348623157e308,
			"neg_tiny": -2.5e-9, "third": 1.0 / 3, "int": 123456789012.0,
		})}}, false},
		{"other values", readings.Page{Readings: []readings.Record{rec(2, map[string]any{
			"on": true, "off": false, "none": nil, "name": "pump 1", "escaped": "a\"b\\c\n\t\x01<&>é\u2028\xff",
			"obj": map[string]any{"b": 1.0, "a": []any{"x", 2.0, nil}}, "list": []any{1.5, "<b>"},
		})}}, false},
		{"keys to escape", readings.Page{Readings: []readings.Record{rec(3, map[string]any{"a\"b": 1.0, "é": 2.0, "<k>": 3.0, "": 4.0})}}, false},
		{"no values", readings.Page{Readings: []readings.Record{rec(4, nil), rec(5, map[string]any{})}}, false},
		{"stream, device and cursor", readings.Page{Readings: []readings.Record{
			{ID: 6, DeviceID: "dev<\"x\">", Stream: "power/main", Time: time.Unix(1700000000, 0).UTC(), ReceivedAt: time.Unix(1700000001, 5).UTC(), Values: map[string]any{"w": 1.0}},
			{ID: 7, DeviceID: "dev-2", Stream: "b\x02", Time: time.Unix(0, 0).UTC(), ReceivedAt: time.Unix(1, 0).In(time.FixedZone("x", 3600)), Values: map[string]any{"w": 2.0}},
		}, Next: "MTcwMDAwMDAwMDAwMDAwMDo2"}, false},
		{"NaN", readings.Page{Readings: []readings.Record{rec(8, map[string]any{"x": math.NaN()})}}, true},
		{"infinity", readings.Page{Readings: []readings.Record{rec(9, map[string]any{"x": math.Inf(-1)})}}, true},
		{"year 10000", readings.Page{Readings: []readings.Record{{ID: 10, DeviceID: "d", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), Values: map[string]any{}}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := appendReadingsPage(nil, tt.page)
			want, wantErr := encodeReadingsPage(t, tt.page)
			if (err != nil) != tt.wantErr || (wantErr != nil) != tt.wantErr {
				t.Fatalf("error %v, encoding/json's %v, want an error: %v", err, wantErr, tt.wantErr)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("got  %s\nwant %s", got, want)
			}
		})
	}
}

// FuzzAppendReadingsPage: for any reading values that arrive as JSON (the
// stored form of a reading), the page written by hand is what
// encoding/json writes.
func FuzzAppendReadingsPage(f *testing.F) {
	for _, s := range []string{`{"t":21.5,"h":40}`, `{"a":"x\u2028<>&","b":[1,{"c":null}],"d":true}`, `{"x":1e-7,"y":1e21,"z":-0}`, `{}`, `{"\u00e9\"":"\ud800"}`} {
		f.Add([]byte(s), int64(1700000000123456), "")
	}
	f.Fuzz(func(t *testing.T, data []byte, us int64, stream string) {
		var values map[string]any
		if json.Unmarshal(data, &values) != nil {
			return
		}
		ts := time.UnixMicro(us % (250000 * 365 * 24 * 3600 * 1e6)).UTC()
		page := readings.Page{Readings: []readings.Record{{ID: 1, DeviceID: "d", Stream: stream, Time: ts, ReceivedAt: ts, Values: values}}, Next: stream}
		got, err := appendReadingsPage(nil, page)
		want, wantErr := encodeReadingsPage(t, page)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("error %v, encoding/json's %v", err, wantErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("got  %s\nwant %s", got, want)
		}
	})
}

// BenchmarkReadingsPage: a page of 1,000 readings of the bench's 4
// fields, written by hand and by encoding/json.
//
//	go test ./internal/api -run '^$' -bench ReadingsPage
func BenchmarkReadingsPage(b *testing.B) {
	ts := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	page := readings.Page{Next: "MTcwMDAwMDAwMDAwMDAwMDo2"}
	for i := range 1000 {
		t := ts.Add(time.Duration(i) * 864 * time.Second)
		page.Readings = append(page.Readings, readings.Record{ID: int64(i), DeviceID: "dev-01234", Time: t, ReceivedAt: t.Add(50 * time.Millisecond), MessageID: int64(i),
			Values: map[string]any{"temperature": 21.5 + float64(i%10)/10, "humidity": 40.25, "pressure": 1013.0 + float64(i%7), "battery": float64(i % 100)}})
	}
	b.Run("append", func(b *testing.B) {
		for b.Loop() {
			if _, err := appendReadingsPage(nil, page); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := encodeReadingsPage(b, page); err != nil {
				b.Fatal(err)
			}
		}
	})
}
