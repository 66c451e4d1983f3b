package sdk

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Options configure a Client. DB and either Credentials, credentials stored
// in DB before, or ProvisioningToken with Server are required.
type Options struct {
	// DeviceID is the device's id. Optional with provisioning: the operator
	// may choose it at approval.
	DeviceID string
	// ProvisioningToken starts the provisioning flow when DB holds no valid
	// credentials.
	ProvisioningToken string
	// DB is the path of the local database: credentials and queues. It is
	// created if missing; one process at a time may open it.
	DB string
	// Server is the base URL of the hub's HTTP API
	// ("https://hub.example:8443"), used for provisioning.
	Server string
	// MQTTServer is the URL of the hub's MQTT listener: mqtt://host:port
	// (also tcp://), or tls://host:port (also mqtts://, ssl://). Default:
	// Server's host, port 1883 (8883 when Server is https).
	MQTTServer string
	// Credentials, when set, are used (and stored in DB) instead of
	// provisioning: for instance the output of
	// `devicehub provision ID --type T --output json`.
	Credentials *Credentials
	// TLSConfig is used for tls:// MQTT servers and the HTTP API.
	TLSConfig *tls.Config
	// HTTPClient is used for provisioning (default: a client with a 30 s
	// timeout and TLSConfig).
	HTTPClient *http.Client

	// OnProvisioning shows an operation waiting for an operator's approval
	// (default: log its verification code).
	OnProvisioning func(ProvisioningOperation)
	// OnDesiredProperties is called after Start with the current desired
	// properties (if the device has any) and then with each newer version,
	// from one goroutine. Intermediate versions may be skipped.
	OnDesiredProperties func(DesiredProperties)
	// OnCommand handles a command and returns its result, from one
	// goroutine, in order of arrival. A command is kept in DB until it
	// returned, so after a crash it is handled again: at least once.
	OnCommand func(Command) Result
	// OnConfig applies a configuration the hub rendered for the device
	// (templates, groups and variables managed on the hub), from one
	// goroutine. The SDK follows the retained notice on
	// devices/{id}/config, downloads the configuration over HTTP with the
	// credentials' api_key (from Server, or the notice's absolute URL),
	// checks its SHA-256 against the checksum, and reports on
	// devices/{id}/config/status "applied" when OnConfig returns nil, or
	// "error" with the returned error's text. The report goes through the
	// outbox: one made while offline is sent on reconnect. A notice is
	// stored before it is acknowledged, so after a crash a configuration
	// may be given again (at least once); one already applied is not
	// given twice in a row.
	OnConfig func(Config) error
	// OnFirmware installs a firmware update (devices/{id}/firmware; see
	// firmware.go): it is called with the update's file, downloaded (with
	// resume) and verified (size, SHA-256, and the ed25519 signature
	// against FirmwarePublicKey), and returns nil once the firmware is
	// installed and the application is about to restart into it. Each step
	// is reported to the hub through the outbox. Nil: the device takes no
	// firmware updates.
	OnFirmware func(Update) error
	// OnFirmwareConfirm is called after the restart into an installed
	// update, from the SDK's goroutine: it returns nil when the new
	// firmware works. Not returning within FirmwareConfirmWindow of the
	// install (ctx ends then), or an error, reports the update failed and
	// calls OnFirmwareRollback. Nil confirms at once.
	OnFirmwareConfirm func(ctx context.Context, u Update) error
	// OnFirmwareRollback tells the application to go back to its previous
	// firmware.
	OnFirmwareRollback func(u Update, reason error)
	// FirmwarePublicKey is the ed25519 key firmware must be signed with
	// (`devicehub firmware key`, ParseFirmwarePublicKey).
	FirmwarePublicKey ed25519.PublicKey
	// FirmwareVersion and HardwareVersion, when set, are reported at each
	// Start (the device's registry record shows them).
	FirmwareVersion, HardwareVersion string
	// FirmwareDir holds downloads (default: DB + ".firmware").
	FirmwareDir string
	// FirmwareConfirmWindow bounds the time from the install to the
	// confirmation after the restart (default 5m).
	FirmwareConfirmWindow time.Duration
	// OnError is told about errors of the background work that no method
	// returns: a message the hub rejected (KindRejected,
	// KindMessageTooLarge, KindInvalidPayload) or revoked credentials
	// (KindCredentialsRevoked). It must not block.
	OnError func(error)
	// Logger receives the SDK's logs (default slog.Default()).
	Logger *slog.Logger

	// KeepAlive is the MQTT keepalive (default 30s).
	KeepAlive time.Duration
	// MinBackoff and MaxBackoff bound the exponential reconnect backoff,
	// with full jitter (defaults 200ms and 1m).
	MinBackoff, MaxBackoff time.Duration
	// ChunkSize is the largest payload sent in one MQTT message; larger
	// ones are chunked (default 128 KiB).
	ChunkSize int
	// MaxMessageBytes bounds one message (after compression, before
	// chunking); Enqueue refuses larger ones with KindMessageTooLarge
	// (default 16 MiB).
	MaxMessageBytes int
	// MaxBatchBytes bounds the batches the sender makes of a backlog:
	// consecutive single-reading JSON messages are sent together as one
	// MQTT message of content type application/vnd.devicehub.batch+json,
	// each keeping its msg_id (default 48 KiB, under the hub's default
	// payload limit of 64 KiB).
	MaxBatchBytes int
	// DisableBatching sends every message alone (for brokers and consumers
	// other than devicehub).
	DisableBatching bool
	// PublishTimeout bounds the wait for one PUBACK (default 30s).
	PublishTimeout time.Duration
	// ProvisioningPoll is the interval between polls of a provisioning
	// operation (default 2s).
	ProvisioningPoll time.Duration
}

