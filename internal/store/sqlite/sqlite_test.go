package sqlite

import (
	"context"
	"database/sql/driver"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/store/storetest"
)

// The store starts a checkpointer goroutine (and database/sql its
// connection opener): Close must end them all.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openTest opens a store in a temporary directory and runs its
// checkpointer, as the hub does, until the test ends.
func openTest(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{Path: filepath.Join(t.TempDir(), "hub.db")})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	runUntilCleanup(t, s)
	return s
}

// runUntilCleanup runs s's checkpointer until the test ends, then closes
// s.
func runUntilCleanup(t testing.TB, s *Store) {
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-ran; err != nil {
			t.Errorf("Run: %v", err)
		}
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend { return openTest(t) })
}

// TestReopen checks what the writer keeps in memory and rebuilds at Open:
// the event seq counter and the device keys.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hub.db")
	commitOne := func(s *Store, ch *commit.Change) {
		t.Helper()
		if err := s.Commit(ctx, []*commit.Change{ch}); err != nil || ch.Err != nil {
			t.Fatalf("Commit: %v, %v", err, ch.Err)
		}
	}
	event := func(dev string) []commit.Event {
		ev, err := commit.NewEvent(events.Event{Type: events.DeviceConnected, Time: time.Now(), DeviceID: dev, Args: &events.Connected{}})
		if err != nil {
			t.Fatal(err)
		}
		return []commit.Event{ev}
	}

	s, err := Open(ctx, Options{Path: path, Synchronous: "normal", ReadConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	first := &commit.Change{DeviceID: "a", Ops: []commit.Op{&registry.NewDevice{Type: "t", MQTTUsername: "a",
		PasswordHash: []byte{1}, APIKeyHash: []byte{2}, CreatedAt: time.Now()}}, Events: event("a")}
	commitOne(s, first)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now()
	second := &commit.Change{DeviceID: "a",
		Ops: withReadings(&readings.Message{ID: 1, Topic: "devices/a/data", Transport: "mqtt", Accepted: true, ReceivedAt: now}, []readings.Reading{{Time: now, Values: []byte(`{"v":1}`)}}, &registry.DevicePatch{LastSeen: &now}), Events: event("a")}
	commitOne(s, second)
	if second.Events[0].Seq <= first.Events[0].Seq {
		t.Errorf("seq after reopen %d, before %d", second.Events[0].Seq, first.Events[0].Seq)
	}
	if n, err := s.CountReadings(ctx, "a"); err != nil || n != 1 {
		t.Errorf("CountReadings = %d, %v", n, err)
	}
}

func TestOpenOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"no path", Options{}},
		{"bad synchronous", Options{Path: filepath.Join(t.TempDir(), "x.db"), Synchronous: "off"}},
		{"page size not a power of two", Options{Path: filepath.Join(t.TempDir(), "x.db"), PageSize: 3000}},
		{"page size too large", Options{Path: filepath.Join(t.TempDir(), "x.db"), PageSize: 131072}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := Open(context.Background(), tt.opts); err == nil {
				s.Close()
				t.Error("Open succeeded")
			}
		})
	}
}

// TestPageSize: a new database gets the page size asked for, in WAL mode;
// an existing one keeps its own whatever is asked.
func TestPageSize(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hub.db")
	pageSize := func(opts Options) (size int, mode string) {
		t.Helper()
		opts.Path = path
		s, err := Open(ctx, opts)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		if err := s.r.QueryRowContext(ctx, `SELECT page_size, journal_mode FROM pragma_page_size(), pragma_journal_mode()`).Scan(&size, &mode); err != nil {
			t.Fatal(err)
		}
		return size, mode
	}
	if size, mode := pageSize(Options{PageSize: 2048}); size != 2048 || mode != "wal" {
		t.Fatalf("new database: page size %d, journal mode %s; want 2048, wal", size, mode)
	}
	if size, mode := pageSize(Options{PageSize: 8192}); size != 2048 || mode != "wal" {
		t.Fatalf("reopened: page size %d, journal mode %s; want 2048 (kept), wal", size, mode)
	}
	path = filepath.Join(t.TempDir(), "default.db")
	if size, _ := pageSize(Options{}); size != DefaultPageSize {
		t.Fatalf("default page size %d, want %d", size, DefaultPageSize)
	}
}

