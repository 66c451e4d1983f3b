package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/readings"
)

// ReadingQueries answers the fleet-wide and charting queries of readings.
type ReadingQueries interface {
	LatestValues(ctx context.Context, q readings.LatestQuery) (readings.LatestPage, error)
	AggregateReadings(ctx context.Context, q readings.AggregateQuery) (readings.Aggregate, error)
}

func (a *API) registerReadingQueries() {
	register(a, permViewer, huma.Operation{
		OperationID: "latestValues", Method: http.MethodGet, Path: "/api/v1/readings/latest", Tags: []string{"devices"},
		Summary: "Latest values of every device",
		Description: "The newest value of every field (per stream) of every device that sent a reading, by device id, " +
			"in one request: kept up to date as readings are stored, so the cost follows the size of the fleet, not of the history. " +
			"Pages hold up to limit devices; pass a page's next as after for the next page.",
		// The body is written by appendLatestPage, not by huma's encoder;
		// its schema is LatestPage's.
		Responses: map[string]*huma.Response{
			"200":     {Description: "OK", Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{Ref: "#/components/schemas/LatestPage"}}}},
			"default": {Description: "Error", Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{Ref: "#/components/schemas/ErrorResponse"}}}},
		},
	}, a.latestValues)
	a.huma.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[LatestPage](), true, "LatestPage")
	register(a, permViewer, huma.Operation{
		OperationID: "aggregateReadings", Method: http.MethodGet, Path: "/api/v1/devices/{id}/readings/aggregate", Tags: []string{"devices"},
		Summary: "A field of a device's readings in time buckets",
		Description: "Splits [from, to) into buckets of equal length and sums up the numeric values of one field in each: " +
			"count, min, max, avg and last (the value of the newest reading). Buckets without a value are left out. For charts.",
	}, a.aggregateReadings)
}

// LatestInput selects GET /api/v1/readings/latest.
type LatestInput struct {
	Type   string `query:"type" doc:"Only devices of this type."`
	Stream string `query:"stream" doc:"Only this stream."`
	Field  string `query:"field" doc:"Only this field."`
	After  string `query:"after" doc:"Only devices with an id after this: the previous page's next."`
	Limit  int    `query:"limit" minimum:"1" maximum:"100000" doc:"Devices per page; default 10000."`
}

// LatestValue is the newest value of one field of one stream of a device.
type LatestValue struct {
	Stream string          `json:"stream,omitempty"`
	Field  string          `json:"field"`
	Time   time.Time       `json:"ts" doc:"When the reading that carried the value was taken."`
	Value  json.RawMessage `json:"value" doc:"The value, as the device sent it."`
}

// DeviceLatest is the latest values of one device.
type DeviceLatest struct {
	DeviceID string        `json:"device_id"`
	Values   []LatestValue `json:"values"`
}

// LatestPage is the answer of GET /api/v1/readings/latest.
type LatestPage struct {
	Devices []DeviceLatest `json:"devices"`
	Next    string         `json:"next,omitempty" doc:"Pass as after for the next page; absent on the last page."`
}

// latestOutput is a LatestPage written by appendLatestPage.
type latestOutput struct {
	ContentType string `header:"Content-Type"`
	Body        []byte
}

func (a *API) latestValues(ctx context.Context, in *LatestInput) (*latestOutput, error) {
	if a.deps.ReadingQueries == nil {
		return nil, errNotImplemented
	}
	page, err := a.deps.ReadingQueries.LatestValues(ctx, readings.LatestQuery{Type: in.Type, Stream: in.Stream, Field: in.Field, After: in.After, Limit: in.Limit})
	if err != nil {
		return nil, err
	}
	body, err := appendLatestPage(nil, page)
	if err != nil {
		return nil, fmt.Errorf("latest values: %w", err)
	}
	return &latestOutput{ContentType: "application/json", Body: body}, nil
}

