// Package sqlite implements every store interface of the hub on SQLite: the
// default, embedded storage of a single node.
//
// There is one writer connection (SQLite allows one writer at a time, and
// group commit makes one enough), a pool of reader connections, and a
// connection of the checkpointer, which copies the WAL into the database
// file off the commit path (see checkpoint.go); the database runs in WAL
// mode so that readers never wait for the writer.
package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pressly/goose/v3"
	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/throttle"
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

// Options configure a SQLite store.
type Options struct {
	// Path is the database file; it is created if missing.
	Path string
	// Synchronous is "full" (the default: a commit survives a power
	// loss) or "normal" (a commit survives a crash of the process only).
	Synchronous string
	// ReadConns is the size of the reader pool (default 4).
	ReadConns int
	// PageSize is the page size of a new database, in bytes (a power of
	// two from 512 to 65536; default DefaultPageSize). An existing
	// database keeps the page size it was created with: a WAL database
	// changes it only by VACUUM after leaving WAL mode.
	PageSize int
	// MessageLog bounds the message log's memory (msglog.go).
	MessageLog MessageLogOptions
	// ReadingsHead bounds the readings head's memory (readhead.go).
	ReadingsHead ReadingsHeadOptions
	// Logger receives migration and maintenance messages (default: discard).
	Logger *slog.Logger
	// Registerer, if set, receives the store's metrics (the message
	// log's, msglog_metrics.go, the writer's page cache and the
	// checkpoint's hold of the writer).
	Registerer prometheus.Registerer

	// CacheSize is the writer connection's page cache in bytes (SQLite's
	// cache_size); 0 sizes it by the fleet (cacheFor), again after every
	// checkpoint. Readers have their own.
	CacheSize int64
	// plainWAL makes the writer write the WAL through the unix VFS, one
	// write per frame header and page, as before walvfs.go (benchmarks).
	plainWAL bool
}

// Store is the SQLite store. Create it with Open and release it with Close.
type Store struct {
	// slowCommit is the duration from which a Commit is logged
	// (slowCommit; tests lower it), slowLogs bounds those lines
	// (slowLogEvery) and clock is the time it is given (time.Now; tests
	// set their own).
	slowCommit time.Duration
	slowLogs   throttle.Sampler
	clock      func() time.Time

	// compactHook, when set (tests), runs at the end of a compaction's
	// transaction; an error fails it.
	compactHook func() error

	w  *sql.DB // the one writer connection
	r  *sql.DB // readers
	ck *sql.DB // the checkpointer's connection
	// dbFile is the database file, for the checkpointer's fsync (see
	// checkpoint). It stays open until the connections are closed:
	// closing a descriptor of the file would release the POSIX locks
	// SQLite holds on it in this process.
	dbFile *os.File
	// syncFirst: the checkpointer fsyncs the database file before the
	// round that blocks commits (see checkpoint).
	syncFirst bool
	log       *slog.Logger

	ckKick chan struct{} // wakes the checkpointer (Run)
	// ckHeld and ckMaxHeld are the time the checkpointer held wmu (see
	// checkpointHold), in nanoseconds; only Run writes them.
	ckHeld, ckMaxHeld atomic.Int64
	// ckHold: each checkpoint's hold of wmu, the Prometheus histogram.
	ckHold prometheus.Histogram
	ckDone atomic.Int64 // checkpoints finished (tests)
	// fixedCache: Options.CacheSize set the writer's page cache;
	// otherwise sizeCache sizes it (cacheSize, in bytes; the writer's
	// connector gives it to a connection it opens again, openWriter).
	fixedCache bool
	cacheSize  *atomic.Int64

	// snap is the latest values of every device in memory (latest.go),
	// nil when the store answers them from its tables; readers load it,
	// Commit publishes it under wmu.
	snap atomic.Pointer[latestSnap]

	// wmu serialises Commit; it guards everything below.
	wmu  sync.Mutex
	seq  int64            // the last event seq written
	keys map[string]int64 // device id → devices.key, for every device known to exist
	// latest caches the rows of latest_fields that Commit wrote or read,
	// decoded (see UpsertLatest); only Commit writes latest_fields.
	latest map[int64][]readings.LatestValue
	// snapStale means the snapshot was dropped by a failed Commit and
	// is built again by the next; snapOff, that it passed its bound and
	// is not kept (latest.go). types interns the snapshot's device types.
	snapStale, snapOff bool
	types              map[string]string
	inserts            map[string]*bulk // multi-row insert statements by table
	patch              *bulk
	lookup             *bulk
	args               argSlab // the argument slices of a commit's statements
	rawArgs            rawArgs // their values as the driver takes them (bulk.execCount)
	latestBuf          []byte  // UpsertLatest's encoding buffer, under wmu
	// uncheckpointed counts the changes committed since the last
	// checkpoint (see checkpoint.go).
	uncheckpointed int
	// seen is the last_seen written per device: a patch that only moves
	// it by less than registry.SeenResolution is not written.
	seen *registry.SeenCache
	// mlog is the message log's memory: the head of its batch rows and
	// the msg_id dedupe's windows (msglog.go).
	mlog msgLog
	// rh is the readings' head: the rows of reading_batches in memory
	// (readhead.go).
	rh readHead
}

