package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/retention"
)

// ReadingsView renders what the read queries answer of the readings
// fixture's devices (every page of several queries, aggregates, counts
// and latest values) as lines, to compare a backend's answers before and
// after it moves readings around (compaction).
func ReadingsView(t *testing.T, b Backend, devices ...string) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	for _, dev := range devices {
		for _, q := range []readings.Query{
			{DeviceID: dev},
			{DeviceID: dev, Limit: 3},
			{DeviceID: dev, Limit: 1, Stream: "a"},
			{DeviceID: dev, Stream: "b"},
			{DeviceID: dev, Field: "h", Limit: 4},
			{DeviceID: dev, From: at(3), To: at(8), Limit: 2},
			{DeviceID: dev, Field: "s"},
		} {
			for page := 0; ; page++ {
				p, err := b.QueryReadings(ctx, q)
				if err != nil {
					t.Fatalf("QueryReadings %+v: %v", q, err)
				}
				for _, r := range p.Readings {
					v, _ := json.Marshal(r.Values)
					out = append(out, fmt.Sprintf("%+v page %d: %d %s %s %s %d %s", q, page, r.ID, r.Stream,
						r.Time.Format(time.RFC3339Nano), r.ReceivedAt.Format(time.RFC3339Nano), r.MessageID, v))
				}
				if p.Next == "" {
					break
				}
				q.Cursor = p.Next
			}
		}
		for _, f := range []string{"t", "h", "s"} {
			a, err := b.AggregateReadings(ctx, readings.AggregateQuery{DeviceID: dev, Field: f, From: at(0), To: at(60), Buckets: 7})
			if err != nil {
				t.Fatalf("AggregateReadings: %v", err)
			}
			out = append(out, fmt.Sprintf("aggregate %s %s: %+v", dev, f, a.Buckets))
		}
		n, err := b.CountReadings(ctx, dev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("count %s %d", dev, n))
	}
	n, err := b.CountReadings(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	latest, err := b.LatestValues(ctx, readings.LatestQuery{})
	if err != nil {
		t.Fatal(err)
	}
	return append(append(out, fmt.Sprintf("count all %d", n)), latestStrings(t, latest)...)
}

// testCompaction: a backend that compacts readings into blocks
// (retention.CompactStore) answers every read query the same before and
// after, also with late readings and new ones after a compaction, and
// keeps the msg_id idempotence of compacted readings.
func testCompaction(t *testing.T, b Backend) {
	c, ok := b.(retention.CompactStore)
	if !ok {
		t.Skip("this backend keeps no blocks (no retention.CompactStore)")
	}
	ctx := context.Background()
	readingsFixture(t, b)
	mustCommit(t, b, data{device: "q1", stream: "a", msgID: "m-30", times: []int{30}, values: map[string]any{"t": 30.5, "s": "on"}}.change(t))
	mustCommit(t, b, data{device: "q2", times: []int{31}, values: map[string]any{"t": 1.0}}.change(t))
	devs := []string{"q1", "q2"}
	compact := func(limit int) int {
		t.Helper()
		total := 0
		for _, d := range devs {
			for {
				n, err := c.CompactReadings(ctx, d, at(1_000_000), 0, limit)
				if err != nil {
					t.Fatalf("CompactReadings: %v", err)
				}
				total += n
				if n < limit {
					break
				}
			}
		}
		return total
	}
	before := ReadingsView(t, b, devs...)
	if n := compact(5); n == 0 {
		t.Fatal("nothing compacted")
	}
	if after := ReadingsView(t, b, devs...); !slices.Equal(after, before) {
		t.Fatalf("after compaction:\n%s", diffLines(before, after))
	}
	// Late readings (before the compacted ones), one in the middle, new
	// ones; then compact again.
	mustCommit(t, b,
		data{device: "q1", stream: "a", times: []int{0, 4}, values: map[string]any{"t": -1.0, "h": 2.0}}.change(t),
		data{device: "q1", stream: "b", times: []int{40}, values: map[string]any{"t": 140.0}}.change(t),
		data{device: "q2", times: []int{32}, values: map[string]any{"t": 2.0}}.change(t))
	before = ReadingsView(t, b, devs...)
	if n := compact(1000); n == 0 {
		t.Fatal("nothing compacted the second time")
	}
	if after := ReadingsView(t, b, devs...); !slices.Equal(after, before) {
		t.Fatalf("after the second compaction:\n%s", diffLines(before, after))
	}
	// The msg_id of a compacted reading is still known.
	ch := data{device: "q1", stream: "a", msgID: "m-30", times: []int{50}, values: map[string]any{"t": 1.0}}.change(t)
	mustCommit(t, b, ch)
	if !ch.Duplicate {
		t.Error("a msg_id whose reading was compacted was stored again")
	}
	if after := ReadingsView(t, b, devs...); !slices.Equal(after, before) {
		t.Fatalf("after a duplicate:\n%s", diffLines(before, after))
	}
}

