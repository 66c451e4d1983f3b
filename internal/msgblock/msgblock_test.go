package msgblock

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		recs []Record
	}{
		{"empty", nil},
		{"one accepted", []Record{{ID: 7, DeviceID: "d1", Topic: "devices/d1/data", Transport: "mqtt", QoS: 1,
			Payload: []byte(`{"t":1}`), MsgID: "m-1", Accepted: true, ReceivedAt: 1_700_000_000_000_000}}},
		{"rejected with code", []Record{{ID: 9, DeviceID: "d2", Topic: "t", Transport: "http",
			Payload: []byte("x"), Code: "bad", Reason: "bad value", ReceivedAt: 5}}},
		{"no payload, empty payload", []Record{
			{ID: 1, DeviceID: "a", Topic: "t", Transport: "mqtt", Accepted: true},
			{ID: 2, DeviceID: "a", Topic: "t", Transport: "mqtt", Payload: []byte{}, Accepted: true}}},
		{"ids and times going back", []Record{
			{ID: 100, DeviceID: "a", Topic: "t", ReceivedAt: 50},
			{ID: 90, DeviceID: "b", Topic: "t", ReceivedAt: -7},
			{ID: 1 << 62, DeviceID: "b", Topic: "u", ReceivedAt: 1 << 60}}},
		{"same device and topic, then others", []Record{
			{ID: 1, DeviceID: "a", Topic: "t", MsgID: "x"},
			{ID: 2, DeviceID: "a", Topic: "t", MsgID: "y"},
			{ID: 3, DeviceID: "a", Topic: "u"},
			{ID: 4, DeviceID: "b", Topic: "u"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(Encode(tt.recs))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) == 0 && len(tt.recs) == 0 {
				return
			}
			if !reflect.DeepEqual(got, tt.recs) {
				t.Errorf("got  %+v\nwant %+v", got, tt.recs)
			}
		})
	}
}

// TestAppendShared: the shared records are Decode's, appended after what
// dst held, and they are the block's bytes, not copies.
func TestAppendShared(t *testing.T) {
	recs := []Record{
		{ID: 1, DeviceID: "a", Topic: "t", Transport: "mqtt", Payload: []byte("p1"), MsgID: "x", Accepted: true},
		{ID: 2, DeviceID: "a", Topic: "t", Transport: "mqtt", Payload: []byte("p2"), Code: "c", Reason: "r"},
		{ID: 3, DeviceID: "b", Topic: "u", Transport: "http"},
	}
	b := Encode(recs)
	before := Record{ID: 99, DeviceID: "z"}
	got, err := AppendShared([]Record{before}, b)
	if err != nil {
		t.Fatal(err)
	}
	if want := append([]Record{before}, recs...); !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	p := got[1].Payload
	if i := bytes.Index(b, []byte("p1")); i < 0 || &b[i] != &p[0] {
		t.Errorf("payload %q is a copy, not the block's bytes", p)
	}
	if cap(p) != len(p) {
		t.Errorf("payload's capacity %d reaches past it (%d bytes)", cap(p), len(p))
	}
	_, err = AppendShared(nil, b[:len(b)-1])
	if !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated block: error %v, want ErrCorrupt", err)
	}
}

// TestRoundTripRandom: any records come back as they went in.
func TestRoundTripRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	str := func(n int) string {
		b := make([]byte, r.IntN(n+1))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return string(b)
	}
	for range 2000 {
		recs := make([]Record, r.IntN(20))
		for i := range recs {
			rec := Record{ID: r.Int64() - 1<<62, DeviceID: str(3), Topic: str(3), Transport: str(4), QoS: byte(r.IntN(3)),
				MsgID: str(5), Accepted: r.IntN(2) == 0, Code: str(3), Reason: str(10), ReceivedAt: r.Int64() - 1<<62}
			if r.IntN(3) > 0 {
				rec.Payload = []byte(str(40))
			}
			recs[i] = rec
		}
		got, err := Decode(Encode(recs))
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 && len(got) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, recs) {
			t.Fatalf("got  %+v\nwant %+v", got, recs)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	good := Encode([]Record{{ID: 1, DeviceID: "d", Topic: "t", Transport: "mqtt", Payload: []byte("abc"), MsgID: "m", Accepted: true}})
	tests := []struct {
		name  string
		block []byte
		want  string
	}{
		{"empty", nil, "empty"},
		{"other version", []byte{2}, "version 2"},
		{"unknown flags", []byte{Version, 0x80}, "unknown flags"},
		{"truncated payload", good[:len(good)-1], "payload: length 3 past the end"},
		{"truncated id", []byte{Version, 0, 0x80}, "id: bad varint"},
		{"no qos", []byte{Version, 0, 2, 2}, "qos: past the end"},
		{"same device first", []byte{Version, flagSameDevice, 2, 2, 0, 0}, "refers to a device"},
		{"huge length", []byte{Version, 0, 2, 2, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}, "transport: length"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.block)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrCorrupt with %q", err, tt.want)
			}
		})
	}
}

