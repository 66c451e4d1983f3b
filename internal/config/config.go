// Package config reads devicehub's configuration once, at the edge: a YAML
// file, then DEVICEHUB_* environment variables, then command-line flags, then
// validation. Every error names the key at fault, so that a bad configuration
// fails at start with a message an operator can act on.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/devicehub/devicehub/internal/devicetype"
)

// ErrInvalid is wrapped by every error Load, Parse and Validate return for a
// bad configuration (as opposed to a file that cannot be read).
var ErrInvalid = errors.New("invalid configuration")

// Config is the whole configuration of a hub.
type Config struct {
	DataDir string        `yaml:"data_dir"`
	Log     LogConfig     `yaml:"log"`
	MQTT    MQTTConfig    `yaml:"mqtt"`
	HTTP    HTTPConfig    `yaml:"http"`
	Storage StorageConfig `yaml:"storage"`
	Ingest  IngestConfig  `yaml:"ingest"`
	Commit  CommitConfig  `yaml:"commit"`
	Events  EventsConfig  `yaml:"events"`
	// BrokerAuth serves /broker/auth and /broker/acl for an external MQTT
	// broker (EMQX, mosquitto-go-auth).
	BrokerAuth BrokerAuthConfig `yaml:"broker_auth"`
	// Registration configures device self-registration (seed 001).
	Registration RegistrationConfig `yaml:"registration"`
	// Provisioning configures provisioning operations and credentials.
	Provisioning ProvisioningConfig `yaml:"provisioning"`
	// Monitors configures push monitors (see monitors.go).
	Monitors MonitorsConfig `yaml:"monitors"`
	// DeviceConfig configures device configuration management (templates,
	// rendering, notices, history).
	DeviceConfig DeviceConfigConfig `yaml:"device_config"`
	// Firmware configures firmware updates (see firmware.go).
	Firmware FirmwareConfig `yaml:"firmware"`
	// Alerts declares alert rules per device type and the flood caps
	// (see alerts.go).
	Alerts AlertsConfig `yaml:"alerts"`
	// Retention is how long stored data is kept (retention.go).
	Retention RetentionConfig `yaml:"retention"`
	// Commands configures commands to devices (see commands.go).
	Commands CommandsConfig `yaml:"commands"`
	// Cluster turns on cluster mode (see cluster.go).
	Cluster ClusterConfig `yaml:"cluster"`
	// Runtime sets the Go garbage collector of the devicehub binary (see
	// runtime.go).
	Runtime RuntimeConfig `yaml:"runtime"`
	// DeviceTypes are the declared device types, sorted by name. In the
	// file they are a map from name to declaration; the key becomes Name.
	DeviceTypes []devicetype.Type `yaml:"-"`
}

// BrokerAuthConfig configures the endpoints an external broker asks to
// authenticate devices. They carry no authentication of their own, so they
// are off by default and best served on a private address.
type BrokerAuthConfig struct {
	Enabled bool `yaml:"enabled"`
	// Addr is their own listener, required when enabled: they answer
	// password checks, so they are never served on the public http.addr.
	Addr string `yaml:"addr"`
}

// RegistrationConfig configures self-registration with a shared secret and a
// stable hardware key. An empty SharedSecret turns self-registration off.
type RegistrationConfig struct {
	SharedSecret string `yaml:"shared_secret"` // DEVICEHUB_REGISTRATION_SHARED_SECRET
	DefaultType  string `yaml:"default_type"`  // type of registering devices that name none
}

// ProvisioningConfig configures provisioning operations and credentials.
type ProvisioningConfig struct {
	// OperationTTL is how long a provisioning operation waits for approval.
	OperationTTL time.Duration `yaml:"operation_ttl"`
	// RotationOverlap is how long old credentials stay valid after a
	// rotation, unless the device uses the new ones first.
	RotationOverlap time.Duration `yaml:"rotation_overlap"`
}

// DeviceConfigConfig configures device configuration management.
type DeviceConfigConfig struct {
	// HistoryKeep is how many rendered configurations are kept per device.
	HistoryKeep int `yaml:"history_keep"`
	// NoticeURL is the download URL devices are told on
	// devices/{id}/config ("" : the path /api/v1/device/config).
	NoticeURL string `yaml:"notice_url"`
	// BackendTemplates are Go text/template files, each a backend named
	// after its file (without the extension), for devices that consume
	// neither json, yaml nor env.
	BackendTemplates []string `yaml:"backend_templates"`
}