// Credentials are a device's credentials as the hub issues them.
type Credentials struct {
	DeviceID     string `json:"device_id"`
	MQTTUsername string `json:"mqtt_username"`
	MQTTPassword string `json:"mqtt_password"`
	APIKey       string `json:"api_key,omitempty"`
}

// ParseCredentials reads credentials as `devicehub provision --output json`
// prints them.
func ParseCredentials(b []byte) (*Credentials, error) {
	var c Credentials
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, newError(KindInvalidOptions, "parse credentials", err)
	}
	if err := c.check(); err != nil {
		return nil, newError(KindInvalidOptions, "parse credentials", err)
	}
	return &c, nil
}

func (c *Credentials) check() error {
	if c.DeviceID == "" || c.MQTTUsername == "" || c.MQTTPassword == "" {
		return errors.New("credentials need device_id, mqtt_username and mqtt_password")
	}
	return nil
}

func (o *Options) setDefaults() error {
	if o.DB == "" {
		return errors.New("DB is required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 30 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 200 * time.Millisecond
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = max(time.Minute, o.MinBackoff)
	}
	if o.ChunkSize <= 0 {
		o.ChunkSize = 128 << 10
	}
	if o.MaxMessageBytes <= 0 {
		o.MaxMessageBytes = 16 << 20
	}
	if o.MaxBatchBytes <= 0 {
		o.MaxBatchBytes = 48 << 10
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = 30 * time.Second
	}
	if o.ProvisioningPoll <= 0 {
		o.ProvisioningPoll = 2 * time.Second
	}
	if o.HTTPClient == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = o.TLSConfig
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: tr}
	}
	if o.FirmwareDir == "" {
		o.FirmwareDir = o.DB + ".firmware"
	}
	if o.FirmwareConfirmWindow <= 0 {
		o.FirmwareConfirmWindow = 5 * time.Minute
	}
	if o.OnProvisioning == nil {
		log := o.Logger
		o.OnProvisioning = func(op ProvisioningOperation) {
			log.Info("waiting for approval of provisioning", "operation", op.ID, "verification_code", op.VerificationCode, "expires_at", op.ExpiresAt)
		}
	}
	return nil
}

// mqttURL returns the MQTT server's URL.
func (o *Options) mqttURL() (*url.URL, error) {
	if o.MQTTServer != "" {
		u, err := url.Parse(o.MQTTServer)
		if err != nil {
			return nil, fmt.Errorf("MQTTServer: %w", err)
		}
		switch u.Scheme {
		case "mqtt", "tcp":
			u.Scheme = "mqtt"
		case "tls", "mqtts", "ssl":
			u.Scheme = "tls"
		default:
			return nil, fmt.Errorf("MQTTServer %q: scheme must be mqtt, tcp, tls, mqtts or ssl", o.MQTTServer)
		}
		if u.Port() == "" {
			port := "1883"
			if u.Scheme == "tls" {
				port = "8883"
			}
			u.Host = net.JoinHostPort(u.Hostname(), port)
		}
		return u, nil
	}
	if o.Server == "" {
		return nil, errors.New("MQTTServer or Server is required")
	}
	s, err := url.Parse(o.Server)
	if err != nil || s.Hostname() == "" {
		return nil, fmt.Errorf("server %q is not a URL (Options.Server)", o.Server)
	}
	if s.Scheme == "https" {
		return &url.URL{Scheme: "tls", Host: net.JoinHostPort(s.Hostname(), "8883")}, nil
	}
	return &url.URL{Scheme: "mqtt", Host: net.JoinHostPort(s.Hostname(), "1883")}, nil
}