// TestStandalone: records of a standalone encoder decode in order and
// alone from their offsets; a chained record does not decode alone.
func TestStandalone(t *testing.T) {
	recs := []Record{
		{ID: 1 << 40, DeviceID: "a", Topic: "t", Transport: "mqtt", MsgID: "x", Accepted: true, ReceivedAt: 1 << 50, Payload: []byte("p")},
		{ID: 1<<40 + 1, DeviceID: "a", Topic: "t", Transport: "mqtt", ReceivedAt: 1<<50 + 3},
		{ID: 1<<40 - 5, DeviceID: "b", Topic: "u", Transport: "http", Code: "c", Reason: "r", ReceivedAt: 7},
	}
	e := Encoder{Standalone: true}
	e.Reset(nil)
	var offs []int
	for i := range recs {
		offs = append(offs, e.Add(&recs[i]))
	}
	block := e.Bytes()
	got, err := Decode(block)
	if err != nil || !reflect.DeepEqual(got, recs) {
		t.Fatalf("Decode = %+v, %v", got, err)
	}
	for i, off := range offs {
		r, err := DecodeAt(block, off)
		if err != nil {
			t.Fatalf("DecodeAt(%d): %v", off, err)
		}
		if c := r.Clone(); !reflect.DeepEqual(c, recs[i]) {
			t.Errorf("DecodeAt(%d) = %+v, want %+v", off, c, recs[i])
		}
	}
	var chained Encoder
	chained.Reset(nil)
	chained.Add(&recs[0])
	off := chained.Add(&recs[1])
	if _, err := DecodeAt(chained.Bytes(), off); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not standalone") {
		t.Errorf("DecodeAt of a chained record: %v", err)
	}
	if _, err := DecodeAt(block, len(block)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "outside the block") {
		t.Errorf("DecodeAt past the end: %v", err)
	}
}

func TestEncoderReuse(t *testing.T) {
	var e Encoder
	e.Reset(nil)
	e.Add(&Record{ID: 5, DeviceID: "a", Topic: "t"})
	buf := e.Bytes()
	e.Reset(buf)
	e.Add(&Record{ID: 6, DeviceID: "a", Topic: "t"})
	got, err := Decode(e.Bytes())
	if err != nil || len(got) != 1 || got[0].ID != 6 || e.Len() != 1 {
		t.Fatalf("after Reset: %+v, %v", got, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode([]Record{{ID: 1, DeviceID: "d", Topic: "t", Transport: "mqtt", Payload: []byte("abc"), MsgID: "m", Accepted: true},
		{ID: 2, DeviceID: "d", Topic: "t", Code: "c", Reason: "r"}}))
	f.Add([]byte{Version})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		for off := range min(len(b), 64) {
			if _, err := DecodeAt(b, off); err != nil && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("DecodeAt error %v does not wrap ErrCorrupt", err)
			}
		}
		recs, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if shared, err := AppendShared(nil, b); err != nil || (len(recs) > 0 && !reflect.DeepEqual(shared, recs)) {
			t.Fatalf("AppendShared differs from Decode (%v):\n%+v\n%+v", err, shared, recs)
		}
		// What decodes encodes to a block that decodes the same.
		again, err := Decode(Encode(recs))
		if err != nil {
			t.Fatalf("re-encoded block: %v", err)
		}
		if len(recs) > 0 && !reflect.DeepEqual(again, recs) {
			t.Fatalf("re-encoded block decodes differently:\n%+v\n%+v", again, recs)
		}
	})
}
