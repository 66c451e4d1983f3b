package blocks

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
)

// series makes n readings every 10 s with values from val.
func series(n int, val func(i int) map[string]any) []Reading {
	rs := make([]Reading, n)
	for i := range rs {
		t := int64(1_700_000_000_000_000) + int64(i)*10_000_000
		rs[i] = Reading{ID: 1000 + int64(i)*7, MessageID: 5000 + int64(i)*7, Time: t, ReceivedAt: t + 50_000 + int64(i%3), Values: val(i)}
	}
	return rs
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		rs   []Reading
	}{
		{"one reading", series(1, func(int) map[string]any { return map[string]any{"t": 21.5} })},
		{"decimals", series(500, func(i int) map[string]any {
			return map[string]any{"temperature": float64(i%40) + float64(i%100)/100, "humidity": 30 + float64(i%50) + 0.5, "battery": float64(100 - i%100)}
		})},
		{"random floats", series(300, func(int) map[string]any {
			return map[string]any{"x": rng.NormFloat64() * 1e6, "y": math.MaxFloat64 * rng.Float64()}
		})},
		{"random walk", series(300, func(i int) map[string]any { return map[string]any{"x": math.Sin(float64(i) / 10)} })},
		{"equal values", series(100, func(int) map[string]any { return map[string]any{"x": 3.25} })},
		{"negative and zero", series(50, func(i int) map[string]any { return map[string]any{"x": float64(i-25) / 4, "z": 0.0} })},
		{"huge integers", series(50, func(i int) map[string]any {
			return map[string]any{"x": 1e300 * float64(i), "y": float64(1<<60) + float64(i)}
		})},
		{"sparse and mixed", series(40, func(i int) map[string]any {
			m := map[string]any{}
			if i%3 == 0 {
				m["t"] = float64(i)
			}
			if i%5 == 0 {
				m["s"] = fmt.Sprint("v", i)
			}
			if i%7 == 0 {
				m["mixed"] = any(true)
			} else if i%7 == 1 {
				m["mixed"] = float64(i)
			}
			if i == 9 {
				m["obj"] = map[string]any{"k": []any{1.0, "x", nil}}
			}
			return m
		})},
		{"no values", series(5, func(int) map[string]any { return map[string]any{} })},
		{"irregular times", func() []Reading {
			rs := series(100, func(i int) map[string]any { return map[string]any{"v": float64(i)} })
			for i := range rs {
				rs[i].Time += rng.Int64N(1e9) - 5e8
				rs[i].ID = rng.Int64()
				rs[i].MessageID = -rng.Int64()
			}
			Sort(rs)
			return rs
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := Encode(tt.rs)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.rs) {
				for i := range got {
					if !reflect.DeepEqual(got[i], tt.rs[i]) {
						t.Fatalf("reading %d:\n got %+v\nwant %+v", i, got[i], tt.rs[i])
					}
				}
				t.Fatal("decoded differs")
			}
		})
	}
}

func TestEncodeErrors(t *testing.T) {
	if _, err := Encode(nil); err == nil {
		t.Error("Encode of no readings: no error")
	}
}

func TestDecodeErrors(t *testing.T) {
	good, err := Encode(series(10, func(i int) map[string]any { return map[string]any{"t": float64(i) / 10, "s": "x"} }))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version", append([]byte{9}, good[1:]...)},
		{"no readings", []byte{version, 0}},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(append([]byte{}, good...), 0)},
		{"huge count", []byte{version, 0xff, 0xff, 0xff, 0x7f}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("err = %v, want ErrCorrupt", err)
			}
		})
	}
}

// FuzzDecode: Decode never panics on any input, and what it decodes
// encodes and decodes to the same readings.
func FuzzDecode(f *testing.F) {
	for _, rs := range [][]Reading{
		series(3, func(i int) map[string]any { return map[string]any{"t": float64(i) / 10} }),
		series(20, func(i int) map[string]any { return map[string]any{"x": math.Sqrt(float64(i)), "s": fmt.Sprint(i)} }),
		series(9, func(i int) map[string]any {
			if i%2 == 0 {
				return map[string]any{"a": 1.0}
			}
			return map[string]any{"b": true}
		}),
	} {
		b, err := Encode(rs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v is not ErrCorrupt", err)
			}
			return
		}
		again, err := Encode(rs)
		if err != nil {
			return // e.g. a JSON value that does not marshal back
		}
		rs2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-encoded block: %v", err)
		}
		// Compared as blocks: a NaN from stored bits is not equal to itself.
		third, err := Encode(rs2)
		if err != nil || !bytes.Equal(third, again) {
			t.Fatalf("re-encoded block decodes differently (%v)", err)
		}
	})
}

// FuzzDecodeSelect: what DecodeSelect decodes of a block is what Decode
// decodes of it, filtered: the readings in the time range, with only the
// field's values.
func FuzzDecodeSelect(f *testing.F) {
	for _, rs := range [][]Reading{
		series(30, func(i int) map[string]any { return map[string]any{"t": float64(i) / 10, "h": float64(i % 7)} }),
		series(20, func(i int) map[string]any { return map[string]any{"x": math.Sqrt(float64(i)), "s": fmt.Sprint(i)} }),
		series(9, func(i int) map[string]any {
			if i%2 == 0 {
				return map[string]any{"a": 1.0}
			}
			return map[string]any{"b": true}
		}),
	} {
		b, err := Encode(rs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, rs[2].Time, rs[len(rs)-2].Time, "t")
		f.Add(b, int64(math.MinInt64), int64(0), "")
		f.Add(b, rs[0].Time, rs[0].Time+1, "b")
	}
	f.Fuzz(func(t *testing.T, b []byte, from, to int64, field string) {
		all, err := Decode(b)
		if err != nil {
			return
		}
		var want []Reading
		for _, r := range all {
			if r.Time < from || (to != 0 && r.Time >= to) {
				continue
			}
			if field != "" {
				vs := map[string]any{}
				if v, ok := r.Values[field]; ok {
					vs[field] = v
				}
				r.Values = vs
			}
			want = append(want, r)
		}
		got, err := DecodeSelect(b, Select{From: from, To: to, Field: field})
		if err != nil {
			t.Fatalf("DecodeSelect: %v (Decode decoded it)", err)
		}
		if len(got) != len(want) {
			t.Fatalf("%d readings, want %d", len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.ID != w.ID || g.Time != w.Time || g.MessageID != w.MessageID || g.ReceivedAt != w.ReceivedAt || len(g.Values) != len(w.Values) {
				t.Fatalf("reading %d: %+v, want %+v", i, g, w)
			}
			// Compared as printed (maps sorted by key): a NaN from
			// stored bits is not equal to itself.
			if gs, ws := fmt.Sprint(g.Values), fmt.Sprint(w.Values); gs != ws {
				t.Fatalf("reading %d: values %s, want %s", i, gs, ws)
			}
		}
	})
}
