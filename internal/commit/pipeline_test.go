package commit_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

// deferStore is a fakeStore whose commits leave their sync to Sync, as
// the SQLite store's do: each CommitDeferred reports pending (unless
// notPending names the batch's first device), and each Sync reports on
// syncing and then waits for a token on syncGate (or returns syncFail).
type deferStore struct {
	*fakeStore
	notPending map[string]bool
	syncing    chan struct{}
	syncGate   chan struct{}
	syncFail   error

	mu      sync.Mutex
	commits int // batches committed
	synced  int // batches committed before the last Sync began
}

func newDeferStore() *deferStore {
	return &deferStore{fakeStore: newFakeStore(), syncing: make(chan struct{}, 1000), syncGate: make(chan struct{})}
}

func (s *deferStore) CommitDeferred(ctx context.Context, batch []*commit.Change) (bool, error) {
	if err := s.Commit(ctx, batch); err != nil {
		return false, err
	}
	s.mu.Lock()
	s.commits++
	s.mu.Unlock()
	return !s.notPending[batch[0].DeviceID], nil
}

func (s *deferStore) Sync() error {
	s.mu.Lock()
	n := s.commits
	s.mu.Unlock()
	s.syncing <- struct{}{}
	<-s.syncGate
	if s.syncFail != nil {
		return s.syncFail
	}
	s.mu.Lock()
	s.synced = n
	s.mu.Unlock()
	return nil
}

// durable is the number of batches a Sync covered.
func (s *deferStore) durable() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

func waitSyncing(t *testing.T, s *deferStore) {
	t.Helper()
	select {
	case <-s.syncing:
	case <-time.After(10 * time.Second):
		t.Fatal("no sync after 10s")
	}
}

// isDone reports whether tk completed, without waiting.
func isDone(tk *commit.Ticket) bool {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return !errors.Is(tk.Wait(ctx), context.Canceled)
}

