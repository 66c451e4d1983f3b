package monitors

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/monitorclient"
)

// sender is one monitor's send loop. It is built for one definition: a
// change of the definition stops it and starts a new one.
type sender struct {
	svc   *Service
	e     *entry
	id    string
	spec  Spec
	match *matcher
	mm    *monMetrics

	cursor atomic.Int64 // the Seq of the last event acknowledged or skipped
	// oldestUnacked is the time (Unix ns) of the oldest event sent and not
	// acknowledged, 0 if none (for the lag gauge).
	oldestUnacked atomic.Int64
	qp            atomic.Pointer[queue] // the current queue (streams get a new one per connection)

	attach chan *session // tcp: a receiver connected

	mu      sync.Mutex
	cancel  context.CancelFunc
	stopped bool
	running bool
	done    chan struct{}

	http  *httpTarget // http only
	timer *time.Timer // the send loop's, reused

	// Reused by the send loop (one goroutine) from batch to batch.
	batchBuf []*events.Event
	frags    [][]byte
	encoder  monitorclient.Encoder
	body     bodyBuf // http only
}

// newSender builds e's send loop. Called with e.mu held or before e is
// shared.
func (s *Service) newSender(e *entry) *sender {
	m := &e.mon
	match, err := newMatcher(m.Topics)
	if err != nil {
		// Stored topics were validated when they were stored.
		s.log.Error("monitor with bad topics selects nothing", "monitor", m.ID, "err", err)
		match = &matcher{}
	}
	sd := &sender{
		svc: s, e: e, id: m.ID, spec: m.Spec, match: match,
		mm:     s.metrics.monitor(m.ID),
		attach: make(chan *session),
		done:   make(chan struct{}),
	}
	sd.cursor.Store(m.Cursor)
	if m.Transport == TransportHTTP {
		sd.http = newHTTPTarget(&m.Spec, s.opts.AllowPrivateTargets)
	}
	return sd
}

// start records the loop's cancel function; it reports false if the
// sender was stopped before it started.
func (sd *sender) start(cancel context.CancelFunc) bool {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if sd.stopped {
		return false
	}
	sd.cancel, sd.running = cancel, true
	return true
}

// stop ends the loop and waits for it.
func (sd *sender) stop() {
	sd.mu.Lock()
	sd.stopped = true
	cancel, running := sd.cancel, sd.running
	sd.mu.Unlock()
	if running {
		cancel()
		<-sd.done
	}
}

func (sd *sender) run(ctx context.Context) {
	defer close(sd.done)
	if sd.http != nil {
		defer sd.http.close()
		sd.runHTTP(ctx)
		return
	}
	sd.runStream(ctx)
}

// subscribe starts feeding the events after from into a new queue (see
// tail): every event moves the queue's position, the selected ones are
// queued.
func (sd *sender) subscribe(from int64) (*queue, Subscription, error) {
	s := sd.svc
	q := newQueue(s.opts.QueueSize, s.opts.QueueBytes, sd.spec.BatchSize, from)
	sd.qp.Store(q)
	f := s.feed(from, q, func(e *events.Event, size int64) bool {
		return q.push(e, size, sd.match.match(e, s.group), s.opts.Now)
	})
	return q, f, nil
}

// prepare readies an event for every monitor, once, as the tail receives
// it.
func (s *Service) prepare(e *events.Event) {
	s.forgetGroup(e)
	s.metrics.sawSeq(e.Seq)
	if e.Type == events.DeviceProvisioned {
		// Never serialised anyway (json:"-"); dropped here too so that no
		// encoder can ever see them.
		if p, ok := e.Args.(*events.Provisioned); ok && p.Credentials != nil {
			c := *p
			c.Credentials = nil
			e.Args = &c
		}
	}
}

// ack moves the cursor to upto after n events were delivered. The cursor
// is stored by the service's next cursor save (Options.CursorSave), with
// the other monitors' in one transaction, and when the service stops; with
// Options.CursorAtAck the cursor of a delivery (n > 0) is stored before
// ack returns, so before the next delivery (skipped events wait for the
// next save: sending them again after a crash acknowledges nothing twice).
func (sd *sender) ack(ctx context.Context, upto int64, n int) {
	if upto > sd.cursor.Load() {
		sd.cursor.Store(upto)
		if sd.svc.opts.CursorAtAck && n > 0 {
			sd.svc.storeCursor(ctx, sd.id, upto)
		} else {
			sd.svc.markCursor(sd.id, upto)
		}
		sd.e.mu.Lock()
		sd.e.mon.Cursor = upto
		sd.e.mu.Unlock()
	}
	if n > 0 {
		sd.mm.deliveries.Inc()
		sd.mm.events.Add(float64(n))
	}
}

