// Package postgres implements every store interface of the hub on
// PostgreSQL, the shared state of a cluster of hub nodes.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

//go:embed migrations/*.sql
var migrations embed.FS

var (
	_ commit.Store     = (*Store)(nil)
	_ registry.Store   = (*Store)(nil)
	_ readings.Store   = (*Store)(nil)
	_ eventlog.Store   = (*Store)(nil)
	_ access.Store     = (*Store)(nil)
	_ messagelog.Store = (*Store)(nil)
)

// Options configure a PostgreSQL store.
type Options struct {
	// DSN is a libpq connection string or URL.
	DSN string
	// Schema, if set, is created if missing and used for every table
	// (tests use a fresh one each).
	Schema string
	// Logger receives migration messages (default: discard).
	Logger *slog.Logger
	// EventRangeMin is the fewest seqs a new event range spans (default
	// 65,536; a range is sized to about a day of events above that).
	// Tests set a few.
	EventRangeMin int64
}

// Store is the PostgreSQL store. Create it with Open and release it with
// Close.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	// eventRangeMin: Options.EventRangeMin.
	eventRangeMin int64
	// seen is the last_seen this node wrote per device: a patch that only
	// moves it by less than registry.SeenResolution is not written.
	seen *registry.SeenCache
}

// Open connects to the database and brings its schema up to date.
func Open(ctx context.Context, opts Options) (*Store, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		return nil, fmt.Errorf("postgres dsn: %w", err)
	}
	if opts.Schema != "" {
		if err := createSchema(ctx, cfg.ConnConfig, opts.Schema); err != nil {
			return nil, err
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = opts.Schema
	}
	if err := migrate(ctx, cfg.ConnConfig, log); err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect postgres: %w", err)
	}
	s := &Store{pool: pool, log: log, eventRangeMin: opts.EventRangeMin, seen: registry.NewSeenCache(registry.SeenResolution)}
	if s.eventRangeMin <= 0 {
		s.eventRangeMin = defaultEventRangeMin
	}
	// Rows without a partition go to the default one, so a failure here
	// only logs: Run tries again.
	s.ensureAhead(ctx)
	return s, nil
}

func createSchema(ctx context.Context, cc *pgx.ConnConfig, schema string) error {
	conn, err := pgx.ConnectConfig(ctx, cc.Copy())
	if err != nil {
		return fmt.Errorf("connect postgres: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS `+pgx.Identifier{schema}.Sanitize()); err != nil {
		return fmt.Errorf("create schema %s: %w", schema, err)
	}
	return nil
}

func migrate(ctx context.Context, cc *pgx.ConnConfig, log *slog.Logger) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	// Nodes of a cluster may start together: a session lock lets one
	// migrate while the others wait.
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	db := stdlib.OpenDB(*cc.Copy())
	defer db.Close()
	// Out of order: each domain numbers its migrations in its own range
	// (docs/ARCHITECTURE.md, "Adding a domain"), so a database may have a
	// higher range applied before a lower one lands.
	p, err := goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithDisableGlobalRegistry(true), goose.WithSessionLocker(locker), goose.WithAllowOutofOrder(true), goose.WithSlog(log))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate postgres: %w", err)
	}
	for _, r := range res {
		log.Info("applied migration", "version", r.Source.Version, "duration", r.Duration)
	}
	return nil
}

// Close closes the connection pool.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// errNoRows reports whether err is pgx's "no rows".
func errNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