// TestPipelinedCommit: the next batch is committed while the disk syncs
// the previous one, and no ticket completes (no device is acknowledged)
// and no event is published before a sync that covers its batch.
func TestPipelinedCommit(t *testing.T) {
	st := newDeferStore()
	pub := &fakePub{}
	c := newCommitter(st, pub, commit.Options{})
	stop := run(t, c)

	first := enqueue(t, c, "a")
	entered(t, st.fakeStore)
	waitSyncing(t, st) // the syncer holds batch a in Sync
	second := enqueue(t, c, "b")
	entered(t, st.fakeStore) // b is committed while a's sync is under way
	if isDone(first[0]) || isDone(second[0]) {
		t.Fatal("a ticket completed before its batch's sync returned")
	}
	if got := pub.devices(); len(got) != 0 {
		t.Fatalf("events published before their sync: %v", got)
	}
	st.syncGate <- struct{}{} // a's sync returns
	if errs := waitAll(t, first); errs[0] != nil {
		t.Fatalf("a: %v", errs[0])
	}
	if st.durable() < 1 {
		t.Fatal("a completed before a sync covered it")
	}
	waitSyncing(t, st) // b's own sync (it was committed after a's began)
	if isDone(second[0]) {
		t.Fatal("b completed before a sync that began after its commit")
	}
	st.syncGate <- struct{}{}
	if errs := waitAll(t, second); errs[0] != nil {
		t.Fatalf("b: %v", errs[0])
	}
	if st.durable() != 2 {
		t.Fatalf("b completed with %d batches durable, want 2", st.durable())
	}
	if got := pub.devices(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("published %v, want [a b]", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestPipelinedOrder: completions keep the commit order whatever each
// batch's outcome: durable after a sync, durable at its commit (not
// pending), or failed at its commit.
func TestPipelinedOrder(t *testing.T) {
	st := newDeferStore()
	st.notPending = map[string]bool{"now": true}
	failing := errors.New("disk on fire")
	st.outcome = func(ch *commit.Change) {}
	c := newCommitter(&failOn{deferStore: st, id: "bad", err: failing}, &fakePub{}, commit.Options{MaxBatch: 1})
	run(t, c)

	var mu sync.Mutex
	var order []string
	var called sync.WaitGroup
	record := func(id string) func(error) {
		called.Add(1)
		return func(error) {
			mu.Lock()
			order = append(order, id)
			mu.Unlock()
			called.Done()
		}
	}
	ids := []string{"a", "now", "bad", "b"}
	var ts []*commit.Ticket
	for i, id := range ids {
		tk := enqueue(t, c, id)[0]
		tk.OnDone(record(id))
		ts = append(ts, tk)
		switch i {
		case 0:
			entered(t, st.fakeStore)
			waitSyncing(t, st) // the syncer holds a
		case 1:
			// Committed during a's sync; the committer then waits for
			// the syncer, and the rest queue behind.
			entered(t, st.fakeStore)
		}
	}
	st.syncGate <- struct{}{}
	waitSyncing(t, st) // b's batch needs a sync; "now" and "bad" do not
	st.syncGate <- struct{}{}
	errs := waitAll(t, ts)
	if errs[0] != nil || errs[1] != nil || errs[3] != nil || !errors.Is(errs[2], failing) {
		t.Fatalf("outcomes %v, want nil nil %v nil", errs, failing)
	}
	called.Wait() // Wait can return before the callback ran
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, ids) {
		t.Fatalf("completed in order %v, want %v", order, ids)
	}
}

// failOn fails the commit of a batch that holds device id.
type failOn struct {
	*deferStore
	id  string
	err error
}

func (s *failOn) CommitDeferred(ctx context.Context, batch []*commit.Change) (bool, error) {
	pending, err := s.deferStore.CommitDeferred(ctx, batch)
	for _, ch := range batch {
		if ch.DeviceID == s.id {
			return false, s.err
		}
	}
	return pending, err
}

// TestPipelinedSyncFailure: a failed sync fails every batch it covered
// (no acknowledgement, no event), and the committer goes on.
func TestPipelinedSyncFailure(t *testing.T) {
	st := newDeferStore()
	st.syncFail = errors.New("EIO")
	pub := &fakePub{}
	c := newCommitter(st, pub, commit.Options{})
	stop := run(t, c)
	ts := enqueue(t, c, "a")
	entered(t, st.fakeStore)
	waitSyncing(t, st)
	st.syncGate <- struct{}{}
	if errs := waitAll(t, ts); !errors.Is(errs[0], st.syncFail) {
		t.Fatalf("a: %v, want the sync's error", errs[0])
	}
	if got := pub.devices(); len(got) != 0 {
		t.Fatalf("events of a failed sync published: %v", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestPipelinedStopSyncsAll: the stop drains the queue through the
// syncer: every ticket enqueued before it completes after a sync.
func TestPipelinedStopSyncsAll(t *testing.T) {
	st := newDeferStore()
	close(st.syncGate) // syncs return at once
	pub := &fakePub{}
	c := newCommitter(st, pub, commit.Options{MaxBatch: 2})
	stop := run(t, c)
	ts := enqueue(t, c, "a", "b", "c", "d", "e")
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for i, err := range waitAll(t, ts) {
		if err != nil {
			t.Fatalf("ticket %d: %v", i, err)
		}
	}
	if got := pub.devices(); !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("published %v", got)
	}
}

// TestNoPipeline: Options.NoPipeline commits and syncs each batch with
// Commit, even with a store that can defer its syncs.
func TestNoPipeline(t *testing.T) {
	st := newDeferStore()
	c := newCommitter(st, &fakePub{}, commit.Options{NoPipeline: true})
	run(t, c)
	ts := enqueue(t, c, "a")
	if errs := waitAll(t, ts); errs[0] != nil {
		t.Fatal(errs[0])
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.commits != 0 || len(st.syncing) != 0 {
		t.Fatalf("NoPipeline: %d deferred commits, %d syncs", st.commits, len(st.syncing))
	}
}

// TestPipelinedStopWithHungSync: a sync that does not return bounds the
// stop as a hung commit does: Run returns ErrStoreStuck, and the tickets
// it holds are not acknowledged.
func TestPipelinedStopWithHungSync(t *testing.T) {
	st := newDeferStore()
	c := newCommitter(st, &fakePub{}, commit.Options{StopTimeout: 50 * time.Millisecond})
	stop := run(t, c)
	ts := enqueue(t, c, "a")
	entered(t, st.fakeStore)
	waitSyncing(t, st)
	if err := stop(); !errors.Is(err, commit.ErrStoreStuck) {
		t.Fatalf("Run: %v, want ErrStoreStuck", err)
	}
	if errs := waitAll(t, ts); !errors.Is(errs[0], commit.ErrStoreStuck) {
		t.Fatalf("ticket: %v, want ErrStoreStuck", errs[0])
	}
	close(st.syncGate) // the sync returns: the loop ends
	<-c.Done()
}

// TestPipelineAhead: while a batch syncs, the committer commits one more
// and then waits for the syncer, so that what arrives meanwhile makes one
// batch instead of many small ones.
func TestPipelineAhead(t *testing.T) {
	st := newDeferStore()
	c := newCommitter(st, &fakePub{}, commit.Options{})
	run(t, c)
	all := enqueue(t, c, "a")
	entered(t, st.fakeStore)
	waitSyncing(t, st)
	all = append(all, enqueue(t, c, "b")...)
	entered(t, st.fakeStore) // one batch ahead of the sync
	// One at a time: a committer that did not wait would commit c alone.
	// Nothing signals that it did not, so a committer that would is
	// given a moment to (this bounds the check, it orders nothing).
	all = append(all, enqueue(t, c, "c")...)
	select {
	case n := <-st.entered:
		t.Fatalf("a batch of %d committed two ahead of the sync", n)
	case <-time.After(100 * time.Millisecond):
	}
	all = append(all, enqueue(t, c, "d")...)
	st.syncGate <- struct{}{} // a synced: b goes to the syncer, c and d commit
	if n := entered(t, st.fakeStore); n != 2 {
		t.Fatalf("c and d committed as a batch of %d, want 2", n)
	}
	close(st.syncGate)
	waitAll(t, all)
	if got := st.committed(); len(got) != 3 {
		t.Fatalf("batches %v, want [a] [b] [c d]", got)
	}
}