// TestCacheSize: Options.CacheSize fixes the writer's page cache, in
// bytes (cache_size in KiB); 0 sizes it by the fleet, at open and again
// when sizeCache runs (after a checkpoint).
func TestCacheSize(t *testing.T) {
	ctx := context.Background()
	cacheKiB := func(s *Store) int64 {
		t.Helper()
		var got int64
		if err := s.w.QueryRowContext(ctx, `PRAGMA cache_size`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		return -got
	}
	for _, size := range []int64{3 << 20, 64 << 20} {
		s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "hub.db"), CacheSize: size})
		if err != nil {
			t.Fatal(err)
		}
		if got := cacheKiB(s); got != size/1024 {
			t.Errorf("CacheSize %d: cache_size %d KiB, want %d", size, got, size/1024)
		}
		provisionFleet(t, s, 2000)
		if err := s.sizeCache(ctx); err != nil || cacheKiB(s) != size/1024 {
			t.Errorf("CacheSize %d, 2,000 devices: cache_size %d KiB (%v), want it fixed", size, cacheKiB(s), err)
		}
		s.Close()
	}
	path := filepath.Join(t.TempDir(), "hub.db")
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if got := cacheKiB(s); got != minCacheSize/1024 {
		t.Errorf("no devices: cache_size %d KiB, want %d", got, minCacheSize/1024)
	}
	provisionFleet(t, s, 2000)
	if err := s.sizeCache(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cacheKiB(s); got != 2000*cachePerDevice/1024 {
		t.Errorf("2,000 devices: cache_size %d KiB, want %d", got, 2000*cachePerDevice/1024)
	}
	// The writer's connection goes bad: database/sql opens another,
	// which must have the fleet's cache too, not the open's.
	if _, err := s.w.ExecContext(ctx, `CREATE TEMP TABLE first_conn (x)`); err != nil {
		t.Fatal(err)
	}
	conn, err := s.w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Raw(func(any) error { return driver.ErrBadConn }); !errors.Is(err, driver.ErrBadConn) {
		t.Fatalf("Raw: %v", err)
	}
	conn.Close()
	var marks int
	if err := s.w.QueryRowContext(ctx, `SELECT count(*) FROM temp.sqlite_master WHERE name = 'first_conn'`).Scan(&marks); err != nil {
		t.Fatal(err)
	}
	if marks != 0 {
		t.Fatal("the writer still has its first connection")
	}
	if got := cacheKiB(s); got != 2000*cachePerDevice/1024 {
		t.Errorf("2,000 devices, the writer's connection opened again: cache_size %d KiB, want %d", got, 2000*cachePerDevice/1024)
	}
	s.Close()
	if s, err = Open(ctx, Options{Path: path}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := cacheKiB(s); got != 2000*cachePerDevice/1024 {
		t.Errorf("reopened with 2,000 devices: cache_size %d KiB, want %d", got, 2000*cachePerDevice/1024)
	}
}

func TestCacheFor(t *testing.T) {
	for _, tc := range []struct{ devices, want int64 }{
		{0, minCacheSize}, {1000, minCacheSize}, {1024, minCacheSize}, {2000, 2000 * cachePerDevice},
		{8192, maxCacheSize}, {1_000_000, maxCacheSize},
	} {
		if got := cacheFor(tc.devices); got != tc.want {
			t.Errorf("cacheFor(%d) = %d, want %d", tc.devices, got, tc.want)
		}
	}
}

// withReadings returns the ops of a message with its readings, then more.
func withReadings(m *readings.Message, rows []readings.Reading, more ...commit.Op) []commit.Op {
	ops := make([]commit.Op, 0, 2+len(more))
	return append(append(ops, m, &readings.Readings{Message: m, Rows: rows}), more...)
}
