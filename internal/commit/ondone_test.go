package commit_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

// calls counts the calls of a ticket's OnDone callback and keeps the
// outcome of the first.
type calls struct {
	n    atomic.Int32
	err  error
	done chan struct{} // closed at the first call
}

func newCalls() *calls { return &calls{done: make(chan struct{})} }

func (c *calls) fn(err error) {
	if c.n.Add(1) == 1 {
		c.err = err
		close(c.done)
	}
}

// wait waits for the first call and returns its outcome.
func (c *calls) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-c.done:
		return c.err
	case <-time.After(10 * time.Second):
		t.Fatal("OnDone callback not called after 10s")
		return nil
	}
}

// TestOnDone: a ticket's callback is called exactly once, with what Wait
// returns, whether the batch committed or failed, whether OnDone came
// before or after the commit, and when the committer stopped with the
// ticket still queued.
func TestOnDone(t *testing.T) {
	boom := errors.New("disk on fire")
	tests := []struct {
		name string
		fail error // every Commit's outcome
		// afterCommit sets the callback once the ticket completed
		// (then it runs in OnDone's caller).
		afterCommit bool
		// atStop stops the committer while the tickets are queued
		// behind a commit in progress: the drain completes them.
		atStop bool
	}{
		{name: "committed"},
		{name: "committed, callback set after", afterCommit: true},
		{name: "failed commit", fail: boom},
		{name: "failed commit, callback set after", fail: boom, afterCommit: true},
		{name: "committer stopped", atStop: true},
		{name: "committer stopped, drain failed", atStop: true, fail: boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newFakeStore()
			st.gate = make(chan struct{})
			c := newCommitter(st, &fakePub{}, commit.Options{MaxBatch: 2})
			stop := run(t, c)
			// The first change holds the committer in a commit, so the
			// others queue behind it.
			first := enqueue(t, c, "a")
			entered(t, st)
			ts := append(first, enqueue(t, c, "b", "c", "d")...)
			st.fail = tt.fail // read after the gate
			cs := make([]*calls, len(ts))
			if !tt.afterCommit {
				for i, tk := range ts {
					cs[i] = newCalls()
					tk.OnDone(cs[i].fn)
				}
			}
			var stopped chan error
			if tt.atStop {
				stopped = make(chan error, 1)
				go func() { stopped <- stop() }()
			}
			close(st.gate)
			if tt.afterCommit {
				waitAll(t, ts)
				for i, tk := range ts {
					cs[i] = newCalls()
					tk.OnDone(cs[i].fn) // complete: called before OnDone returns
					if cs[i].n.Load() != 1 {
						t.Fatalf("ticket %d: callback set after the commit was not called at once", i)
					}
				}
			}
			if stopped != nil {
				if err := <-stopped; err != nil {
					t.Fatalf("run: %v", err)
				}
			}
			werrs := waitAll(t, ts)
			for i := range ts {
				err := cs[i].wait(t)
				if !errors.Is(err, tt.fail) {
					t.Errorf("ticket %d: callback got %v, want %v", i, err, tt.fail)
				}
				if !errors.Is(werrs[i], tt.fail) {
					t.Errorf("ticket %d: Wait returned %v, want %v", i, werrs[i], tt.fail)
				}
			}
			// Once more commits (and the stop) went by, still one call each.
			_ = stop()
			for i := range ts {
				if n := cs[i].n.Load(); n != 1 {
					t.Errorf("ticket %d: callback called %d times, want once", i, n)
				}
			}
		})
	}
}

