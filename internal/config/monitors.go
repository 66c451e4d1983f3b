package config

import "time"

// MonitorsConfig configures push monitors (internal/monitors).
type MonitorsConfig struct {
	// AllowPrivateTargets lets HTTP monitors reach loopback, link-local and
	// private addresses. Off by default, so that an API user cannot make
	// the hub call internal services.
	AllowPrivateTargets bool `yaml:"allow_private_targets"`
	// DisableAfter is how long an HTTP monitor may fail to deliver before
	// it is DISABLED (seed 002: 24 hours).
	DisableAfter time.Duration `yaml:"disable_after"`
	// Addr is the monitor port tcp monitors' receivers connect to; ""
	// disables it (the WebSocket stream on http.addr stays).
	Addr string `yaml:"addr"`
	// TLS, when both files are set, serves the monitor port with TLS.
	TLS struct {
		CertFile string `yaml:"cert_file"`
		KeyFile  string `yaml:"key_file"`
	} `yaml:"tls"`
	// QueueSize bounds each monitor's in-memory queue of events.
	QueueSize int `yaml:"queue_size"`
	// QueueBytes bounds the memory of each monitor's queue too, by an
	// estimate of each event's size in memory; a monitor whose queue is
	// full (by count or by bytes) reads the event log once it is further
	// behind than the tail, losing nothing.
	QueueBytes Size `yaml:"queue_bytes"`
	// EncodeCacheBytes bounds the memory of the events' encodings the
	// monitors share (each event is encoded once per format).
	EncodeCacheBytes Size `yaml:"encode_cache_bytes"`
	// MaxInFlight bounds a stream's batches not acknowledged yet.
	MaxInFlight int `yaml:"max_in_flight"`
	// AckTimeout drops a stream receiver that leaves a batch unacknowledged
	// (or unread) this long.
	AckTimeout time.Duration `yaml:"ack_timeout"`
	// SecretOverlap is how long the old signing secret keeps signing after
	// a rotation that names no overlap.
	SecretOverlap time.Duration `yaml:"secret_overlap"`
	// MinBackoff and MaxBackoff bound the wait between failed deliveries.
	MinBackoff time.Duration `yaml:"min_backoff"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
	// TailBytes bounds the memory of the recent events kept for all
	// running monitors (the tail, besides its count of 131072 events), by
	// an estimate of each event's size in memory; a monitor further
	// behind reads the event log.
	TailBytes Size `yaml:"tail_bytes"`
}

func defaultMonitors() MonitorsConfig {
	return MonitorsConfig{
		DisableAfter: 24 * time.Hour, QueueSize: 10000, MaxInFlight: 8, AckTimeout: 30 * time.Second,
		SecretOverlap: 24 * time.Hour, MinBackoff: time.Second, MaxBackoff: 5 * time.Minute,
		TailBytes: 64 * MiB, QueueBytes: 8 * MiB, EncodeCacheBytes: 32 * MiB,
	}
}

func (c *Config) checkMonitors() error {
	m := c.Monitors
	if m.DisableAfter < time.Second {
		return invalid("monitors.disable_after", "must be at least 1s")
	}
	if err := checkAddr("monitors.addr", m.Addr, false); err != nil {
		return err
	}
	if (m.TLS.CertFile == "") != (m.TLS.KeyFile == "") {
		return invalid("monitors.tls", "set both cert_file and key_file, or neither")
	}
	if m.TLS.CertFile != "" && m.Addr == "" {
		return invalid("monitors.tls.cert_file", "needs monitors.addr")
	}
	if err := atLeast("monitors.queue_size", int64(m.QueueSize), 1); err != nil {
		return err
	}
	if err := atLeast("monitors.max_in_flight", int64(m.MaxInFlight), 1); err != nil {
		return err
	}
	if m.AckTimeout < 100*time.Millisecond {
		return invalid("monitors.ack_timeout", "must be at least 100ms")
	}
	if m.SecretOverlap < 0 {
		return invalid("monitors.secret_overlap", "must not be negative")
	}
	if m.MinBackoff <= 0 {
		return invalid("monitors.min_backoff", "must be positive")
	}
	if m.MaxBackoff < m.MinBackoff {
		return invalid("monitors.max_backoff", "must be at least monitors.min_backoff")
	}
	if m.TailBytes < MiB {
		return invalid("monitors.tail_bytes", "must be at least 1MiB, got %d", m.TailBytes)
	}
	if m.QueueBytes < 64*KiB {
		return invalid("monitors.queue_bytes", "must be at least 64KiB, got %d", m.QueueBytes)
	}
	if m.EncodeCacheBytes < MiB {
		return invalid("monitors.encode_cache_bytes", "must be at least 1MiB, got %d", m.EncodeCacheBytes)
	}
	return nil
}