// LogConfig configures the process logger.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text, json
}

// MQTTConfig configures the embedded MQTT broker.
type MQTTConfig struct {
	Addr          string    `yaml:"addr"` // "" disables the plain TCP listener
	TLS           TLSConfig `yaml:"tls"`
	WSAddr        string    `yaml:"ws_addr"` // "" disables the WebSocket listener
	MaxPacketSize Size      `yaml:"max_packet_size"`
	MaxClients    int       `yaml:"max_clients"`
	// MaxConnections caps open MQTT connections (all listeners, counted
	// from accept); 0 derives it from the open-file limit (fdlimit).
	MaxConnections   int           `yaml:"max_connections"`
	ReceiveMaximum   int           `yaml:"receive_maximum"`
	MaxSessionExpiry time.Duration `yaml:"max_session_expiry"`
	// WriteQueue bounds one client's outbound queue (default 320: the
	// broker's inflight cap of 256 plus room for QoS 0 messages, see
	// broker.Options.WriteQueue; the queue grows as packets are queued).
	WriteQueue int `yaml:"write_queue"`
	// WriterIdle is how long a client's writer goroutine waits for more
	// outbound data before it ends (default 2s, broker.Options.WriterIdle):
	// longer keeps a goroutine per chatty subscriber, shorter starts one
	// more often.
	WriterIdle time.Duration `yaml:"writer_idle"`
	// ReadBufferBytes sizes the read buffer allocated for every
	// connection (default 1 KiB, broker.Options.ReadBufferSize): a larger
	// packet is read past it, a larger buffer costs every idle device.
	ReadBufferBytes Size `yaml:"read_buffer_bytes"`
	// ShutdownGrace is how long a stopping broker waits for the outcome
	// of the publishes awaiting their commit (default 5s,
	// broker.Options.ShutdownGrace); those without one get no PUBACK and
	// are sent again by their devices.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// External, when its url is set, replaces the embedded broker
	// (external.go).
	External ExternalBrokerConfig `yaml:"external"`
}

