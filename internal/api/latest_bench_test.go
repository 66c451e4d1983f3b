package api_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/readings"
)

// fixedLatest answers every latest values query with one page.
type fixedLatest struct{ page readings.LatestPage }

func (f fixedLatest) LatestValues(context.Context, readings.LatestQuery) (readings.LatestPage, error) {
	return f.page, nil
}

func (fixedLatest) AggregateReadings(context.Context, readings.AggregateQuery) (readings.Aggregate, error) {
	return readings.Aggregate{}, nil
}

// BenchmarkLatestValuesHTTP: GET /api/v1/readings/latest of 10,000 devices
// of 4 fields each, as the SQLite store answers it (the values as stored),
// over HTTP: what the API adds to the store's time.
//
//	go test ./internal/api -run '^$' -bench LatestValuesHTTP -benchtime 20x
func BenchmarkLatestValuesHTTP(b *testing.B) {
	var page readings.LatestPage
	for d := range 10000 {
		raw := fmt.Appendf(nil, `[{"field":"battery","ts":"2026-12-03T10:00:00.123456Z","value":%d},{"field":"humidity","ts":"2026-12-03T10:00:00.123456Z","value":40.5},{"field":"pressure","ts":"2026-12-03T10:00:00.123456Z","value":1013.5},{"field":"temperature","ts":"2026-12-03T10:00:00.123456Z","value":21.25}]`, d%100)
		page.Devices = append(page.Devices, readings.DeviceLatest{DeviceID: fmt.Sprintf("dev-%05d", d), Raw: raw})
	}
	f := apitest.New()
	deps := f.Deps()
	deps.ReadingQueries = fixedLatest{page}
	a := api.New(deps, api.Options{}, nil)
	b.Cleanup(a.Shutdown)
	ts := httptest.NewServer(a.Handler())
	b.Cleanup(ts.Close)
	srv := ts.URL
	req, err := http.NewRequest(http.MethodGet, srv+"/api/v1/readings/latest", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apitest.ViewerToken)
	var n int64
	for b.Loop() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d, %v", resp.StatusCode, err)
		}
	}
	b.ReportMetric(float64(n), "bytes")
}
