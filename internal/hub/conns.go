package hub

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/devicehub/devicehub/internal/config"
	"github.com/devicehub/devicehub/internal/fdlimit"
)

// connBudgets are the connection caps of MQTT and HTTP: each listener gets
// its own share of the open-file limit (or what the configuration says),
// so that neither can starve the other, or the store, of descriptors.
func connBudgets(cfg *config.Config) fdlimit.Budgets {
	b := fdlimit.Default()
	if cfg.MQTT.MaxConnections > 0 {
		b.MQTT = cfg.MQTT.MaxConnections
	}
	if cfg.HTTP.MaxConnections > 0 {
		b.HTTP = cfg.HTTP.MaxConnections
	}
	return b
}

// listenHTTP listens on addr with at most maxConns open connections; the
// excess is answered 503 and closed, counted and logged (sampled).
func (h *Hub) listenHTTP(name, addr string, maxConns int) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s %s: %w", name, addr, err)
	}
	var (
		mu   sync.Mutex
		last time.Time
	)
	refused := h.httpRefused.WithLabelValues(name)
	return &fdlimit.Listener{Listener: ln, Max: maxConns, Refuse: fdlimit.RefuseHTTP, Refused: func(total int64) {
		refused.Inc()
		mu.Lock()
		defer mu.Unlock()
		if time.Since(last) >= 10*time.Second {
			last = time.Now()
			h.log.Warn("http connection refused: connection limit reached", "listener", name, "max_connections", maxConns, "refused_total", total)
		}
	}}, nil
}

// newHTTPServer is an HTTP server with every timeout set: a slow body, a
// slow reader of the response and an idle keep-alive connection all end.
// The event stream sets its own deadlines.
func newHTTPServer(h http.Handler, c config.HTTPConfig, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(10*time.Second, c.ReadTimeout),
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// BrokerAuthAddr is the address of the broker auth listener ("" without).
func (h *Hub) BrokerAuthAddr() string {
	if h.authLn == nil {
		return ""
	}
	return h.authLn.Addr().String()
}
