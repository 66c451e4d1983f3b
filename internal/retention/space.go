package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// ErrStorageFull is wrapped by the error Space.Check returns while the
// free disk space is below its floor.
var ErrStorageFull = errors.New("storage full")

// FullError says why device messages are refused.
type FullError struct {
	Dir         string
	Free, Floor uint64
}

func (e *FullError) Error() string {
	return fmt.Sprintf("storage full: %d bytes free on the filesystem of %s, below the floor of %d bytes (storage.min_free_bytes); device messages are refused until space is freed",
		e.Free, e.Dir, e.Floor)
}

// Unwrap makes errors.Is(err, ErrStorageFull) true.
func (e *FullError) Unwrap() error { return ErrStorageFull }

// QuotaExceeded tells the MQTT edge to answer with reason code 0x97.
func (e *FullError) QuotaExceeded() bool { return true }

// Committer stores the storage events.
type Committer interface {
	Submit(ctx context.Context, ch *commit.Change) error
}

// SpaceOptions configure Space.
type SpaceOptions struct {
	// Dir is a directory on the filesystem to watch (the data directory).
	Dir string
	// MinFree is the floor of free bytes: below it device messages are
	// refused; 0 refuses nothing (the metrics are still reported). They
	// are taken in again once the free space is 10% above the floor.
	MinFree uint64
	// Interval between measures (default 5s).
	Interval time.Duration
	// Size returns the bytes the store takes on disk, for the
	// devicehub_storage_bytes metric; nil reports none.
	Size func(ctx context.Context) (int64, error)
	// Statfs measures the free bytes of Dir (default: statfs(2)'s
	// blocks available to unprivileged users × block size).
	Statfs func(dir string) (uint64, error)
}

// Space watches the free disk space of the data directory. Ingest asks
// Check before it takes in a device message.
type Space struct {
	opts SpaceOptions
	c    Committer
	log  *slog.Logger
	full atomic.Pointer[FullError]

	free, size prometheus.Gauge
	refusing   prometheus.Gauge
}

// NewSpace returns a watcher. reg may be nil.
func NewSpace(opts SpaceOptions, c Committer, log *slog.Logger, reg prometheus.Registerer) *Space {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.Statfs == nil {
		opts.Statfs = statfsFree
	}
	s := &Space{
		opts: opts, c: c, log: log,
		free: prometheus.NewGauge(prometheus.GaugeOpts{Name: "devicehub_storage_free_bytes", Help: "Free bytes on the filesystem of the data directory."}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{Name: "devicehub_storage_bytes", Help: "Bytes the store takes on disk (SQLite: database and WAL files; PostgreSQL: the database size)."}),
		refusing: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "devicehub_storage_refusing", Help: "1 while device messages are refused because free disk space is below storage.min_free_bytes."}),
	}
	if reg != nil {
		reg.MustRegister(s.free, s.size, s.refusing)
	}
	return s
}

// Check returns a *FullError while device messages are refused, else nil.
func (s *Space) Check() error {
	if e := s.full.Load(); e != nil {
		return e
	}
	return nil
}

// Run measures at once and then at every interval until ctx ends.
func (s *Space) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		if err := s.Measure(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("measure disk space", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Measure measures once, and on a change of state stores its event and
// starts or stops refusing.
func (s *Space) Measure(ctx context.Context) error {
	if s.opts.Size != nil {
		if n, err := s.opts.Size(ctx); err == nil {
			s.size.Set(float64(n))
		} else {
			s.log.Warn("measure store size", "err", err)
		}
	}
	free, err := s.opts.Statfs(existing(s.opts.Dir))
	if err != nil {
		return fmt.Errorf("statfs %s: %w", s.opts.Dir, err)
	}
	s.free.Set(float64(free))
	floor := s.opts.MinFree
	if floor == 0 {
		return nil
	}
	was := s.full.Load() != nil
	switch {
	case !was && free < floor:
		fe := &FullError{Dir: s.opts.Dir, Free: free, Floor: floor}
		// Refuse first: the event is written with the floor's margin.
		s.full.Store(fe)
		s.refusing.Set(1)
		s.log.Error("free disk space below the floor: refusing device messages", "dir", s.opts.Dir, "free_bytes", free, "floor_bytes", floor)
		return s.event(ctx, events.StorageLow, free)
	case was && free >= floor+floor/10:
		s.full.Store(nil)
		s.refusing.Set(0)
		s.log.Info("free disk space above the floor again: taking device messages", "dir", s.opts.Dir, "free_bytes", free, "floor_bytes", floor)
		return s.event(ctx, events.StorageRecovered, free)
	case was:
		s.full.Store(&FullError{Dir: s.opts.Dir, Free: free, Floor: floor})
	}
	return nil
}

func (s *Space) event(ctx context.Context, t events.Type, free uint64) error {
	ev, err := commit.NewEvent(events.Event{Type: t, Time: time.Now().UTC(),
		Args: &events.Storage{Dir: s.opts.Dir, FreeBytes: free, FloorBytes: s.opts.MinFree}})
	if err != nil {
		return err
	}
	if err := s.c.Submit(ctx, &commit.Change{Events: []commit.Event{ev}}); err != nil {
		return fmt.Errorf("store %s: %w", t, err)
	}
	return nil
}

// existing returns dir, or its nearest parent that exists: the filesystem
// dir will be created on.
func existing(dir string) string {
	if dir == "" {
		dir = "."
	}
	for {
		if _, err := os.Stat(dir); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return dir
		}
		dir = parent
	}
}
