package config

import (
	"net/url"
	"regexp"
	"time"
)

// ExternalBrokerConfig replaces the embedded MQTT broker with an external
// MQTT v5 broker (docs/CLUSTER.md, "External broker"): the node subscribes
// to the device topics with a shared subscription and a persistent
// session, and publishes what goes to devices there. It is off while URL
// is empty.
type ExternalBrokerConfig struct {
	// URL of the broker: mqtt://host:port (tcp:// too) or mqtts://host:port
	// (tls://, ssl://).
	URL string `yaml:"url"`
	// ClientID of the node's session on the broker; it must be unique per
	// node and stable across restarts (the session, and what the broker
	// queued for it, is found by it). Default: devicehub-<cluster.node_id>,
	// or devicehub-hub outside cluster mode.
	ClientID string `yaml:"client_id"`
	// Username and Password of the node on the broker.
	// DEVICEHUB_MQTT_EXTERNAL_PASSWORD overrides the password.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// ShareGroup is the shared subscription's group: every node of one
	// hub subscribes to $share/<share_group>/devices/+/... (default
	// devicehub).
	ShareGroup string `yaml:"share_group"`
	// SessionExpiry is how long the broker keeps the node's session (and
	// queues its messages) while the node is away (default 1h).
	SessionExpiry time.Duration `yaml:"session_expiry"`
	// Workers hand messages to ingest concurrently (default 64); the
	// messages of one device always go to the same worker, in order.
	Workers int `yaml:"workers"`
	// ReceiveMaximum caps the messages the broker sends before the node
	// acknowledges (default 1024).
	ReceiveMaximum int `yaml:"receive_maximum"`
	// KeepAlive of the node's connection (default 30s).
	KeepAlive time.Duration `yaml:"keep_alive"`
}

// Enabled reports whether the configuration asks for an external broker.
func (e ExternalBrokerConfig) Enabled() bool { return e.URL != "" }

var (
	shareGroupRe = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)
	clientIDRe   = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
)

// fillExternal sets the external broker's defaults (they depend on the
// cluster's node id).
func (c *Config) fillExternal() {
	e := &c.MQTT.External
	if !e.Enabled() {
		return
	}
	if e.ClientID == "" {
		e.ClientID = "devicehub-hub"
		if c.Cluster.NodeID != "" {
			e.ClientID = "devicehub-" + c.Cluster.NodeID
		}
	}
	if e.ShareGroup == "" {
		e.ShareGroup = "devicehub"
	}
	if e.SessionExpiry == 0 {
		e.SessionExpiry = time.Hour
	}
	if e.Workers == 0 {
		e.Workers = 64
	}
	if e.ReceiveMaximum == 0 {
		e.ReceiveMaximum = 1024
	}
	if e.KeepAlive == 0 {
		e.KeepAlive = 30 * time.Second
	}
}

func (c *Config) checkExternalBroker() error {
	c.fillExternal()
	e := c.MQTT.External
	if !e.Enabled() {
		return nil
	}
	u, err := url.Parse(e.URL)
	if err != nil || u.Host == "" || u.Port() == "" {
		return invalid("mqtt.external.url", "want mqtt://host:port or mqtts://host:port, got %q", e.URL)
	}
	switch u.Scheme {
	case "mqtt", "tcp", "mqtts", "tls", "ssl":
	default:
		return invalid("mqtt.external.url", "scheme must be mqtt, tcp, mqtts, tls or ssl, got %q", u.Scheme)
	}
	if u.User != nil {
		return invalid("mqtt.external.url", "put the credentials in mqtt.external.username and password, not in the URL")
	}
	if !clientIDRe.MatchString(e.ClientID) {
		return invalid("mqtt.external.client_id", "must be 1-128 letters, digits, '.', '_', ':' or '-', got %q", e.ClientID)
	}
	if e.Password != "" && e.Username == "" {
		return invalid("mqtt.external.password", "needs mqtt.external.username")
	}
	if !shareGroupRe.MatchString(e.ShareGroup) {
		return invalid("mqtt.external.share_group", "must be 1-64 letters, digits, '.', '_' or '-' (no '/', '+' or '#'), got %q", e.ShareGroup)
	}
	if e.SessionExpiry < time.Second || e.SessionExpiry > 0xFFFFFFFF*time.Second {
		return invalid("mqtt.external.session_expiry", "must be between 1s and 4294967295s (the broker keeps the node's session, and queues its messages, while the node is away), got %s", e.SessionExpiry)
	}
	if e.Workers < 1 || e.Workers > 4096 {
		return invalid("mqtt.external.workers", "must be 1 to 4096, got %d", e.Workers)
	}
	if e.ReceiveMaximum < 1 || e.ReceiveMaximum > 65535 {
		return invalid("mqtt.external.receive_maximum", "must be 1 to 65535, got %d", e.ReceiveMaximum)
	}
	if e.KeepAlive < time.Second || e.KeepAlive > 65535*time.Second {
		return invalid("mqtt.external.keep_alive", "must be between 1s and 65535s, got %s", e.KeepAlive)
	}
	if c.MQTT.TLS.Addr != "" {
		return invalid("mqtt.tls.addr", "the embedded broker does not run with mqtt.external.url: devices connect to the external broker")
	}
	if c.MQTT.WSAddr != "" {
		return invalid("mqtt.ws_addr", "the embedded broker does not run with mqtt.external.url: devices connect to the external broker")
	}
	return nil
}
