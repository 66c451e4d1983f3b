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
