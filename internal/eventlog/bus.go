package eventlog

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/events"
)

// Errors of the bus.
var (
	// ErrClosed: Subscribe after Run returned.
	ErrClosed = errors.New("event bus stopped")
	// ErrRunning: Run called a second time.
	ErrRunning = errors.New("event bus already running")
	// ErrNoCallback: Subscribe without a callback.
	ErrNoCallback = errors.New("subscribe without a callback")
)

// BusOptions tune the bus. Zero values take the defaults.
type BusOptions struct {
	// Buffer is the default queue length of a subscriber (default 4096).
	Buffer int
	// CatchUpBatch is how many events a subscriber that fell behind reads
	// from the store at a time (default 512).
	CatchUpBatch int
	// RetryInterval is how long a subscriber waits after a failed read of
	// the store before it tries again (default 1s).
	RetryInterval time.Duration
}

// SubscribeOptions say which events a subscriber gets, from where.
type SubscribeOptions struct {
	Filter events.Filter
	// From 0 delivers the events published after Subscribe returns. From
	// > 0 first delivers every stored event with Seq > From, then the live
	// ones, without a gap or a repeat; From < 0 does so from the start of
	// the log (a subscriber whose position is "nothing seen yet").
	From int64
	// Buffer is the subscriber's queue length (default BusOptions.Buffer).
	Buffer int
}

// Bus fans the committed events out to in-process subscribers.
//
// Each subscriber has its own goroutine, owned by Run, and a bounded queue.
// Publish never waits for a subscriber: when a queue is full, the
// subscriber drops it and switches to catch-up mode, in which it reads what
// it missed from the store, in Seq order and filtered, until it has reached
// the events published meanwhile; then it takes live events again. So every
// subscriber gets every event it selects exactly once, in Seq order (and so
// in order per device), however slow it is.
//
// Events delivered live carry the Args the committer published (the same
// value for every subscriber: do not modify it). Events a subscriber reads
// from the store (its From replay, or a catch-up) carry Args decoded from
// JSON by the store, so fields that are never serialised are missing: for
// example Provisioned.Credentials is nil.
//
// Lock order: Bus.mu before Subscription.mu. Callbacks run with no lock
// held.
type Bus struct {
	store Store
	opts  BusOptions
	log   *slog.Logger

	mu      sync.Mutex // guards subs and state; Publish holds it while it fans out
	subs    []*Subscription
	state   int
	start   chan *Subscription // Subscribe → Run, once Run is running
	stopped chan struct{}      // closed when Run stops taking subscriptions
	lastSeq atomic.Int64       // Seq of the last event published

	published prometheus.Counter
	catchUps  prometheus.Counter
	dropped   prometheus.Counter
}

// Bus states.
const (
	busIdle = iota
	busRunning
	busStopped
)

// NewBus returns a bus that catches subscribers up from store. reg may be
// nil.
func NewBus(store Store, opts BusOptions, log *slog.Logger, reg prometheus.Registerer) *Bus {
	if opts.Buffer <= 0 {
		opts.Buffer = 4096
	}
	if opts.CatchUpBatch <= 0 {
		opts.CatchUpBatch = 512
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Second
	}
	b := &Bus{
		store:   store,
		opts:    opts,
		log:     log,
		start:   make(chan *Subscription),
		stopped: make(chan struct{}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_events_published_total",
			Help: "Committed events handed to the in-process event bus.",
		}),
		catchUps: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_eventlog_subscriber_catchups_total",
			Help: "Times a subscriber's queue overflowed and it switched to reading from the store.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_eventlog_subscriber_dropped_events_total",
			Help: "Events dropped from full subscriber queues, to be read again from the store.",
		}),
	}
	if reg != nil {
		reg.MustRegister(b.published, b.catchUps, b.dropped,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "devicehub_eventlog_subscriber_max_lag",
				Help: "Events published but not yet handled by the subscriber furthest behind.",
			}, b.maxLag),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "devicehub_eventlog_subscribers",
				Help: "In-process event subscribers.",
			}, func() float64 {
				b.mu.Lock()
				defer b.mu.Unlock()
				return float64(len(b.subs))
			}),
		)
	}
	return b
}