// testCompactionRuns: compacting several devices in one transaction
// (CompactDevices, as the Compactor does) answers every read query the
// same before and after, whether limit ends a run within a device or
// between devices, skips an unknown device, and reports which devices
// are done.
func testCompactionRuns(t *testing.T, b Backend) {
	c, ok := b.(retention.CompactStore)
	if !ok {
		t.Skip("this backend keeps no blocks (no retention.CompactStore)")
	}
	ctx := context.Background()
	readingsFixture(t, b)
	mustCommit(t, b, data{device: "q2", times: []int{31}, values: map[string]any{"t": 1.0}}.change(t))
	devs := []string{"q1", "q2"}
	// pass compacts the run as the Compactor does and returns the
	// readings moved and the calls made.
	pass := func(ids []string, limit int) (total, calls int) {
		t.Helper()
		for len(ids) > 0 {
			n, done, err := c.CompactDevices(ctx, ids, at(1_000_000), 0, limit)
			if err != nil {
				t.Fatalf("CompactDevices(%v, %d): %v", ids, limit, err)
			}
			if n > limit || done > len(ids) || (n == 0 && done == 0) {
				t.Fatalf("CompactDevices(%v, %d) = %d moved, %d done", ids, limit, n, done)
			}
			total += n
			calls++
			ids = ids[done:]
		}
		return total, calls
	}
	before := ReadingsView(t, b, devs...)
	// Every reading but the table's newest (q2's at 31) is due: q1 has
	// 17, q2 3.
	if n, calls := pass([]string{"q1", "unknown", "q2"}, 4); n != 20 || calls < 5 {
		t.Fatalf("moved %d in %d calls, want 20 in 5 or more", n, calls)
	}
	if after := ReadingsView(t, b, devs...); !slices.Equal(after, before) {
		t.Fatalf("after compaction in runs:\n%s", diffLines(before, after))
	}
	mustCommit(t, b,
		data{device: "q1", stream: "a", times: []int{0, 4}, values: map[string]any{"t": -1.0, "h": 2.0}}.change(t),
		data{device: "q2", times: []int{32}, values: map[string]any{"t": 2.0}}.change(t))
	before = ReadingsView(t, b, devs...)
	// q1's two late readings and q2's at 31 (32 is now the newest).
	if n, calls := pass([]string{"q1", "q2"}, 1000); n != 3 || calls != 1 {
		t.Fatalf("moved %d in %d calls, want 3 in 1", n, calls)
	}
	if after := ReadingsView(t, b, devs...); !slices.Equal(after, before) {
		t.Fatalf("after the second compaction in runs:\n%s", diffLines(before, after))
	}
	if n, done, err := c.CompactDevices(ctx, devs, at(1_000_000), 0, 1000); n != 0 || done != 2 || err != nil {
		t.Fatalf("nothing left: moved %d, %d done, %v; want 0, 2", n, done, err)
	}
}

