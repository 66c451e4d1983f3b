package broker

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connects      *prometheus.CounterVec
	disconnects   *prometheus.CounterVec
	aclDenied     *prometheus.CounterVec
	rejected      *prometheus.CounterVec
	storeFailures prometheus.Counter
	refused       *prometheus.CounterVec
	acceptErrors  *prometheus.CounterVec
	readLate      prometheus.Counter
	writers       prometheus.GaugeFunc
}

func newMetrics(b *Broker, reg prometheus.Registerer) *metrics {
	m := &metrics{
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_mqtt_connects_total",
			Help: "MQTT connection attempts by result: accepted, or why they were refused.",
		}, []string{"result"}),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_mqtt_disconnects_total",
			Help: "Ended device connections by reason.",
		}, []string{"reason"}),
		aclDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_mqtt_acl_denied_total",
			Help: "Publishes and subscriptions refused because they reach outside the device's prefix.",
		}, []string{"op"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_mqtt_publish_rejected_total",
			Help: "Device messages the hub rejected, by rejection code.",
		}, []string{"code"}),
		storeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_mqtt_publish_store_failures_total",
			Help: "Device messages that could not be stored (the device was disconnected, no ack).",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_mqtt_connections_refused_total",
			Help: "Connections closed at accept, before CONNECT, by reason (connection_limit).",
		}, []string{"reason"}),
		acceptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_mqtt_accept_errors_total",
			Help: "Temporary accept errors (out of descriptors, aborted connections), retried with backoff, by listener.",
		}, []string{"listener"}),
		readLate: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_mqtt_connect_read_late_total",
			Help: "CONNECTs that arrived within the connect timeout but were read after it, because the hub ran late (CPU-starved); they are answered.",
		}),
	}
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "devicehub_mqtt_clients_connected",
		Help: "Devices connected to the embedded MQTT broker.",
	}, func() float64 { return float64(b.connected.Load()) })
	m.writers = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "devicehub_mqtt_writers",
		Help: "Goroutines writing queued messages to devices: running on-demand writers (or mochi write loops, if the broker fell back to them).",
	}, func() float64 { return float64(b.writers.Load()) })
	if reg != nil {
		reg.MustRegister(m.connects, m.disconnects, m.aclDenied, m.rejected, m.storeFailures, m.refused, m.acceptErrors, m.readLate, gauge, m.writers)
	}
	return m
}
