package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// MochiStats is what the mochi-alone reference reports at GET /stats.
type MochiStats struct {
	Received        int64 `json:"received"`         // messages its inline subscriber got
	MessagesDropped int64 `json:"messages_dropped"` // mochi's own drop counters
	InflightDropped int64 `json:"inflight_dropped"`
	Clients         int64 `json:"clients_connected"`
}

// RunMochi is the mochi-alone reference: the MQTT broker devicehub embeds,
// with the limits devicehub sets (internal/broker's defaults) except that
// the per-client write queue and inflight window are large, so that
// nothing is dropped under load, an allow-all auth hook and one inline
// subscriber on devices/# counting messages; no devicehub work. It serves
// until ctx ends and prints "mochi serving mqtt=ADDR stats=ADDR" on log.
func RunMochi(ctx context.Context, addr string, log io.Writer) error {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClients = 100000
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumClientWritesPending = 8192
	caps.MaximumSessionExpiryInterval = 3600
	caps.MaximumPacketSize = 256 << 10
	caps.ReceiveMaximum = 64
	caps.MaximumInflight = math.MaxUint16
	caps.TopicAliasMaximum = 16
	caps.MinimumProtocolVersion = 4
	srv := mqtt.New(&mqtt.Options{
		Capabilities:             caps,
		ClientNetWriteBufferSize: 2 << 10,
		ClientNetReadBufferSize:  2 << 10,
		Logger:                   slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelWarn})),
		SysTopicResendInterval:   60,
		InlineClient:             true,
	})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return fmt.Errorf("mochi: add hook: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("mochi: listen: %w", err)
	}
	if err := srv.AddListener(listeners.NewNet("tcp", ln)); err != nil {
		ln.Close()
		return fmt.Errorf("mochi: add listener: %w", err)
	}
	var received atomic.Int64
	if err := srv.Subscribe("devices/#", 1, func(cl *mqtt.Client, sub packets.Subscription, pk packets.Packet) {
		received.Add(1)
	}); err != nil {
		return fmt.Errorf("mochi: subscribe: %w", err)
	}
	statsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("mochi: listen stats: %w", err)
	}
	hs := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(MochiStats{
			Received:        received.Load(),
			MessagesDropped: atomic.LoadInt64(&srv.Info.MessagesDropped),
			InflightDropped: atomic.LoadInt64(&srv.Info.InflightDropped),
			Clients:         atomic.LoadInt64(&srv.Info.ClientsConnected),
		})
	})}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(statsLn) }()
	if err := srv.Serve(); err != nil {
		hs.Close()
		<-errc
		return fmt.Errorf("mochi: serve: %w", err)
	}
	fmt.Fprintf(log, "mochi serving mqtt=%s stats=%s\n", ln.Addr(), statsLn.Addr())
	<-ctx.Done()
	hs.Close()
	<-errc
	return srv.Close()
}
