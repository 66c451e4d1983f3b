package retention

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CompactStore is what compaction needs of a store that keeps readings in
// compressed blocks (a backend without blocks does not implement it, and
// the hub runs no Compactor for it).
type CompactStore interface {
	// RetentionDevices returns up to n devices with an id after after, by id.
	RetentionDevices(ctx context.Context, after string, n int) ([]Device, error)
	// CompactReadings moves, in one transaction, up to limit of a
	// device's readings taken before before (with an id of at most maxID
	// when maxID > 0) into its blocks, and returns how many it moved.
	CompactReadings(ctx context.Context, deviceID string, before time.Time, maxID int64, limit int) (int, error)
	// CompactDevices does the same for several devices in one
	// transaction, in the order given, up to limit readings in all. It
	// returns how many readings it moved and how many of the leading
	// devices have none left to move; the rest are for the next call.
	CompactDevices(ctx context.Context, deviceIDs []string, before time.Time, maxID int64, limit int) (moved, done int, err error)
	// RollupCursor: see RollupStore.
	RollupCursor(ctx context.Context) (int64, error)
}

// CompactOptions configure a Compactor.
type CompactOptions struct {
	// After is the age from which readings are compacted (default 1h):
	// younger ones stay rows, where late and duplicate-checked writes are
	// cheap.
	After time.Duration
	// Interval between passes (default 10m): a pass merges each device's
	// new readings into its newest block, so a longer interval re-encodes
	// less.
	Interval time.Duration
	// Rollups: readings are compacted only once summed up into rollups
	// (the roller reads rows).
	Rollups bool
	// Batch is the most readings one transaction moves (default 2048).
	Batch int
	// Devices is the most devices one transaction compacts (default 16):
	// consecutive devices' readings share the pages of the readings
	// table, so one transaction over several of them writes those pages
	// once (and commits once), where one a device wrote them once per
	// device. Batch bounds the transaction's work either way.
	Devices int
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

// Compactor moves readings older than CompactOptions.After from rows into
// compressed blocks, a run of consecutive devices (by id) at a time, one
// short transaction each (at most CompactOptions.Batch readings and
// CompactOptions.Devices devices: a transaction holds the writer for
// about as long as a group commit).
// One hub of a cluster runs it (the hub's single-owner lease).
type Compactor struct {
	st   CompactStore
	opts CompactOptions
	log  *slog.Logger

	moved  prometheus.Counter
	passes prometheus.Counter
	errs   prometheus.Counter
}

// NewCompactor returns a compactor. reg may be nil.
func NewCompactor(st CompactStore, opts CompactOptions, log *slog.Logger, reg prometheus.Registerer) *Compactor {
	if opts.After <= 0 {
		opts.After = time.Hour
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Minute
	}
	if opts.Batch <= 0 {
		opts.Batch = 2048
	}
	if opts.Devices <= 0 {
		opts.Devices = 16
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Compactor{st: st, opts: opts, log: log,
		moved:  prometheus.NewCounter(prometheus.CounterOpts{Name: "devicehub_compaction_readings_total", Help: "Readings moved from rows into compressed blocks."}),
		passes: prometheus.NewCounter(prometheus.CounterOpts{Name: "devicehub_compaction_passes_total", Help: "Completed compaction passes."}),
		errs:   prometheus.NewCounter(prometheus.CounterOpts{Name: "devicehub_compaction_errors_total", Help: "Compaction passes that failed (retried at the next interval)."}),
	}
	if reg != nil {
		reg.MustRegister(c.moved, c.passes, c.errs)
	}
	return c
}

// Run compacts at every interval until ctx ends. A failed pass is logged
// and retried at the next interval; Run returns only when ctx ends.
func (c *Compactor) Run(ctx context.Context) error {
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		if _, err := c.Pass(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			c.errs.Inc()
			c.log.Warn("compaction pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Pass compacts every device's readings that are due now and returns how
// many it moved.
func (c *Compactor) Pass(ctx context.Context) (int, error) {
	var maxID int64
	if c.opts.Rollups {
		id, err := c.st.RollupCursor(ctx)
		if err != nil {
			return 0, fmt.Errorf("compact: %w", err)
		}
		if id == 0 {
			return 0, nil // nothing summed up yet: nothing may go
		}
		maxID = id
	}
	before := c.opts.Now().Add(-c.opts.After)
	total := 0
	after := ""
	for {
		devs, err := c.st.RetentionDevices(ctx, after, devicesPerBatch)
		if err != nil {
			return total, fmt.Errorf("compact: %w", err)
		}
		ids := make([]string, len(devs))
		for i, d := range devs {
			ids[i] = d.ID
		}
		for len(ids) > 0 {
			if err := ctx.Err(); err != nil {
				return total, err
			}
			n, done, err := c.st.CompactDevices(ctx, ids[:min(len(ids), c.opts.Devices)], before, maxID, c.opts.Batch)
			if err != nil {
				return total, fmt.Errorf("compact: %w", err)
			}
			if n == 0 && done == 0 {
				return total, fmt.Errorf("compact: no progress at device %s", ids[0])
			}
			total += n
			c.moved.Add(float64(n))
			ids = ids[done:]
		}
		if len(devs) < devicesPerBatch {
			c.passes.Inc()
			return total, nil
		}
		after = devs[len(devs)-1].ID
	}
}
