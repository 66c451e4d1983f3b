package throttle

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ErrThrottled refuses an attempt of a source or at a target that failed
// too often lately; the attempt is not checked.
var ErrThrottled = errors.New("too many failed attempts, try again later")

// Throttled is the error a Guard refuses with: ErrThrottled, and until
// when.
type Throttled struct {
	Until time.Time
}

func (e *Throttled) Error() string {
	return fmt.Sprintf("%v (until %s)", ErrThrottled, e.Until.UTC().Format(time.RFC3339))
}

func (e *Throttled) Unwrap() error { return ErrThrottled }

// RetryAfter is how long the refusal lasts from now, at least a second.
func (e *Throttled) RetryAfter(now time.Time) time.Duration {
	return max(e.Until.Sub(now), time.Second)
}

// Options size a Guard. Zero values take the defaults.
type Options struct {
	// SourceLimit failures of one source address within Window refuse
	// its further attempts until Window has passed since its first
	// failure (default 20).
	SourceLimit int
	// TargetLimit is the same for one target (default 10). A target that
	// is refused cannot be unlocked by the right secret before the window
	// ends: that is what stops a distributed guess.
	TargetLimit int
	// Window (default 5 minutes).
	Window time.Duration
	// MaxKeys bounds the memory of each table (default 100,000).
	MaxKeys int
	// Now is the clock (tests).
	Now func() time.Time
}

// Guard throttles the failures of one kind of secret (kind: "api_token",
// "provisioning_token", "shared_secret", "broker_auth"): per source address
// and per target, counted in metrics and logged at most once a second
// with the count of the lines it stands for. It never logs the guess.
type Guard struct {
	kind    string
	opts    Options
	sources *Failures
	targets *Failures
	log     *slog.Logger
	logs    Sampler

	failures, refused prometheus.Counter
}

// metricsMu serialises the registration of the shared counters.
var metricsMu sync.Mutex

// NewGuard returns a guard for kind. reg may be nil; guards of several
// kinds share the counters, labelled by kind.
func NewGuard(kind string, opts Options, log *slog.Logger, reg prometheus.Registerer) *Guard {
	if opts.SourceLimit <= 0 {
		opts.SourceLimit = 20
	}
	if opts.TargetLimit <= 0 {
		opts.TargetLimit = 10
	}
	if opts.Window <= 0 {
		opts.Window = 5 * time.Minute
	}
	if opts.MaxKeys <= 0 {
		opts.MaxKeys = 100_000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	failures := counterVec(reg, prometheus.CounterOpts{
		Name: "devicehub_auth_failures_total",
		Help: "Failed attempts with a secret (a wrong or unknown token, secret or password), by kind of secret.",
	})
	refused := counterVec(reg, prometheus.CounterOpts{
		Name: "devicehub_auth_throttled_total",
		Help: "Attempts refused unchecked because their source or target failed too often lately, by kind of secret.",
	})
	return &Guard{
		kind: kind, opts: opts, log: log,
		sources:  NewFailures(opts.SourceLimit, opts.Window, opts.MaxKeys),
		targets:  NewFailures(opts.TargetLimit, opts.Window, opts.MaxKeys),
		failures: failures.WithLabelValues(kind),
		refused:  refused.WithLabelValues(kind),
	}
}

// counterVec registers a counter vector labelled by kind, or returns the
// one registered already.
func counterVec(reg prometheus.Registerer, o prometheus.CounterOpts) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(o, []string{"kind"})
	if reg == nil {
		return v
	}
	metricsMu.Lock()
	defer metricsMu.Unlock()
	if err := reg.Register(v); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing
			}
		}
		panic(err)
	}
	return v
}

// Check says whether an attempt from source at target (either "" for
// none) may be checked now: nil, or a *Throttled error (counted and
// logged).
func (g *Guard) Check(source, target string) error {
	now := g.opts.Now()
	source = Host(source)
	var until time.Time
	if source != "" {
		if b, u := g.sources.Blocked(source, now); b {
			until = u
		}
	}
	if target != "" {
		if b, u := g.targets.Blocked(target, now); b && u.After(until) {
			until = u
		}
	}
	if until.IsZero() {
		return nil
	}
	g.refused.Inc()
	if n, ok := g.logs.Tick(now); ok {
		g.log.Warn("attempt refused: too many failures", "kind", g.kind, "source", source, "target", target, "until", until, "lines", n)
	}
	return &Throttled{Until: until}
}

// Failed counts a failed attempt from source at target (either "" for
// none); why says what failed, never the secret that was tried.
func (g *Guard) Failed(source, target, why string) {
	now := g.opts.Now()
	source = Host(source)
	if source != "" {
		g.sources.Fail(source, now)
	}
	if target != "" {
		g.targets.Fail(target, now)
	}
	g.failures.Inc()
	if n, ok := g.logs.Tick(now); ok {
		g.log.Warn("failed attempt", "kind", g.kind, "source", source, "target", target, "why", why, "lines", n)
	}
}

// Succeeded forgets the failures at target: its owner has its secret.
// The source's failures stay (one address may guess many targets).
func (g *Guard) Succeeded(target string) {
	if target != "" {
		g.targets.Reset(target)
	}
}

// Host is the address part of a remote address ("10.0.0.1:4242" →
// "10.0.0.1"), so that a client's ports count as one source.
func Host(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

// Sampler bounds a repeated log line to one per Every (one a second when
// Every is 0): Tick counts an occurrence and says whether to log it now,
// and how many occurrences the line stands for (itself and those not
// logged since the last one). The zero Sampler is ready to use; the time
// is the caller's, so a test drives it with its own clock.
type Sampler struct {
	// Every is how often a line is logged at most (default SampleEvery).
	// Set it before the first Tick.
	Every time.Duration

	mu    sync.Mutex
	last  time.Time
	count int
}

// SampleEvery is how often a sampled line is logged at most by default.
const SampleEvery = time.Second

// Tick counts an occurrence at now.
func (s *Sampler) Tick(now time.Time) (n int, ok bool) {
	every := s.Every
	if every <= 0 {
		every = SampleEvery
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	if s.last.IsZero() || now.Sub(s.last) >= every {
		s.last, n, s.count = now, s.count, 0
		return n, true
	}
	return 0, false
}
