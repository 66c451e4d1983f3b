package lease_test

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/lease"
	"github.com/devicehub/devicehub/internal/store/postgres"
	"github.com/devicehub/devicehub/internal/store/postgres/pgtest"
)

// openStores opens n stores on one fresh schema (n nodes' connections).
func openStores(t *testing.T, n int) []*postgres.Store {
	t.Helper()
	return pgtest.OpenStores(t, "lease_test", "the lease tests", n)
}

// stallable is a real store whose lease calls can be made to hang, as
// when a node is cut off from the database or frozen.
type stallable struct {
	*postgres.Store
	stalled atomic.Bool
}

func (s *stallable) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (int64, bool, error) {
	if s.stalled.Load() {
		return 0, false, context.DeadlineExceeded
	}
	return s.Store.AcquireLease(ctx, name, holder, ttl)
}

func (s *stallable) RenewLease(ctx context.Context, name, holder string, token int64, ttl time.Duration) (bool, error) {
	if s.stalled.Load() {
		<-ctx.Done()
		return false, ctx.Err()
	}
	return s.Store.RenewLease(ctx, name, holder, token, ttl)
}

// owners records who runs the work and checks that never two do.
type owners struct {
	mu      sync.Mutex
	running map[string]bool
	both    bool
	tokens  []int64
}

func (o *owners) work(node string) func(context.Context, int64) error {
	return func(ctx context.Context, token int64) error {
		o.mu.Lock()
		if len(o.running) > 0 {
			o.both = true
		}
		o.running[node] = true
		o.tokens = append(o.tokens, token)
		o.mu.Unlock()
		<-ctx.Done()
		o.mu.Lock()
		delete(o.running, node)
		o.mu.Unlock()
		return nil
	}
}

func (o *owners) owner() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	for n := range o.running {
		return n
	}
	return ""
}

func TestOneOwnerAndFailover(t *testing.T) {
	sts := openStores(t, 2)
	a := &stallable{Store: sts[0]}
	opts := lease.Options{TTL: 1500 * time.Millisecond, Renew: 250 * time.Millisecond}
	log := slog.New(slog.DiscardHandler)
	optsA, optsB := opts, opts
	optsA.Holder, optsB.Holder = "a", "b"
	ma := lease.New(a, optsA, log, nil)
	mb := lease.New(sts[1], optsB, log, nil)
	o := &owners{running: map[string]bool{}}

	ctxA, stopA := context.WithCancel(context.Background())
	doneA := make(chan error, 1)
	go func() { doneA <- ma.Run(ctxA, "job", o.work("a")) }()
	eventually.True(t, 10*time.Second, "a owns the job", func() bool { return o.owner() == "a" })

	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	doneB := make(chan error, 1)
	go func() { doneB <- mb.Run(ctxB, "job", o.work("b")) }()

	// a stops renewing (frozen, or cut off): it stops its work before b
	// can take the lease, and b takes it once it expired.
	a.stalled.Store(true)
	eventually.True(t, 15*time.Second, "b owns the job after a's lease expired", func() bool { return o.owner() == "b" })
	tokB, ok := mb.Token("job")
	if !ok {
		t.Fatal("b runs the job without a token")
	}
	if held, err := sts[0].LeaseHeld(context.Background(), "job", 1); err != nil || held {
		t.Fatalf("a's token still passes the fence: %v %v", held, err)
	}
	a.stalled.Store(false)

	// b stops cleanly: it releases the lease and a takes it at its next try.
	stopB()
	if err := <-doneB; err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "a owns the job again after b released it", func() bool { return o.owner() == "a" })
	tokA, _ := ma.Token("job")
	stopA()
	if err := <-doneA; err != nil {
		t.Fatal(err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.both {
		t.Error("two nodes ran the job at once")
	}
	if tokA <= tokB || tokB <= 1 {
		t.Errorf("tokens not increasing: a's first 1, b's %d, a's again %d (all: %v)", tokB, tokA, o.tokens)
	}
}

// TestWorkError: an error of the work ends Run with it.
func TestWorkError(t *testing.T) {
	sts := openStores(t, 1)
	m := lease.New(sts[0], lease.Options{Holder: "a", TTL: time.Second, Renew: 200 * time.Millisecond}, slog.New(slog.DiscardHandler), nil)
	err := m.Run(context.Background(), "job", func(context.Context, int64) error { return context.DeadlineExceeded })
	if err == nil || err.Error() != "lease job: context deadline exceeded" {
		t.Fatalf("Run = %v", err)
	}
}