// appendLatestPage appends page as a LatestPage in JSON. The values a
// store keeps ready to write (readings.DeviceLatest.Raw, a JSON array the
// store encoded itself) are copied as they are: encoding/json would scan
// and compact every byte of them again, which was two thirds of the time
// of this answer for 10,000 devices (BenchmarkLatestValuesHTTP).
func appendLatestPage(b []byte, page readings.LatestPage) ([]byte, error) {
	size := 32 + len(page.Next)
	for _, d := range page.Devices {
		size += len(d.DeviceID) + len(d.Raw) + 32
	}
	b = slices.Grow(b, size)
	b = append(b, `{"devices":[`...)
	for i, d := range page.Devices {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"device_id":`...)
		b = appendJSONString(b, d.DeviceID)
		b = append(b, `,"values":`...)
		if d.Raw != nil {
			b = append(b, d.Raw...)
		} else {
			vs := make([]LatestValue, len(d.Values))
			for j, v := range d.Values {
				vs[j] = LatestValue(v)
			}
			enc, err := json.Marshal(vs)
			if err != nil {
				return nil, err
			}
			b = append(b, enc...)
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	if page.Next != "" {
		b = append(b, `,"next":`...)
		b = appendJSONString(b, page.Next)
	}
	return append(b, '}'), nil
}

// appendJSONString appends s as a JSON string: as it is when it needs no
// escaping (device ids never do), through encoding/json otherwise.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			enc, _ := json.Marshal(s) // a string always encodes
			return append(b, enc...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// AggregateInput selects GET /api/v1/devices/{id}/readings/aggregate.
type AggregateInput struct {
	DeviceIDInput
	Field   string `query:"field" required:"true" doc:"The field; readings whose value of it is not a number are not counted."`
	Stream  string `query:"stream" doc:"Only this stream."`
	From    string `query:"from" required:"true" doc:"Start, inclusive: RFC 3339 or Unix milliseconds." example:"2025-03-01T00:00:00Z"`
	To      string `query:"to" required:"true" doc:"End, exclusive: RFC 3339 or Unix milliseconds." example:"2025-03-08T00:00:00Z"`
	Buckets int    `query:"buckets" minimum:"1" maximum:"10000" doc:"How many buckets [from, to) is split into; default 500."`
	// Resolution chooses the data: raw readings, or the 1-minute or
	// 1-hour rollups (retention.rollups), kept longer.
	Resolution string `query:"resolution" enum:"raw,1m,1h" doc:"raw (default): the readings; 1m or 1h: the rollups of that length (with retention.rollups), kept longer than readings; a rollup counts in the bucket its start falls in."`
}

// Bucket sums up one time bucket.
type Bucket struct {
	Start time.Time `json:"start"`
	Count int64     `json:"count"`
	Min   float64   `json:"min"`
	Max   float64   `json:"max"`
	Avg   float64   `json:"avg"`
	Last  float64   `json:"last" doc:"The value of the newest reading of the bucket."`
}

// Aggregate is the answer of GET /api/v1/devices/{id}/readings/aggregate.
type Aggregate struct {
	DeviceID string    `json:"device_id"`
	Stream   string    `json:"stream,omitempty"`
	Field    string    `json:"field"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	StepMS   float64   `json:"step_ms" doc:"The length of a bucket in milliseconds."`
	Buckets  []Bucket  `json:"buckets" doc:"The buckets holding at least one value, oldest first."`
}

type aggregateOutput struct{ Body Aggregate }

func (a *API) aggregateReadings(ctx context.Context, in *AggregateInput) (*aggregateOutput, error) {
	if a.deps.ReadingQueries == nil {
		return nil, errNotImplemented
	}
	q := readings.AggregateQuery{DeviceID: in.ID, Field: in.Field, Stream: in.Stream, Buckets: in.Buckets,
		Resolution: map[string]int{"1m": 60, "1h": 3600}[in.Resolution]}
	var err error
	if q.From, err = timeParam("from", in.From); err != nil {
		return nil, err
	}
	if q.To, err = timeParam("to", in.To); err != nil {
		return nil, err
	}
	if err := q.Check(); err != nil {
		return nil, err
	}
	if a.deps.Devices != nil {
		// An unknown device is a 404, not an empty answer.
		if _, err := a.deps.Devices.Get(ctx, q.DeviceID); err != nil {
			return nil, err
		}
	}
	agg, err := a.deps.ReadingQueries.AggregateReadings(ctx, q)
	if err != nil {
		return nil, err
	}
	out := Aggregate{DeviceID: agg.DeviceID, Stream: agg.Stream, Field: agg.Field, From: agg.From, To: agg.To,
		StepMS: float64(agg.Step) / float64(time.Millisecond), Buckets: make([]Bucket, len(agg.Buckets))}
	for i, b := range agg.Buckets {
		out.Buckets[i] = Bucket(b)
	}
	return &aggregateOutput{Body: out}, nil
}

// badQueryField names the parameter of a readings.ErrBadQuery.
func badQueryField(err error) string {
	if !errors.Is(err, readings.ErrBadQuery) {
		return ""
	}
	msg := err.Error()
	for i := 0; i < len(msg); i++ {
		if msg[i] == ':' {
			return msg[:i]
		}
	}
	return ""
}
