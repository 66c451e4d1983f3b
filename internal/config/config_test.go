package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func noEnv(string) (string, bool) { return "", false }

func TestLoadGood(t *testing.T) {
	cfg, err := Load("testdata/good/full.yml", noEnv, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"data_dir", cfg.DataDir, "/var/lib/devicehub"},
		{"log.format", cfg.Log.Format, "json"},
		{"mqtt.max_packet_size", cfg.MQTT.MaxPacketSize, 512 * KiB},
		{"mqtt.tls.addr", cfg.MQTT.TLS.Addr, ":8883"},
		{"mqtt.max_session_expiry", cfg.MQTT.MaxSessionExpiry, 30 * time.Minute},
		{"storage.driver", cfg.Storage.Driver, "postgres"},
		{"mqtt.max_connections", cfg.MQTT.MaxConnections, 6000},
		{"mqtt.write_queue", cfg.MQTT.WriteQueue, 2048},
		{"mqtt.writer_idle", cfg.MQTT.WriterIdle, 500 * time.Millisecond},
		{"mqtt.read_buffer_bytes", cfg.MQTT.ReadBufferBytes, 4 * KiB},
		{"http.max_connections", cfg.HTTP.MaxConnections, 500},
		{"http.read_timeout", cfg.HTTP.ReadTimeout, 20 * time.Second},
		{"http.idle_timeout", cfg.HTTP.IdleTimeout, 15 * time.Second},
		{"http.write_timeout (default)", cfg.HTTP.WriteTimeout, time.Minute},
		{"ingest.max_payload_bytes", cfg.Ingest.MaxPayloadBytes, Size(131072)},
		{"ingest.rate_limit.burst", cfg.Ingest.RateLimit.Burst, 20},
		{"ingest.chunk_memory", cfg.Ingest.ChunkMemory, 16 * MiB},
		{"ingest.chunk_timeout", cfg.Ingest.ChunkTimeout, time.Minute},
		{"commit.linger", cfg.Commit.Linger, 2 * time.Millisecond},
		{"events.subscriber_buffer", cfg.Events.SubscriberBuffer, 1024},
		{"storage.min_free_bytes", cfg.Storage.MinFreeBytes, Size(1 << 30)},
		{"retention.readings", cfg.Retention.Readings, 720 * time.Hour},
		{"retention.readings_by_type.Door", cfg.Retention.ReadingsByType["Door"], 8760 * time.Hour},
		{"retention.message_payloads", cfg.Retention.MessagePayloads, 168 * time.Hour},
		{"retention.messages", cfg.Retention.Messages, 2160 * time.Hour},
		{"retention.events", cfg.Retention.Events, 720 * time.Hour},
		{"retention.interval", cfg.Retention.Interval, 30 * time.Second},
		{"retention.rollups", cfg.Retention.Rollups, true},
		{"retention.rollups_1m", cfg.Retention.Rollups1m, 2160 * time.Hour},
		{"retention.batch", cfg.Retention.Batch, 500},
		{"device type count", len(cfg.DeviceTypes), 2},
		{"types sorted", cfg.DeviceTypes[0].Name, "Door"},
		{"door timeout", cfg.DeviceTypes[0].HeartbeatTimeout, 10 * time.Minute},
		{"door required", cfg.DeviceTypes[0].Fields["open"].Required, true},
		{"door rate", cfg.DeviceTypes[0].RateLimit.Burst, 5},
		{"weather name", cfg.DeviceTypes[1].Name, "WeatherStation"},
		{"weather heartbeat", cfg.DeviceTypes[1].HeartbeatInterval, 60 * time.Second},
		{"weather min", *cfg.DeviceTypes[1].Fields["temperature"].Min, -60.0},
		{"weather unit", cfg.DeviceTypes[1].Fields["humidity"].Unit, "percent"},
		{"weather commands", strings.Join(cfg.DeviceTypes[1].Commands, ","), "reboot,set_interval"},
		{"door commands (mapping form)", strings.Join(cfg.DeviceTypes[0].Commands, ","), "lock,unlock"},
		{"door command params", *cfg.DeviceTypes[0].CommandParams["unlock"].Params["after"].Max, 3600.0},
		{"door command without params", len(cfg.DeviceTypes[0].CommandParams), 1},
		{"commands.resend_interval", cfg.Commands.ResendInterval, 10 * time.Second},
		{"cluster.node_id", cfg.Cluster.NodeID, "node-a"},
		{"cluster.nats", strings.Join(cfg.Cluster.NATS, ","), "nats://10.0.0.1:4222,nats://10.0.0.2:4222"},
		{"cluster.lease_ttl", cfg.Cluster.LeaseTTL, 6 * time.Second},
		{"cluster.renew (default)", cfg.Cluster.Renew, 2 * time.Second},
		{"cluster.log_poll (default)", cfg.Cluster.LogPoll, time.Second},
		{"runtime.gc_percent", cfg.Runtime.GCPercent, 200},
		{"runtime.memory_limit_mb", cfg.Runtime.MemoryLimitMB, 2048},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
}

