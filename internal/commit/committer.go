package commit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/throttle"
)

// ErrClosed is returned for changes submitted after the committer stopped.
var ErrClosed = errors.New("committer closed")

// ErrStoreStuck is returned by Run when it stopped although a Commit of
// the store had not returned (see Options.StopTimeout).
var ErrStoreStuck = errors.New("the store's commit did not return")

// Publisher receives the events of each committed batch, in commit order.
// It must not block: the bus queues them per subscriber.
type Publisher interface {
	Publish(evs []events.Event)
}

// Options tune group commit.
type Options struct {
	// MaxBatch caps the changes in one transaction (default 2000).
	MaxBatch int
	// Linger is how long to wait for more changes once one arrived. Zero
	// commits as soon as the previous commit finished: under load, changes
	// that arrived during a commit form the next batch, so batches grow
	// with the load without adding latency when the hub is idle.
	Linger time.Duration
	// QueueSize bounds the changes waiting for a commit (default 20000);
	// a full queue makes submitters wait, which is the back-pressure that
	// keeps devices from outrunning the store.
	QueueSize int
	// StopTimeout bounds Run's stop with a store that stopped answering
	// (a stuck disk, a database that no longer replies). Once Run's ctx
	// ended, the drain of the queue commits with a context of its own for
	// StopTimeout; then that context is cancelled (a commit already under
	// way when the stop began is not: commits before the stop get a
	// context that never ends, which costs the SQLite driver nothing per
	// statement), which a store that honours it (database/sql and pgx roll
	// back a transaction whose context ends before COMMIT) answers with a
	// failure: every ticket of the batch, and of the rest of the queue,
	// fails, so no change is acknowledged unless it was stored. If the
	// store's Commit still has not returned StopTimeout later, Run gives
	// up on it and returns ErrStoreStuck, leaving the commit's goroutine
	// behind: Wait returns ErrStoreStuck for the tickets not completed,
	// and their OnDone callbacks are called if and when the Commit
	// returns (the broker, their one user, closed every connection
	// before, so none is acknowledged).
	//
	// Default 5s: a healthy store commits a batch in milliseconds, and
	// the hub's whole stop with a stuck store (at most 10 s for the
	// producers, then this twice) stays within the 30 s an orchestrator
	// gives a process before it kills it (Kubernetes' default grace
	// period).
	StopTimeout time.Duration
}

// slowBatch: a batch whose oldest change waited this long from its
// enqueue to the end of the commit is logged, with where the time went
// (the queue, the commit, the events and completions after it), for the
// tails that per-batch histograms hide (Committer.slowBatch; tests
// lower it).
const slowBatch = 100 * time.Millisecond

// slowLogEvery: under sustained overload every batch is slow (ten lines a
// second, which bury the rest of the log); the line is logged at most once
// per slowLogEvery, with how many slow batches were not logged since the
// last one (suppressed).
const slowLogEvery = 10 * time.Second

// Committer writes changes in group commits. Create it with New and run it
// with Run.
type Committer struct {
	store    Store
	pub      Publisher
	opts     Options
	log      *slog.Logger
	q        chan *Ticket
	stopping chan struct{}
	finished chan struct{}
	// gaveUp is closed when Run returns ErrStoreStuck: Wait stops waiting
	// for the tickets the stuck commit and the queue still hold.
	gaveUp chan struct{}
	// enqueuing is held shared by every Enqueue while it puts a ticket
	// on q, and once exclusively by Run after it closed stopping: after
	// that no ticket can reach q, so the drain completes every ticket
	// ever enqueued (a callback left uncalled would leave its caller
	// waiting for ever).
	enqueuing sync.RWMutex
	// committing is the size of the batch whose Commit is under way (0:
	// none), for the log of a stop that gives up on it.
	committing atomic.Int64
	// hooks, nil but in tests, are called at the points of the stop that
	// a test orders against Enqueue (export_test.go).
	hooks *hooks

	batchSize  prometheus.Histogram
	commitTime prometheus.Histogram
	// waitTime is observed once per change, not per batch: one slow
	// commit of hundreds of changes is one batch in commitTime (and
	// hidden in its p99) but hundreds of devices waiting for their acks.
	waitTime prometheus.Histogram
	failures prometheus.Counter
	lastSeq  atomic.Int64
	// slowBatch is the wait from which a batch is logged (slowBatch).
	slowBatch time.Duration
	// slowLogs bounds the slow-batch lines (slowLogEvery); clock is the
	// time it is given (time.Now; tests set their own).
	slowLogs throttle.Sampler
	clock    func() time.Time
}

