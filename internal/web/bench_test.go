package web_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"testing"

	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/registry"
)

// BenchmarkDevicesPage measures the devices list page of the dashboard
// with a fleet of DEVICEHUB_BENCH_DEVICES devices (default 100,000) in
// SQLite: server time per page (the real HTTP server, the in-process API
// call, the template) and bytes per page, for the first page, a page in
// the middle (cursor), a type filter, a text search and a tag that match
// few devices (the store's query filters them), and a tag that matches
// one device in 50, and the order by last seen (the store sorts every
// device: none has been seen, the worst case, as no index serves it; the
// middle page's cursor is in the never-seen tail). The API's own JSON
// listing and search are measured beside it.
//
//	go test ./internal/web -run '^$' -bench DevicesPage -benchtime 20x
func BenchmarkDevicesPage(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("DEVICEHUB_BENCH_DEVICES")); err == nil && v > 0 {
		n = v
	}
	h := startHub(b)
	ctx := context.Background()
	for start := 0; start < n; start += registry.MaxImportDevices {
		f := registry.ImportFile{}
		for i := start; i < min(n, start+registry.MaxImportDevices); i++ {
			f.Devices = append(f.Devices, registry.ImportDevice{
				ID: fmt.Sprintf("dev-%06d", i), Type: "WeatherStation", Name: fmt.Sprintf("Station %d", i),
				Tags: []string{"site-" + strconv.Itoa(i%50)},
			})
			if i%10_000 == 0 { // ten devices
				d := &f.Devices[len(f.Devices)-1]
				d.Tags = append(d.Tags, "rare")
			}
		}
		if _, err := h.Registry().Import(ctx, f, registry.ImportOptions{}); err != nil {
			b.Fatalf("import: %v", err)
		}
	}
	if _, err := h.Accounts().AddUser(ctx, "bench", "bench password", "viewer"); err != nil {
		b.Fatal(err)
	}
	secret, _, _, err := h.Accounts().Login(ctx, "bench", "bench password", "127.0.0.1:1")
	if err != nil {
		b.Fatal(err)
	}
	get := func(b *testing.B, path string) int {
		req, _ := http.NewRequest("GET", h.base+path, nil)
		req.AddCookie(&http.Cookie{Name: api.SessionCookie, Value: secret})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			b.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		return len(body)
	}
	mid := fmt.Sprintf("dev-%06d", n/2)
	for _, c := range []struct{ name, path string }{
		{"first-page", "/devices"},
		{"middle-page", "/devices?after=" + mid},
		{"page-of-250", "/devices?limit=250&after=" + mid},
		{"type-filter", "/devices?type=WeatherStation&after=" + mid},
		{"search-few", "/devices?q=station+9999"},
		{"tag-few", "/devices?tag=rare"},
		{"tag-one-in-50", "/devices?tag=site-7"},
		{"by-last-seen-first", "/devices?sort=last_seen"},
		{"by-last-seen-middle", "/devices?sort=last_seen&after=_" + mid},
		{"api-json-50", "/api/v1/devices?limit=50&after=" + mid},
		{"api-by-last-seen-50", "/api/v1/devices?limit=50&sort=last_seen"},
		{"api-search-few", "/api/v1/devices?q=station+9999"},
	} {
		b.Run(c.name, func(b *testing.B) {
			size := 0
			for b.Loop() {
				size = get(b, c.path)
			}
			b.ReportMetric(float64(size), "bytes/page")
		})
	}
}
