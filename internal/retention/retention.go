// Package retention expires what the hub stores once its policy no longer
// keeps it: readings (a window per device type, with a default), the
// payloads of the message log (the records' metadata stays longer), the
// message log records, and events.
//
// Expiry runs in one loop (Expirer.Run) that deletes in bounded batches,
// each its own short transaction on the store's writer, so that ingest's
// commits run between them: a batch holds the writer for about as long as
// one group commit. Every statement finds its rows through an index in
// the order they were written (readings by the per-device (device, ts)
// index, messages by id, events by seq), so the cost of a pass is what it
// deletes plus one index probe per device, not the size of the history.
// The newest message, reading and event are never deleted, so that ids
// and seqs, which restart above the largest stored, never go back. A
// store whose readings are partitioned by time (PartitionStore) drops
// whole partitions instead of deleting rows where every window allows,
// and one whose message and event logs are (LogPartitionStore) expires
// them by whole partitions only.
//
// Space (space.go) watches the free disk space of the data directory:
// below a floor the hub refuses device messages, before the disk is full.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Cutoff is the time before which a device's readings (or rollups)
// expire; MaxID, when not 0, spares the readings with a larger id (not
// summed up into rollups yet).
type Cutoff struct {
	DeviceID string
	Before   time.Time
	MaxID    int64
}

// Device is a device as expiry sees it.
type Device struct {
	ID   string
	Type string
}

// Store is what expiry needs of storage. Every method is one transaction
// that touches at most limit rows and returns how many it changed.
type Store interface {
	// RetentionDevices returns up to n devices with an id after after, by id.
	RetentionDevices(ctx context.Context, after string, n int) ([]Device, error)
	// ExpireReadings deletes, of each device, up to limit readings (in
	// all) with a time before its cutoff.
	ExpireReadings(ctx context.Context, cuts []Cutoff, limit int) (int, error)
	// StripMessagePayloads drops the payloads of the messages, among the
	// limit oldest with an id after after, that were received before
	// before. It returns how many of those limit were received before
	// before (stripped now or earlier) and the largest id among them
	// (after when none).
	StripMessagePayloads(ctx context.Context, before time.Time, after int64, limit int) (expired int, last int64, err error)
	// ExpireMessages deletes the messages among the limit oldest that
	// were received before before.
	ExpireMessages(ctx context.Context, before time.Time, limit int) (int, error)
	// ExpireEvents deletes the events among the limit oldest that
	// happened before before.
	ExpireEvents(ctx context.Context, before time.Time, limit int) (int, error)
	// RollupCursor and ExpireRollups: see RollupStore.
	RollupCursor(ctx context.Context) (int64, error)
	ExpireRollups(ctx context.Context, res int, cuts []Cutoff, limit int) (int, error)
}

// PartitionStore is a Store whose readings are partitioned by time
// (PostgreSQL, one partition per day): expiry removes the readings that
// every device's window lets go by dropping whole partitions, and deletes
// rows only for the devices whose window is shorter than the longest.
// A reading may so outlive its window by up to a partition's span.
type PartitionStore interface {
	// DropReadings removes the readings with a time before before, by
	// whole partitions (a partition that also holds later readings stays
	// whole), sparing those with an id above maxID (when not 0) and the
	// newest reading. It returns how many went (an estimate).
	DropReadings(ctx context.Context, before time.Time, maxID int64) (int, error)
}

// LogPartitionStore is a Store whose message log and event log are
// partitioned (PostgreSQL: messages by day, events by range of seq):
// expiry removes them by dropping whole partitions instead of deleting
// rows, so a record or an event may outlive its window by up to a
// partition's span. Both spare the newest record or event, like the row
// deletes.
type LogPartitionStore interface {
	// DropMessages removes the message log records received before
	// before, by whole partitions, and returns how many went (an
	// estimate).
	DropMessages(ctx context.Context, before time.Time) (int, error)
	// DropMessagePayloads removes the payloads of the message log
	// records received before before, by whole partitions (the records
	// keep their metadata), and returns how many went (an estimate).
	DropMessagePayloads(ctx context.Context, before time.Time) (int, error)
	// DropEvents removes the events that happened before before, by
	// whole partitions, and returns how many went (an estimate).
	DropEvents(ctx context.Context, before time.Time) (int, error)
}