// New returns a committer writing to store and publishing to pub. log and
// reg may be nil (nothing is logged, nothing registered).
func New(store Store, pub Publisher, opts Options, log *slog.Logger, reg prometheus.Registerer) *Committer {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 2000
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = 20000
	}
	if opts.StopTimeout <= 0 {
		opts.StopTimeout = 5 * time.Second
	}
	c := &Committer{
		store:     store,
		pub:       pub,
		opts:      opts,
		log:       log,
		q:         make(chan *Ticket, opts.QueueSize),
		stopping:  make(chan struct{}),
		finished:  make(chan struct{}),
		gaveUp:    make(chan struct{}),
		slowBatch: slowBatch,
		slowLogs:  throttle.Sampler{Every: slowLogEvery},
		clock:     time.Now,
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devicehub_commit_batch_size",
			Help:    "Changes per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devicehub_commit_duration_seconds",
			Help:    "Time to write and commit one batch.",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 14),
		}),
		waitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devicehub_commit_wait_seconds",
			Help:    "Time from a change's enqueue to the end of its batch's commit, per change: the wait in the queue and the commit.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_commit_failures_total",
			Help: "Batches whose transaction failed.",
		}),
	}
	if reg != nil {
		reg.MustRegister(c.batchSize, c.commitTime, c.waitTime, c.failures)
	}
	return c
}

// hooks are the points where a test holds an Enqueue or the stop, to
// order them (export_test.go). Each is set.
type hooks struct {
	enqueue  func() // Enqueue found the committer running and is about to queue
	stopping func() // Run closed stopping
	draining func() // Run is about to drain the queue
}

// Ticket tracks one submitted change until it is committed.
type Ticket struct {
	Change *Change
	// mu guards done and completed: done is made by the first Wait, so
	// that a ticket whose outcome goes to an OnDone callback (MQTT's,
	// one per device message) makes no channel; complete closes it if
	// it was made.
	mu        sync.Mutex
	done      chan struct{}
	completed bool
	err       error
	c         *Committer
	// state orders OnDone (Notify) against the completion: ticketPending,
	// then ticketCallback once comp is set, and ticketDone once
	// completed; whichever of the two comes second calls comp.
	state atomic.Uint32
	comp  Completion // OnDone's callback, or Notify's object
	// queued is when Enqueue queued the change (devicehub_commit_wait_seconds).
	queued time.Time
}

// Ticket states (Ticket.state).
const (
	ticketPending uint32 = iota
	ticketCallback
	ticketDone
)

