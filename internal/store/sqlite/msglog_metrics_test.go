package sqlite

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
)

// TestMessageLogMetrics: the head's gauges follow its messages and bytes;
// a compaction counts the messages it moved and its hold of the writer;
// the writer's page cache is reported (no devices: minCacheSize); a
// checkpoint observes its hold of the writer.
func TestMessageLogMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMsgTest(t, Options{Registerer: reg})
	gather := func() map[string]float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, x := range mf.GetMetric() {
				switch {
				case x.GetGauge() != nil:
					got[mf.GetName()] = x.GetGauge().GetValue()
				case x.GetCounter() != nil:
					got[mf.GetName()] = x.GetCounter().GetValue()
				case x.GetHistogram() != nil:
					got[mf.GetName()] = float64(x.GetHistogram().GetSampleCount())
					got[mf.GetName()+"_sum"] = x.GetHistogram().GetSampleSum()
				}
			}
		}
		return got
	}
	want := func(stage string, got map[string]float64, name string, v float64) {
		t.Helper()
		if x, ok := got[name]; !ok || x != v {
			t.Errorf("%s: %s = %v (reported %v), want %v", stage, name, x, ok, v)
		}
	}

	m.send("a", "b", "c")
	got := gather()
	want("before", got, "devicehub_sqlite_writer_cache_bytes", minCacheSize)
	want("before", got, "devicehub_message_log_head_messages", 3)
	if got["devicehub_message_log_head_bytes"] <= 0 {
		t.Errorf("before: head bytes %v", got["devicehub_message_log_head_bytes"])
	}
	want("before", got, "devicehub_message_log_compacted_messages_total", 0)
	want("before", got, "devicehub_message_log_compactions_total", 0)
	want("before", got, "devicehub_message_log_compaction_hold_seconds", 0)
	want("before", got, "devicehub_sqlite_checkpoint_hold_seconds", 0)

	m.compact()
	got = gather()
	want("after", got, "devicehub_message_log_head_messages", 0)
	want("after", got, "devicehub_message_log_head_bytes", 0)
	want("after", got, "devicehub_message_log_compacted_messages_total", 3)
	want("after", got, "devicehub_message_log_compactions_total", 1)
	// Two holds: the blocks' transaction, then the dead batch row's deletion.
	want("after", got, "devicehub_message_log_compaction_hold_seconds", 2)
	if got["devicehub_message_log_compaction_hold_seconds_sum"] <= 0 {
		t.Errorf("after: hold time %v", got["devicehub_message_log_compaction_hold_seconds_sum"])
	}

	// A checkpoint's blocking round holds the writer too.
	if err := m.s.checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	got = gather()
	want("checkpoint", got, "devicehub_sqlite_checkpoint_hold_seconds", 1)
	if got["devicehub_sqlite_checkpoint_hold_seconds_sum"] <= 0 {
		t.Errorf("checkpoint: hold time %v", got["devicehub_sqlite_checkpoint_hold_seconds_sum"])
	}
}

// TestCompactionPaced: between two chunks of a round, compactDue lets the
// writer go for compactPause times the last chunk's hold (here made
// long by the hook), and the round still ends with the head at most at
// half its bound.
func TestCompactionPaced(t *testing.T) {
	ctx := context.Background()
	m := newMsgTest(t, Options{MessageLog: MessageLogOptions{HeadMessages: 30_000}})
	var batch []*commit.Change
	for range compactChunk + 16_000 {
		m.id++
		batch = append(batch, &commit.Change{DeviceID: "d1", Ops: []commit.Op{&readings.Message{ID: m.id, Topic: "devices/d1/data",
			Transport: "mqtt", QoS: 1, Accepted: true, ReceivedAt: time.Now()}}})
	}
	for k := 0; k < len(batch); k += 1000 {
		if err := m.s.Commit(ctx, batch[k:k+1000]); err != nil {
			t.Fatal(err)
		}
	}
	const held = 30 * time.Millisecond
	m.s.mlog.compactHook = func() error { time.Sleep(held); return nil }
	start := time.Now()
	n, err := m.s.compactDue(ctx)
	took := time.Since(start)
	if err != nil || n != 2*compactChunk {
		t.Fatalf("compactDue moved %d, want two chunks: %v", n, err)
	}
	// Two holds and a pause of compactPause (4) holds; at least 3.
	if took < 5*held {
		t.Errorf("two chunks took %v: no pause of %dx their hold (%v) between them", took, compactPause, held)
	}
}
