package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
)

// latestFixture is readingsFixture plus an old reading of q1 that arrives
// last (its t must not replace the newer one, its new field s is kept), a
// device of another type, and a device without readings.
func latestFixture(t *testing.T, b Backend) {
	readingsFixture(t, b)
	mustCommit(t, b, data{device: "q1", stream: "a", times: []int{15}, values: map[string]any{"t": 99.0, "s": "x"}}.change(t))
	mustCommit(t, b, newDevice(t, "x1", "other", false), newDevice(t, "q0", "sensor", false))
	mustCommit(t, b, data{device: "x1", times: []int{3}, values: map[string]any{"on": true, "cfg": map[string]any{"k": []any{1.0}}}}.change(t))
}

// latestStrings renders a page as device/stream/field=value@seconds.
func latestStrings(t *testing.T, p readings.LatestPage) []string {
	t.Helper()
	out := []string{}
	for _, d := range p.Devices {
		vs, err := d.Decoded()
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range vs {
			var x any
			if err := json.Unmarshal(v.Value, &x); err != nil {
				t.Fatalf("value %q of %s: %v", v.Value, d.DeviceID, err)
			}
			j, _ := json.Marshal(x)
			out = append(out, fmt.Sprintf("%s/%s/%s=%s@%d", d.DeviceID, v.Stream, v.Field, j, int(v.Time.Sub(base)/time.Second)))
		}
	}
	return out
}