// TLSConfig configures the MQTT TLS listener; Addr "" disables it.
type TLSConfig struct {
	Addr     string `yaml:"addr"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, if set, requires client certificates signed by one of
	// its CAs (PEM) on the TLS listener (mTLS); a device whose pinned
	// certificate matches connects without a password.
	ClientCAFile string `yaml:"client_ca_file"`
}

// MinWriteTimeout is the shortest http.write_timeout: above the longest
// ?wait= of the command API (50s, api.MaxWait), so that the answer of a
// wait that ran out is still written.
const MinWriteTimeout = time.Minute

// HTTPConfig configures the REST API server.
type HTTPConfig struct {
	Addr string `yaml:"addr"`
	// MaxConnections caps open HTTP connections (API and broker auth
	// together); 0 derives it from the open-file limit (fdlimit). The
	// excess is answered 503 and closed.
	MaxConnections int `yaml:"max_connections"`
	// ReadTimeout bounds reading a whole request, body included;
	// WriteTimeout writing a response; IdleTimeout how long a keep-alive
	// connection may wait for its next request. The event stream sets
	// its own deadlines. WriteTimeout is at least MinWriteTimeout.
	ReadTimeout  time.Duration `yaml:"read_timeout"`
	WriteTimeout time.Duration `yaml:"write_timeout"`
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
}

// StorageConfig chooses and configures the storage backend.
type StorageConfig struct {
	Driver   string         `yaml:"driver"` // sqlite, postgres
	SQLite   SQLiteConfig   `yaml:"sqlite"`
	Postgres PostgresConfig `yaml:"postgres"`
	// MinFreeBytes is the floor of free disk space on the data
	// directory's filesystem: below it device messages are refused (and
	// storage_low is stored) before the disk is full; 0 refuses nothing.
	MinFreeBytes Size `yaml:"min_free_bytes"`
	// SpaceCheckInterval is how often the free space is measured.
	SpaceCheckInterval time.Duration `yaml:"space_check_interval"`
}

// SQLiteConfig configures the SQLite backend.
type SQLiteConfig struct {
	// Path of the database file; Load sets <data_dir>/devicehub.db when empty.
	Path        string `yaml:"path"`
	Synchronous string `yaml:"synchronous"` // off, normal, full, extra
	// CacheSize is the page cache of the connection that writes (every
	// commit goes through it); 0 (the default) sizes it by the fleet, 8
	// KiB a device from 8 to 64 MiB. The readers have their own.
	CacheSize Size `yaml:"cache_size"`
	// MessageLog bounds the message log's memory.
	MessageLog MessageLogConfig `yaml:"message_log"`
	// ReadingsHead bounds the readings' head in memory.
	ReadingsHead ReadingsHeadConfig `yaml:"readings_head"`
}

// ReadingsHeadConfig bounds the SQLite readings head: the batch rows of
// readings not yet moved into per-device blocks, indexed in memory.
type ReadingsHeadConfig struct {
	// MaxReadings and MaxBytes: past either, the oldest batch rows are
	// moved into blocks until half are left.
	MaxReadings int  `yaml:"max_readings"`
	MaxBytes    Size `yaml:"max_bytes"`
	// MaxAge: batch rows older than this are moved too.
	MaxAge time.Duration `yaml:"max_age"`
}

// MessageLogConfig bounds the SQLite message log's memory: the head (the
// batch rows not yet moved into per-device blocks) and the msg_id
// dedupe's per-device windows.
type MessageLogConfig struct {
	// HeadMessages and HeadBytes: past half of either, the oldest batch
	// rows are moved into per-device blocks, a chunk at a time.
	HeadMessages int  `yaml:"head_messages"`
	HeadBytes    Size `yaml:"head_bytes"`
	// HeadAge: batch rows older than this are moved too.
	HeadAge time.Duration `yaml:"head_age"`
	// DedupeWindow is how many of a device's newest msg_ids the msg_id
	// dedupe recognises; an older msg_id sent again is stored again.
	DedupeWindow int `yaml:"dedupe_window"`
	// DedupeIdle: a device's window is let go after this long without a
	// message (and read again from the store at its next one).
	DedupeIdle time.Duration `yaml:"dedupe_idle"`
}

// PostgresConfig configures the PostgreSQL backend.
type PostgresConfig struct {
	DSN string `yaml:"dsn"`
	// Schema, if set, is created if missing and holds every table, so that
	// several hubs (or tests) can share one database.
	Schema string `yaml:"schema"`
}

// IngestConfig holds the defaults of the ingest pipeline; a device type may
// override the payload size and the rate limit.
type IngestConfig struct {
	MaxPayloadBytes       Size                 `yaml:"max_payload_bytes"`
	RateLimit             devicetype.RateLimit `yaml:"rate_limit"`
	MaxReadingsPerMessage int                  `yaml:"max_readings_per_message"`
	// ChunkMemory bounds the bytes of chunked messages held for all
	// devices together; ChunkTimeout drops a chunked message not completed
	// in time.
	ChunkMemory  Size          `yaml:"chunk_memory"`
	ChunkTimeout time.Duration `yaml:"chunk_timeout"`
}

// CommitConfig configures the group committer.
type CommitConfig struct {
	MaxBatch  int           `yaml:"max_batch"`
	Linger    time.Duration `yaml:"linger"`
	QueueSize int           `yaml:"queue_size"`
	// StopTimeout bounds the committer's stop with a store that stopped
	// answering (default 5s, commit.Options.StopTimeout): the commits
	// begun after the stop are cancelled after it, and the committer gives
	// up on a commit that still has not returned after it once more.
	StopTimeout time.Duration `yaml:"stop_timeout"`
}

// EventsConfig configures the in-process event fan-out.
type EventsConfig struct {
	SubscriberBuffer int `yaml:"subscriber_buffer"`
}

// Overrides are the command-line flags that override the file and the
// environment. A nil field was not given.
type Overrides struct {
	DataDir  *string
	MQTTAddr *string
	HTTPAddr *string
}

// Default returns the configuration used when nothing is configured.
func Default() *Config {
	return &Config{
		DataDir: "./devicehub-data",
		Log:     LogConfig{Level: "info", Format: "text"},
		MQTT: MQTTConfig{
			Addr:             ":1883",
			MaxPacketSize:    256 * KiB,
			MaxClients:       100000,
			ReceiveMaximum:   64,
			MaxSessionExpiry: time.Hour,
			WriteQueue:       320,
			WriterIdle:       2 * time.Second,
			ReadBufferBytes:  KiB,
			ShutdownGrace:    5 * time.Second,
		},
		HTTP: HTTPConfig{Addr: ":8080", ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute, IdleTimeout: 30 * time.Second},
		Storage: StorageConfig{Driver: "sqlite", SQLite: SQLiteConfig{Synchronous: "full", MessageLog: MessageLogConfig{
			HeadMessages: 100_000, HeadBytes: 32 * MiB, HeadAge: 10 * time.Minute, DedupeWindow: 1000, DedupeIdle: 10 * time.Minute},
			ReadingsHead: ReadingsHeadConfig{MaxReadings: 50_000, MaxBytes: 8 * MiB, MaxAge: 10 * time.Minute}}, MinFreeBytes: 64 * MiB, SpaceCheckInterval: 5 * time.Second},
		Ingest: IngestConfig{
			MaxPayloadBytes:       64 * KiB,
			RateLimit:             devicetype.RateLimit{Rate: 100, Burst: 200},
			MaxReadingsPerMessage: 1000,
			ChunkMemory:           64 * MiB,
			ChunkTimeout:          5 * time.Minute,
		},
		Commit:       CommitConfig{MaxBatch: 2000, QueueSize: 20000, StopTimeout: 5 * time.Second},
		Events:       EventsConfig{SubscriberBuffer: 4096},
		Provisioning: ProvisioningConfig{OperationTTL: 15 * time.Minute, RotationOverlap: 24 * time.Hour},
		Monitors:     defaultMonitors(),
		Alerts:       defaultAlerts(),
		Commands:     defaultCommands(),
		DeviceConfig: DeviceConfigConfig{HistoryKeep: 10},
		Firmware:     defaultFirmware(),
		Retention:    defaultRetention(),
		Cluster:      defaultCluster(),
		Runtime:      defaultRuntime(),
	}
}

// Load reads the configuration: defaults, then the YAML file at path (none
// if path is ""), then DEVICEHUB_* variables looked up with env (os.LookupEnv
// if nil), then flags; it fills derived defaults and validates the result.
func Load(path string, env func(string) (string, bool), flags Overrides) (*Config, error) {
	cfg := Default()
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		if err := decode(data, cfg); err != nil {
			return nil, fmt.Errorf("config: %s: %w", path, err)
		}
	}
	if env == nil {
		env = os.LookupEnv
	}
	applyEnv(cfg, env)
	applyFlags(cfg, flags)
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Parse reads a configuration from YAML alone (no environment, no flags),
// fills derived defaults and validates it.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	if err := decode(data, cfg); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg.fill()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// decode lays the YAML document in data over cfg.
func decode(data []byte, cfg *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file: the defaults
		}
		return &keyError{msg: syntaxError(data, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return &keyError{msg: "more than one YAML document"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		return &keyError{msg: fmt.Sprintf("line %d: the document must be a mapping", root.Line)}
	}
	var types *yaml.Node
	rest := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "device_types" {
			types = root.Content[i+1]
			continue
		}
		rest.Content = append(rest.Content, root.Content[i], root.Content[i+1])
	}
	if err := decodeNode(rest, cfg, ""); err != nil {
		return err
	}
	if types != nil {
		params, err := commandParams(types)
		if err != nil {
			return err
		}
		dts := map[string]devicetype.Type{}
		if err := decodeNode(types, &dts, "device_types"); err != nil {
			return err
		}
		for name, ps := range params {
			t := dts[name]
			t.CommandParams = ps
			dts[name] = t
		}
		cfg.DeviceTypes = cfg.DeviceTypes[:0]
		names := make([]string, 0, len(dts))
		for name := range dts {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			t := dts[name]
			t.Name = name
			cfg.DeviceTypes = append(cfg.DeviceTypes, t)
		}
	}
	return nil
}

// envVars maps each DEVICEHUB_* variable to the setting it overrides.
var envVars = []struct {
	name string
	set  func(*Config, string)
}{
	{"DEVICEHUB_DATA_DIR", func(c *Config, v string) { c.DataDir = v }},
	{"DEVICEHUB_LOG_LEVEL", func(c *Config, v string) { c.Log.Level = v }},
	{"DEVICEHUB_LOG_FORMAT", func(c *Config, v string) { c.Log.Format = v }},
	{"DEVICEHUB_MQTT_ADDR", func(c *Config, v string) { c.MQTT.Addr = v }},
	{"DEVICEHUB_HTTP_ADDR", func(c *Config, v string) { c.HTTP.Addr = v }},
	{"DEVICEHUB_STORAGE_DRIVER", func(c *Config, v string) { c.Storage.Driver = v }},
	{"DEVICEHUB_SQLITE_PATH", func(c *Config, v string) { c.Storage.SQLite.Path = v }},
	{"DEVICEHUB_POSTGRES_DSN", func(c *Config, v string) { c.Storage.Postgres.DSN = v }},
	{"DEVICEHUB_CLUSTER_NODE_ID", func(c *Config, v string) { c.Cluster.NodeID = v }},
	{"DEVICEHUB_MQTT_EXTERNAL_PASSWORD", func(c *Config, v string) { c.MQTT.External.Password = v }},
	{"DEVICEHUB_REGISTRATION_SHARED_SECRET", func(c *Config, v string) { c.Registration.SharedSecret = v }},
}

func applyEnv(c *Config, env func(string) (string, bool)) {
	for _, e := range envVars {
		if v, ok := env(e.name); ok {
			e.set(c, v)
		}
	}
}

func applyFlags(c *Config, o Overrides) {
	if o.DataDir != nil {
		c.DataDir = *o.DataDir
	}
	if o.MQTTAddr != nil {
		c.MQTT.Addr = *o.MQTTAddr
	}
	if o.HTTPAddr != nil {
		c.HTTP.Addr = *o.HTTPAddr
	}
}

// fill sets the defaults that depend on other settings.
func (c *Config) fill() {
	if c.Storage.SQLite.Path == "" && c.DataDir != "" {
		c.Storage.SQLite.Path = filepath.Join(c.DataDir, "devicehub.db")
	}
}

// Validate reports the first problem with the configuration, naming its key.
func (c *Config) Validate() error {
	for _, check := range []func() error{c.checkTop, c.checkMQTT, c.checkStorage, c.checkIngest, c.checkProvisioning, c.checkMonitors, c.checkDeviceConfig, c.checkFirmware, c.checkCommands, c.checkTypes, c.checkAlerts, c.checkRetention, c.checkCluster, c.checkExternalBroker, c.checkRuntime} {
		if err := check(); err != nil {
			return fmt.Errorf("config: %w", err)
		}
	}
	return nil
}

func (c *Config) checkProvisioning() error {
	if s := c.Registration.SharedSecret; s != "" && len(s) < 16 {
		return invalid("registration.shared_secret", "must be at least 16 characters (or empty to turn self-registration off)")
	}
	if c.Provisioning.OperationTTL < time.Minute {
		return invalid("provisioning.operation_ttl", "must be at least 1m")
	}
	if c.Provisioning.RotationOverlap < 0 {
		return invalid("provisioning.rotation_overlap", "must not be negative")
	}
	return nil
}

func (c *Config) checkDeviceConfig() error {
	if c.DeviceConfig.HistoryKeep < 1 || c.DeviceConfig.HistoryKeep > 1000 {
		return invalid("device_config.history_keep", "must be from 1 to 1000")
	}
	for i, p := range c.DeviceConfig.BackendTemplates {
		if p == "" {
			return invalid(fmt.Sprintf("device_config.backend_templates[%d]", i), "must not be empty")
		}
	}
	return nil
}

func invalid(key, format string, args ...any) error {
	return &keyError{key: key, msg: fmt.Sprintf(format, args...)}
}

// keyError is a problem with one key.
type keyError struct{ key, msg string }

func (e *keyError) Error() string {
	if e.key == "" {
		return e.msg
	}
	return e.key + ": " + e.msg
}

func (e *keyError) Unwrap() error { return ErrInvalid }

// prefixError puts a key path in front of a nested check's error, which
// starts with the key relative to that path.
type prefixError struct {
	prefix string
	err    error
}

func (e *prefixError) Error() string   { return e.prefix + "." + e.err.Error() }
func (e *prefixError) Unwrap() []error { return []error{ErrInvalid, e.err} }

func oneOf(key, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return invalid(key, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
}

func atLeast(key string, v, min int64) error {
	if v < min {
		return invalid(key, "must be at least %d", min)
	}
	return nil
}

func checkAddr(key, addr string, required bool) error {
	if addr == "" {
		if required {
			return invalid(key, "must not be empty")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return invalid(key, "must be host:port, got %q", addr)
	}
	return nil
}

func (c *Config) checkTop() error {
	if c.DataDir == "" {
		return invalid("data_dir", "must not be empty")
	}
	if err := oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error"); err != nil {
		return err
	}
	if err := oneOf("log.format", c.Log.Format, "text", "json"); err != nil {
		return err
	}
	if err := checkAddr("http.addr", c.HTTP.Addr, true); err != nil {
		return err
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{{"http.read_timeout", c.HTTP.ReadTimeout}, {"http.write_timeout", c.HTTP.WriteTimeout}, {"http.idle_timeout", c.HTTP.IdleTimeout}} {
		if d.v < time.Second {
			return invalid(d.key, "must be at least 1s, got %s", d.v)
		}
	}
	if c.HTTP.WriteTimeout < MinWriteTimeout {
		return invalid("http.write_timeout", "must be at least %s (a command's ?wait= holds a request up to 50s, and its answer must still be written), got %s",
			MinWriteTimeout, c.HTTP.WriteTimeout)
	}
	if c.BrokerAuth.Enabled {
		if c.BrokerAuth.Addr == "" {
			return invalid("broker_auth.addr", "required when broker_auth.enabled (the endpoints are never served on the public http.addr)")
		}
		if err := checkAddr("broker_auth.addr", c.BrokerAuth.Addr, true); err != nil {
			return err
		}
	}
	if c.HTTP.MaxConnections < 0 {
		return invalid("http.max_connections", "must not be negative (0: derived from the open-file limit)")
	}
	if c.MQTT.MaxConnections < 0 {
		return invalid("mqtt.max_connections", "must not be negative (0: derived from the open-file limit)")
	}
	if err := atLeast("commit.max_batch", int64(c.Commit.MaxBatch), 1); err != nil {
		return err
	}
	if c.Commit.Linger < 0 {
		return invalid("commit.linger", "must not be negative")
	}
	if err := atLeast("commit.queue_size", int64(c.Commit.QueueSize), 1); err != nil {
		return err
	}
	if c.Commit.StopTimeout <= 0 || c.Commit.StopTimeout > maxStopWait {
		return invalid("commit.stop_timeout", "must be more than 0 and at most %s, got %s", maxStopWait, c.Commit.StopTimeout)
	}
	return atLeast("events.subscriber_buffer", int64(c.Events.SubscriberBuffer), 1)
}

// maxMQTTPacket is the largest packet MQTT's variable byte integer allows.
const maxMQTTPacket = 268435455

func (c *Config) checkMQTT() error {
	m := c.MQTT
	if err := checkAddr("mqtt.addr", m.Addr, false); err != nil {
		return err
	}
	if err := checkAddr("mqtt.ws_addr", m.WSAddr, false); err != nil {
		return err
	}
	if err := checkAddr("mqtt.tls.addr", m.TLS.Addr, false); err != nil {
		return err
	}
	if m.TLS.Addr != "" {
		if m.TLS.CertFile == "" {
			return invalid("mqtt.tls.cert_file", "required when mqtt.tls.addr is set")
		}
		if m.TLS.KeyFile == "" {
			return invalid("mqtt.tls.key_file", "required when mqtt.tls.addr is set")
		}
	} else if m.TLS.ClientCAFile != "" {
		return invalid("mqtt.tls.client_ca_file", "needs mqtt.tls.addr")
	}
	if m.Addr == "" && m.TLS.Addr == "" && m.WSAddr == "" && !m.External.Enabled() {
		return invalid("mqtt.addr", "no MQTT listener: set mqtt.addr, mqtt.tls.addr or mqtt.ws_addr")
	}
	if err := atLeast("mqtt.max_packet_size", int64(m.MaxPacketSize), 1024); err != nil {
		return err
	}
	if m.MaxPacketSize > maxMQTTPacket {
		return invalid("mqtt.max_packet_size", "must be at most %d", maxMQTTPacket)
	}
	if err := atLeast("mqtt.max_clients", int64(m.MaxClients), 1); err != nil {
		return err
	}
	if m.ReceiveMaximum < 1 || m.ReceiveMaximum > 65535 {
		return invalid("mqtt.receive_maximum", "must be between 1 and 65535")
	}
	if m.MaxSessionExpiry < 0 {
		return invalid("mqtt.max_session_expiry", "must not be negative")
	}
	if err := atLeast("mqtt.write_queue", int64(m.WriteQueue), 1); err != nil {
		return err
	}
	if m.WriterIdle <= 0 || m.WriterIdle > maxWriterIdle {
		return invalid("mqtt.writer_idle", "must be more than 0 and at most %s, got %s", maxWriterIdle, m.WriterIdle)
	}
	if m.ReadBufferBytes < minReadBuffer || m.ReadBufferBytes > maxReadBuffer {
		return invalid("mqtt.read_buffer_bytes", "must be from %d to %d bytes (256B to 1MiB), got %d", minReadBuffer, maxReadBuffer, m.ReadBufferBytes)
	}
	if m.ShutdownGrace <= 0 || m.ShutdownGrace > maxStopWait {
		return invalid("mqtt.shutdown_grace", "must be more than 0 and at most %s, got %s", maxStopWait, m.ShutdownGrace)
	}
	return nil
}

// Bounds of the per-connection broker settings. A writer that idles for
// more than an hour is a goroutine per subscriber kept for nothing; a read
// buffer outside 256 B..1 MiB is either a read per few bytes or a
// megabyte per idle device.
const (
	maxWriterIdle = time.Hour
	// maxStopWait bounds the waits of a stop (mqtt.shutdown_grace,
	// commit.stop_timeout): a stop that takes longer is a hang.
	maxStopWait        = 10 * time.Minute
	minReadBuffer Size = 256
	maxReadBuffer      = MiB
)

func (c *Config) checkStorage() error {
	s := c.Storage
	if s.MinFreeBytes < 0 {
		return invalid("storage.min_free_bytes", "must not be negative (0 refuses nothing)")
	}
	if s.SpaceCheckInterval < 10*time.Millisecond {
		return invalid("storage.space_check_interval", "must be at least 10ms")
	}
	if err := oneOf("storage.driver", s.Driver, "sqlite", "postgres"); err != nil {
		return err
	}
	switch s.Driver {
	case "sqlite":
		if err := oneOf("storage.sqlite.synchronous", s.SQLite.Synchronous, "off", "normal", "full", "extra"); err != nil {
			return err
		}
		if c := s.SQLite.CacheSize; c != 0 && (c < MiB || c > 16*GiB) {
			return invalid("storage.sqlite.cache_size", "must be 0 (sized by the fleet) or from 1MiB to 16GiB, got %d", c)
		}
		if err := s.SQLite.MessageLog.check(c.MQTT.ReceiveMaximum); err != nil {
			return err
		}
		return s.SQLite.ReadingsHead.check()
	case "postgres":
		if s.Postgres.DSN == "" {
			return invalid("storage.postgres.dsn", "required when storage.driver is postgres")
		}
	}
	return nil
}

func (m MessageLogConfig) check(receiveMaximum int) error {
	const key = "storage.sqlite.message_log."
	if err := atLeast(key+"head_messages", int64(m.HeadMessages), 100); err != nil {
		return err
	}
	if m.HeadBytes < 64*KiB {
		return invalid(key+"head_bytes", "must be at least 64KiB, got %d", m.HeadBytes)
	}
	if m.HeadAge < time.Second {
		return invalid(key+"head_age", "must be at least 1s, got %s", m.HeadAge)
	}
	// The window must cover what a device may resend after a reconnect:
	// its unacknowledged messages, at most mqtt.receive_maximum. It holds
	// 8 bytes a msg_id per device that sent one lately (goal 6: at most
	// 16 KiB a connected device in all; the default 1000 is 8 KiB).
	if m.DedupeWindow < receiveMaximum || m.DedupeWindow > 65535 {
		return invalid(key+"dedupe_window", "must be from mqtt.receive_maximum (%d) to 65535, got %d", receiveMaximum, m.DedupeWindow)
	}
	if m.DedupeIdle < time.Second {
		return invalid(key+"dedupe_idle", "must be at least 1s, got %s", m.DedupeIdle)
	}
	return nil
}

func (h ReadingsHeadConfig) check() error {
	const key = "storage.sqlite.readings_head."
	if err := atLeast(key+"max_readings", int64(h.MaxReadings), 100); err != nil {
		return err
	}
	if h.MaxBytes < 64*KiB {
		return invalid(key+"max_bytes", "must be at least 64KiB, got %d", h.MaxBytes)
	}
	if h.MaxAge < time.Second {
		return invalid(key+"max_age", "must be at least 1s, got %s", h.MaxAge)
	}
	return nil
}

func (c *Config) checkIngest() error {
	in := c.Ingest
	if err := atLeast("ingest.max_payload_bytes", int64(in.MaxPayloadBytes), 1); err != nil {
		return err
	}
	if in.MaxPayloadBytes > c.MQTT.MaxPacketSize {
		return invalid("ingest.max_payload_bytes", "must not exceed mqtt.max_packet_size (%d)", c.MQTT.MaxPacketSize)
	}
	if in.RateLimit.Rate < 0 || in.RateLimit.Rate != in.RateLimit.Rate {
		return invalid("ingest.rate_limit.rate", "must not be negative")
	}
	if in.RateLimit.Rate > 0 && in.RateLimit.Burst < 1 {
		return invalid("ingest.rate_limit.burst", "must be at least 1")
	}
	if err := atLeast("ingest.chunk_memory", int64(in.ChunkMemory), int64(in.MaxPayloadBytes)); err != nil {
		return err
	}
	if in.ChunkTimeout < time.Second {
		return invalid("ingest.chunk_timeout", "must be at least 1s")
	}
	return atLeast("ingest.max_readings_per_message", int64(in.MaxReadingsPerMessage), 1)
}

func (c *Config) checkTypes() error {
	for i := range c.DeviceTypes {
		t := &c.DeviceTypes[i]
		if err := t.Check(); err != nil {
			return &prefixError{prefix: "device_types." + t.Name, err: err}
		}
	}
	if dt := c.Registration.DefaultType; dt != "" {
		found := false
		for _, t := range c.DeviceTypes {
			found = found || t.Name == dt
		}
		if !found {
			return invalid("registration.default_type", "%q is not a declared device type", dt)
		}
	}
	return nil
}

// maxSyntaxSearchLines bounds the files whose syntax errors are located
// line by line.
const maxSyntaxSearchLines = 5000

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError returns the message of a YAML syntax error with the line
// where the document stops being valid. yaml.v3 reports the line where
// the enclosing block starts (often line 1 or the section's key), not the
// line at fault: a line indented one space too far or too little in
// device_types would be reported at device_types. The line at fault is the
// first line such that the lines up to it fail to parse with the same
// message.
func syntaxError(data []byte, err error) string {
	msg := err.Error()
	m := yamlLineRE.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	reported, problem := m[1], m[2]
	lines := bytes.SplitAfter(data, []byte("\n"))
	if i, _ := strconv.Atoi(reported); i >= 1 && i <= len(lines) && bytes.HasPrefix(bytes.TrimLeft(lines[i-1], " "), []byte("\t")) {
		return msg + " (YAML indents with spaces, not tabs)"
	}
	if len(lines) > maxSyntaxSearchLines {
		return msg // each step parses a prefix: keep the search small
	}
	end := 0
	for i, l := range lines {
		end += len(l)
		var n yaml.Node
		perr := yaml.Unmarshal(data[:end], &n)
		if perr == nil {
			continue
		}
		pm := yamlLineRE.FindStringSubmatch(perr.Error())
		if pm == nil || pm[2] != problem {
			continue
		}
		if line := strconv.Itoa(i + 1); line != reported {
			return fmt.Sprintf("yaml: line %s: %s (check the indentation and brackets of line %s)", line, problem, line)
		}
		return msg
	}
	return msg
}
