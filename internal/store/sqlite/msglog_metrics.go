package sqlite

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The message log's Prometheus metrics (Options.Registerer): the head's
// size, read from it when scraped, and what compaction moved and how
// long each of its transactions held the writer, which every group
// commit waits for.

// newHoldHistogram is devicehub_message_log_compaction_hold_seconds.
func newHoldHistogram() prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "devicehub_message_log_compaction_hold_seconds",
		Help: "Time one message log compaction transaction held the store's writer (SQLite), from BEGIN to the head's drop after COMMIT: " +
			"every commit waits for it.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12),
	})
}

// observeHold records a compaction transaction's hold of the writer.
func (ml *msgLog) observeHold(d time.Duration) {
	ml.holdTime.Observe(d.Seconds())
}

// registerMetrics registers the message log's metrics with reg.
func (ml *msgLog) registerMetrics(reg prometheus.Registerer) error {
	head := func(f func(h *msgHead) float64) func() float64 {
		return func() float64 {
			ml.hmu.RLock()
			defer ml.hmu.RUnlock()
			return f(&ml.head)
		}
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "devicehub_message_log_head_messages",
			Help: "Messages in the message log's head (SQLite: message_batches, indexed in memory), not yet compacted into blocks.",
		}, head(func(h *msgHead) float64 { return float64(h.msgs) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "devicehub_message_log_head_bytes",
			Help: "Bytes of the encoded batches in the message log's head (SQLite), kept in memory.",
		}, head(func(h *msgHead) float64 { return float64(h.bytes) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "devicehub_message_log_compacted_messages_total",
			Help: "Messages moved from the message log's head into per-device blocks (SQLite).",
		}, func() float64 { return float64(ml.compacted.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "devicehub_message_log_compactions_total",
			Help: "Message log compaction transactions committed (SQLite).",
		}, func() float64 { return float64(ml.compactions.Load()) }),
		ml.holdTime,
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
