package api

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/readings"
)

// TestAppendLatestPage: the page written by hand decodes to what
// encoding/json makes of the same page, for values kept raw and decoded,
// ids that need escaping, and with and without next.
func TestAppendLatestPage(t *testing.T) {
	ts := time.Date(2026, 12, 3, 10, 0, 0, 123456000, time.UTC)
	raw := json.RawMessage(`[{"field":"t","ts":"2026-12-03T10:00:00.123456Z","value":21.5},{"stream":"b","field":"on","ts":"2026-12-03T10:00:00.123456Z","value":true}]`)
	tests := []struct {
		name string
		page readings.LatestPage
	}{
		{"empty", readings.LatestPage{}},
		{"raw values", readings.LatestPage{Devices: []readings.DeviceLatest{{DeviceID: "dev-1", Raw: raw}, {DeviceID: "dev-2", Raw: json.RawMessage(`[]`)}}, Next: "dev-2"}},
		{"decoded values", readings.LatestPage{Devices: []readings.DeviceLatest{{DeviceID: "dev-1", Values: []readings.LatestValue{{Field: "t", Time: ts, Value: json.RawMessage(`"x"`)}}}, {DeviceID: "dev-2"}}}},
		{"ids to escape", readings.LatestPage{Devices: []readings.DeviceLatest{{DeviceID: "a\"b\\c<d>&é\x01", Raw: raw}}, Next: "a\"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := appendLatestPage(nil, tt.page)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(b) {
				t.Fatalf("invalid JSON: %s", b)
			}
			want := LatestPage{Devices: make([]DeviceLatest, len(tt.page.Devices)), Next: tt.page.Next}
			for i, d := range tt.page.Devices {
				vs, err := d.Decoded()
				if err != nil {
					t.Fatal(err)
				}
				want.Devices[i] = DeviceLatest{DeviceID: d.DeviceID, Values: make([]LatestValue, len(vs))}
				for j, v := range vs {
					want.Devices[i].Values[j] = LatestValue(v)
				}
			}
			wb, err := json.Marshal(want)
			if err != nil {
				t.Fatal(err)
			}
			var got, exp any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(wb, &exp); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, exp) {
				t.Errorf("got  %s\nwant %s", b, wb)
			}
		})
	}
}
