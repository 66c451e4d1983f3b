package client_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/readings"
)

func TestLatestValues(t *testing.T) {
	ctx := context.Background()
	f, c := setup(t, apitest.ViewerToken)
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Readings.Add(
		readings.Record{ID: 1, DeviceID: "a", Time: t0.Add(time.Second), Values: map[string]any{"temperature": 2.5}},
		readings.Record{ID: 2, DeviceID: "a", Time: t0, Values: map[string]any{"temperature": 1.5, "label": "x"}},
		readings.Record{ID: 3, DeviceID: "b", Time: t0, Values: map[string]any{"temperature": 3.0}},
	)
	page, err := c.LatestValues(ctx, client.LatestQuery{Limit: 1})
	if err != nil || len(page.Devices) != 1 || page.Next != "a" {
		t.Fatalf("page 1 = %+v, %v", page, err)
	}
	a := page.Devices[0]
	if a.DeviceID != "a" || len(a.Values) != 2 || a.Values[0].Field != "label" || string(a.Values[0].Value) != `"x"` ||
		a.Values[1].Field != "temperature" || string(a.Values[1].Value) != "2.5" || !a.Values[1].Time.Equal(t0.Add(time.Second)) {
		t.Errorf("device a: %+v", a)
	}
	page, err = c.LatestValues(ctx, client.LatestQuery{After: page.Next, Field: "temperature"})
	if err != nil || len(page.Devices) != 1 || page.Devices[0].DeviceID != "b" || string(page.Devices[0].Values[0].Value) != "3" || page.Next != "" {
		t.Fatalf("page 2 = %+v, %v", page, err)
	}
}

func TestAggregateReadings(t *testing.T) {
	ctx := context.Background()
	f, c := setup(t, apitest.ViewerToken)
	f.Devices.Put(apitestDevice("ws-1"))
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for i := range 10 {
		f.Readings.Add(readings.Record{ID: int64(i), DeviceID: "ws-1", Time: t0.Add(time.Duration(i) * time.Minute), Values: map[string]any{"temperature": float64(i)}})
	}
	agg, err := c.AggregateReadings(ctx, client.AggregateQuery{DeviceID: "ws-1", Field: "temperature", From: t0, To: t0.Add(10 * time.Minute), Buckets: 2})
	if err != nil {
		t.Fatal(err)
	}
	want := []client.Bucket{
		{Start: t0, Count: 5, Min: 0, Max: 4, Avg: 2, Last: 4},
		{Start: t0.Add(5 * time.Minute), Count: 5, Min: 5, Max: 9, Avg: 7, Last: 9},
	}
	if len(agg.Buckets) != 2 || agg.StepMS != 300000 || agg.Field != "temperature" {
		t.Fatalf("aggregate %+v", agg)
	}
	for i, b := range agg.Buckets {
		if !b.Start.Equal(want[i].Start) || b.Count != want[i].Count || b.Min != want[i].Min || b.Max != want[i].Max || b.Avg != want[i].Avg || b.Last != want[i].Last {
			t.Errorf("bucket %d = %+v, want %+v", i, b, want[i])
		}
	}

	for _, tt := range []struct {
		name   string
		q      client.AggregateQuery
		status int
		code   string
		field  string
	}{
		{"no field", client.AggregateQuery{DeviceID: "ws-1", From: t0, To: t0.Add(time.Hour)}, 400, "invalid_argument", "field"},
		{"to before from", client.AggregateQuery{DeviceID: "ws-1", Field: "t", From: t0, To: t0.Add(-time.Hour)}, 400, "invalid_argument", "to"},
		{"bad field", client.AggregateQuery{DeviceID: "ws-1", Field: `a"b`, From: t0, To: t0.Add(time.Hour)}, 400, "invalid_argument", "field"},
		{"unknown device", client.AggregateQuery{DeviceID: "nope", Field: "t", From: t0, To: t0.Add(time.Hour)}, 404, "not_found", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.AggregateReadings(ctx, tt.q)
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("err %v is not a *client.Error", err)
			}
			if e.Status != tt.status || e.Code != tt.code || e.Field != tt.field || e.Message == "" {
				t.Errorf("error %+v", e)
			}
		})
	}
}
