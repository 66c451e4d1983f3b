package monitors

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the per-monitor Prometheus metrics: counters kept by the
// send loops, gauges computed at scrape time.
type metrics struct {
	svc        *Service
	deliveries *prometheus.CounterVec
	events     *prometheus.CounterVec
	failures   *prometheus.CounterVec
	retries    *prometheus.CounterVec
	dropped    *prometheus.CounterVec
	backlog    *prometheus.Desc
	lag        *prometheus.Desc
	queued     *prometheus.Desc
	queuedB    *prometheus.Desc
	status     *prometheus.Desc
	tailEvents *prometheus.Desc
	tailBytes  *prometheus.Desc
	encBytes   *prometheus.Desc
	head       atomic.Int64 // the highest Seq any monitor's subscription saw
}

type monMetrics struct {
	deliveries, events, failures, retries, dropped prometheus.Counter
}

func newMetrics(s *Service) *metrics {
	vec := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{"monitor"})
	}
	return &metrics{
		svc:        s,
		deliveries: vec("devicehub_monitor_deliveries_total", "Batches a monitor delivered (acknowledged)."),
		events:     vec("devicehub_monitor_delivered_events_total", "Events a monitor delivered (acknowledged)."),
		failures:   vec("devicehub_monitor_failures_total", "Failed delivery attempts of a monitor."),
		retries:    vec("devicehub_monitor_retries_total", "Deliveries a monitor attempted again after a failure."),
		dropped:    vec("devicehub_monitor_dropped_events_total", "Events a monitor without replay dropped while its receiver was unreachable."),
		backlog: prometheus.NewDesc("devicehub_monitor_backlog_events",
			"Events committed after the monitor's cursor (selected by its topics or not).", []string{"monitor"}, nil),
		lag: prometheus.NewDesc("devicehub_monitor_lag_seconds",
			"Age of the oldest event the monitor holds and has not had acknowledged (0 if none).", []string{"monitor"}, nil),
		queued: prometheus.NewDesc("devicehub_monitor_queued_events",
			"Events in the monitor's in-memory queue.", []string{"monitor"}, nil),
		queuedB: prometheus.NewDesc("devicehub_monitor_queued_bytes",
			"Estimated memory of the events in the monitor's in-memory queue, bounded by monitors.queue_bytes.", []string{"monitor"}, nil),
		status: prometheus.NewDesc("devicehub_monitor_status",
			"1 for the monitor's current status.", []string{"monitor", "transport", "status"}, nil),
		tailEvents: prometheus.NewDesc("devicehub_monitor_tail_events",
			"Events in the monitors' shared in-memory tail (0 while no monitor runs).", nil, nil),
		tailBytes: prometheus.NewDesc("devicehub_monitor_tail_bytes",
			"Estimated memory of the events in the monitors' shared tail, bounded by monitors.tail_bytes.", nil, nil),
		encBytes: prometheus.NewDesc("devicehub_monitor_encode_cache_bytes",
			"Bytes of the events' encodings the monitors share, bounded by monitors.encode_cache_bytes.", nil, nil),
	}
}

func (m *metrics) sawSeq(seq int64) {
	for {
		h := m.head.Load()
		if seq <= h || m.head.CompareAndSwap(h, seq) {
			return
		}
	}
}

func (m *metrics) monitor(id string) *monMetrics {
	return &monMetrics{
		deliveries: m.deliveries.WithLabelValues(id),
		events:     m.events.WithLabelValues(id),
		failures:   m.failures.WithLabelValues(id),
		retries:    m.retries.WithLabelValues(id),
		dropped:    m.dropped.WithLabelValues(id),
	}
}

func (m *metrics) forget(id string) {
	for _, v := range []*prometheus.CounterVec{m.deliveries, m.events, m.failures, m.retries, m.dropped} {
		v.DeleteLabelValues(id)
	}
}

// Describe implements prometheus.Collector.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, v := range []*prometheus.CounterVec{m.deliveries, m.events, m.failures, m.retries, m.dropped} {
		v.Describe(ch)
	}
	ch <- m.backlog
	ch <- m.lag
	ch <- m.queued
	ch <- m.queuedB
	ch <- m.status
	ch <- m.tailEvents
	ch <- m.tailBytes
	ch <- m.encBytes
}

// Collect implements prometheus.Collector.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, v := range []*prometheus.CounterVec{m.deliveries, m.events, m.failures, m.retries, m.dropped} {
		v.Collect(ch)
	}
	s := m.svc
	n, bytes := s.tail.stats()
	ch <- prometheus.MustNewConstMetric(m.tailEvents, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(m.tailBytes, prometheus.GaugeValue, float64(bytes))
	_, encBytes := s.enc.stats()
	ch <- prometheus.MustNewConstMetric(m.encBytes, prometheus.GaugeValue, float64(encBytes))
	s.mu.Lock()
	es := make([]*entry, 0, len(s.mons))
	for _, e := range s.mons {
		es = append(es, e)
	}
	s.mu.Unlock()
	head := m.head.Load()
	now := s.opts.Now()
	for _, e := range es {
		e.mu.Lock()
		id, transport, status, cursor, sd := e.mon.ID, e.mon.Transport, e.mon.Status, e.mon.Cursor, e.sender
		e.mu.Unlock()
		var lag float64
		queued, queuedBytes := 0, int64(0)
		if sd != nil {
			cursor = max(cursor, sd.cursor.Load())
			oldest := sd.oldestUnacked.Load()
			if q := sd.qp.Load(); q != nil {
				queued, queuedBytes = q.stats()
				if oldest == 0 {
					if t := q.oldest(); !t.IsZero() {
						oldest = t.UnixNano()
					}
				}
			}
			if oldest != 0 {
				lag = max(0, now.Sub(time.Unix(0, oldest)).Seconds())
			}
		}
		ch <- prometheus.MustNewConstMetric(m.backlog, prometheus.GaugeValue, float64(max(0, head-cursor)), id)
		ch <- prometheus.MustNewConstMetric(m.lag, prometheus.GaugeValue, lag, id)
		ch <- prometheus.MustNewConstMetric(m.queued, prometheus.GaugeValue, float64(queued), id)
		ch <- prometheus.MustNewConstMetric(m.queuedB, prometheus.GaugeValue, float64(queuedBytes), id)
		ch <- prometheus.MustNewConstMetric(m.status, prometheus.GaugeValue, 1, id, transport, string(status))
	}
}

// Backlog returns how many events were committed after a monitor's cursor
// and the age in seconds of the oldest event it holds unacknowledged.
func (s *Service) Backlog(id string) (int64, float64) {
	e, err := s.entry(id)
	if err != nil {
		return 0, 0
	}
	e.mu.Lock()
	cursor, sd := e.mon.Cursor, e.sender
	e.mu.Unlock()
	var lag float64
	if sd != nil {
		cursor = max(cursor, sd.cursor.Load())
		oldest := sd.oldestUnacked.Load()
		if q := sd.qp.Load(); q != nil && oldest == 0 {
			if t := q.oldest(); !t.IsZero() {
				oldest = t.UnixNano()
			}
		}
		if oldest != 0 {
			lag = max(0, s.opts.Now().Sub(time.Unix(0, oldest)).Seconds())
		}
	}
	return max(0, s.metrics.head.Load()-cursor), lag
}
