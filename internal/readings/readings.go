// Package readings queries stored device readings. Readings are written by
// the commit path; this package owns the read side and its store interface.
package readings

import (
	"context"
	"errors"
	"time"
)

// ErrBadCursor is returned for a cursor the store did not issue.
var ErrBadCursor = errors.New("bad cursor")

// Record is one stored reading.
type Record struct {
	ID         int64          `json:"id"`
	DeviceID   string         `json:"device_id"`
	Stream     string         `json:"stream,omitempty"`
	Time       time.Time      `json:"ts"`
	ReceivedAt time.Time      `json:"received_at"`
	MessageID  int64          `json:"message_id"`
	Values     map[string]any `json:"values"`
}

// Query selects readings of one device, newest first.
type Query struct {
	DeviceID string
	Stream   string    // "": every stream
	Field    string    // "": every field; else only readings with this field, and only its value
	From     time.Time // zero: no lower bound (inclusive)
	To       time.Time // zero: no upper bound (exclusive)
	Limit    int       // 0: 100; at most 10000
	Cursor   string    // from a previous page's Next
}

// Page is one page of readings, newest first; Next is "" on the last page.
type Page struct {
	Readings []Record `json:"readings"`
	Next     string   `json:"next,omitempty"`
}

// Store is what the readings queries need of storage.
type Store interface {
	QueryReadings(ctx context.Context, q Query) (Page, error)
	CountReadings(ctx context.Context, deviceID string) (int64, error) // "" counts all
	// LatestValues returns the newest value of every field of every
	// device, kept up to date by the commit that stores a reading, so
	// that its cost follows the size of the fleet, not of the history.
	LatestValues(ctx context.Context, q LatestQuery) (LatestPage, error)
	// AggregateReadings sums up a time range of one field of one device
	// (q passed Check) with an Aggregator.
	AggregateReadings(ctx context.Context, q AggregateQuery) (Aggregate, error)
}
