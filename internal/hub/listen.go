package hub

import (
	"errors"
	"fmt"
	"net"
	"syscall"

	"github.com/devicehub/devicehub/internal/config"
)

// listenSetting is a listen address of the configuration and the ways to
// change it.
type listenSetting struct {
	what, addr, flag, env, key string
}

func listenSettings(cfg *config.Config) []listenSetting {
	return []listenSetting{
		{"MQTT", cfg.MQTT.Addr, "--mqtt-addr", "DEVICEHUB_MQTT_ADDR", "mqtt.addr"},
		{"HTTP", cfg.HTTP.Addr, "--http-addr", "DEVICEHUB_HTTP_ADDR", "http.addr"},
		{"MQTT TLS", cfg.MQTT.TLS.Addr, "", "", "mqtt.tls.addr"},
		{"MQTT WebSocket", cfg.MQTT.WSAddr, "", "", "mqtt.ws_addr"},
		{"broker auth", cfg.BrokerAuth.Addr, "", "", "broker_auth.addr"},
	}
}

// explainAddrInUse rewrites an "address already in use" error of a
// listener into one that says which setting holds the address and how to
// change it: the first thing a newcomer meets on a machine where Mosquitto
// already holds 1883. Other errors are returned as they are.
func explainAddrInUse(err error, cfg *config.Config) error {
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return err
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Addr == nil {
		return err
	}
	_, port, perr := net.SplitHostPort(op.Addr.String())
	if perr != nil {
		return err
	}
	for _, s := range listenSettings(cfg) {
		if s.addr == "" {
			continue
		}
		if _, p, err := net.SplitHostPort(s.addr); err != nil || p != port {
			continue
		}
		how := s.key + " in the configuration file"
		if s.flag != "" {
			how = fmt.Sprintf("%s (e.g. %s :%s), the environment variable %s or %s", s.flag, s.flag, suggestPort(port), s.env, how)
		}
		hint := ""
		if s.what == "MQTT" {
			hint = " (another MQTT broker, such as Mosquitto?)"
		}
		return fmt.Errorf("the %s address %s is in use by another program%s: choose another with %s: %w",
			s.what, s.addr, hint, how, op)
	}
	return err
}

// suggestPort is the port one above p, as an example.
func suggestPort(p string) string {
	var n int
	if _, err := fmt.Sscanf(p, "%d", &n); err != nil || n <= 0 || n >= 65535 {
		return "1884"
	}
	return fmt.Sprint(n + 1)
}