// TestOnDoneEnqueueRacingStop: an Enqueue that found the committer
// running when its stop began either puts its ticket where the drain finds
// it or returns ErrClosed: no ticket is left whose OnDone is never called.
//
// The interleaving is forced, with no sleeps: a few Enqueues are held
// after they found the committer running and before they queue (the stop
// hooks of export_test.go); the stop begins; they go on only once Run
// waits for them (EnqueuesHeldOff). A Run that did not wait for them
// would drain the queue while they are held, and a ticket one of them
// queued after that would never be completed: the test fails when the
// drain begins first.
func TestOnDoneEnqueueRacingStop(t *testing.T) {
	const racing = 8
	st := newFakeStore()
	c := newCommitter(st, &fakePub{}, commit.Options{QueueSize: 100})
	arrived := make(chan struct{}, racing)
	hold := make(chan struct{})
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(hold) }) }
	t.Cleanup(release) // a failed test lets the held Enqueues go (goleak)
	stopping, draining := make(chan struct{}), make(chan struct{})
	commit.SetStopHooks(c,
		func() { arrived <- struct{}{}; <-hold },
		func() { close(stopping) },
		func() { close(draining) })
	stop := run(t, c)

	type result struct {
		cl  *calls // the ticket's callback, nil if Enqueue failed
		err error
	}
	results := make(chan result, racing)
	for range racing {
		go func() {
			tk, err := c.Enqueue(context.Background(), change("d"))
			if err != nil {
				results <- result{err: err}
				return
			}
			cl := newCalls()
			tk.OnDone(cl.fn)
			results <- result{cl: cl}
		}()
	}
	for i := range racing {
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d Enqueues reached the hook after 10s", i, racing)
		}
	}

	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	<-stopping
	for !commit.EnqueuesHeldOff(c) {
		select {
		case <-draining:
			t.Fatal("Run drained the queue while Enqueues that found the committer running were under way: a ticket queued after the drain would never be completed")
		default:
			runtime.Gosched()
		}
	}
	release()
	if err := <-stopped; err != nil {
		t.Fatalf("run: %v", err)
	}
	// Run returned: every ticket queued was completed by the drain.
	for range racing {
		r := <-results
		switch {
		case r.cl == nil && !errors.Is(r.err, commit.ErrClosed):
			t.Errorf("enqueue: %v, want a ticket or ErrClosed", r.err)
		case r.cl == nil:
		default:
			select {
			case <-r.cl.done:
			default:
				t.Fatal("a ticket enqueued was not completed when Run returned")
			}
			if n := r.cl.n.Load(); n != 1 || r.cl.err != nil {
				t.Errorf("ticket: %d calls, outcome %v; want one call, nil", n, r.cl.err)
			}
		}
	}
}

// hungStore's Commit waits for release; if honourCtx, it gives up when its
// context ends, as database/sql and pgx do before COMMIT; if not, it waits
// whatever the context says (a disk stuck in an fsync).
type hungStore struct {
	honourCtx bool
	entered   chan struct{}
	release   chan struct{}
}

