package sqlite

import (
	"slices"
	"testing"
)

func TestIDList(t *testing.T) {
	tests := []struct {
		name    string
		ids     []int64
		data    []byte // decoded instead of ids' encoding when set
		wantErr bool
	}{
		{name: "empty"},
		{name: "one", ids: []int64{1764959640000000}},
		{name: "close", ids: []int64{1764959640000000, 1764959640000001, 1764959640000090, 1764959641000000}},
		{name: "large", ids: []int64{1, 1 << 62}},
		{name: "zero step", data: []byte{5, 0}, wantErr: true},
		{name: "zero first", data: []byte{0}, wantErr: true},
		{name: "truncated", data: []byte{0x80}, wantErr: true},
		{name: "overflow", data: []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.data
			if data == nil {
				data = appendIDList(nil, tc.ids)
			}
			got, err := decodeIDList(data)
			if (err != nil) != tc.wantErr {
				t.Fatalf("decodeIDList(%x) = %v, %v; want error %v", data, got, err, tc.wantErr)
			}
			if !tc.wantErr && !slices.Equal(got, tc.ids) {
				t.Errorf("round trip of %v = %v", tc.ids, got)
			}
		})
	}
}

// FuzzIDList: any bytes decode to an error or to ascending positive ids
// that encode back to the same bytes.
func FuzzIDList(f *testing.F) {
	f.Add(appendIDList(nil, []int64{1764959640000000, 1764959640000007}))
	f.Add([]byte{0x80})
	f.Fuzz(func(t *testing.T, b []byte) {
		ids, err := decodeIDList(b)
		if err != nil {
			return
		}
		for i, id := range ids {
			if id <= 0 || (i > 0 && id <= ids[i-1]) {
				t.Fatalf("decoded %v: not positive and ascending", ids)
			}
		}
		if again := appendIDList(nil, ids); string(again) != string(b) {
			t.Fatalf("%x decoded to %v, which encodes to %x", b, ids, again)
		}
	})
}
