package readings

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestLatestRows(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0).UTC() }
	row := func(dev, stream string, s int, values string) ReadingRow {
		return ReadingRow{DeviceID: dev, Reading: &Reading{Stream: stream, Time: at(s), Values: []byte(values)}}
	}
	for _, tc := range []struct {
		name string
		rows []ReadingRow
		want []string
	}{
		{"one row per device, sorted by device and field",
			[]ReadingRow{row("b", "", 1, `{"t":1,"h":2}`), row("a", "", 1, `{"t":3}`)},
			[]string{"a//t@1=3", "b//h@1=2", "b//t@1=1"}},
		{"streams apart",
			[]ReadingRow{row("a", "s2", 1, `{"t":1}`), row("a", "", 1, `{"t":2}`), row("a", "s1", 1, `{"t":3}`)},
			[]string{"a//t@1=2", "a/s1/t@1=3", "a/s2/t@1=1"}},
		{"a later time wins",
			[]ReadingRow{row("a", "", 2, `{"t":1}`), row("a", "", 1, `{"t":2}`), row("a", "", 3, `{"t":3}`), row("a", "", 2, `{"t":4}`)},
			[]string{"a//t@3=3"}},
		{"of equal times the later row wins",
			[]ReadingRow{row("a", "", 5, `{"t":1,"h":1}`), row("a", "", 5, `{"t":2}`), row("a", "", 5, `{"t":3}`), row("a", "", 4, `{"h":9}`)},
			[]string{"a//h@5=1", "a//t@5=3"}},
		{"a field twice in one object: the later",
			[]ReadingRow{row("a", "", 1, `{"t":1,"t":2}`)},
			[]string{"a//t@1=2"}},
		{"values that are not plain, read by encoding/json",
			[]ReadingRow{row("a", "", 1, `{"t":{"x":[1,2]},"é":"\u00e9"}`), row("a", "", 0, `{"t":5}`)},
			[]string{`a//t@1={"x":[1,2]}`, `a//é@1="\u00e9"`}},
		{"no values", []ReadingRow{row("a", "", 1, ``)}, []string{}},
		{"many rows of one device, interleaved with another's", func() []ReadingRow {
			var rs []ReadingRow
			for i := range 30 {
				rs = append(rs, row("b", "", 7, fmt.Sprintf(`{"t":%d,"h":%d}`, i, 100+i)), row("a", "", i%5, fmt.Sprintf(`{"t":%d}`, i)))
			}
			return rs
		}(), []string{"a//t@4=29", "b//h@7=129", "b//t@7=29"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := latestRows(tc.rows)
			if err != nil {
				t.Fatal(err)
			}
			got := []string{}
			for _, r := range out {
				got = append(got, fmt.Sprintf("%s/%s/%s@%d=%s", r.DeviceID, r.Stream, r.Field, r.Time.Unix(), r.Value))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("latestRows = %q, want %q", got, tc.want)
			}
		})
	}
}

// BenchmarkLatestRows: the latest values of a batch as the commit builds
// them, 39 devices (the hub's mean batch at 100 devices, closed loop) with
// one reading of two fields each, then each device's merge into its kept
// values and their encoding (readings.MergeLatest, AppendLatest), as
// SQLite's UpsertLatest does.
//
//	go test ./internal/readings -run '^$' -bench LatestRows -benchmem
func BenchmarkLatestRows(b *testing.B) {
	now := time.Now()
	rows := make([]ReadingRow, 39)
	kept := make(map[string][]LatestValue, len(rows))
	for i := range rows {
		dev := fmt.Sprintf("bench-%04d", (i*37)%100)
		rows[i] = ReadingRow{DeviceID: dev, Reading: &Reading{Time: now, Values: []byte(`{"temperature":21.25,"humidity":40}`)}}
		kept[dev] = []LatestValue{{Field: "humidity", Time: now.Add(-time.Second), Value: []byte(`39`)}, {Field: "temperature", Time: now.Add(-time.Second), Value: []byte(`21`)}}
	}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		out, err := latestRows(rows)
		if err != nil {
			b.Fatal(err)
		}
		for i := 0; i < len(out); {
			j := i + 1
			for j < len(out) && out[j].DeviceID == out[i].DeviceID {
				j++
			}
			merged := MergeLatest(kept[out[i].DeviceID], out[i:j])
			if buf, err = AppendLatest(buf[:0], merged); err != nil {
				b.Fatal(err)
			}
			i = j
		}
	}
}
