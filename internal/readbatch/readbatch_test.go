package readbatch

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func sample() []Record {
	return []Record{
		{ID: 1, DeviceID: "d1", Stream: "", Time: 1_700_000_000_000_000, ReceivedAt: 1_700_000_000_000_100, MessageID: 7, Values: []byte(`{"t":1.5}`)},
		{ID: 2, DeviceID: "d2", Stream: "a", Time: -5, ReceivedAt: 0, MessageID: -1, Values: []byte(`{}`)},
		{ID: 1 << 62, DeviceID: "", Stream: "very long stream name", Time: 1 << 60, ReceivedAt: -(1 << 60), MessageID: 1 << 40, Values: []byte(`{"s":"x","n":null}`)},
	}
}

func TestRoundTrip(t *testing.T) {
	rs := sample()
	var e Encoder
	e.Reset(nil)
	var offs []int
	for i := range rs {
		offs = append(offs, e.Add(&rs[i]))
	}
	b := e.Bytes()
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, rs) {
		t.Fatalf("Decode = %+v, want %+v", got, rs)
	}
	// Each record alone from its offset, in any order.
	for i := len(rs) - 1; i >= 0; i-- {
		r, next, err := DecodeAt(b, offs[i])
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(r, rs[i]) {
			t.Errorf("DecodeAt(%d) = %+v, want %+v", offs[i], r, rs[i])
		}
		want := len(b)
		if i+1 < len(rs) {
			want = offs[i+1]
		}
		if next != want {
			t.Errorf("next after %d = %d, want %d", i, next, want)
		}
	}
	if !bytes.Equal(Encode(rs), b) {
		t.Error("Encode differs from the Encoder's batch")
	}
}

func TestCorrupt(t *testing.T) {
	good := Encode(sample())
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version", append([]byte{9}, good[1:]...)},
		{"truncated", good[:len(good)-3]},
		{"length past the end", []byte{Version, 1, 200, 1}},
		{"bad varint", []byte{Version, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Decode: %v, want ErrCorrupt", err)
			}
		})
	}
	if _, _, err := DecodeAt(good, len(good)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("DecodeAt past the end: %v", err)
	}
	if _, _, err := DecodeAt(good, 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("DecodeAt of the version byte: %v", err)
	}
}

// FuzzDecodeReadingBatch: a batch read from the database never panics
// the decoder, and what decodes encodes back to the same bytes.
func FuzzDecodeReadingBatch(f *testing.F) {
	f.Add(Encode(sample()))
	f.Add([]byte{Version})
	f.Add([]byte{Version, 1, 2, 'd'})
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := Decode(b)
		if err != nil {
			return
		}
		for i := range rs {
			if rs[i].Values == nil {
				rs[i].Values = []byte{}
			}
		}
		back := Encode(rs)
		again, err := Decode(back)
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v", err)
		}
		if len(again) != len(rs) {
			t.Fatalf("%d records, re-encoded %d", len(rs), len(again))
		}
		for off := 0; off < len(b); off++ {
			DecodeAt(b, off) // never panics
		}
	})
}