// maxLag is the largest number of events a subscriber has yet to handle:
// its queue when live, everything after its cursor when catching up (a
// filtering subscriber's cursor moves only with the events it selects, so
// for it this counts events it will skip, too).
func (b *Bus) maxLag() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	last := b.lastSeq.Load()
	var lag int64
	for _, s := range b.subs {
		s.mu.Lock()
		n := int64(len(s.queue))
		if s.catchUp {
			n = last - s.cursor.Load()
		}
		s.mu.Unlock()
		lag = max(lag, n)
	}
	return float64(lag)
}

// Publish hands committed events, in Seq order, to every subscriber. It
// never waits for a subscriber. The committer calls it after each commit;
// calls must not overlap.
func (b *Bus) Publish(evs []events.Event) {
	if len(evs) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// Before the subscribers see the events: a subscriber catching up
	// compares its position with lastSeq to know when it may go live.
	b.lastSeq.Store(evs[len(evs)-1].Seq)
	b.published.Add(float64(len(evs)))
	for _, s := range b.subs {
		s.push(evs)
	}
}

// Subscribe calls fn with every event that passes opts.Filter, in Seq
// order, from the subscription's own goroutine. It works before and while
// Run runs; after Run returned it reports ErrClosed.
func (b *Bus) Subscribe(opts SubscribeOptions, fn func(events.Event)) (*Subscription, error) {
	if fn == nil {
		return nil, ErrNoCallback
	}
	if opts.Buffer <= 0 {
		opts.Buffer = b.opts.Buffer
	}
	s := &Subscription{
		bus:    b,
		fn:     fn,
		filter: opts.Filter,
		buf:    opts.Buffer,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	b.mu.Lock()
	if b.state == busStopped {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	if opts.From != 0 {
		s.catchUp = true
		s.cursor.Store(max(opts.From, 0))
	} else {
		s.cursor.Store(b.lastSeq.Load())
	}
	b.subs = append(b.subs, s)
	running := b.state == busRunning
	b.mu.Unlock()
	if running {
		select {
		case b.start <- s:
		case <-b.stopped:
			b.remove(s)
			return nil, ErrClosed
		}
	}
	return s, nil
}

func (b *Bus) remove(s *Subscription) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if i := slices.Index(b.subs, s); i >= 0 {
		b.subs = slices.Delete(b.subs, i, i+1)
	}
}

// Run runs the subscribers' goroutines, those subscribed before and those
// subscribed while it runs, until ctx is done; it returns when they all
// returned.
func (b *Bus) Run(ctx context.Context) error {
	b.mu.Lock()
	switch b.state {
	case busRunning:
		b.mu.Unlock()
		return ErrRunning
	case busStopped:
		b.mu.Unlock()
		return ErrClosed
	}
	b.state = busRunning
	pending := slices.Clone(b.subs)
	b.mu.Unlock()

	var wg sync.WaitGroup
	start := func(s *Subscription) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.loop(ctx)
		}()
	}
	for _, s := range pending {
		start(s)
	}
	for {
		select {
		case s := <-b.start:
			start(s)
		case <-ctx.Done():
			b.mu.Lock()
			b.state = busStopped
			b.mu.Unlock()
			close(b.stopped)
			wg.Wait()
			return nil
		}
	}
}

// Subscription is one subscriber. Close it when done.
type Subscription struct {
	bus    *Bus
	fn     func(events.Event)
	filter events.Filter
	buf    int

	mu      sync.Mutex
	queue   []events.Event // live events the goroutine has not taken yet
	catchUp bool           // read from the store: the queue overflowed, or From replay
	closed  bool
	running bool // the goroutine started

	spare  []events.Event // the goroutine's second queue buffer
	cursor atomic.Int64   // Seq of the last event handled (delivered or filtered out)
	wake   chan struct{}  // one slot: the queue has events or catchUp was set
	done   chan struct{}  // closed by Close
	exited chan struct{}  // closed when the goroutine returns
}