// Options are the retention policy. A zero duration keeps forever.
type Options struct {
	// Readings is how long readings are kept, for types without their own.
	Readings time.Duration
	// ReadingsByType overrides Readings per device type (0: forever).
	ReadingsByType map[string]time.Duration
	// MessagePayloads is how long the message log keeps payloads; after
	// it, a record keeps its metadata only.
	MessagePayloads time.Duration
	// Messages is how long message log records are kept.
	Messages time.Duration
	// Events is how long the event log is kept.
	Events time.Duration
	// Rollups: readings are summed up into rollups (a Roller runs), so
	// readings are expired only once summed up; Rollups1m and Rollups1h
	// are how long the 1-minute and 1-hour rollups are kept.
	Rollups              bool
	Rollups1m, Rollups1h time.Duration
	// Interval between passes (default 1m); Batch is the most rows one
	// transaction changes (default 1000).
	Interval time.Duration
	Batch    int
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

// Enabled reports whether anything expires.
func (o Options) Enabled() bool {
	if o.Readings > 0 || o.MessagePayloads > 0 || o.Messages > 0 || o.Events > 0 || o.Rollups1m > 0 || o.Rollups1h > 0 {
		return true
	}
	for _, d := range o.ReadingsByType {
		if d > 0 {
			return true
		}
	}
	return false
}

// longestReadings returns the longest readings window of all device
// types, 0 if the readings of some type are kept forever.
func (o Options) longestReadings() time.Duration {
	if o.Readings <= 0 {
		return 0
	}
	longest := o.Readings
	for _, d := range o.ReadingsByType {
		if d <= 0 {
			return 0
		}
		longest = max(longest, d)
	}
	return longest
}

// readingsFor returns the retention of a type's readings.
func (o Options) readingsFor(typ string) time.Duration {
	if d, ok := o.ReadingsByType[typ]; ok {
		return d
	}
	return o.Readings
}

// Expirer runs the retention policy. Create it with New.
type Expirer struct {
	st   Store
	opts Options
	log  *slog.Logger

	// payloadsAfter is where stripping payloads goes on: the records
	// before it are stripped already. In memory: after a restart the
	// first pass walks the stripped records again, once.
	payloadsAfter int64

	expired *prometheus.CounterVec
	passes  prometheus.Counter
	errs    prometheus.Counter
}

// New returns an expirer. reg may be nil.
func New(st Store, opts Options, log *slog.Logger, reg prometheus.Registerer) *Expirer {
	if opts.Interval <= 0 {
		opts.Interval = time.Minute
	}
	if opts.Batch <= 0 {
		opts.Batch = 1000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	e := &Expirer{
		st: st, opts: opts, log: log,
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_retention_expired_total",
			Help: "Rows expired by the retention policy, by what (readings, message_payloads, messages, events).",
		}, []string{"what"}),
		passes: prometheus.NewCounter(prometheus.CounterOpts{Name: "devicehub_retention_passes_total", Help: "Completed retention passes."}),
		errs:   prometheus.NewCounter(prometheus.CounterOpts{Name: "devicehub_retention_errors_total", Help: "Retention passes that failed (retried at the next interval)."}),
	}
	if reg != nil {
		reg.MustRegister(e.expired, e.passes, e.errs)
	}
	return e
}

