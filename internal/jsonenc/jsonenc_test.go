package jsonenc

import (
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"
)

func TestAppendFloat(t *testing.T) {
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1, 0.1, 21.5, 1e-6, 9.99e-7, 1e-9, -1e-9, 1e20, 1e21, -1e21, 1.5e300,
		math.MaxFloat64, math.SmallestNonzeroFloat64, 123456789.123456789, 1e-10, 5e-324} {
		want, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		got, err := AppendFloat([]byte("x"), f)
		if err != nil || string(got) != "x"+string(want) {
			t.Errorf("AppendFloat(%v) = %q, %v; want %q", f, got, err, "x"+string(want))
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		got, err := AppendFloat([]byte("x"), f)
		if !errors.Is(err, ErrNotFinite) || string(got) != "x" {
			t.Errorf("AppendFloat(%v) = %q, %v; want x, ErrNotFinite", f, got, err)
		}
	}
}

func TestAppendTime(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 12, 3, 21, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 3, 21, 0, 0, 123456789, time.UTC),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600)),
		time.Unix(0, 0).In(time.FixedZone("y", -5*3600-1800)),
	} {
		want, err := json.Marshal(tm)
		if err != nil {
			t.Fatal(err)
		}
		got, err := AppendTime(nil, tm)
		if err != nil || string(got) != string(want) {
			t.Errorf("AppendTime(%v) = %q, %v; want %q", tm, got, err, want)
		}
	}
	for _, tm := range []time.Time{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC)} {
		if _, jerr := json.Marshal(tm); jerr == nil {
			t.Fatalf("encoding/json accepts %v", tm)
		}
		if got, err := AppendTime([]byte("x"), tm); err == nil || string(got) != "x" {
			t.Errorf("AppendTime(%v) = %q, %v; want an error", tm, got, err)
		}
	}
}

// FuzzAppendFloat: every finite float64 is written as encoding/json writes it.
func FuzzAppendFloat(f *testing.F) {
	for _, s := range []float64{0, 1e-7, 1e21, 3.14} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, x float64) {
		got, err := AppendFloat(nil, x)
		want, jerr := json.Marshal(x)
		if (err != nil) != (jerr != nil) {
			t.Fatalf("%v: error %v, encoding/json %v", x, err, jerr)
		}
		if err == nil && string(got) != string(want) {
			t.Fatalf("%v: %q, encoding/json %q", x, got, want)
		}
	})
}
