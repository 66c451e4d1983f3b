package readings

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestMergeLatest(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0).UTC() }
	kept := []LatestValue{
		{Field: "h", Time: at(10), Value: json.RawMessage(`1`)},
		{Field: "t", Time: at(10), Value: json.RawMessage(`2`)},
		{Stream: "b", Field: "t", Time: at(5), Value: json.RawMessage(`3`)},
	}
	render := func(vs []LatestValue) []string {
		out := []string{}
		for _, v := range vs {
			out = append(out, fmt.Sprintf("%s/%s=%s@%d", v.Stream, v.Field, v.Value, v.Time.Unix()))
		}
		return out
	}
	tests := []struct {
		name string
		kept []LatestValue
		rows []LatestRow
		want []string
	}{
		{"nothing kept", nil, []LatestRow{{Field: "a", Time: at(1), Value: json.RawMessage(`9`)}}, []string{"/a=9@1"}},
		{"newer replaces", kept, []LatestRow{{Field: "t", Time: at(11), Value: json.RawMessage(`9`)}}, []string{"/h=1@10", "/t=9@11", "b/t=3@5"}},
		{"same time replaces", kept, []LatestRow{{Field: "t", Time: at(10), Value: json.RawMessage(`9`)}}, []string{"/h=1@10", "/t=9@10", "b/t=3@5"}},
		{"older kept", kept, []LatestRow{{Field: "t", Time: at(9), Value: json.RawMessage(`9`)}}, []string{"/h=1@10", "/t=2@10", "b/t=3@5"}},
		{"several replaced, one older", kept, []LatestRow{{Field: "h", Time: at(9), Value: json.RawMessage(`8`)}, {Field: "t", Time: at(12), Value: json.RawMessage(`9`)}, {Stream: "b", Field: "t", Time: at(6), Value: json.RawMessage(`7`)}},
			[]string{"/h=1@10", "/t=9@12", "b/t=7@6"}},
		{"one new field among known ones", kept, []LatestRow{{Field: "t", Time: at(12), Value: json.RawMessage(`9`)}, {Field: "u", Time: at(1), Value: json.RawMessage(`8`)}},
			[]string{"/h=1@10", "/t=9@12", "/u=8@1", "b/t=3@5"}},
		{"new fields in order", kept, []LatestRow{{Field: "a", Time: at(1), Value: json.RawMessage(`7`)}, {Field: "i", Time: at(1), Value: json.RawMessage(`8`)}, {Stream: "c", Field: "a", Time: at(1), Value: json.RawMessage(`9`)}},
			[]string{"/a=7@1", "/h=1@10", "/i=8@1", "/t=2@10", "b/t=3@5", "c/a=9@1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := render(MergeLatest(tt.kept, tt.rows)); !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			// In place: the same result; the kept values are written
			// only when every row has one (else they stay as they were).
			own := slices.Clone(tt.kept)
			got := MergeLatestInPlace(own, tt.rows)
			if r := render(got); !slices.Equal(r, tt.want) {
				t.Errorf("in place: got %q, want %q", r, tt.want)
			}
			inPlace := len(own) > 0 && &got[0] == &own[0]
			if wantInPlace := len(tt.kept) == len(tt.want); inPlace != wantInPlace {
				t.Errorf("in place: wrote into the kept values %v, want %v", inPlace, wantInPlace)
			}
			if !inPlace && !slices.Equal(render(own), render(tt.kept)) {
				t.Errorf("in place: kept values changed to %q", render(own))
			}
		})
	}
}

// TestDeviceLatestRaw: a device with Raw values is written as one with
// the same Values.
func TestDeviceLatestRaw(t *testing.T) {
	vs := []LatestValue{{Stream: "s", Field: "t", Time: time.Unix(5, 0).UTC(), Value: json.RawMessage(`21.5`)}, {Field: "on", Time: time.Unix(6, 0).UTC(), Value: json.RawMessage(`true`)}}
	raw, err := json.Marshal(vs)
	if err != nil {
		t.Fatal(err)
	}
	a, err := json.Marshal(LatestPage{Devices: []DeviceLatest{{DeviceID: "d<1>", Values: vs}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(LatestPage{Devices: []DeviceLatest{{DeviceID: "d<1>", Raw: raw}}})
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("raw:\n%s\nvalues:\n%s", b, a)
	}
	d := DeviceLatest{DeviceID: "d", Raw: json.RawMessage(`[{"field":`)}
	if _, err := d.Decoded(); err == nil {
		t.Error("Decoded of a broken Raw: no error")
	}
}
