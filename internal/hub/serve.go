package hub

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/devicehub/devicehub/internal/access"
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
	applyGC(planGC(cfg.Runtime, os.LookupEnv), log)
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
		printAdmin(os.Stderr, h.Admin(), filepath.Join(cfg.DataDir, "admin.token"))
	case err := <-errc:
		return err
	}
	return <-errc
}

// printAdmin tells the operator who started the hub about its admin token:
// the secret of a new one (on the terminal only, never in a log), or where
// the database's existing one is when this data directory lacks it.
func printAdmin(w io.Writer, b access.AdminBootstrap, path string) {
	switch {
	case b.Secret != "":
		if b.Replaced {
			fmt.Fprintf(w, "\n%s held a token this database does not know (another database, or revoked); it is replaced.", path)
		}
		fmt.Fprintf(w, "\nAdmin token (saved in %s, shown only now):\n  %s\n\n", path, b.Secret)
	case b.Existing != nil:
		fmt.Fprintf(w, "\nThis database already has an admin token (id %s, created %s), made by a hub with another data\n"+
			"directory; none was created here. To use the CLI on this machine, copy that hub's admin.token to\n"+
			"%s, or pass --token or set DEVICEHUB_TOKEN.\n\n", b.Existing.ID, b.Existing.CreatedAt.Format(time.RFC3339), path)
	}
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
