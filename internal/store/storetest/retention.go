package storetest

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/retention"
)

// timed is a data change whose message was received, and whose event
// happened, at the reading's time.
func timed(t *testing.T, device string, sec int) *commit.Change {
	ch := data{device: device, times: []int{sec}, values: map[string]any{"t": float64(sec)}}.change(t)
	msg(ch).ReceivedAt = at(sec)
	ch.Events[0].Time = at(sec)
	return ch
}

func deviceReadingSecs(t *testing.T, b Backend, device string) []int {
	t.Helper()
	page, err := b.QueryReadings(context.Background(), readings.Query{DeviceID: device})
	if err != nil {
		t.Fatal(err)
	}
	out := []int{}
	for _, r := range page.Readings {
		out = append(out, int(r.Time.Sub(base)/time.Second))
	}
	return out
}

func testRetention(t *testing.T, b Backend) {
	ctx := context.Background()
	mustCommit(t, b, newDevice(t, "d1", "sensor", false), newDevice(t, "x1", "other", false))
	for s := 1; s <= 10; s++ {
		batch := []*commit.Change{timed(t, "d1", s)}
		if s <= 5 {
			batch = append(batch, timed(t, "x1", s))
		}
		mustCommit(t, b, batch...)
	}
	now := at(100)
	keep := func(cut int) time.Duration { return now.Sub(at(cut)) }
	e := retention.New(b, retention.Options{
		Readings:        keep(6),
		ReadingsByType:  map[string]time.Duration{"other": 0},
		MessagePayloads: keep(8),
		Messages:        keep(3),
		Events:          keep(4),
		Batch:           2, // several batches of each kind
		Now:             func() time.Time { return now },
	}, slog.New(slog.DiscardHandler), nil)
	check := func(t *testing.T) {
		t.Helper()
		if got, want := deviceReadingSecs(t, b, "d1"), []int{10, 9, 8, 7, 6}; !slices.Equal(got, want) {
			t.Errorf("readings of d1 %v, want %v", got, want)
		}
		if got, want := deviceReadingSecs(t, b, "x1"), []int{5, 4, 3, 2, 1}; !slices.Equal(got, want) {
			t.Errorf("readings of x1 (kept forever) %v, want %v", got, want)
		}
		msgs, err := b.ListMessages(ctx, messagelog.Query{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range msgs {
			s := int(m.ReceivedAt.Sub(base) / time.Second)
			got = append(got, m.DeviceID+"@"+strconv.Itoa(s)+map[bool]string{true: "+payload", false: ""}[m.Payload != nil])
		}
		want := []string{"d1@10+payload", "d1@9+payload", "d1@8+payload", "d1@7", "d1@6", "x1@5", "d1@5", "x1@4", "d1@4", "x1@3", "d1@3"}
		if !slices.Equal(got, want) {
			t.Errorf("messages\n got %v\nwant %v", got, want)
		}
		// A backend that drops the event log by whole partitions keeps
		// the older events of a partition that holds newer ones.
		_, byPartition := b.(retention.LogPartitionStore)
		kept := 0
		for _, ev := range allEvents(t, b) {
			if !ev.Time.Before(at(4)) {
				kept++
			} else if !byPartition {
				t.Errorf("event %d %s of %v kept", ev.Seq, ev.Type, ev.Time)
			}
		}
		if kept != 7+2 { // d1 at 4..10, x1 at 4, 5
			t.Errorf("%d events at or after the cutoff left, want 9", kept)
		}
	}
	if err := e.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	check(t)
	// A second pass finds nothing more.
	if err := e.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	check(t)

	// Everything expired: the newest reading, message and event stay,
	// so that ids and seqs never go back.
	late := retention.New(b, retention.Options{
		Readings: time.Microsecond, ReadingsByType: map[string]time.Duration{"other": time.Microsecond},
		MessagePayloads: time.Microsecond, Messages: time.Microsecond, Events: time.Microsecond, Batch: 3,
		Now: func() time.Time { return at(100000) },
	}, slog.New(slog.DiscardHandler), nil)
	if err := late.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if n := count(t, b, ""); n != 1 {
		t.Errorf("%d readings left, want the newest", n)
	}
	if got := deviceReadingSecs(t, b, "d1"); !slices.Equal(got, []int{10}) {
		t.Errorf("readings of d1 %v, want [10]", got)
	}
	if evs := allEvents(t, b); len(evs) != 1 {
		t.Errorf("%d events left, want the newest", len(evs))
	}
	msgs, err := b.ListMessages(ctx, messagelog.Query{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || msgs[0].Payload != nil {
		t.Errorf("messages left %+v, want the newest without payload", msgs)
	}
}

func testRollups(t *testing.T, b Backend) {
	ctx := context.Background()
	provision(t, b, "d1")
	var batch []*commit.Change
	for s := 5; s < 180; s += 10 {
		batch = append(batch, data{device: "d1", stream: "a", times: []int{s}, values: map[string]any{"t": float64(s % 7), "s": "x"}}.change(t))
	}
	mustCommit(t, b, batch...)
	log := slog.New(slog.DiscardHandler)
	roller := retention.NewRoller(b, retention.RollupOptions{Batch: 7}, log, nil)
	if err := roller.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	agg := func(res, buckets int, to int) []readings.Bucket {
		t.Helper()
		a, err := b.AggregateReadings(ctx, readings.AggregateQuery{DeviceID: "d1", Field: "t", From: at(0), To: at(to), Buckets: buckets, Resolution: res})
		if err != nil {
			t.Fatal(err)
		}
		return a.Buckets
	}
	// Minute buckets of the rollups are the raw readings' minute buckets.
	equalJSON(t, "1m rollups vs raw", agg(retention.Minute, 3, 180), agg(0, 3, 180))
	equalJSON(t, "1h rollups vs raw", agg(retention.Hour, 1, 3600), agg(0, 1, 3600))
	if got := agg(retention.Minute, 3, 180); len(got) != 3 || got[0].Count != 6 {
		t.Fatalf("1m rollups %+v", got)
	}
	// Caught up: nothing more; a stale cursor writes nothing.
	if err := roller.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	cur, err := b.RollupCursor(ctx)
	if err != nil || cur == 0 {
		t.Fatalf("cursor %d, %v", cur, err)
	}
	stale := []retention.Rollup{{Res: retention.Minute, DeviceID: "d1", Stream: "a", Field: "t", Bucket: at(0), Count: 100, Sum: 1, Min: 1, Max: 1, Last: 1, LastAt: at(0)}}
	if err := b.ApplyRollups(ctx, stale, cur-1, cur+1); !errors.Is(err, retention.ErrCursorMoved) {
		t.Errorf("stale ApplyRollups: %v, want ErrCursorMoved", err)
	}
	equalJSON(t, "1m rollups after a stale apply", agg(retention.Minute, 3, 180), agg(0, 3, 180))

	// A late reading of the first minute is added to its rollup; the
	// bucket's last stays the newer value.
	mustCommit(t, b, data{device: "d1", stream: "a", times: []int{20}, values: map[string]any{"t": 100.0}}.change(t))
	if err := roller.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	first := agg(retention.Minute, 3, 180)[0]
	if first.Count != 7 || first.Max != 100 || first.Last != float64(55%7) {
		t.Errorf("first minute after a late reading %+v", first)
	}
	equalJSON(t, "1m rollups vs raw after a late reading", agg(retention.Minute, 3, 180), agg(0, 3, 180))

	// Readings not summed up yet are not expired.
	mustCommit(t, b, data{device: "d1", stream: "a", times: []int{170}, values: map[string]any{"t": 1.0}}.change(t),
		data{device: "d1", stream: "a", times: []int{175}, values: map[string]any{"t": 1.0}}.change(t))
	e := retention.New(b, retention.Options{Readings: time.Microsecond, Rollups: true, Rollups1m: time.Hour, Batch: 4,
		Now: func() time.Time { return at(3600 + 120) }}, log, nil)
	if err := e.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := deviceReadingSecs(t, b, "d1"); !slices.Equal(got, []int{175, 170}) {
		t.Errorf("readings left %v, want the two not summed up", got)
	}
	// 1-minute rollups older than an hour went; the hour stays.
	if got := agg(retention.Minute, 3, 180); len(got) != 1 || !got[0].Start.Equal(at(120)) {
		t.Errorf("1m rollups left %+v, want the third minute's", got)
	}
	if got := agg(retention.Hour, 1, 3600); len(got) != 1 || got[0].Count != 19 {
		t.Errorf("1h rollups %+v, want 19 values", got)
	}
}
