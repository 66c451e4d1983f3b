package sqlite

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMessageLogMetrics: the head's gauges follow its messages and bytes;
// a compaction counts the messages it moved and its hold of the writer.
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
	want("before", got, "devicehub_message_log_head_messages", 3)
	if got["devicehub_message_log_head_bytes"] <= 0 {
		t.Errorf("before: head bytes %v", got["devicehub_message_log_head_bytes"])
	}
	want("before", got, "devicehub_message_log_compacted_messages_total", 0)
	want("before", got, "devicehub_message_log_compactions_total", 0)
	want("before", got, "devicehub_message_log_compaction_hold_seconds", 0)

	m.compact()
	got = gather()
	want("after", got, "devicehub_message_log_head_messages", 0)
	want("after", got, "devicehub_message_log_head_bytes", 0)
	want("after", got, "devicehub_message_log_compacted_messages_total", 3)
	want("after", got, "devicehub_message_log_compactions_total", 1)
	want("after", got, "devicehub_message_log_compaction_hold_seconds", 1)
	if got["devicehub_message_log_compaction_hold_seconds_sum"] <= 0 {
		t.Errorf("after: hold time %v", got["devicehub_message_log_compaction_hold_seconds_sum"])
	}
}