// diffLines lists the lines of a and b that differ.
func diffLines(a, b []string) string {
	var out string
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			out += fmt.Sprintf("line %d\n  before %s\n  after  %s\n", i, x, y)
		}
	}
	return out
}

// HeadCompactor is a backend that keeps its newest readings in commit
// batches (SQLite's readings head) and moves them into blocks whole
// batches at a time: the suite checks every read query across that move.
type HeadCompactor interface {
	// CompactReadingsHead moves the oldest batches, up to limit readings
	// (at least one batch), into blocks and returns how many it moved.
	CompactReadingsHead(ctx context.Context, limit int) (int, error)
}

// testReadingsHead: readings split between a backend's head and its
// blocks (some batches moved, late readings and new ones after, a
// device's readings moved one by one by CompactDevices in between)
// answer every read query, pages and cursors included, as before each
// move.
func testReadingsHead(t *testing.T, b Backend) {
	hc, ok := b.(HeadCompactor)
	if !ok {
		t.Skip("this backend keeps no readings head")
	}
	ctx := context.Background()
	devs := []string{"q1", "q2"}
	readingsFixture(t, b)
	for s := 21; s <= 25; s++ {
		mustCommit(t, b,
			data{device: "q1", stream: "a", times: []int{s}, values: map[string]any{"t": float64(s), "h": 2.0}}.change(t),
			data{device: "q2", stream: "a", times: []int{s}, values: map[string]any{"t": 1.0}}.change(t))
	}
	check := func(what string, before []string) {
		t.Helper()
		if after := ReadingsView(t, b, devs...); !slices.Equal(after, before) {
			t.Fatalf("%s:\n%s", what, diffLines(before, after))
		}
	}
	before := ReadingsView(t, b, devs...)
	// The fixture's first batch (17 readings): q1's older readings are
	// in blocks, its newer ones in the head, the pages and cursors
	// across both.
	if n, err := hc.CompactReadingsHead(ctx, 1); err != nil || n != 17 {
		t.Fatalf("CompactReadingsHead(1) = %d, %v; want the first batch's 17", n, err)
	}
	check("after the first batch moved", before)
	if n, err := hc.CompactReadingsHead(ctx, 4); err != nil || n != 3 {
		t.Fatalf("CompactReadingsHead(4) = %d, %v; want the next two batches' 3", n, err)
	}
	check("after two more batches moved", before)
	// Late readings (before every block) and readings of a time equal to
	// a block's, then a run of the Compactor's per-device moves: batch
	// rows left with some of their readings.
	mustCommit(t, b,
		data{device: "q1", stream: "a", times: []int{0, 20}, values: map[string]any{"t": -1.0, "h": 3.0}}.change(t),
		data{device: "q2", stream: "a", times: []int{2}, values: map[string]any{"t": 5.0}}.change(t))
	before = ReadingsView(t, b, devs...)
	if c, ok := b.(retention.CompactStore); ok {
		if n, _, err := c.CompactDevices(ctx, []string{"q1"}, at(22), 0, 3); err != nil || n != 3 {
			t.Fatalf("CompactDevices of q1 = %d, %v; want 3", n, err)
		}
		check("after CompactDevices moved some of q1's head readings", before)
	}
	for {
		n, err := hc.CompactReadingsHead(ctx, 3)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		check("after more batches moved", before)
	}
	check("with every batch moved", before)
	mustCommit(t, b, data{device: "q1", stream: "b", times: []int{30}, values: map[string]any{"t": 9.0}}.change(t))
	before = ReadingsView(t, b, devs...)
	// Ids never go back: a new reading's id is past every moved one.
	p, err := b.QueryReadings(ctx, readings.Query{DeviceID: "q1", Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	newest := p.Readings[0]
	for _, r := range p.Readings[1:] {
		if r.ID >= newest.ID {
			t.Fatalf("reading %d (at %v) has an id past the newest one's %d", r.ID, r.Time, newest.ID)
		}
	}
	check("after a new reading", before)
}
