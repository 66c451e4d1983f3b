package commit_test

import (
	"context"
	"errors"
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

// TestOnDoneEnqueueRacingStop: tickets enqueued while the committer stops
// are either refused (ErrClosed) or completed: no callback is left
// uncalled, so nobody waits for ever.
func TestOnDoneEnqueueRacingStop(t *testing.T) {
	for round := range 20 {
		// Room for every commit's report: the queue holds 100 changes.
		st := &fakeStore{entered: make(chan int, 1<<16)}
		c := newCommitter(st, &fakePub{}, commit.Options{MaxBatch: 3, QueueSize: 100})
		stop := run(t, c)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			pending []*calls
		)
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					tk, err := c.Enqueue(context.Background(), change("d"))
					if errors.Is(err, commit.ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("enqueue %d/%d: %v", g, i, err)
						return
					}
					cl := newCalls()
					tk.OnDone(cl.fn)
					mu.Lock()
					pending = append(pending, cl)
					mu.Unlock()
				}
			}()
		}
		// Stop once some commits went by, with enqueues under way.
		entered(t, st)
		entered(t, st)
		if err := stop(); err != nil {
			t.Fatalf("round %d: run: %v", round, err)
		}
		wg.Wait()
		for i, cl := range pending {
			select {
			case <-cl.done:
			default:
				t.Fatalf("round %d: ticket %d of %d enqueued was never completed", round, i, len(pending))
			}
			if n := cl.n.Load(); n != 1 || cl.err != nil {
				t.Fatalf("round %d: ticket %d: %d calls, outcome %v; want one call, nil", round, i, n, cl.err)
			}
		}
	}
}