// busyTimeoutMS is how long a connection waits for a lock before failing.
const busyTimeoutMS = 10000

// Open opens (creating if needed) the database at opts.Path and brings its
// schema up to date.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("sqlite: empty path")
	}
	sync := strings.ToUpper(opts.Synchronous)
	switch sync {
	case "":
		sync = "FULL"
	case "FULL", "NORMAL":
	default:
		return nil, fmt.Errorf("sqlite: synchronous must be full or normal, not %q", opts.Synchronous)
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 4
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	if opts.PageSize == 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.PageSize < 512 || opts.PageSize > 65536 || opts.PageSize&(opts.PageSize-1) != 0 {
		return nil, fmt.Errorf("sqlite: page size must be a power of two from 512 to 65536, not %d", opts.PageSize)
	}

	changed, err := restrictFiles(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	for _, p := range changed {
		log.Warn("database file was readable by others; now 0600", "file", p)
	}
	if err := registerFold(); err != nil {
		return nil, fmt.Errorf("sqlite: register %s: %w", foldFunc, err)
	}
	base := "file:" + (&url.URL{Path: opts.Path}).EscapedPath()
	common := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)", busyTimeoutMS)
	if err := createDatabase(ctx, base+"?"+common, opts.PageSize); err != nil {
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	// The writer gathers each commit's WAL frames into one write
	// (walvfs.go); only with synchronous=full, where a commit's frames are
	// synced before other connections can see them.
	writerVFS := ""
	if sync == "FULL" && !opts.plainWAL {
		if err := registerWALVFS(); err != nil {
			return nil, fmt.Errorf("sqlite: register %s VFS: %w", walVFSName, err)
		}
		writerVFS = "&vfs=" + walVFSName
	}
	cache := new(atomic.Int64)
	cache.Store(cmp.Or(opts.CacheSize, minCacheSize))
	w, err := openWriter(base+"?"+common+writerVFS+
		"&_pragma=journal_mode(WAL)&_pragma=synchronous("+sync+")"+
		"&_pragma=temp_store(MEMORY)&_txlock=immediate"+
		fmt.Sprintf("&_pragma=wal_autocheckpoint(%d)", autoCheckpointPages), cache)
	if err != nil {
		return nil, fmt.Errorf("open sqlite writer: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", opts.Path, err)
	}
	if err := migrate(ctx, w, log); err != nil {
		w.Close()
		return nil, err
	}
	dbFile, err := os.Open(opts.Path)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite database file for sync: %w", err)
	}
	r, err := sql.Open("sqlite", base+"?"+common+"&_pragma=query_only(1)&_pragma=cache_size(-16384)")
	if err != nil {
		w.Close()
		dbFile.Close()
		return nil, fmt.Errorf("open sqlite readers: %w", err)
	}
	r.SetMaxOpenConns(opts.ReadConns)
	r.SetMaxIdleConns(opts.ReadConns)

	ck, err := sql.Open("sqlite", base+"?"+common+"&_pragma=synchronous("+sync+")")
	if err != nil {
		r.Close()
		w.Close()
		dbFile.Close()
		return nil, fmt.Errorf("open sqlite checkpointer: %w", err)
	}
	ck.SetMaxOpenConns(1)
	ck.SetMaxIdleConns(1)
	ck.SetConnMaxLifetime(0)
	ck.SetConnMaxIdleTime(0)

	s := &Store{w: w, r: r, ck: ck, log: log, keys: map[string]int64{},
		dbFile: dbFile, syncFirst: true, ckKick: make(chan struct{}, 1),
		ckHold: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "devicehub_sqlite_checkpoint_hold_seconds",
			Help: "Time one WAL checkpoint held the store's writer (SQLite) for its last round, which copies what the rounds beside the writer left: " +
				"every commit waits for it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 12),
		}),
		slowCommit: slowCommit, slowLogs: throttle.Sampler{Every: slowLogEvery}, clock: time.Now,
		fixedCache: opts.CacheSize != 0, cacheSize: cache}
	if err := s.initStatements(ctx); err != nil {
		s.closeDB()
		return nil, err
	}
	if err := s.initMessageLog(ctx, opts.MessageLog); err != nil {
		s.closeDB()
		return nil, err
	}
	if err := s.initReadingsHead(ctx, opts.ReadingsHead); err != nil {
		s.closeDB()
		return nil, err
	}
	if err := w.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM events`).Scan(&s.seq); err != nil {
		s.closeDB()
		return nil, fmt.Errorf("read last event seq: %w", err)
	}
	if err := s.loadLatest(ctx, w); err != nil {
		s.closeDB()
		return nil, err
	}
	if err := s.sizeCache(ctx); err != nil {
		s.closeDB()
		return nil, err
	}
	if opts.Registerer != nil {
		err := s.mlog.registerMetrics(opts.Registerer)
		if err == nil {
			err = opts.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "devicehub_sqlite_writer_cache_bytes",
				Help: "The page cache of the SQLite connection that writes (storage.sqlite.cache_size, or sized by the fleet).",
			}, func() float64 { return float64(s.cacheSize.Load()) }))
		}
		if err == nil {
			err = opts.Registerer.Register(s.ckHold)
		}
		if err != nil {
			s.closeDB()
			return nil, fmt.Errorf("sqlite: register metrics: %w", err)
		}
	}
	return s, nil
}

// The writer's page cache (Options.CacheSize), sized by the fleet when
// not set: cachePerDevice for each device, from minCacheSize to
// maxCacheSize. A commit ends with SQLite truncating the page cache to the
// database's size, and while the database is below 1 GiB that truncation
// scans the whole cache after any commit that split a B-tree page (the
// split's page swap passes through page number 262,145, the pending-byte
// page, as a temporary key); a cache that is not full yet also allocates
// every new page. Both grow with the cache: with 64 MiB they took ~9 % of
// the hub's CPU under ingest, and 8 MiB used 7–9 % less CPU per reading
// at 100 and 1,000 devices. But at 10,000 devices 8 MiB used 3–5 % more
// than 64 MiB, and stored 4 % fewer readings a second: each device's
// newest index leaf no longer stays in the cache (docs/BENCHMARKS.md,
// "The writer's page cache").
const (
	minCacheSize   = 8 << 20
	maxCacheSize   = 64 << 20
	cachePerDevice = 8 << 10
)

// cacheFor is the writer's page cache for a fleet of devices.
func cacheFor(devices int64) int64 {
	return min(max(devices*cachePerDevice, minCacheSize), maxCacheSize)
}

// sizeCache sets the writer's page cache for the fleet as it is now,
// unless Options.CacheSize fixed it. The count is read beside the writer;
// only a change of size takes it.
func (s *Store) sizeCache(ctx context.Context) error {
	if s.fixedCache {
		return nil
	}
	var devices int64
	if err := s.r.QueryRowContext(ctx, `SELECT count(*) FROM devices`).Scan(&devices); err != nil {
		return fmt.Errorf("size the page cache: count devices: %w", err)
	}
	size := cacheFor(devices)
	if size == s.cacheSize.Load() {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf(`PRAGMA cache_size = -%d`, size/1024)); err != nil {
		return fmt.Errorf("size the page cache: %w", err)
	}
	s.cacheSize.Store(size)
	s.log.Info("writer page cache sized for the fleet", "devices", devices, "bytes", size)
	return nil
}

// openWriter opens the writer's pool (one connection) on dsn through
// writerConnector, so that every connection it opens has the page cache
// last chosen (cache, in bytes), not only the first: database/sql opens a
// new one after a connection went bad, and a cache_size in the DSN would
// give that one the size of the open, not the fleet's (sizeCache).
func openWriter(dsn string, cache *atomic.Int64) (*sql.DB, error) {
	// The driver registered as "sqlite", with the functions registered
	// on it (fold.go): sql.Open connects nothing.
	probe, err := sql.Open("sqlite", "")
	if err != nil {
		return nil, err
	}
	drv := probe.Driver()
	if err := probe.Close(); err != nil {
		return nil, err
	}
	return sql.OpenDB(writerConnector{drv: drv, dsn: dsn, cache: cache}), nil
}

// writerConnector opens the writer's connections: dsn's, then its page
// cache set to cache's size.
type writerConnector struct {
	drv   driver.Driver
	dsn   string
	cache *atomic.Int64
}

func (c writerConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("the sqlite driver's connection (%T) does not execute statements", conn)
	}
	if _, err := ex.ExecContext(ctx, fmt.Sprintf(`PRAGMA cache_size = -%d`, c.cache.Load()/1024), nil); err != nil {
		conn.Close()
		return nil, fmt.Errorf("set the page cache: %w", err)
	}
	return conn, nil
}

func (c writerConnector) Driver() driver.Driver { return c.drv }

// DefaultPageSize is the page size of a new database (see Options).
const DefaultPageSize = 4096

// createDatabase gives a database that has no page yet its page size and
// WAL mode. The page size must be set before the first page is written,
// and the driver runs journal_mode(WAL), which writes the first page,
// before any other pragma of the writer's DSN.
func createDatabase(ctx context.Context, dsn string, pageSize int) error {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // the page size is pending on one connection
	var pages int
	if err := db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		return fmt.Errorf("read page count: %w", err)
	}
	if pages > 0 {
		return nil
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf(`PRAGMA page_size = %d`, pageSize)); err != nil {
		return fmt.Errorf("set page size: %w", err)
	}
	if _, err := db.ExecContext(ctx, `PRAGMA journal_mode = WAL`); err != nil {
		return fmt.Errorf("set WAL mode: %w", err)
	}
	return nil
}

func migrate(ctx context.Context, db *sql.DB, log *slog.Logger) error {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	// Out of order: each domain numbers its migrations in its own range
	// (docs/ARCHITECTURE.md, "Adding a domain"), so a database may have a
	// higher range applied before a lower one lands.
	p, err := goose.NewProvider(goose.DialectSQLite3, db, fsys,
		goose.WithDisableGlobalRegistry(true), goose.WithAllowOutofOrder(true), goose.WithSlog(log))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	res, err := p.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate sqlite: %w", err)
	}
	for _, r := range res {
		log.Info("applied migration", "version", r.Source.Version, "duration", r.Duration)
	}
	return nil
}

// closeWait bounds how long Close waits for the writer's connection to
// close the statements prepared on it.
const closeWait = 5 * time.Second

// Close closes the statements and the connection pools. Run must have
// returned.
func (s *Store) Close() error {
	return s.closeDB()
}

// closeDB closes the statements and the connection pools.
func (s *Store) closeDB() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.inserts != nil {
		// The writes' driver statements, on the connection they were
		// prepared on; a writer still busy after closeWait keeps them
		// (see bulk.rawStmt).
		ctx, cancel := context.WithTimeout(context.Background(), closeWait)
		defer cancel()
		if err := s.onWriter(ctx, func(dc any) error {
			for _, b := range s.writeBulks() {
				b.closeRaw(dc)
			}
			return nil
		}); err != nil {
			s.log.Warn("close the writer's statements", "err", err)
		}
	}
	for _, b := range s.inserts {
		b.close()
	}
	s.patch.close()
	s.lookup.close()
	if s.mlog.insert != nil {
		s.mlog.insert.Close()
	}
	if s.rh.insert != nil {
		s.rh.insert.Close()
	}
	err := errors.Join(s.ck.Close(), s.r.Close(), s.w.Close())
	return errors.Join(err, s.dbFile.Close())
}