// wait sleeps d or until ctx is done (false).
func wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// backoff is the wait before retry number attempt (from 0): doubling from
// MinBackoff up to MaxBackoff, with jitter over its upper half.
func (s *Service) backoff(attempt int) time.Duration {
	d := s.opts.MinBackoff
	for i := 0; i < attempt && d < s.opts.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.opts.MaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// delivery is what a batch's headers say about it.
type delivery struct {
	id          string // the delivery id, the same on every retry
	monitor     string
	first, last int64 // the Seqs of its first and last events
	n           int
}

func (sd *sender) newDelivery(evs []*events.Event) delivery {
	return delivery{id: newID("dlv_", 12), monitor: sd.id, first: evs[0].Seq, last: evs[len(evs)-1].Seq, n: len(evs)}
}

// poll takes the batch due now from q into the loop's reused buffer (see
// queue.poll).
func (sd *sender) poll(q *queue, now time.Time) ([]*events.Event, int64, time.Duration) {
	batch, upto, due := q.poll(sd.batchBuf, sd.spec.Duration(), now)
	if batch != nil {
		sd.batchBuf = batch
	}
	return batch, upto, due
}

// release drops the loop's references to a batch's events once it is
// sent.
func (sd *sender) release() {
	clear(sd.batchBuf)
	sd.batchBuf = sd.batchBuf[:0]
}

// sleepTimer returns the loop's one timer, set to fire after d (a timer
// per wait was an allocation per batch and monitor).
func (sd *sender) sleepTimer(d time.Duration) *time.Timer {
	if sd.timer == nil {
		sd.timer = time.NewTimer(d)
	} else {
		sd.timer.Reset(d)
	}
	return sd.timer
}

// runHTTP delivers batches to the monitor's URL until ctx is done or the
// monitor is disabled.
func (sd *sender) runHTTP(ctx context.Context) {
	s := sd.svc
	q, sub, err := sd.subscribe(sd.cursor.Load())
	if err != nil {
		s.log.Warn("monitor: subscribe", "monitor", sd.id, "err", err)
		return
	}
	defer sub.Close()
	defer q.close()
	lastSave := s.opts.Now()
	for {
		now := s.opts.Now()
		batch, upto, due := sd.poll(q, now)
		if batch != nil {
			ok := sd.deliverHTTP(ctx, q, batch, upto)
			sd.release()
			if !ok {
				return
			}
			continue
		}
		idle := s.opts.IdleCursorSave
		if due == 0 && upto > sd.cursor.Load() && now.Sub(lastSave) >= idle {
			sd.ack(ctx, upto, 0)
			lastSave = now
		}
		if due == 0 {
			due = idle
		}
		t := sd.sleepTimer(due)
		select {
		case <-q.wake:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		t.Stop()
	}
}

// deliverHTTP sends one batch until it is acknowledged (or, without
// replay, dropped). It reports false when the loop must end.
func (sd *sender) deliverHTTP(ctx context.Context, q *queue, batch []*events.Event, upto int64) bool {
	s := sd.svc
	b := sd.newDelivery(batch)
	body, err := sd.encodeBatch(sd.body.take(), b.id, batch)
	sd.body.buf = body
	if err != nil {
		// Cannot happen for events the hub wrote; skip rather than stall.
		s.log.Error("monitor: encode batch", "monitor", sd.id, "first_seq", b.first, "err", err)
		sd.ack(ctx, upto, 0)
		return true
	}
	sd.oldestUnacked.Store(batch[0].Time.UnixNano())
	defer sd.oldestUnacked.Store(0)
	for attempt := 0; ; attempt++ {
		// A delivery in progress finishes (within its timeouts) when the
		// loop is stopped, so that a clean stop does not leave a batch the
		// receiver took unacknowledged, to be sent again.
		res := sd.http.post(context.WithoutCancel(ctx), &b, sd.body.reader(body), sd.e.signingSecrets(s.opts.Now()), s.opts.Now())
		if res.err == nil {
			sd.ack(ctx, upto, len(batch))
			now := s.opts.Now().UTC()
			s.update(ctx, sd.e, func(m *Monitor) string {
				if m.Status != Active {
					m.LastConnect = &now
				}
				m.Status, m.LastSent, m.FailingSince = Active, &now, nil
				return ""
			})
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		sd.mm.failures.Inc()
		s.log.Debug("monitor delivery failed", "monitor", sd.id, "delivery", b.id, "attempt", attempt+1, "err", res.err)
		now := s.opts.Now().UTC()
		if res.status == 410 {
			s.update(ctx, sd.e, func(m *Monitor) string {
				m.Status = Disabled
				return "the receiver answered 410 Gone"
			})
			return false
		}
		disabled := false
		s.update(ctx, sd.e, func(m *Monitor) string {
			if m.FailingSince == nil {
				m.FailingSince = &now
			}
			if now.Sub(*m.FailingSince) >= s.opts.DisableAfter {
				disabled = true
				m.Status = Disabled
				return "no delivery since " + m.FailingSince.Format(time.RFC3339) + " (last: " + res.reason + ")"
			}
			m.Status = Suspended
			if !sd.spec.AutoReplayOnConnect {
				m.Status = Inactive
			}
			return res.reason
		})
		if disabled {
			return false
		}
		d := s.backoff(attempt)
		if res.retryAfter > 0 {
			d = min(res.retryAfter, s.opts.MaxRetryAfter)
		}
		if !sd.spec.AutoReplayOnConnect {
			// INACTIVE: events are not kept. Drop this batch and whatever
			// arrives until the next attempt.
			sd.mm.dropped.Add(float64(len(batch)))
			sd.ack(ctx, upto, 0)
			return sd.dropFor(ctx, q, d)
		}
		sd.mm.retries.Inc()
		if !wait(ctx, d) {
			return false
		}
	}
}

// dropFor drops every event queued during d.
func (sd *sender) dropFor(ctx context.Context, q *queue, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-q.wake:
			n, upto := q.drop()
			sd.mm.dropped.Add(float64(n))
			sd.ack(ctx, upto, 0)
		case <-t.C:
			n, upto := q.drop()
			sd.mm.dropped.Add(float64(n))
			sd.ack(ctx, upto, 0)
			return true
		case <-ctx.Done():
			return false
		}
	}
}
