package retention

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Rollup resolutions, in seconds: the length of a rollup's bucket.
const (
	Minute = 60
	Hour   = 3600
)

// Resolutions are the rollups kept.
var Resolutions = []int{Minute, Hour}

// RawReading is a stored reading as the rollups read it.
type RawReading struct {
	ID       int64
	DeviceID string
	Stream   string
	Time     time.Time
	Values   []byte // JSON object
}

// Rollup sums up one numeric field of one stream of a device over one
// bucket of Res seconds starting at Bucket. Last is the value with the
// latest time (LastAt).
type Rollup struct {
	Res           int
	DeviceID      string
	Stream, Field string
	Bucket        time.Time
	Count         int64
	Sum, Min, Max float64
	Last          float64
	LastAt        time.Time
}

// RollupStore is what rollups need of storage.
type RollupStore interface {
	// RollupCursor returns the id of the last reading summed up (0 for
	// none).
	RollupCursor(ctx context.Context) (int64, error)
	// ReadingsAfter returns up to limit readings with an id after after,
	// by id.
	ReadingsAfter(ctx context.Context, after int64, limit int) ([]RawReading, error)
	// ApplyRollups adds rows to the stored rollups (counts and sums
	// added, min and max kept, the later last kept) and moves the cursor
	// from from to to, in one transaction; if the cursor is not at from
	// (another node moved it), nothing is written and it returns
	// ErrCursorMoved.
	ApplyRollups(ctx context.Context, rows []Rollup, from, to int64) error
	// ExpireRollups deletes, of each device, up to limit (in all)
	// rollups of resolution res with a bucket before its cutoff.
	ExpireRollups(ctx context.Context, res int, cuts []Cutoff, limit int) (int, error)
}

// ErrCursorMoved is returned by ApplyRollups when another writer moved the
// cursor first.
var ErrCursorMoved = fmt.Errorf("rollup cursor moved")

// RollupOptions configure the rollups.
type RollupOptions struct {
	Interval time.Duration // between catch-ups (default 10s)
	Batch    int           // readings per transaction (default 2000)
}

// Roller sums new readings up into 1-minute and 1-hour rollups, behind
// the write path: it reads readings in id order from its cursor and
// moves the cursor in the transaction that adds their sums, so that a
// crash neither loses nor counts twice. On PostgreSQL with several hub
// nodes a reading whose transaction commits after a later id was summed
// up is missed (ids are drawn before commit); one node is exact.
type Roller struct {
	st   RollupStore
	opts RollupOptions
	log  *slog.Logger

	summed prometheus.Counter
}

// NewRoller returns a roller. reg may be nil.
func NewRoller(st RollupStore, opts RollupOptions, log *slog.Logger, reg prometheus.Registerer) *Roller {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Batch <= 0 {
		opts.Batch = 2000
	}
	r := &Roller{st: st, opts: opts, log: log,
		summed: prometheus.NewCounter(prometheus.CounterOpts{Name: "devicehub_rollup_readings_total", Help: "Readings summed up into rollups."})}
	if reg != nil {
		reg.MustRegister(r.summed)
	}
	return r
}

// Run catches up at every interval until ctx ends.
func (r *Roller) Run(ctx context.Context) error {
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		if err := r.CatchUp(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("rollups", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// CatchUp sums up every reading stored after the cursor, batch by batch.
func (r *Roller) CatchUp(ctx context.Context) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.step(ctx)
		if err != nil {
			return err
		}
		if n < r.opts.Batch {
			return nil
		}
	}
}

func (r *Roller) step(ctx context.Context) (int, error) {
	from, err := r.st.RollupCursor(ctx)
	if err != nil {
		return 0, fmt.Errorf("rollup cursor: %w", err)
	}
	rds, err := r.st.ReadingsAfter(ctx, from, r.opts.Batch)
	if err != nil {
		return 0, fmt.Errorf("read readings: %w", err)
	}
	if len(rds) == 0 {
		return 0, nil
	}
	rows, err := SumUp(rds)
	if err != nil {
		return 0, err
	}
	if err := r.st.ApplyRollups(ctx, rows, from, rds[len(rds)-1].ID); err != nil {
		return 0, fmt.Errorf("apply rollups: %w", err)
	}
	r.summed.Add(float64(len(rds)))
	return len(rds), nil
}

// SumUp sums the numeric fields of rds up per resolution, device, stream,
// field and bucket, sorted by that key (so that concurrent writers lock
// rows in one order). Values that are not numbers are not counted.
func SumUp(rds []RawReading) ([]Rollup, error) {
	type key struct {
		res                   int
		device, stream, field string
		bucket                int64
	}
	at := map[key]int{}
	var out []Rollup
	var fields map[string]any
	for _, rd := range rds {
		clear(fields)
		dec := json.NewDecoder(bytes.NewReader(rd.Values))
		dec.UseNumber()
		if err := dec.Decode(&fields); err != nil {
			// Not an object (the write path stores objects only): not
			// counted, rather than stopping the rollups at it.
			continue
		}
		for f, v := range fields {
			num, ok := v.(json.Number)
			if !ok {
				continue
			}
			x, err := num.Float64()
			if err != nil {
				continue
			}
			for _, res := range Resolutions {
				b := rd.Time.Truncate(time.Duration(res) * time.Second)
				k := key{res, rd.DeviceID, rd.Stream, f, b.UnixMicro()}
				i, ok := at[k]
				if !ok {
					at[k] = len(out)
					out = append(out, Rollup{Res: res, DeviceID: rd.DeviceID, Stream: rd.Stream, Field: f, Bucket: b.UTC(),
						Count: 1, Sum: x, Min: x, Max: x, Last: x, LastAt: rd.Time})
					continue
				}
				ru := &out[i]
				ru.Count++
				ru.Sum += x
				ru.Min, ru.Max = min(ru.Min, x), max(ru.Max, x)
				if !rd.Time.Before(ru.LastAt) {
					ru.Last, ru.LastAt = x, rd.Time
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b Rollup) int {
		return cmp.Or(cmp.Compare(a.DeviceID, b.DeviceID), cmp.Compare(a.Res, b.Res), a.Bucket.Compare(b.Bucket),
			cmp.Compare(a.Stream, b.Stream), cmp.Compare(a.Field, b.Field))
	})
	return out, nil
}