func TestLoadDefaults(t *testing.T) {
	for _, path := range []string{"", "testdata/good/empty.yml"} {
		cfg, err := Load(path, noEnv, Overrides{})
		if err != nil {
			t.Fatalf("%q: %v", path, err)
		}
		want := Default()
		want.fill()
		if cfg.MQTT != want.MQTT || cfg.Storage != want.Storage || cfg.Ingest != want.Ingest ||
			cfg.Commit != want.Commit || cfg.DataDir != want.DataDir || cfg.HTTP != want.HTTP || cfg.Runtime != want.Runtime {
			t.Errorf("%q: got %+v, want the defaults %+v", path, cfg, want)
		}
		if got, want := cfg.Storage.SQLite.Path, filepath.Join("devicehub-data", "devicehub.db"); got != want {
			t.Errorf("sqlite path = %q, want %q", got, want)
		}
	}
	cfg, err := Load("testdata/good/minimal.yml", noEnv, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.DeviceTypes) != 1 || cfg.DeviceTypes[0].Name != "Sensor" {
		t.Errorf("device types = %+v", cfg.DeviceTypes)
	}
}

func TestLoadBad(t *testing.T) {
	tests := []struct {
		file string
		want string // the error message after "config: testdata/bad/<file>.yml: " or "config: "
	}{
		{"unknown_top_key", "dat_dir: line 1: unknown key"},
		{"unknown_nested_key", "mqtt.max_pakcet_size: line 2: unknown key"},
		{"packet_too_small", "mqtt.max_packet_size: must be at least 1024"},
		{"bad_size", `mqtt.max_packet_size: line 2: cannot parse "12 parsecs" as a size: unknown unit "parsecs"`},
		{"bad_duration", `mqtt.max_session_expiry: line 2: cannot parse "60" as a duration`},
		{"bad_int", `mqtt.max_clients: line 2: cannot use "many" as an integer`},
		{"bad_field_type", `device_types.WeatherStation.fields.temperature.type: unknown type "floot"`},
		{"bad_type_duration", `device_types.WeatherStation.heartbeat_interval: line 3: cannot parse "soon" as a duration`},
		{"unknown_type_key", "device_types.WeatherStation.heartbeat: line 3: unknown key"},
		{"bad_type_name", `device_types.1Station.name "1Station": must match`},
		{"min_above_max", "device_types.T.fields.t: min 10 is greater than max 5"},
		{"postgres_without_dsn", "storage.postgres.dsn: required when storage.driver is postgres"},
		{"bad_driver", `storage.driver: must be one of sqlite, postgres, got "mysql"`},
		{"message_log_small_window", `storage.sqlite.message_log.dedupe_window: must be from mqtt.receive_maximum (64) to 65535, got 10`},
		{"message_log_small_head", `storage.sqlite.message_log.head_messages: must be at least 100`},
		{"sqlite_small_cache", `storage.sqlite.cache_size: must be 0 (sized by the fleet) or from 1MiB to 16GiB, got 65536`},
		{"readings_head_small", `storage.sqlite.readings_head.max_readings: must be at least 100`},
		{"readings_head_short_age", `storage.sqlite.readings_head.max_age: must be at least 1s, got 10ms`},
		{"bad_log_level", `log.level: must be one of debug, info, warn, error, got "loud"`},
		{"bad_log_format", `log.format: must be one of text, json, got "xml"`},
		{"tls_without_cert", "mqtt.tls.cert_file: required when mqtt.tls.addr is set"},
		{"bad_http_addr", `http.addr: must be host:port, got "8080"`},
		{"short_http_timeout", `http.idle_timeout: must be at least 1s, got 10ms`},
		{"short_write_timeout", `http.write_timeout: must be at least 1m0s (a command's ?wait= holds a request up to 50s, and its answer must still be written), got 30s`},
		{"broker_auth_without_addr", `broker_auth.addr: required when broker_auth.enabled (the endpoints are never served on the public http.addr)`},
		{"negative_connections", `mqtt.max_connections: must not be negative (0: derived from the open-file limit)`},
		{"not_a_mapping", "line 1: the document must be a mapping"},
		{"retention_unknown_type", `retention.readings_by_type.Toaster: no device type "Toaster" is declared`},
		{"retention_payloads_above_messages", "retention.message_payloads: must not exceed retention.messages"},
		{"retention_negative", "retention.events: must not be negative (0 keeps forever)"},
		{"retention_rollups_off", "retention.rollups: must be true when retention.rollups_1m or rollups_1h is set"},
		{"syntax", "yaml: line 1: did not find expected ',' or '}'"},
		{"indentation", "yaml: line 5: did not find expected key (check the indentation and brackets of line 5)"},
		{"tab", "yaml: line 3: found character that cannot start any token (YAML indents with spaces, not tabs)"},
		{"duplicate_key", "log: line 2: duplicate key"},
		{"negative_linger", "commit.linger: must not be negative"},
		{"payload_above_packet", "ingest.max_payload_bytes: must not exceed mqtt.max_packet_size (262144)"},
		{"bad_burst", "ingest.rate_limit.burst: must be at least 1"},
		{"section_not_mapping", "mqtt: line 1: must be a mapping, not a value"},
		{"commands_not_list", "device_types.T.commands: line 3: must be a list"},
		{"bad_command_param", `device_types.T.commands.set.params.n.type: unknown type "integer"`},
		{"bad_command_param_key", "device_types.T.commands.set.parameters: line 4: unknown key"},
		{"short_resend", "commands.resend_interval: must be at least 1s"},
		{"short_shared_secret", "registration.shared_secret: must be at least 16 characters"},
		{"unknown_default_type", `registration.default_type: "Missing" is not a declared device type`},
		{"short_operation_ttl", "provisioning.operation_ttl: must be at least 1m"},
		{"short_chunk_timeout", "ingest.chunk_timeout: must be at least 1s"},
		{"small_chunk_memory", "ingest.chunk_memory: must be at least 65536"},
		{"alert_rule_bad_when", `alerts.rules.Thermostat[0]: rule "too_hot": when: at column 14: expected a number, found ">"`},
		{"alert_rule_unknown_type", `alerts.rules.Thermostatt: "Thermostatt" is not a declared device type`},
		{"alert_rule_unknown_key", `alerts.rules.Thermostat[0].severty: line 8: unknown key`},
		{"cluster_on_sqlite", "cluster: cluster mode needs storage.driver: postgres (every node shares one database; a SQLite file belongs to one process), got storage.driver: sqlite"},
		{"cluster_without_nats", "cluster.nats: required in cluster mode"},
		{"cluster_bad_nats_url", `cluster.nats: entry 0: want a nats:// or tls:// URL with a host, got "127.0.0.1:4222"`},
		{"cluster_short_log_poll", "cluster.log_poll: must be at least 10ms, got 1ms"},
		{"alert_rule_twice", `alerts.rules.Thermostat[0].name: rule "hot" is declared twice (also at alerts.rules.Boiler[0])`},
		{"runtime_gc_percent_zero", "runtime.gc_percent: must be from 1 to 100000, or -1 to collect only at runtime.memory_limit_mb, got 0"},
		{"runtime_gc_off_without_limit", "runtime.gc_percent: -1 (collect only at the memory limit) needs runtime.memory_limit_mb"},
		{"runtime_small_memory_limit", "runtime.memory_limit_mb: must be 0 (no limit) or from 32 to 1073741824, got 8"},
		{"runtime_bad_gc_percent", `runtime.gc_percent: line 1: cannot use "lots" as an integer`},
	}
	files, _ := filepath.Glob("testdata/bad/*.yml")
	if len(files) != len(tests) {
		t.Errorf("%d bad files but %d table rows: every bad file needs its expected error", len(files), len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := "testdata/bad/" + tt.file + ".yml"
			_, err := Load(path, noEnv, Overrides{})
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "config: "), path+": ")
			if !strings.HasPrefix(msg, tt.want) {
				t.Errorf("error\n  %s\nwant it to start with\n  %s", msg, tt.want)
			}
		})
	}
}