func testLatestValues(t *testing.T, b Backend) {
	latestFixture(t, b)
	ctx := context.Background()
	all := []string{"q1/a/h=1@20", "q1/a/s=\"x\"@15", "q1/a/t=21@20", "q1/b/t=108@8", "q2/a/t=0@3", `x1//cfg={"k":[1]}@3`, "x1//on=true@3"}
	tests := []struct {
		name string
		q    readings.LatestQuery
		want []string
		next string
	}{
		{"every device", readings.LatestQuery{}, all, ""},
		{"one page", readings.LatestQuery{Limit: 1}, all[:4], "q1"},
		{"next page", readings.LatestQuery{Limit: 1, After: "q1"}, all[4:5], "q2"},
		{"last page", readings.LatestQuery{Limit: 1, After: "q2"}, all[5:], ""},
		{"exactly full", readings.LatestQuery{Limit: 3}, all, ""},
		{"type", readings.LatestQuery{Type: "other"}, all[5:], ""},
		{"stream", readings.LatestQuery{Stream: "b"}, all[3:4], ""},
		{"field", readings.LatestQuery{Field: "t"}, []string{"q1/a/t=21@20", "q1/b/t=108@8", "q2/a/t=0@3"}, ""},
		{"nothing", readings.LatestQuery{Field: "none"}, []string{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := b.LatestValues(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := latestStrings(t, p); !slices.Equal(got, tt.want) {
				t.Errorf("values\n got %q\nwant %q", got, tt.want)
			}
			if p.Next != tt.next {
				t.Errorf("next = %q, want %q", p.Next, tt.next)
			}
		})
	}
}

// testLatestValuesFailedChange: a change that fails leaves no latest value.
func testLatestValuesFailedChange(t *testing.T, b Backend) {
	ch := data{device: "ghost", times: []int{1}, values: map[string]any{"t": 1.0}}.change(t)
	mustCommit(t, b, ch)
	if !errors.Is(ch.Err, commit.ErrDeviceNotFound) {
		t.Fatalf("err = %v, want ErrDeviceNotFound", ch.Err)
	}
	provision(t, b, "d1")
	first := data{device: "d1", msgID: "m1", times: []int{1}, values: map[string]any{"t": 1.0}}.change(t)
	mustCommit(t, b, first)
	// A resend with a later time is a duplicate: its value is not kept.
	mustCommit(t, b, data{device: "d1", msgID: "m1", times: []int{2}, values: map[string]any{"t": 2.0}}.change(t))
	p, err := b.LatestValues(context.Background(), readings.LatestQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := latestStrings(t, p), []string{"d1//t=1@1"}; !slices.Equal(got, want) {
		t.Errorf("values %q, want %q", got, want)
	}
}

// failingDomain writes after readings and fails its batch: what was
// merged into the latest values before it must not be kept.
var failingDomain = &commit.Domain{Name: "storetest-failing", Rank: 99, Write: func(context.Context, commit.Tx, []commit.Pending) error {
	return errors.New("failing domain")
}}

type failingOp struct{}

func (failingOp) Domain() *commit.Domain { return failingDomain }

// testLatestValuesFailedBatch: a batch that fails after its readings were
// merged into the latest values leaves them as they were, for the next
// batches too (a store that keeps them in memory must drop the batch's).
func testLatestValuesFailedBatch(t *testing.T, b Backend) {
	provision(t, b, "d1")
	mustCommit(t, b, data{device: "d1", times: []int{1}, values: map[string]any{"t": 1.0}}.change(t))
	failed := data{device: "d1", times: []int{2}, values: map[string]any{"t": 2.0, "h": 5.0}}.change(t)
	failed.Ops = append(failed.Ops, failingOp{})
	if err := b.Commit(context.Background(), []*commit.Change{failed}); err == nil {
		t.Fatal("a batch with a failing op committed")
	}
	mustCommit(t, b, data{device: "d1", times: []int{3}, values: map[string]any{"u": 3.0}}.change(t))
	p, err := b.LatestValues(context.Background(), readings.LatestQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := latestStrings(t, p), []string{"d1//t=1@1", "d1//u=3@3"}; !slices.Equal(got, want) {
		t.Errorf("values %q, want %q", got, want)
	}
}

func testAggregateReadings(t *testing.T, b Backend) {
	latestFixture(t, b)
	ctx := context.Background()
	bk := func(start int, count int64, mn, mx, avg, last float64) readings.Bucket {
		return readings.Bucket{Start: at(start), Count: count, Min: mn, Max: mx, Avg: avg, Last: last}
	}
	tests := []struct {
		name string
		q    readings.AggregateQuery
		want []readings.Bucket
		step time.Duration
	}{
		{"one stream", readings.AggregateQuery{DeviceID: "q1", Stream: "a", Field: "t", From: at(0), To: at(10), Buckets: 5},
			[]readings.Bucket{bk(0, 1, 1, 1, 1, 1), bk(2, 2, 2, 3, 2.5, 3), bk(4, 2, 4, 5, 4.5, 5), bk(6, 2, 6, 7, 6.5, 7), bk(8, 2, 8, 9, 8.5, 9)}, 2 * time.Second},
		// Of equal times the reading stored last is the last: stream b's
		// readings were committed after stream a's.
		{"every stream", readings.AggregateQuery{DeviceID: "q1", Field: "t", From: at(4), To: at(10), Buckets: 3},
			[]readings.Bucket{bk(4, 3, 4, 105, 38, 105), bk(6, 4, 6, 107, 56.5, 107), bk(8, 3, 8, 108, 125.0/3, 9)}, 2 * time.Second},
		{"equal times", readings.AggregateQuery{DeviceID: "q1", Field: "t", From: at(20), To: at(21), Buckets: 10},
			[]readings.Bucket{bk(20, 3, 20, 21, 61.0/3, 21)}, 100 * time.Millisecond},
		{"empty buckets left out", readings.AggregateQuery{DeviceID: "q1", Field: "t", From: at(10), To: at(30), Buckets: 2},
			[]readings.Bucket{bk(10, 2, 10, 99, 54.5, 99), bk(20, 3, 20, 21, 61.0/3, 21)}, 10 * time.Second},
		{"old reading arriving late", readings.AggregateQuery{DeviceID: "q1", Field: "t", From: at(11), To: at(21), Buckets: 10},
			[]readings.Bucket{bk(15, 1, 99, 99, 99, 99), bk(20, 3, 20, 21, 61.0/3, 21)}, time.Second},
		{"strings are not counted", readings.AggregateQuery{DeviceID: "q1", Field: "s", From: at(0), To: at(100)}, nil, 200 * time.Millisecond},
		{"booleans are not counted", readings.AggregateQuery{DeviceID: "x1", Field: "on", From: at(0), To: at(100)}, nil, 200 * time.Millisecond},
		{"missing field", readings.AggregateQuery{DeviceID: "q1", Field: "nope", From: at(0), To: at(100)}, nil, 200 * time.Millisecond},
		{"other device", readings.AggregateQuery{DeviceID: "q2", Field: "t", From: at(0), To: at(100), Buckets: 1},
			[]readings.Bucket{bk(0, 3, 0, 0, 0, 0)}, 100 * time.Second},
		{"unknown device", readings.AggregateQuery{DeviceID: "nobody", Field: "t", From: at(0), To: at(100)}, nil, 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := b.AggregateReadings(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Buckets) == 0 {
				got.Buckets = nil
			}
			equalJSON(t, "buckets", got.Buckets, tt.want)
			if got.Step != tt.step || got.Field != tt.q.Field || got.DeviceID != tt.q.DeviceID || !got.From.Equal(tt.q.From) {
				t.Errorf("aggregate %+v", got)
			}
		})
	}
	for name, q := range map[string]readings.AggregateQuery{
		"no field":    {DeviceID: "q1", From: at(0), To: at(1)},
		"no range":    {DeviceID: "q1", Field: "t"},
		"to <= from":  {DeviceID: "q1", Field: "t", From: at(1), To: at(1)},
		"buckets":     {DeviceID: "q1", Field: "t", From: at(0), To: at(1), Buckets: readings.MaxBuckets + 1},
		"quote field": {DeviceID: "q1", Field: `a"b`, From: at(0), To: at(1)},
	} {
		if _, err := b.AggregateReadings(ctx, q); !errors.Is(err, readings.ErrBadQuery) {
			t.Errorf("%s: err = %v, want ErrBadQuery", name, err)
		}
	}
}

// LatestBackfill checks a backend's migration that fills its latest
// values from the readings stored before it: rebuild must empty the table and
// run the migration's statement; the latest values must come out as the
// commits kept them.
func LatestBackfill(t *testing.T, b Backend, rebuild func(ctx context.Context) error) {
	latestFixture(t, b)
	ctx := context.Background()
	before, err := b.LatestValues(ctx, readings.LatestQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if err := rebuild(ctx); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	after, err := b.LatestValues(ctx, readings.LatestQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if g, w := latestStrings(t, after), latestStrings(t, before); !slices.Equal(g, w) || len(w) == 0 {
		t.Errorf("after the backfill\n got %q\nwant %q", g, w)
	}
}

// MigrationUp returns the statements of a goose migration between
// "-- +goose Up" and "-- +goose Down" that follow the line marker.
func MigrationUp(t *testing.T, text, marker string) string {
	t.Helper()
	_, up, ok := strings.Cut(text, "-- +goose Up")
	if !ok {
		t.Fatal("no -- +goose Up")
	}
	up, _, _ = strings.Cut(up, "-- +goose Down")
	_, stmt, ok := strings.Cut(up, marker)
	if !ok {
		t.Fatalf("no %q in the migration", marker)
	}
	return stmt
}
