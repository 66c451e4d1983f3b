package hub_test

import (
	"slices"
	"testing"
)

// The device list's tag and text filters reach the real store's query
// through the API, with paging.
func TestDeviceListFilters(t *testing.T) {
	th := startHub(t, "")
	for _, d := range []struct {
		id, name string
		tags     []string
	}{
		{"a-1", "Front Door", []string{"entry"}},
		{"a-2", "Back door", []string{"entry", "rear"}},
		{"a-3", "Lamp", []string{"entryway"}},
		{"door-9", "", nil},
	} {
		body := map[string]any{"id": d.id, "type": "WeatherStation", "name": d.name, "tags": d.tags}
		if code := th.do(t, "POST", "/api/v1/devices", body, nil); code != 201 {
			t.Fatalf("provision %s: status %d", d.id, code)
		}
	}
	tests := []struct {
		name, query string
		want        []string
		next        string
	}{
		{"tag", "tag=entry", []string{"a-1", "a-2"}, ""},
		{"tag paged", "tag=entry&limit=1", []string{"a-1"}, "a-1"},
		{"tag next page", "tag=entry&limit=1&after=a-1", []string{"a-2"}, ""},
		{"text in name or id", "q=DOOR", []string{"a-1", "a-2", "door-9"}, ""},
		{"text and tag", "q=back&tag=entry", []string{"a-2"}, ""},
		{"nothing", "tag=none", []string{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var page struct {
				Devices []struct {
					ID string `json:"id"`
				} `json:"devices"`
				Next string `json:"next"`
			}
			if code := th.do(t, "GET", "/api/v1/devices?"+tt.query, nil, &page); code != 200 {
				t.Fatalf("status %d", code)
			}
			got := []string{}
			for _, d := range page.Devices {
				got = append(got, d.ID)
			}
			if !slices.Equal(got, tt.want) || page.Next != tt.next {
				t.Errorf("got %v next %q, want %v next %q", got, page.Next, tt.want, tt.next)
			}
		})
	}
}