func (s *hungStore) Commit(ctx context.Context, _ []*commit.Change) error {
	s.entered <- struct{}{}
	if !s.honourCtx {
		<-s.release
		return nil
	}
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestStopWithHungStore: a store whose Commit does not return bounds the
// committer's stop by its StopTimeout. The drain's commits get a context
// that the stop cancels: a store that honours it fails the queued
// tickets (so none is acknowledged) and Run returns; the commit under way
// when the stop began is not cancelled (its context never ends) and is
// stored when it returns. A store that does not honour it is left behind:
// Run returns ErrStoreStuck with the tickets not completed, and they
// complete once, if the Commit ever returns.
func TestStopWithHungStore(t *testing.T) {
	for _, honour := range []bool{true, false} {
		t.Run(fmt.Sprintf("honours its context %v", honour), func(t *testing.T) {
			st := &hungStore{honourCtx: honour, entered: make(chan struct{}, 16), release: make(chan struct{})}
			stop := 20 * time.Millisecond
			if honour {
				// a's commit is released right after the stop; a
				// StopTimeout that a loaded machine cannot overrun
				// before that keeps Run from giving up on it.
				stop = 500 * time.Millisecond
			}
			c := newCommitter(st, &fakePub{}, commit.Options{MaxBatch: 1, StopTimeout: stop})
			ctx, cancel := context.WithCancel(context.Background())
			stopped := make(chan error, 1)
			go func() { stopped <- c.Run(ctx) }()
			ts := enqueue(t, c, "a")
			<-st.entered // a's commit hangs
			ts = append(ts, enqueue(t, c, "b", "c")...)
			cs := make([]*calls, len(ts))
			for i, tk := range ts {
				cs[i] = newCalls()
				tk.OnDone(cs[i].fn)
			}
			cancel()
			if honour {
				st.release <- struct{}{} // a is stored: begun before the stop
			}
			var err error
			select {
			case err = <-stopped:
			case <-time.After(10 * time.Second):
				close(st.release)
				t.Fatal("Run did not return within 10s of its stop with the store's Commit hung")
			}
			if honour {
				if err != nil {
					t.Fatalf("run: %v", err)
				}
				for i := range ts {
					select {
					case <-cs[i].done:
					default:
						t.Fatalf("ticket %d not completed when Run returned", i)
					}
					if i == 0 {
						if cs[i].err != nil {
							t.Errorf("ticket 0: outcome %v, want stored", cs[i].err)
						}
					} else if !errors.Is(cs[i].err, context.Canceled) {
						t.Errorf("ticket %d: outcome %v, want the cancelled commit's failure", i, cs[i].err)
					}
				}
				close(st.release)
				return
			}
			if !errors.Is(err, commit.ErrStoreStuck) {
				t.Fatalf("run: %v, want ErrStoreStuck", err)
			}
			for i, tk := range ts {
				if cs[i].n.Load() != 0 {
					t.Fatalf("ticket %d completed although its commit has not returned", i)
				}
				// Who waits for it stops waiting: not stored in time.
				if err := tk.Wait(context.Background()); !errors.Is(err, commit.ErrStoreStuck) {
					t.Fatalf("ticket %d: Wait returned %v, want ErrStoreStuck", i, err)
				}
			}
			// The Commit returns after all: the abandoned loop completes
			// every ticket once, and ends (goleak).
			close(st.release)
			for i := range ts {
				if err := cs[i].wait(t); err != nil {
					t.Errorf("ticket %d: outcome %v", i, err)
				}
			}
			if _, err := c.Enqueue(context.Background(), change("late")); !errors.Is(err, commit.ErrClosed) {
				t.Errorf("enqueue after the stop: %v, want ErrClosed", err)
			}
			for i := range ts {
				if n := cs[i].n.Load(); n != 1 {
					t.Errorf("ticket %d: %d calls, want 1", i, n)
				}
			}
		})
	}
}

// completion is a commit.Completion that counts its calls (calls).
type completion struct{ *calls }

func (c completion) Completed(err error) { c.fn(err) }

// TestNotify: Notify is OnDone with an object's Completed as the
// callback: called exactly once with what Wait returns, in the
// committer's goroutine or, once the ticket completed, at once.
func TestNotify(t *testing.T) {
	boom := errors.New("disk on fire")
	tests := []struct {
		name        string
		fail        error
		afterCommit bool
	}{
		{name: "committed"},
		{name: "committed, set after", afterCommit: true},
		{name: "failed commit", fail: boom},
		{name: "failed commit, set after", fail: boom, afterCommit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newFakeStore()
			st.gate = make(chan struct{})
			c := newCommitter(st, &fakePub{}, commit.Options{MaxBatch: 2})
			stop := run(t, c)
			first := enqueue(t, c, "a")
			entered(t, st)
			ts := append(first, enqueue(t, c, "b", "c")...)
			st.fail = tt.fail // read after the gate
			cs := make([]*calls, len(ts))
			for i := range cs {
				cs[i] = newCalls()
			}
			if !tt.afterCommit {
				for i, tk := range ts {
					tk.Notify(completion{cs[i]})
				}
			}
			close(st.gate)
			werrs := waitAll(t, ts)
			if tt.afterCommit {
				for i, tk := range ts {
					tk.Notify(completion{cs[i]})
					if cs[i].n.Load() != 1 {
						t.Fatalf("ticket %d: Completed not called at once on a completed ticket", i)
					}
				}
			}
			for i := range ts {
				if err := cs[i].wait(t); !errors.Is(err, tt.fail) || !errors.Is(werrs[i], tt.fail) {
					t.Errorf("ticket %d: Completed got %v, Wait %v, want %v", i, err, werrs[i], tt.fail)
				}
			}
			_ = stop()
			for i := range ts {
				if n := cs[i].n.Load(); n != 1 {
					t.Errorf("ticket %d: Completed called %d times, want once", i, n)
				}
			}
		})
	}
}
