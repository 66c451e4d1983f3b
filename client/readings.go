package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// LatestQuery selects the latest values of many devices, by device id.
type LatestQuery struct {
	Type   string // only devices of this type
	Stream string
	Field  string
	After  string // the Next of the previous page
	Limit  int    // devices per page; 0: the server's default (10000)
}

// LatestValue is the newest value of one field of one stream of a device.
type LatestValue struct {
	Stream string          `json:"stream,omitempty"`
	Field  string          `json:"field"`
	Time   time.Time       `json:"ts"`
	Value  json.RawMessage `json:"value"`
}

// DeviceLatest is the latest values of one device.
type DeviceLatest struct {
	DeviceID string        `json:"device_id"`
	Values   []LatestValue `json:"values"`
}

// LatestPage is one page of latest values; Next is "" on the last page.
type LatestPage struct {
	Devices []DeviceLatest `json:"devices"`
	Next    string         `json:"next,omitempty"`
}

// LatestValues returns the newest value of every field of every device
// (one page of devices) in one request.
func (c *Client) LatestValues(ctx context.Context, lq LatestQuery) (*LatestPage, error) {
	q := url.Values{}
	set(q, "type", lq.Type)
	set(q, "stream", lq.Stream)
	set(q, "field", lq.Field)
	set(q, "after", lq.After)
	if lq.Limit > 0 {
		q.Set("limit", strconv.Itoa(lq.Limit))
	}
	var out LatestPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/readings/latest", q, nil, &out); err != nil {
		return nil, fmt.Errorf("latest values: %w", err)
	}
	return &out, nil
}

// AggregateQuery selects a time range of one field of a device, summed up
// in buckets.
type AggregateQuery struct {
	DeviceID string
	Field    string
	Stream   string
	From, To time.Time // From inclusive, To exclusive; both required
	Buckets  int       // 0: the server's default (500)
	// Resolution is "" or "raw" (the readings), "1m" or "1h" (the rollups).
	Resolution string
}

// Bucket sums up the numeric values of one time bucket.
type Bucket struct {
	Start time.Time `json:"start"`
	Count int64     `json:"count"`
	Min   float64   `json:"min"`
	Max   float64   `json:"max"`
	Avg   float64   `json:"avg"`
	Last  float64   `json:"last"`
}

// Aggregate is the buckets holding a value, oldest first.
type Aggregate struct {
	DeviceID string    `json:"device_id"`
	Stream   string    `json:"stream,omitempty"`
	Field    string    `json:"field"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	StepMS   float64   `json:"step_ms"`
	Buckets  []Bucket  `json:"buckets"`
}

// AggregateReadings sums a field of a device's readings up in time
// buckets: count, min, max, avg and last of each.
func (c *Client) AggregateReadings(ctx context.Context, aq AggregateQuery) (*Aggregate, error) {
	q := url.Values{}
	set(q, "field", aq.Field)
	set(q, "stream", aq.Stream)
	set(q, "resolution", aq.Resolution)
	if !aq.From.IsZero() {
		q.Set("from", aq.From.Format(time.RFC3339Nano))
	}
	if !aq.To.IsZero() {
		q.Set("to", aq.To.Format(time.RFC3339Nano))
	}
	if aq.Buckets > 0 {
		q.Set("buckets", strconv.Itoa(aq.Buckets))
	}
	var out Aggregate
	if err := c.do(ctx, http.MethodGet, "/api/v1/devices/"+url.PathEscape(aq.DeviceID)+"/readings/aggregate", q, nil, &out); err != nil {
		return nil, fmt.Errorf("aggregate readings of %s: %w", aq.DeviceID, err)
	}
	return &out, nil
}
