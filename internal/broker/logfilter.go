package broker

import (
	"context"
	"fmt"
	"log/slog"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// redactHandler is the slog.Handler the broker hands mochi. mochi logs
// whole packets in places (a second CONNECT on an open session is logged
// at WARN with the packet, password included), and what it logs is not
// ours to choose: so every attribute whose value is a packet, a CONNECT's
// parameters or a client is replaced by a summary that carries no
// credential and no payload, whatever the key and however deep in a
// group. No log line may carry a secret.
type redactHandler struct{ h slog.Handler }

func (r redactHandler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, rec.Message, rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redactAttr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redactAttr(a)
	}
	return redactHandler{r.h.WithAttrs(red)}
}

func (r redactHandler) WithGroup(name string) slog.Handler { return redactHandler{r.h.WithGroup(name)} }

func redactAttr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, x := range g {
			red[i] = redactAttr(x)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		if s, ok := summary(v.Any()); ok {
			return slog.String(a.Key, s)
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

// summary describes the values that may hold credentials or payloads.
func summary(v any) (string, bool) {
	switch x := v.(type) {
	case packets.Packet:
		return packetSummary(&x), true
	case *packets.Packet:
		if x == nil {
			return "<nil>", true
		}
		return packetSummary(x), true
	case packets.ConnectParams, *packets.ConnectParams:
		return "[connect parameters redacted]", true
	case *mqtt.Client:
		if x == nil {
			return "<nil>", true
		}
		return "client " + x.ID, true
	case mqtt.Client:
		return "client " + x.ID, true
	case []byte:
		return fmt.Sprintf("[%d bytes]", len(x)), true
	}
	return "", false
}

func packetSummary(pk *packets.Packet) string {
	name := packets.PacketNames[pk.FixedHeader.Type]
	if pk.FixedHeader.Type == packets.Connect {
		return fmt.Sprintf("%s client_id=%q (credentials redacted)", name, pk.Connect.ClientIdentifier)
	}
	if pk.TopicName != "" {
		return fmt.Sprintf("%s id=%d topic=%q payload=%d bytes", name, pk.PacketID, pk.TopicName, len(pk.Payload))
	}
	return fmt.Sprintf("%s id=%d", name, pk.PacketID)
}
