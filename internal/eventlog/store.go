// Package eventlog delivers committed events: it fans them out to in-process
// subscribers in order, each with a bounded queue, and lets a subscriber
// that fell behind (or that starts from an old sequence number) catch up from
// the durable event log in the store.
package eventlog

import (
	"context"

	"github.com/devicehub/devicehub/events"
)

// Store reads the durable event log.
type Store interface {
	// ReadEvents returns up to limit events with Seq > after, in Seq order.
	ReadEvents(ctx context.Context, after int64, limit int) ([]events.Event, error)
	// LastSeq returns the highest Seq stored, 0 for none.
	LastSeq(ctx context.Context) (int64, error)
}
