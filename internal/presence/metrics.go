package presence

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	online    prometheus.Gauge
	timeouts  prometheus.Counter
	stale     prometheus.Counter
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
		stale: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_presence_stale_changes_total",
			Help: "Connects, disconnects and lost-node changes of an MQTT session older than the device's stored one (another node took the device over before this node heard of it): the store wrote neither their state nor their events.",
		}),
		checkTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devicehub_presence_timeout_check_duration_seconds",
			Help:    "Time of one heartbeat timeout check (popping due deadlines).",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.online, m.timeouts, m.stale, m.checkTime)
	}
	return m
}
