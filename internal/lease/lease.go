// Package lease runs work that must have one owner in a cluster of hub
// nodes: a lease is a named row in the shared database with a holder, an
// expiry and a fencing token that grows at every change of holder. A node
// takes a free or expired lease, renews it every Renew, and stops the
// work it guards as soon as it cannot be sure it still holds it (before
// another node can take it); the work's writes can check the token
// (Store.LeaseHeld, or the same condition inside their transaction), so a
// paused former holder cannot overwrite its successor.
//
// Expiry is compared with the database's clock only. A holder stops its
// work TTL-Renew after the start of its last successful renewal, earlier
// than the database lets anyone else take the lease.
package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store keeps the leases (the PostgreSQL store implements it).
type Store interface {
	// AcquireLease takes name for holder for ttl if it is free, expired
	// or already holder's, and returns its new token; ok is false when
	// another holder has it.
	AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (token int64, ok bool, err error)
	// RenewLease extends name by ttl if holder still holds it with token
	// and it has not expired.
	RenewLease(ctx context.Context, name, holder string, token int64, ttl time.Duration) (bool, error)
	// ReleaseLease expires name at once if holder still holds it with
	// token.
	ReleaseLease(ctx context.Context, name, holder string, token int64) error
	// LeaseHeld reports whether token is name's current unexpired token.
	LeaseHeld(ctx context.Context, name string, token int64) (bool, error)
	// Leases lists the leases whose names start with prefix.
	Leases(ctx context.Context, prefix string) ([]Info, error)
}

// Info is one lease as stored.
type Info struct {
	Name, Holder          string
	Token                 int64
	AcquiredAt, ExpiresAt time.Time
	// Live: not expired by the database's clock.
	Live bool
}

// Options tune a Manager.
type Options struct {
	// Holder names this node (cluster.node_id).
	Holder string
	// TTL is a lease's life without renewal (default 8s); Renew how
	// often it is renewed and how often a free lease is tried (default
	// 2s). TTL must be more than Renew.
	TTL, Renew time.Duration
}

// Manager runs lease-guarded work for one node.
type Manager struct {
	store Store
	opts  Options
	log   *slog.Logger

	mu   sync.Mutex
	held map[string]int64 // name → token, while the work runs

	acquired *prometheus.CounterVec
	lost     *prometheus.CounterVec
}

// New returns a Manager; reg may be nil.
func New(store Store, opts Options, log *slog.Logger, reg prometheus.Registerer) *Manager {
	if opts.TTL <= 0 {
		opts.TTL = 8 * time.Second
	}
	if opts.Renew <= 0 {
		opts.Renew = 2 * time.Second
	}
	m := &Manager{store: store, opts: opts, log: log, held: map[string]int64{},
		acquired: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_cluster_leases_acquired_total",
			Help: "Leases this node took, by lease name.",
		}, []string{"lease"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_cluster_leases_lost_total",
			Help: "Leases this node lost while its work ran (renewal refused or too late), by lease name.",
		}, []string{"lease"}),
	}
	if reg != nil {
		reg.MustRegister(m.acquired, m.lost, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "devicehub_cluster_leases_held",
			Help: "Leases this node holds now.",
		}, func() float64 {
			m.mu.Lock()
			defer m.mu.Unlock()
			return float64(len(m.held))
		}))
	}
	return m
}

// Holder is the node's name.
func (m *Manager) Holder() string { return m.opts.Holder }

// Token returns the token of name while this node's work under it runs.
func (m *Manager) Token(name string) (int64, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.held[name]
	return t, ok
}

// Leases lists the stored leases whose names start with prefix.
func (m *Manager) Leases(ctx context.Context, prefix string) ([]Info, error) {
	return m.store.Leases(ctx, prefix)
}

// errLost ends a holding when the lease is gone.
var errLost = errors.New("lease lost")

// Run calls work whenever this node holds lease name, until ctx is done.
// work's context is canceled when the lease is lost; work then returns
// and Run waits to take the lease again. work returning nil releases the
// lease (and Run tries again after Renew); an error of work other than
// context.Canceled ends Run with it, even after the lease was lost. When ctx is done
// the lease is released so that a survivor takes it at once.
func (m *Manager) Run(ctx context.Context, name string, work func(ctx context.Context, token int64) error) error {
	t := time.NewTicker(m.opts.Renew)
	defer t.Stop()
	for {
		token, ok, err := m.store.AcquireLease(ctx, name, m.opts.Holder, m.opts.TTL)
		sent := time.Now()
		switch {
		case err != nil && ctx.Err() != nil:
			return nil
		case err != nil:
			m.log.Warn("take lease", "lease", name, "err", err)
		case ok:
			if err := m.hold(ctx, name, token, sent, work); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// hold runs work under the lease taken at sent with token, renewing it,
// until the lease is lost, work returns or ctx is done.
func (m *Manager) hold(ctx context.Context, name string, token int64, sent time.Time, work func(context.Context, int64) error) error {
	m.acquired.WithLabelValues(name).Inc()
	m.log.Info("lease taken", "lease", name, "token", token)
	m.mu.Lock()
	m.held[name] = token
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.held, name)
		m.mu.Unlock()
	}()

	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	done := make(chan error, 1)
	go func() { done <- work(wctx, token) }()

	// The work must stop before the database lets another node in: the
	// lease lasts TTL from a moment after sent, so stop at sent+TTL-Renew
	// unless a renewal succeeded since. A renewal's own wait ends then too.
	safe := m.opts.TTL - m.opts.Renew
	until := sent.Add(safe)
	deadline := time.NewTimer(time.Until(until))
	defer deadline.Stop()
	renew := time.NewTicker(m.opts.Renew)
	defer renew.Stop()
	for {
		select {
		case err := <-done:
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), m.opts.Renew)
			if rerr := m.store.ReleaseLease(rctx, name, m.opts.Holder, token); rerr != nil {
				m.log.Warn("release lease", "lease", name, "err", rerr)
			}
			rcancel()
			if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("lease %s: %w", name, err)
			}
			if ctx.Err() == nil && context.Cause(wctx) == errLost {
				m.log.Warn("lease lost: work stopped", "lease", name, "token", token)
			}
			return nil
		case <-deadline.C:
			m.lost.WithLabelValues(name).Inc()
			cancel(errLost)
		case <-renew.C:
			if wctx.Err() != nil {
				continue // waiting for work to stop
			}
			rctx, rcancel := context.WithDeadline(wctx, until)
			at := time.Now()
			ok, err := m.store.RenewLease(rctx, name, m.opts.Holder, token, m.opts.TTL)
			rcancel()
			switch {
			case err == nil && ok:
				until = at.Add(safe)
				deadline.Reset(time.Until(until))
			case err == nil || !time.Now().Before(until):
				// Refused (another holder, or expired), or no answer
				// before the lease may have passed on.
				m.lost.WithLabelValues(name).Inc()
				cancel(errLost)
			default:
				m.log.Warn("renew lease", "lease", name, "err", err)
			}
		}
	}
}
