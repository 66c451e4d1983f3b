package hub

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/devicehub/devicehub/internal/config"
)

// Serve is `devicehub serve`: load the configuration (file, environment,
// flags), build the hub and run it until ctx is done.
func Serve(ctx context.Context, configPath string, o config.Overrides) error {
	cfg, err := config.Load(configPath, os.LookupEnv, o)
	if err != nil {
		return err
	}
	log := NewLogger(cfg.Log.Level, cfg.Log.Format)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	h, err := New(ctx, cfg, log)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- h.Run(ctx) }()
	select {
	case <-h.Ready():
		if h.AdminToken != "" {
			// Printed once, on the terminal of the operator who started the
			// hub for the first time; never logged.
			fmt.Fprintf(os.Stderr, "\nAdmin token (saved in %s, shown only now):\n  %s\n\n",
				filepath.Join(cfg.DataDir, "admin.token"), h.AdminToken)
		}
	case err := <-errc:
		return err
	}
	return <-errc
}

// NewLogger returns the process logger: text or JSON on stderr.
func NewLogger(level, format string) *slog.Logger {
	var lv slog.Level
	switch strings.ToLower(level) {
	case "debug":
		lv = slog.LevelDebug
	case "warn", "warning":
		lv = slog.LevelWarn
	case "error":
		lv = slog.LevelError
	default:
		lv = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: lv}
	if strings.ToLower(format) == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
