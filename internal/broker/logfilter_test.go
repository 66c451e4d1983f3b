package broker

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// Finding 7: whatever mochi logs, a CONNECT's password never reaches the
// log, as a packet, a pointer, its parameters, in a group or in With.
func TestRedactHandler(t *testing.T) {
	const secret = "s3cret-password"
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect},
		Connect: packets.ConnectParams{ClientIdentifier: "dev1", Username: []byte("dev1"), Password: []byte(secret), PasswordFlag: true}}
	tests := []struct {
		name string
		log  func(l *slog.Logger)
	}{
		{"packet", func(l *slog.Logger) { l.Warn("error processing packet", "pk", pk) }},
		{"pointer", func(l *slog.Logger) { l.Warn("x", "packet", &pk) }},
		{"params", func(l *slog.Logger) { l.Info("x", "connect", pk.Connect) }},
		{"bytes", func(l *slog.Logger) { l.Info("x", "password", pk.Connect.Password) }},
		{"group", func(l *slog.Logger) { l.Info("x", slog.Group("g", "pk", pk)) }},
		{"with", func(l *slog.Logger) { l.With("pk", pk).Info("x") }},
		{"with group", func(l *slog.Logger) { l.WithGroup("g").Info("x", "pk", &pk) }},
	}
	for _, json := range []bool{false, true} {
		for _, tt := range tests {
			var buf bytes.Buffer
			var h slog.Handler = slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
			if json {
				h = slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
			}
			tt.log(slog.New(redactHandler{h}))
			if leaks(buf.String(), secret) || buf.Len() == 0 {
				t.Errorf("%s (json %v): %s", tt.name, json, buf.String())
			}
		}
	}
}

// leaks reports whether out holds secret plainly, base64-encoded (JSON's
// []byte) or as a list of byte values (%v of a []byte).
func leaks(out, secret string) bool {
	for _, form := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)),
		base64.RawStdEncoding.EncodeToString([]byte(secret)), strings.Trim(fmt.Sprint([]byte(secret)), "[]")} {
		if strings.Contains(out, form) {
			return true
		}
	}
	return false
}