func TestRuntime(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    RuntimeConfig
		wantErr string
	}{
		{"defaults", "", RuntimeConfig{GCPercent: 400, MemoryLimitMB: 1024}, ""},
		{"go's own default", "runtime: {gc_percent: 100}", RuntimeConfig{GCPercent: 100, MemoryLimitMB: 1024}, ""},
		{"no memory limit", "runtime: {memory_limit_mb: 0}", RuntimeConfig{GCPercent: 400, MemoryLimitMB: 0}, ""},
		{"collect only at the limit", "runtime: {gc_percent: -1, memory_limit_mb: 512}", RuntimeConfig{GCPercent: -1, MemoryLimitMB: 512}, ""},
		{"smallest", "runtime: {gc_percent: 1, memory_limit_mb: 32}", RuntimeConfig{GCPercent: 1, MemoryLimitMB: 32}, ""},
		{"off without a limit", "runtime: {gc_percent: -1, memory_limit_mb: 0}", RuntimeConfig{}, "runtime.gc_percent: -1 (collect only at the memory limit) needs runtime.memory_limit_mb"},
		{"below -1", "runtime: {gc_percent: -2}", RuntimeConfig{}, "runtime.gc_percent: must be from 1 to 100000"},
		{"too large", "runtime: {gc_percent: 100001}", RuntimeConfig{}, "runtime.gc_percent: must be from 1 to 100000"},
		{"negative limit", "runtime: {memory_limit_mb: -1}", RuntimeConfig{}, "runtime.memory_limit_mb: must be 0 (no limit) or from 32"},
		{"limit too small", "runtime: {memory_limit_mb: 31}", RuntimeConfig{}, "runtime.memory_limit_mb: must be 0 (no limit) or from 32"},
		{"unknown key", "runtime: {gogc: 100}", RuntimeConfig{}, "runtime.gogc: line 1: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parseCase(t, tt.yaml, tt.wantErr)
			if cfg == nil {
				return
			}
			if cfg.Runtime != tt.want {
				t.Errorf("runtime = %+v, want %+v", cfg.Runtime, tt.want)
			}
		})
	}
}

