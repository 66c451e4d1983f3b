package retention

import (
	"testing"
	"time"
)

func TestSumUp(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	rds := []RawReading{
		{ID: 1, DeviceID: "d", Time: t0.Add(50 * time.Second), Values: []byte(`{"t": 2, "s": "x", "b": true, "o": {"n": 1}}`)},
		{ID: 2, DeviceID: "d", Time: t0.Add(10 * time.Second), Values: []byte(`{"t": 4}`)},
		{ID: 3, DeviceID: "d", Time: t0.Add(70 * time.Second), Values: []byte(`{"t": -1.5e0}`)},
		{ID: 4, DeviceID: "d", Stream: "b", Time: t0, Values: []byte(`{"t": 1}`)},
	}
	got, err := SumUp(rds)
	if err != nil {
		t.Fatal(err)
	}
	want := []Rollup{
		{Res: Minute, DeviceID: "d", Field: "t", Bucket: t0, Count: 2, Sum: 6, Min: 2, Max: 4, Last: 2, LastAt: t0.Add(50 * time.Second)},
		{Res: Minute, DeviceID: "d", Stream: "b", Field: "t", Bucket: t0, Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1, LastAt: t0},
		{Res: Minute, DeviceID: "d", Field: "t", Bucket: t0.Add(time.Minute), Count: 1, Sum: -1.5, Min: -1.5, Max: -1.5, Last: -1.5, LastAt: t0.Add(70 * time.Second)},
		{Res: Hour, DeviceID: "d", Field: "t", Bucket: t0, Count: 3, Sum: 4.5, Min: -1.5, Max: 4, Last: -1.5, LastAt: t0.Add(70 * time.Second)},
		{Res: Hour, DeviceID: "d", Stream: "b", Field: "t", Bucket: t0, Count: 1, Sum: 1, Min: 1, Max: 1, Last: 1, LastAt: t0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d rollups %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Res != w.Res || g.Stream != w.Stream || g.Field != w.Field || !g.Bucket.Equal(w.Bucket) || g.Count != w.Count ||
			g.Sum != w.Sum || g.Min != w.Min || g.Max != w.Max || g.Last != w.Last || !g.LastAt.Equal(w.LastAt) {
			t.Errorf("rollup %d = %+v, want %+v", i, g, w)
		}
	}
	if rows, err := SumUp([]RawReading{{ID: 9, Values: []byte(`[1]`)}, {ID: 10, Values: []byte(`{"t":`)}}); err != nil || len(rows) != 0 {
		t.Errorf("values not an object: %+v, %v", rows, err)
	}
}

func FuzzSumUp(f *testing.F) {
	f.Add([]byte(`{"t": 1.5, "s": "x"}`))
	f.Add([]byte(`{"t": 1e400}`))
	f.Fuzz(func(t *testing.T, values []byte) {
		rows, err := SumUp([]RawReading{{ID: 1, DeviceID: "d", Time: time.Unix(0, 0), Values: values}})
		if err != nil {
			return
		}
		for _, r := range rows {
			if r.Count != 1 || r.Min != r.Max || r.Sum != r.Min {
				t.Fatalf("one value summed up as %+v", r)
			}
		}
	})
}
