package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestExternalBroker(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want string // "" for valid; else the start of the error after "config: <file>: "
	}{
		{"minimal", `mqtt: {external: {url: "mqtt://broker:1883"}}`, ""},
		{"full", `mqtt: {external: {url: "mqtts://broker:8883", client_id: node-a, username: hub, password: pw, share_group: fleet, session_expiry: 2h, workers: 8, receive_maximum: 100, keep_alive: 10s}}`, ""},
		{"no embedded listener needed", `mqtt: {addr: "", external: {url: "tcp://broker:1883"}}`, ""},
		{"no port", `mqtt: {external: {url: "mqtt://broker"}}`, `mqtt.external.url: want mqtt://host:port or mqtts://host:port, got "mqtt://broker"`},
		{"not a url", `mqtt: {external: {url: "broker:1883"}}`, `mqtt.external.url: want mqtt://host:port`},
		{"bad scheme", `mqtt: {external: {url: "http://broker:1883"}}`, `mqtt.external.url: scheme must be mqtt, tcp, mqtts, tls or ssl, got "http"`},
		{"credentials in url", `mqtt: {external: {url: "mqtt://hub:pw@broker:1883"}}`, `mqtt.external.url: put the credentials in mqtt.external.username and password`},
		{"share group with slash", `mqtt: {external: {url: "mqtt://broker:1883", share_group: "a/b"}}`, `mqtt.external.share_group: must be 1-64 letters`},
		{"share group wildcard", `mqtt: {external: {url: "mqtt://broker:1883", share_group: "+"}}`, `mqtt.external.share_group: must be 1-64 letters`},
		{"bad client id", `mqtt: {external: {url: "mqtt://broker:1883", client_id: "a b"}}`, `mqtt.external.client_id: must be 1-128`},
		{"password without username", `mqtt: {external: {url: "mqtt://broker:1883", password: pw}}`, `mqtt.external.password: needs mqtt.external.username`},
		{"short session expiry", `mqtt: {external: {url: "mqtt://broker:1883", session_expiry: 10ms}}`, `mqtt.external.session_expiry: must be between 1s and 4294967295s`},
		{"negative workers", `mqtt: {external: {url: "mqtt://broker:1883", workers: -1}}`, `mqtt.external.workers: must be 1 to 4096, got -1`},
		{"receive maximum too big", `mqtt: {external: {url: "mqtt://broker:1883", receive_maximum: 70000}}`, `mqtt.external.receive_maximum: must be 1 to 65535`},
		{"keep alive", `mqtt: {external: {url: "mqtt://broker:1883", keep_alive: 100ms}}`, `mqtt.external.keep_alive: must be between 1s`},
		{"tls listener too", `mqtt: {tls: {addr: ":8883", cert_file: c, key_file: k}, external: {url: "mqtt://broker:1883"}}`, `mqtt.tls.addr: the embedded broker does not run with mqtt.external.url`},
		{"websocket listener too", `mqtt: {ws_addr: ":8081", external: {url: "mqtt://broker:1883"}}`, `mqtt.ws_addr: the embedded broker does not run with mqtt.external.url`},
		{"unknown key", `mqtt: {external: {url: "mqtt://broker:1883", share: x}}`, `mqtt.external.share: line 1: unknown key`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "devicehub.yml")
			if err := os.WriteFile(path, []byte(tt.yaml+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path, noEnv, Overrides{})
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, want %s", tt.want)
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

func TestExternalBrokerDefaults(t *testing.T) {
	tests := []struct {
		name, yaml, clientID string
	}{
		{"single node", `mqtt: {external: {url: "mqtt://broker:1883", username: hub}}`, "devicehub-hub"},
		{"cluster node", "mqtt: {external: {url: \"mqtt://broker:1883\", username: hub}}\nstorage: {driver: postgres, postgres: {dsn: \"postgres://db/x\"}}\ncluster: {node_id: node-b, nats: [\"nats://n:4222\"]}", "devicehub-node-b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "devicehub.yml")
			if err := os.WriteFile(path, []byte(tt.yaml+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			env := func(k string) (string, bool) {
				if k == "DEVICEHUB_MQTT_EXTERNAL_PASSWORD" {
					return "from-env", true
				}
				return "", false
			}
			cfg, err := Load(path, env, Overrides{})
			if err != nil {
				t.Fatal(err)
			}
			e := cfg.MQTT.External
			if e.ClientID != tt.clientID || e.ShareGroup != "devicehub" || e.SessionExpiry != time.Hour ||
				e.Workers != 64 || e.ReceiveMaximum != 1024 || e.KeepAlive != 30*time.Second || e.Password != "from-env" {
				t.Errorf("got %+v", e)
			}
		})
	}
}
