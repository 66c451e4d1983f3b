package presence

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	online    prometheus.Gauge
	timeouts  prometheus.Counter
	checkTime prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		online: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "devicehub_devices_online",
			Help: "Devices connected (MQTT or HTTP) as presence sees them.",
		}),
		timeouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_presence_heartbeat_timeouts_total",
			Help: "Devices set offline because nothing was heard within their type's heartbeat timeout.",
		}),
		checkTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devicehub_presence_timeout_check_duration_seconds",
			Help:    "Time of one heartbeat timeout check (popping due deadlines).",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.online, m.timeouts, m.checkTime)
	}
	return m
}