// Run expires at every interval until ctx ends. A failed pass is logged
// and retried at the next interval; Run returns only when ctx ends.
func (e *Expirer) Run(ctx context.Context) error {
	if !e.opts.Enabled() {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(e.opts.Interval)
	defer t.Stop()
	for {
		if err := e.Pass(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			e.errs.Inc()
			e.log.Warn("retention pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Pass expires everything due now, batch by batch.
func (e *Expirer) Pass(ctx context.Context) error {
	now := e.opts.Now()
	err := errors.Join(e.readings(ctx, now), e.messages(ctx, now), e.events(ctx, now))
	if err == nil {
		e.passes.Inc()
	}
	return err
}

// devicesPerBatch is how many devices one readings batch looks at.
const devicesPerBatch = 256

func (e *Expirer) readings(ctx context.Context, now time.Time) error {
	var maxID int64
	if e.opts.Rollups {
		id, err := e.st.RollupCursor(ctx)
		if err != nil {
			return fmt.Errorf("expire readings: %w", err)
		}
		if id == 0 {
			return nil // nothing summed up yet: nothing may go
		}
		maxID = id
	}
	// With a partitioned store, the longest window goes by whole
	// partitions, and rows are deleted only for shorter windows.
	var byPartition time.Duration
	if ps, ok := e.st.(PartitionStore); ok {
		if byPartition = e.opts.longestReadings(); byPartition > 0 {
			n, err := ps.DropReadings(ctx, now.Add(-byPartition), maxID)
			e.expired.WithLabelValues("readings").Add(float64(n))
			if err != nil {
				return fmt.Errorf("expire readings: %w", err)
			}
		}
	}
	after := ""
	for {
		devs, err := e.st.RetentionDevices(ctx, after, devicesPerBatch)
		if err != nil {
			return fmt.Errorf("expire readings: %w", err)
		}
		if len(devs) == 0 {
			return nil
		}
		var cuts []Cutoff
		for _, d := range devs {
			if keep := e.opts.readingsFor(d.Type); keep > 0 && keep != byPartition {
				cuts = append(cuts, Cutoff{DeviceID: d.ID, Before: now.Add(-keep), MaxID: maxID})
			}
		}
		if err := e.batches(ctx, "readings", cuts, e.st.ExpireReadings); err != nil {
			return err
		}
		for _, r := range []struct {
			res  int
			keep time.Duration
			what string
		}{{Minute, e.opts.Rollups1m, "rollups_1m"}, {Hour, e.opts.Rollups1h, "rollups_1h"}} {
			if r.keep <= 0 {
				continue
			}
			cuts := make([]Cutoff, len(devs))
			for i, d := range devs {
				cuts[i] = Cutoff{DeviceID: d.ID, Before: now.Add(-r.keep)}
			}
			if err := e.batches(ctx, r.what, cuts, func(ctx context.Context, cuts []Cutoff, limit int) (int, error) {
				return e.st.ExpireRollups(ctx, r.res, cuts, limit)
			}); err != nil {
				return err
			}
		}
		after = devs[len(devs)-1].ID
		if len(devs) < devicesPerBatch {
			return nil
		}
	}
}

// batches expires cuts with expire until a batch comes back not full.
func (e *Expirer) batches(ctx context.Context, what string, cuts []Cutoff, expire func(context.Context, []Cutoff, int) (int, error)) error {
	for len(cuts) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := expire(ctx, cuts, e.opts.Batch)
		if err != nil {
			return fmt.Errorf("expire %s: %w", what, err)
		}
		e.expired.WithLabelValues(what).Add(float64(n))
		if n < e.opts.Batch {
			return nil
		}
	}
	return nil
}

func (e *Expirer) messages(ctx context.Context, now time.Time) error {
	if keep := e.opts.MessagePayloads; keep > 0 {
		if lp, ok := e.st.(LogPartitionStore); ok {
			n, err := lp.DropMessagePayloads(ctx, now.Add(-keep))
			e.expired.WithLabelValues("message_payloads").Add(float64(n))
			if err != nil {
				return fmt.Errorf("strip message payloads: %w", err)
			}
		} else {
			for {
				n, last, err := e.st.StripMessagePayloads(ctx, now.Add(-keep), e.payloadsAfter, e.opts.Batch)
				if err != nil {
					return fmt.Errorf("strip message payloads: %w", err)
				}
				e.expired.WithLabelValues("message_payloads").Add(float64(n))
				e.payloadsAfter = last
				if n < e.opts.Batch {
					break
				}
			}
		}
	}
	if keep := e.opts.Messages; keep > 0 {
		if lp, ok := e.st.(LogPartitionStore); ok {
			n, err := lp.DropMessages(ctx, now.Add(-keep))
			e.expired.WithLabelValues("messages").Add(float64(n))
			if err != nil {
				return fmt.Errorf("expire messages: %w", err)
			}
			return nil
		}
		if err := e.drain(ctx, "messages", func(ctx context.Context) (int, error) {
			return e.st.ExpireMessages(ctx, now.Add(-keep), e.opts.Batch)
		}); err != nil {
			return err
		}
	}
	return nil
}

func (e *Expirer) events(ctx context.Context, now time.Time) error {
	if keep := e.opts.Events; keep > 0 {
		if lp, ok := e.st.(LogPartitionStore); ok {
			n, err := lp.DropEvents(ctx, now.Add(-keep))
			e.expired.WithLabelValues("events").Add(float64(n))
			if err != nil {
				return fmt.Errorf("expire events: %w", err)
			}
			return nil
		}
		return e.drain(ctx, "events", func(ctx context.Context) (int, error) {
			return e.st.ExpireEvents(ctx, now.Add(-keep), e.opts.Batch)
		})
	}
	return nil
}

// drain runs batch until one comes back not full.
func (e *Expirer) drain(ctx context.Context, what string, batch func(context.Context) (int, error)) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := batch(ctx)
		if err != nil {
			return fmt.Errorf("expire %s: %w", what, err)
		}
		e.expired.WithLabelValues(what).Add(float64(n))
		if n < e.opts.Batch {
			return nil
		}
	}
}
