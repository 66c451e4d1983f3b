package readings

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Bucket counts of AggregateReadings.
const (
	DefaultBuckets = 500
	MaxBuckets     = 10000
)

// ErrBadQuery is returned for a query whose parameters cannot be answered;
// the error names the parameter.
var ErrBadQuery = errors.New("bad query")

// AggregateQuery selects a time range of one field of one device, to be
// summed up in Buckets buckets of equal length.
type AggregateQuery struct {
	DeviceID string
	Stream   string    // "": every stream
	Field    string    // required
	From     time.Time // required, inclusive
	To       time.Time // required, exclusive
	Buckets  int       // 0: DefaultBuckets; at most MaxBuckets
	// Resolution 0 sums the raw readings up; 60 or 3600 the 1-minute or
	// 1-hour rollups (kept longer than raw readings), each counted in the
	// bucket its start falls in.
	Resolution int
}

// Check reports the first parameter of q that cannot be answered.
func (q AggregateQuery) Check() error {
	switch {
	case q.Field == "":
		return fmt.Errorf("field: required: %w", ErrBadQuery)
	case strings.ContainsAny(q.Field, "\"\\"):
		return fmt.Errorf("field: must not contain \" or \\: %w", ErrBadQuery)
	case q.From.IsZero() || q.To.IsZero():
		return fmt.Errorf("from, to: both required: %w", ErrBadQuery)
	case !q.From.Before(q.To):
		return fmt.Errorf("to: must be after from: %w", ErrBadQuery)
	case q.Buckets < 0 || q.Buckets > MaxBuckets:
		return fmt.Errorf("buckets: must be between 1 and %d: %w", MaxBuckets, ErrBadQuery)
	case q.Resolution != 0 && q.Resolution != 60 && q.Resolution != 3600:
		return fmt.Errorf("resolution: must be raw, 1m or 1h: %w", ErrBadQuery)
	}
	return nil
}

// Bucket sums up the numeric values of one time bucket. Last is the value
// of the newest reading in the bucket (of equal times, the one stored last).
type Bucket struct {
	Start time.Time `json:"start"`
	Count int64     `json:"count"`
	Min   float64   `json:"min"`
	Max   float64   `json:"max"`
	Avg   float64   `json:"avg"`
	Last  float64   `json:"last"`
}

// Aggregate is the answer of AggregateReadings: the buckets that hold at
// least one numeric value, oldest first. Readings whose field is missing
// or not a number are not counted.
type Aggregate struct {
	DeviceID string        `json:"device_id"`
	Stream   string        `json:"stream,omitempty"`
	Field    string        `json:"field"`
	From     time.Time     `json:"from"`
	To       time.Time     `json:"to"`
	Step     time.Duration `json:"-"`
	Buckets  []Bucket      `json:"buckets"`
}

// Aggregator sums values up into the buckets of a query. Every backend
// feeds it the same way (ascending time, then storage order), so that the
// bucket rules are written once.
type Aggregator struct {
	from, to, step int64 // Unix microseconds
	q              AggregateQuery
	sums           []float64
	lastAt         []int64
	out            []Bucket
	index          []int32 // bucket number → position in out + 1; 0: empty
}

// NewAggregator starts the buckets of q, which must pass Check.
func NewAggregator(q AggregateQuery) *Aggregator {
	n := q.Buckets
	if n <= 0 {
		n = DefaultBuckets
	}
	from, to := q.From.UnixMicro(), q.To.UnixMicro()
	step := (to - from + int64(n) - 1) / int64(n)
	if step < 1 {
		step = 1
	}
	n = int((to - from + step - 1) / step)
	return &Aggregator{from: from, to: to, step: step, q: q, index: make([]int32, n)}
}

// Add counts value v of a reading taken at tsMicro (Unix microseconds);
// values outside the range, NaN and infinities are ignored.
func (a *Aggregator) Add(tsMicro int64, v float64) {
	if tsMicro < a.from || tsMicro >= a.to || math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	i := (tsMicro - a.from) / a.step
	k := a.index[i]
	if k == 0 {
		a.out = append(a.out, Bucket{Start: time.UnixMicro(a.from + i*a.step).UTC(), Count: 1, Min: v, Max: v, Last: v})
		a.sums = append(a.sums, v)
		a.lastAt = append(a.lastAt, tsMicro)
		a.index[i] = int32(len(a.out))
		return
	}
	b := &a.out[k-1]
	b.Count++
	b.Min = min(b.Min, v)
	b.Max = max(b.Max, v)
	a.sums[k-1] += v
	if tsMicro >= a.lastAt[k-1] {
		b.Last, a.lastAt[k-1] = v, tsMicro
	}
}

// AddSummary counts a rollup: count values with that sum, min and max,
// the last of them taken at lastAt, in the bucket of tsMicro (the
// rollup's start).
func (a *Aggregator) AddSummary(tsMicro, count int64, sum, mn, mx, last float64, lastAt int64) {
	if tsMicro < a.from || tsMicro >= a.to || count <= 0 {
		return
	}
	i := (tsMicro - a.from) / a.step
	k := a.index[i]
	if k == 0 {
		a.out = append(a.out, Bucket{Start: time.UnixMicro(a.from + i*a.step).UTC(), Count: count, Min: mn, Max: mx, Last: last})
		a.sums = append(a.sums, sum)
		a.lastAt = append(a.lastAt, lastAt)
		a.index[i] = int32(len(a.out))
		return
	}
	b := &a.out[k-1]
	b.Count += count
	b.Min = min(b.Min, mn)
	b.Max = max(b.Max, mx)
	a.sums[k-1] += sum
	if lastAt >= a.lastAt[k-1] {
		b.Last, a.lastAt[k-1] = last, lastAt
	}
}

// Result returns the non-empty buckets, oldest first.
func (a *Aggregator) Result() Aggregate {
	out := make([]Bucket, 0, len(a.out))
	for _, k := range a.index {
		if k == 0 {
			continue
		}
		b := a.out[k-1]
		b.Avg = a.sums[k-1] / float64(b.Count)
		out = append(out, b)
	}
	return Aggregate{DeviceID: a.q.DeviceID, Stream: a.q.Stream, Field: a.q.Field,
		From: a.q.From.UTC(), To: a.q.To.UTC(), Step: time.Duration(a.step) * time.Microsecond, Buckets: out}
}