// push queues the events s selects, or switches s to catch-up mode when its
// queue is full. Called with Bus.mu held.
func (s *Subscription) push(evs []events.Event) {
	s.mu.Lock()
	if s.closed || s.catchUp {
		s.mu.Unlock()
		return
	}
	queued := false
	for i := range evs {
		e := &evs[i]
		if !s.filter.Match(e) {
			continue
		}
		if len(s.queue) >= s.buf {
			// Too slow: drop what is queued and read it back from the
			// store, starting after the last event handled.
			s.bus.catchUps.Inc()
			s.bus.dropped.Add(float64(len(s.queue)))
			clear(s.queue)
			s.queue = s.queue[:0]
			s.catchUp = true
			break
		}
		s.queue = append(s.queue, *e)
		queued = true
	}
	wake := queued || s.catchUp
	s.mu.Unlock()
	if wake {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// loop delivers the subscriber's events until it is closed or ctx is done.
func (s *Subscription) loop(ctx context.Context) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.running = true
	s.mu.Unlock()
	defer close(s.exited)

	for {
		s.mu.Lock()
		switch {
		case s.closed:
			s.mu.Unlock()
			return
		case s.catchUp:
			s.mu.Unlock()
			if !s.catchUpFromStore(ctx) {
				return
			}
			continue
		case len(s.queue) == 0:
			s.mu.Unlock()
			select {
			case <-s.wake:
			case <-s.done:
				return
			case <-ctx.Done():
				return
			}
			continue
		}
		batch := s.queue
		s.queue = s.spare[:0]
		s.mu.Unlock()
		ok := s.deliver(ctx, batch, false)
		clear(batch)
		s.spare = batch[:0]
		if !ok {
			return
		}
	}
}

// deliver calls the callback with the events after the cursor, checking
// the filter when match is set. It reports false when it stopped because s
// was closed or ctx is done.
func (s *Subscription) deliver(ctx context.Context, evs []events.Event, match bool) bool {
	for i := range evs {
		e := &evs[i]
		if e.Seq <= s.cursor.Load() {
			continue // already handled: a live event the store gave us first
		}
		select {
		case <-s.done:
			return false
		case <-ctx.Done():
			return false
		default:
		}
		if !match || s.filter.Match(e) {
			s.fn(*e)
		}
		s.cursor.Store(e.Seq)
	}
	return true
}

// catchUpFromStore reads events after the cursor from the store until it
// has reached the last published event, then switches s back to live
// delivery. It reports false when s was closed or ctx is done.
func (s *Subscription) catchUpFromStore(ctx context.Context) bool {
	b := s.bus
	for {
		evs, err := b.store.ReadEvents(ctx, s.cursor.Load(), b.opts.CatchUpBatch)
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			b.log.Warn("event subscriber: read the event log", "after", s.cursor.Load(), "err", err)
			if !s.pause(ctx) {
				return false
			}
			continue
		}
		if !s.deliver(ctx, evs, true) {
			return false
		}
		if len(evs) >= b.opts.CatchUpBatch {
			continue
		}
		// At the end of the store. Every event published from now on is
		// queued once catchUp is off; every one published before has a Seq
		// of at most lastSeq, so once the cursor is there nothing is lost.
		// Publish stores lastSeq before it takes s.mu, so the check and the
		// switch cannot miss a concurrent Publish.
		s.mu.Lock()
		if s.cursor.Load() >= b.lastSeq.Load() {
			s.catchUp = false
			s.mu.Unlock()
			return true
		}
		s.mu.Unlock()
		if len(evs) == 0 {
			// Published but not readable yet: the store must have every
			// committed event, so this is a store that lags behind.
			b.log.Warn("event subscriber: the event log lags behind the published events", "after", s.cursor.Load(), "published", b.lastSeq.Load())
			if !s.pause(ctx) {
				return false
			}
		}
	}
}

// pause waits RetryInterval; it reports false when s was closed or ctx is
// done.
func (s *Subscription) pause(ctx context.Context) bool {
	t := time.NewTimer(s.bus.opts.RetryInterval)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	case <-ctx.Done():
		return false
	}
}

// Close ends the subscription: once it returns, the callback is not called
// again (it waits for a callback in progress). It is idempotent. Calling it
// from the callback itself deadlocks.
func (s *Subscription) Close() {
	s.mu.Lock()
	if s.closed {
		running := s.running
		s.mu.Unlock()
		if running {
			<-s.exited
		}
		return
	}
	s.closed = true
	running := s.running
	clear(s.queue)
	s.queue = nil
	s.mu.Unlock()
	close(s.done)
	s.bus.remove(s)
	if running {
		<-s.exited
	}
}

// LastSeq returns the Seq of the last event the subscriber handled
// (delivered or filtered out).
func (s *Subscription) LastSeq() int64 { return s.cursor.Load() }