// TestMQTTConnectionTuning: the broker's per-connection knobs, their
// defaults and their bounds, each error naming its key.
func TestMQTTConnectionTuning(t *testing.T) {
	type tuning struct {
		writeQueue int
		writerIdle time.Duration
		readBuffer Size
	}
	tests := []struct {
		name    string
		yaml    string
		want    tuning
		wantErr string
	}{
		{"defaults", "", tuning{320, 2 * time.Second, KiB}, ""},
		{"all set", "mqtt: {write_queue: 64, writer_idle: 250ms, read_buffer_bytes: 2KiB}", tuning{64, 250 * time.Millisecond, 2 * KiB}, ""},
		{"read buffer as an integer", "mqtt: {read_buffer_bytes: 512}", tuning{320, 2 * time.Second, 512}, ""},
		{"smallest", "mqtt: {writer_idle: 1ns, read_buffer_bytes: 256B}", tuning{320, time.Nanosecond, 256}, ""},
		{"largest", "mqtt: {writer_idle: 1h, read_buffer_bytes: 1MiB}", tuning{320, time.Hour, MiB}, ""},
		{"zero write queue", "mqtt: {write_queue: 0}", tuning{}, "mqtt.write_queue: must be at least 1"},
		{"zero writer idle", "mqtt: {writer_idle: 0s}", tuning{}, "mqtt.writer_idle: must be more than 0 and at most 1h0m0s, got 0s"},
		{"negative writer idle", "mqtt: {writer_idle: -1s}", tuning{}, "mqtt.writer_idle: must be more than 0 and at most 1h0m0s, got -1s"},
		{"writer idle above an hour", "mqtt: {writer_idle: 61m}", tuning{}, "mqtt.writer_idle: must be more than 0 and at most 1h0m0s, got 1h1m0s"},
		{"writer idle without a unit", "mqtt: {writer_idle: 2}", tuning{}, `mqtt.writer_idle: line 1: cannot parse "2" as a duration`},
		{"read buffer too small", "mqtt: {read_buffer_bytes: 255}", tuning{}, "mqtt.read_buffer_bytes: must be from 256 to 1048576 bytes (256B to 1MiB), got 255"},
		{"read buffer zero", "mqtt: {read_buffer_bytes: 0}", tuning{}, "mqtt.read_buffer_bytes: must be from 256 to 1048576 bytes (256B to 1MiB), got 0"},
		{"read buffer too large", "mqtt: {read_buffer_bytes: 2MiB}", tuning{}, "mqtt.read_buffer_bytes: must be from 256 to 1048576 bytes (256B to 1MiB), got 2097152"},
		{"read buffer not a size", "mqtt: {read_buffer_bytes: lots}", tuning{}, `mqtt.read_buffer_bytes: line 1: cannot parse "lots" as a size`},
		{"misspelt key", "mqtt: {read_buffer_size: 2KiB}", tuning{}, "mqtt.read_buffer_size: line 1: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parseCase(t, tt.yaml, tt.wantErr)
			if cfg == nil {
				return
			}
			if got := (tuning{cfg.MQTT.WriteQueue, cfg.MQTT.WriterIdle, cfg.MQTT.ReadBufferBytes}); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/nope.yml", noEnv, Overrides{})
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want not exist", err)
	}
}

func ptr(s string) *string { return &s }

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yml")
	if err := os.WriteFile(file, []byte("data_dir: /from/file\nmqtt: {addr: ':1001'}\nhttp: {addr: ':2001'}\nlog: {level: warn}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"DEVICEHUB_MQTT_ADDR":      ":1002",
		"DEVICEHUB_HTTP_ADDR":      ":2002",
		"DEVICEHUB_LOG_FORMAT":     "json",
		"DEVICEHUB_STORAGE_DRIVER": "postgres",
		"DEVICEHUB_POSTGRES_DSN":   "postgres://x",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	tests := []struct {
		name           string
		env            func(string) (string, bool)
		flags          Overrides
		dataDir, mqtt  string
		http, logLevel string
	}{
		{"file only", noEnv, Overrides{}, "/from/file", ":1001", ":2001", "warn"},
		{"env over file", lookup, Overrides{}, "/from/file", ":1002", ":2002", "warn"},
		{"flags over env", lookup, Overrides{DataDir: ptr("/from/flag"), MQTTAddr: ptr(":1003")}, "/from/flag", ":1003", ":2002", "warn"},
		{"all flags", lookup, Overrides{DataDir: ptr("/d"), MQTTAddr: ptr(":1003"), HTTPAddr: ptr(":2003")}, "/d", ":1003", ":2003", "warn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(file, tt.env, tt.flags)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.DataDir != tt.dataDir || cfg.MQTT.Addr != tt.mqtt || cfg.HTTP.Addr != tt.http || cfg.Log.Level != tt.logLevel {
				t.Errorf("got data_dir %q mqtt %q http %q level %q", cfg.DataDir, cfg.MQTT.Addr, cfg.HTTP.Addr, cfg.Log.Level)
			}
			if cfg.Storage.SQLite.Path != filepath.Join(tt.dataDir, "devicehub.db") {
				t.Errorf("sqlite path %q does not follow data_dir %q", cfg.Storage.SQLite.Path, tt.dataDir)
			}
		})
	}
	cfg, err := Load(file, lookup, Overrides{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Log.Format != "json" || cfg.Storage.Driver != "postgres" || cfg.Storage.Postgres.DSN != "postgres://x" {
		t.Errorf("env not applied: %+v %+v", cfg.Log, cfg.Storage)
	}
}

func TestEnvValidated(t *testing.T) {
	env := func(k string) (string, bool) {
		if k == "DEVICEHUB_STORAGE_DRIVER" {
			return "postgres", true
		}
		return "", false
	}
	_, err := Load("", env, Overrides{})
	if err == nil || err.Error() != "config: storage.postgres.dsn: required when storage.driver is postgres" {
		t.Fatalf("err = %v", err)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		ok   bool
	}{
		{"1024", 1024, true},
		{"256KiB", 256 * 1024, true},
		{"1 MiB", 1 << 20, true},
		{"2GiB", 2 << 30, true},
		{"64KB", 64000, true},
		{"5B", 5, true},
		{"", 0, false},
		{"KiB", 0, false},
		{"1.5MiB", 0, false},
		{"-1", 0, false},
		{"99999999999999999999", 0, false},
		{"9999999999999GiB", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*/*.yml")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			if cfg != nil {
				t.Fatal("config returned with an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
	})
}

func TestAliasExpansionBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("device_types:\n  T0: &t {commands: [" + strings.Repeat("x, ", 999) + "x]}\n")
	for i := 1; i < 200; i++ {
		fmt.Fprintf(&b, "  T%d: *t\n", i)
	}
	_, err := Parse([]byte(b.String()))
	if err == nil || !strings.Contains(err.Error(), "aliases expanded") {
		t.Fatalf("err = %v", err)
	}
}

// TestStopWaits: mqtt.shutdown_grace and commit.stop_timeout, the bounds
// of a stop with a store that stopped answering (docs/ARCHITECTURE.md,
// "Shutdown").
func TestStopWaits(t *testing.T) {
	tests := []struct {
		name          string
		yaml          string
		grace, commit time.Duration
		wantErr       string
	}{
		{"defaults", "", 5 * time.Second, 5 * time.Second, ""},
		{"both set", "mqtt: {shutdown_grace: 2s}\ncommit: {stop_timeout: 30s}", 2 * time.Second, 30 * time.Second, ""},
		{"largest", "mqtt: {shutdown_grace: 10m}\ncommit: {stop_timeout: 10m}", 10 * time.Minute, 10 * time.Minute, ""},
		{"zero grace", "mqtt: {shutdown_grace: 0s}", 0, 0, "mqtt.shutdown_grace: must be more than 0 and at most 10m0s, got 0s"},
		{"grace too long", "mqtt: {shutdown_grace: 11m}", 0, 0, "mqtt.shutdown_grace: must be more than 0 and at most 10m0s, got 11m0s"},
		{"negative stop timeout", "commit: {stop_timeout: -1s}", 0, 0, "commit.stop_timeout: must be more than 0 and at most 10m0s, got -1s"},
		{"stop timeout without a unit", "commit: {stop_timeout: 5}", 0, 0, `commit.stop_timeout: line 1: cannot parse "5" as a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parseCase(t, tt.yaml, tt.wantErr)
			if cfg == nil {
				return
			}
			if cfg.MQTT.ShutdownGrace != tt.grace || cfg.Commit.StopTimeout != tt.commit {
				t.Fatalf("shutdown_grace %s, stop_timeout %s; want %s, %s", cfg.MQTT.ShutdownGrace, cfg.Commit.StopTimeout, tt.grace, tt.commit)
			}
		})
	}
}

// parseCase parses yaml; with wantErr set it checks that the error is
// ErrInvalid and starts with wantErr (after "config: ") and returns nil,
// else it fails on any error and returns the configuration.
func parseCase(t *testing.T, yaml, wantErr string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(yaml))
	if wantErr != "" {
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.HasPrefix(strings.TrimPrefix(err.Error(), "config: "), wantErr) {
			t.Fatalf("err = %v, want one starting with %q", err, wantErr)
		}
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestMonitorsQueueAndCacheBytes: monitors.queue_bytes, the memory bound
// of each monitor's queue, and monitors.encode_cache_bytes, that of the
// shared encodings: their defaults, sizes with units, their minimums.
func TestMonitorsQueueAndCacheBytes(t *testing.T) {
	tests := []struct {
		name             string
		yaml             string
		queue, encodings Size
		wantErr          string
	}{
		{"defaults", "", 8 * MiB, 32 * MiB, ""},
		{"queue with a unit", "monitors: {queue_bytes: 1GiB}", GiB, 32 * MiB, ""},
		{"queue smallest", "monitors: {queue_bytes: 64KiB}", 64 * KiB, 32 * MiB, ""},
		{"queue decimal", "monitors: {queue_bytes: 100kB}", 100_000, 32 * MiB, ""},
		{"queue below 64KiB", "monitors: {queue_bytes: 65535}", 0, 0, "monitors.queue_bytes: must be at least 64KiB, got 65535"},
		{"queue zero", "monitors: {queue_bytes: 0}", 0, 0, "monitors.queue_bytes: must be at least 64KiB, got 0"},
		{"queue negative", "monitors: {queue_bytes: -1}", 0, 0, `monitors.queue_bytes: line 1: cannot parse "-1" as a size`},
		{"queue not a size", "monitors: {queue_bytes: big}", 0, 0, `monitors.queue_bytes: line 1: cannot parse "big" as a size`},
		{"cache with a unit", "monitors: {encode_cache_bytes: 256MiB}", 8 * MiB, 256 * MiB, ""},
		{"cache smallest", "monitors: {encode_cache_bytes: 1MiB}", 8 * MiB, MiB, ""},
		{"cache below 1MiB", "monitors: {encode_cache_bytes: 512KiB}", 0, 0, "monitors.encode_cache_bytes: must be at least 1MiB, got 524288"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parseCase(t, tt.yaml, tt.wantErr)
			if cfg == nil {
				return
			}
			if cfg.Monitors.QueueBytes != tt.queue || cfg.Monitors.EncodeCacheBytes != tt.encodings {
				t.Errorf("monitors.queue_bytes = %d, encode_cache_bytes = %d, want %d and %d",
					cfg.Monitors.QueueBytes, cfg.Monitors.EncodeCacheBytes, tt.queue, tt.encodings)
			}
		})
	}
}

// TestMonitorsTailBytes: monitors.tail_bytes, the memory bound of the
// monitors' shared tail: its default, sizes with units, its minimum.
func TestMonitorsTailBytes(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		want    Size
		wantErr string
	}{
		{"default", "", 64 * MiB, ""},
		{"with a unit", "monitors: {tail_bytes: 256MiB}", 256 * MiB, ""},
		{"decimal unit", "monitors: {tail_bytes: 10MB}", 10_000_000, ""},
		{"an integer", "monitors: {tail_bytes: 2097152}", 2 * MiB, ""},
		{"smallest", "monitors: {tail_bytes: 1MiB}", MiB, ""},
		{"below 1MiB", "monitors: {tail_bytes: 1000KiB}", 0, "monitors.tail_bytes: must be at least 1MiB, got 1024000"},
		{"zero", "monitors: {tail_bytes: 0}", 0, "monitors.tail_bytes: must be at least 1MiB, got 0"},
		{"negative", "monitors: {tail_bytes: -1}", 0, `monitors.tail_bytes: line 1: cannot parse "-1" as a size`},
		{"not a size", "monitors: {tail_bytes: lots}", 0, `monitors.tail_bytes: line 1: cannot parse "lots" as a size`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := parseCase(t, tt.yaml, tt.wantErr)
			if cfg == nil {
				return
			}
			if cfg.Monitors.TailBytes != tt.want {
				t.Errorf("monitors.tail_bytes = %d, want %d", cfg.Monitors.TailBytes, tt.want)
			}
		})
	}
}