// Enqueue queues ch for the next batch and returns at once unless the queue
// is full. Changes enqueued one after the other are committed in that order.
func (c *Committer) Enqueue(ctx context.Context, ch *Change) (*Ticket, error) {
	if ch.Fence == nil {
		if f, ok := FenceOf(ctx); ok {
			held := f // only a fence found is moved to the heap
			ch.Fence = &held
		}
	}
	t := &Ticket{Change: ch, c: c, queued: time.Now()}
	c.enqueuing.RLock()
	defer c.enqueuing.RUnlock()
	select {
	case <-c.stopping:
		return nil, ErrClosed
	case <-c.gaveUp:
		// Run returned: its abandoned loop may still take what is
		// queued once the stuck Commit returns, but nothing new.
		return nil, ErrClosed
	default:
	}
	if c.hooks != nil {
		c.hooks.enqueue()
	}
	select {
	case c.q <- t:
		return t, nil
	case <-c.stopping:
		return nil, ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// OnDone has fn called once with the ticket's outcome (what Wait would
// return) when its batch committed or failed, or when the committer
// stopped without committing it. fn runs in the committer's goroutine,
// between batches, so it must be quick and never block (hand anything
// slow to a goroutine of its own); if the ticket is already complete, fn
// runs at once in the caller's goroutine. OnDone is called at most once
// per ticket. It spares a caller that only needs to act on the outcome a
// goroutine that waits for it.
func (t *Ticket) OnDone(fn func(error)) { t.Notify(completionFunc(fn)) }

// completionFunc is OnDone's callback as a Completion (a func value fits
// in an interface without an allocation).
type completionFunc func(error)

func (f completionFunc) Completed(err error) { f(err) }

// A Completion is told the outcome of a ticket (Ticket.Notify).
type Completion interface {
	Completed(err error)
}

// Notify is OnDone with c.Completed as the callback, under the same
// rules: a caller that has an object per change already passes it,
// where a callback would be a closure made per change.
func (t *Ticket) Notify(c Completion) {
	t.comp = c
	if !t.state.CompareAndSwap(ticketPending, ticketCallback) {
		c.Completed(t.result()) // already complete
	}
}

// complete records the outcome, wakes Wait and calls the OnDone callback.
func (t *Ticket) complete(err error) {
	t.mu.Lock()
	t.err = err
	t.completed = true
	done := t.done
	t.mu.Unlock()
	// The state is done before Wait wakes: an OnDone called by a waiter
	// that Wait returned to runs its callback at once, in the caller
	// (TestOnDone failed now and then when Wait's wake-up came first).
	prev := t.state.Swap(ticketDone)
	if done != nil {
		close(done)
	}
	if prev == ticketCallback {
		t.comp.Completed(t.result())
	}
}

// Wait blocks until the change is committed (nil, or the change's own
// error such as ErrDeviceExists) or failed, or the committer gave up on a
// stuck store (ErrStoreStuck: the change may still be stored, if the
// store's Commit returns after all, but it was not in time to be
// acknowledged).
func (t *Ticket) Wait(ctx context.Context) error {
	t.mu.Lock()
	if t.completed {
		t.mu.Unlock()
		return t.result()
	}
	if t.done == nil {
		t.done = make(chan struct{})
	}
	done := t.done
	t.mu.Unlock()
	select {
	case <-done:
		return t.result()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.c.finished:
		select {
		case <-done:
			return t.result()
		default:
			return ErrClosed
		}
	case <-t.c.gaveUp:
		select {
		case <-done:
			return t.result()
		default:
			return ErrStoreStuck
		}
	}
}

func (t *Ticket) result() error {
	if t.err != nil {
		return t.err
	}
	return t.Change.Err
}

// Submit enqueues ch and waits for its commit.
func (c *Committer) Submit(ctx context.Context, ch *Change) error {
	t, err := c.Enqueue(ctx, ch)
	if err != nil {
		return err
	}
	return t.Wait(ctx)
}

// LastSeq is the sequence number of the last event committed by this
// process.
func (c *Committer) LastSeq() int64 { return c.lastSeq.Load() }

// Run commits batches until ctx is done, then commits what is still queued
// and returns: every ticket enqueued is completed (Wait returns, OnDone
// callbacks are called), with the commit's outcome. Stop the producers (the
// broker, the API) before ctx ends so that nothing is left waiting.
//
// A store that does not answer bounds the stop (Options.StopTimeout): the
// commits' context is cancelled StopTimeout after ctx ended, and Run
// returns ErrStoreStuck StopTimeout later if the store's Commit still has
// not returned.
func (c *Committer) Run(ctx context.Context) error {
	// The commits' context: not ctx, whose end must not fail a batch that
	// was handed to the store (its devices wait for their acks), but one
	// that the stop cancels once the store had StopTimeout to finish.
	cctx, cancelCommits := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelCommits()
	// The loop runs on a goroutine of its own, one per Run, so that Run
	// can return while a Commit does not; the commit path itself is not
	// changed by it.
	done := make(chan error, 1)
	go func() { done <- c.run(ctx, cctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	timer := time.NewTimer(c.opts.StopTimeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
	}
	c.log.Warn("store commit not done at stop: cancelling it, the changes not stored fail (not acknowledged)",
		"store", fmt.Sprintf("%T", c.store), "committing", c.committing.Load(), "queued", len(c.q), "stop_timeout", c.opts.StopTimeout)
	cancelCommits()
	timer.Reset(c.opts.StopTimeout)
	select {
	case err := <-done:
		return err
	case <-timer.C:
	}
	n := c.committing.Load() + int64(len(c.q))
	close(c.gaveUp)
	c.log.Warn("store commit still not returned: the committer stops without it, its changes not stored nor acknowledged",
		"store", fmt.Sprintf("%T", c.store), "changes", n, "waited", 2*c.opts.StopTimeout)
	return fmt.Errorf("%w within %s of the stop (%T): %d changes neither stored nor acknowledged", ErrStoreStuck, 2*c.opts.StopTimeout, c.store, n)
}

// Done is closed once Run's loop has ended: when Run returned, unless it
// returned ErrStoreStuck; then once the stuck Commit returned and the
// loop drained the queue (what is left of the store can be closed then).
func (c *Committer) Done() <-chan struct{} { return c.finished }

// run is Run's loop; cctx is the commits' context.
func (c *Committer) run(ctx, cctx context.Context) error {
	defer close(c.finished)
	batch := make([]*Ticket, 0, c.opts.MaxBatch)
	for {
		select {
		case t := <-c.q:
			batch = append(batch[:0], t)
		case <-ctx.Done():
			close(c.stopping)
			if c.hooks != nil {
				c.hooks.stopping()
			}
			// Wait out the Enqueues under way: each has put its
			// ticket on q or returned ErrClosed.
			c.enqueuing.Lock()
			c.enqueuing.Unlock()
			if c.hooks != nil {
				c.hooks.draining()
			}
			return c.drain(cctx, batch)
		}
		batch = c.fill(ctx, batch)
		// Before the stop not cctx: a context that can end makes the
		// SQLite driver watch it for every statement (a goroutine and
		// a progress handler each). A commit that begins once the stop
		// began can be cancelled, as the drain's.
		cx := cctx
		if ctx.Err() == nil {
			cx = context.WithoutCancel(ctx)
		}
		c.commit(cx, batch)
	}
}

// fill adds what is queued, waiting up to Linger for more.
func (c *Committer) fill(ctx context.Context, batch []*Ticket) []*Ticket {
	var linger <-chan time.Time
	if c.opts.Linger > 0 {
		tm := time.NewTimer(c.opts.Linger)
		defer tm.Stop()
		linger = tm.C
	}
	for len(batch) < c.opts.MaxBatch {
		select {
		case t := <-c.q:
			batch = append(batch, t)
			continue
		default:
		}
		if linger == nil {
			return batch
		}
		select {
		case t := <-c.q:
			batch = append(batch, t)
		case <-linger:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// drain commits what is queued, with the commits' context cctx (which
// Run cancels if the store takes too long).
func (c *Committer) drain(cctx context.Context, batch []*Ticket) error {
	for {
		batch = batch[:0]
		for len(batch) < c.opts.MaxBatch {
			select {
			case t := <-c.q:
				batch = append(batch, t)
				continue
			default:
			}
			break
		}
		if len(batch) == 0 {
			return nil
		}
		c.commit(cctx, batch)
	}
}

// commit commits batch with cctx: before the stop a context that never
// ends (a batch handed to the store is finished, its devices wait for
// their acks); in the drain one that Run cancels when the store did not
// finish within the StopTimeout.
func (c *Committer) commit(cctx context.Context, batch []*Ticket) {
	changes := make([]*Change, len(batch))
	for i, t := range batch {
		changes[i] = t.Change
	}
	start := time.Now()
	queued := len(c.q)
	c.committing.Store(int64(len(batch)))
	err := c.store.Commit(cctx, changes)
	c.committing.Store(0)
	end := time.Now()
	c.commitTime.Observe(end.Sub(start).Seconds())
	c.batchSize.Observe(float64(len(batch)))
	for _, t := range batch {
		c.waitTime.Observe(end.Sub(t.queued).Seconds())
	}
	if w := end.Sub(batch[0].queued); w >= c.slowBatch {
		if n, ok := c.slowLogs.Tick(c.clock()); ok {
			defer func() {
				c.log.Info("slow group commit", "oldest_wait", w, "queue_wait", start.Sub(batch[0].queued),
					"commit", end.Sub(start), "after_commit", time.Since(end), "changes", len(batch), "queued_behind", queued,
					"suppressed", n-1)
			}()
		}
	}
	if err != nil {
		c.failures.Inc()
		c.log.Error("group commit failed", "changes", len(batch), "err", err)
		err = fmt.Errorf("commit batch: %w", err)
		for _, t := range batch {
			t.complete(err)
		}
		return
	}
	// Sized up front: the events of a batch of 400 changes would
	// otherwise grow the slice (of 96-byte events) nine times.
	n := 0
	for _, ch := range changes {
		if ch.Live() {
			n += len(ch.Events)
		}
	}
	var evs []events.Event
	if n > 0 {
		evs = make([]events.Event, 0, n)
	}
	for _, ch := range changes {
		if !ch.Live() {
			continue
		}
		for _, e := range ch.Events {
			evs = append(evs, e.Event)
		}
	}
	if len(evs) > 0 {
		c.lastSeq.Store(evs[len(evs)-1].Seq)
		c.pub.Publish(evs)
	}
	for _, t := range batch {
		t.complete(nil)
	}
	// The callbacks woke goroutines (the broker's PUBACK writers) onto
	// this P's run queue; without a yield the next batch's commit, CPU
	// work of up to tens of milliseconds for a large batch, runs before
	// them and their PUBACKs wait for it.
	runtime.Gosched()
}
