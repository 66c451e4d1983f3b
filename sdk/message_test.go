package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

func TestWithMsgID(t *testing.T) {
	gen := func() string { return "gen-1" }
	tests := []struct {
		name, payload, id string
		want, wantID      string
		bad               bool
	}{
		{"object", `{"a": 1}`, "", `{"msg_id":"gen-1","a": 1}`, "gen-1", false},
		{"given id", ` {"a": 1} `, "x", `{"msg_id":"x","a": 1}`, "x", false},
		{"carried id", `{"a": 1, "msg_id": "c"}`, "", `{"a": 1, "msg_id": "c"}`, "c", false},
		{"same carried and given", `{"msg_id": "c", "a": 1}`, "c", `{"msg_id": "c", "a": 1}`, "c", false},
		{"conflict", `{"msg_id": "c"}`, "d", "", "", true},
		{"array", `[{"a": 1}, {"a": 2}]`, "b", `[{"msg_id":"b","a": 1},{"msg_id":"b","a": 2}]`, "b", false},
		{"array with differing ids", `[{"msg_id": "x"}, {"msg_id": "y"}]`, "", "", "", true},
		{"empty object", `{}`, "e", `{"msg_id":"e"}`, "e", false},
		{"not JSON", `{"a": `, "", "", "", true},
		{"scalar", `42`, "", "", "", true},
		{"empty array", `[]`, "", "", "", true},
		{"array of scalars", `[1]`, "", "", "", true},
		{"id too long", `{"a": 1}`, string(bytes.Repeat([]byte("x"), 129)), "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, id, err := withMsgID([]byte(tt.payload), tt.id, gen)
			if tt.bad {
				if err == nil {
					t.Fatalf("accepted: %s", got)
				}
				return
			}
			if err != nil || string(got) != tt.want || id != tt.wantID {
				t.Fatalf("got %s, %q, %v; want %s, %q", got, id, err, tt.want, tt.wantID)
			}
		})
	}
}

func FuzzWithMsgID(f *testing.F) {
	f.Add([]byte(`{"a": 1}`), "")
	f.Add([]byte(`[{"a": 1, "msg_id": "q"}]`), "q")
	f.Fuzz(func(t *testing.T, payload []byte, id string) {
		out, got, err := withMsgID(payload, id, func() string { return "g" })
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("invalid JSON out: %s", out)
		}
		var v any
		json.Unmarshal(out, &v)
		objs, ok := v.([]any)
		if !ok {
			objs = []any{v}
		}
		for _, o := range objs {
			m, _ := o.(map[string]any)
			if m["msg_id"] != got {
				t.Fatalf("msg_id %v in %s, want %q", m["msg_id"], out, got)
			}
		}
	})
}

func TestEntryRoundTrip(t *testing.T) {
	e := entry{seq: 7, kind: kindData, topic: "devices/d/data/s/chunks/x/1/3", contentType: "application/json+zstd", msgID: "m", chunkIndex: 1, chunkCount: 3, payload: []byte("abc")}
	got, err := decodeEntry(7, e.encode())
	if err != nil || got.topic != e.topic || got.contentType != e.contentType || got.msgID != e.msgID ||
		got.chunkIndex != 1 || got.chunkCount != 3 || !bytes.Equal(got.payload, e.payload) || got.final() {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if _, err := decodeEntry(1, []byte{9}); !errors.Is(err, errCorrupt) {
		t.Fatalf("corrupt entry: %v", err)
	}
}

func FuzzDecodeEntry(f *testing.F) {
	f.Add((&entry{kind: kindData, topic: "t", payload: []byte("p")}).encode())
	f.Fuzz(func(t *testing.T, b []byte) {
		decodeEntry(1, b) // must not panic
	})
}

func TestBackoff(t *testing.T) {
	minD, maxD := 100*time.Millisecond, 2*time.Second
	for n := 1; n < 20; n++ {
		for range 50 {
			d := backoff(minD, maxD, n)
			hi := min(maxD, minD<<(n-1))
			if d < minD || d > hi {
				t.Fatalf("backoff(%d) = %v, want %v..%v", n, d, minD, hi)
			}
		}
	}
}

func TestChunk(t *testing.T) {
	e := entry{topic: "devices/d/data", payload: bytes.Repeat([]byte("x"), 25)}
	cs, err := chunk(e, 10)
	if err != nil || len(cs) != 3 {
		t.Fatalf("chunks %d, %v", len(cs), err)
	}
	var joined []byte
	for i, c := range cs {
		joined = append(joined, c.payload...)
		if c.chunkIndex != uint32(i) || c.chunkCount != 3 || c.final() != (i == 2) {
			t.Fatalf("chunk %d: %+v", i, c)
		}
	}
	if !bytes.Equal(joined, e.payload) {
		t.Fatal("chunks do not join to the payload")
	}
	if _, err := chunk(entry{payload: make([]byte, maxChunks*2+1)}, 2); err == nil {
		t.Fatal("too many chunks accepted")
	}
}
