package readings

import (
	"errors"
	"math"
	"testing"
	"time"
)

func TestAggregator(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	us := func(d time.Duration) int64 { return t0.Add(d).UnixMicro() }
	tests := []struct {
		name    string
		buckets int
		to      time.Duration
		add     [][2]float64 // seconds after t0, value
		want    []Bucket
		step    time.Duration
	}{
		{"uneven range rounds the step up", 3, 10 * time.Second, [][2]float64{{0, 1}, {9.9, 2}},
			[]Bucket{{Start: t0, Count: 1, Min: 1, Max: 1, Avg: 1, Last: 1}, {Start: t0.Add(6666668 * time.Microsecond), Count: 1, Min: 2, Max: 2, Avg: 2, Last: 2}},
			3333334 * time.Microsecond},
		{"out of range, NaN and Inf ignored", 1, time.Second, [][2]float64{{-1, 5}, {1, 5}, {0.5, math.NaN()}, {0.5, math.Inf(1)}, {0.5, 3}},
			[]Bucket{{Start: t0, Count: 1, Min: 3, Max: 3, Avg: 3, Last: 3}}, time.Second},
		{"last is the newest, not the last added", 1, time.Minute, [][2]float64{{30, 1}, {10, 2}, {30, 4}},
			[]Bucket{{Start: t0, Count: 3, Min: 1, Max: 4, Avg: 7.0 / 3, Last: 4}}, time.Minute},
		{"more buckets than microseconds", 10, 2 * time.Microsecond, [][2]float64{{0, 1}},
			[]Bucket{{Start: t0, Count: 1, Min: 1, Max: 1, Avg: 1, Last: 1}}, time.Microsecond},
		{"default count", 0, 500 * time.Second, [][2]float64{{499.5, 1}},
			[]Bucket{{Start: t0.Add(499 * time.Second), Count: 1, Min: 1, Max: 1, Avg: 1, Last: 1}}, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := AggregateQuery{DeviceID: "d", Field: "f", From: t0, To: t0.Add(tt.to), Buckets: tt.buckets}
			if err := q.Check(); err != nil {
				t.Fatal(err)
			}
			a := NewAggregator(q)
			for _, p := range tt.add {
				a.Add(us(time.Duration(p[0]*float64(time.Second))), p[1])
			}
			got := a.Result()
			if got.Step != tt.step {
				t.Errorf("step = %v, want %v", got.Step, tt.step)
			}
			if len(got.Buckets) != len(tt.want) {
				t.Fatalf("buckets %+v, want %+v", got.Buckets, tt.want)
			}
			for i, b := range got.Buckets {
				if w := tt.want[i]; !b.Start.Equal(w.Start) || b.Count != w.Count || b.Min != w.Min || b.Max != w.Max || math.Abs(b.Avg-w.Avg) > 1e-12 || b.Last != w.Last {
					t.Errorf("bucket %d = %+v, want %+v", i, b, w)
				}
			}
		})
	}
}

func TestAggregateQueryCheck(t *testing.T) {
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	ok := AggregateQuery{DeviceID: "d", Field: "f", From: t0, To: t0.Add(time.Hour)}
	for _, tt := range []struct {
		name  string
		edit  func(*AggregateQuery)
		param string
	}{
		{"no field", func(q *AggregateQuery) { q.Field = "" }, "field"},
		{"quote", func(q *AggregateQuery) { q.Field = `a"` }, "field"},
		{"backslash", func(q *AggregateQuery) { q.Field = `a\` }, "field"},
		{"no from", func(q *AggregateQuery) { q.From = time.Time{} }, "from, to"},
		{"empty range", func(q *AggregateQuery) { q.To = q.From }, "to"},
		{"too many buckets", func(q *AggregateQuery) { q.Buckets = MaxBuckets + 1 }, "buckets"},
		{"negative buckets", func(q *AggregateQuery) { q.Buckets = -1 }, "buckets"},
	} {
		q := ok
		tt.edit(&q)
		err := q.Check()
		if !errors.Is(err, ErrBadQuery) || len(err.Error()) < len(tt.param) || err.Error()[:len(tt.param)] != tt.param {
			t.Errorf("%s: err = %v, want %s: ...", tt.name, err, tt.param)
		}
	}
	if err := ok.Check(); err != nil {
		t.Errorf("valid query: %v", err)
	}
}

func TestLatestPager(t *testing.T) {
	p := NewLatestPager(LatestQuery{Limit: 2})
	for i, d := range []string{"a", "a", "b", "c", "c"} {
		if more := p.Add(d, LatestValue{Field: "f"}); more != (i < 3) {
			t.Fatalf("Add %d (%s) = %v", i, d, more)
		}
		if i == 3 {
			break
		}
	}
	page := p.Page()
	if len(page.Devices) != 2 || len(page.Devices[0].Values) != 2 || page.Next != "b" {
		t.Errorf("page %+v", page)
	}
	if got := NewLatestPager(LatestQuery{}).Page(); got.Devices == nil || got.Next != "" {
		t.Errorf("empty page %+v", got)
	}
}
