// Package cluster joins hub nodes into a cluster: it relays every
// committed event to every node's in-process bus, once and in sequence
// order, through a NATS JetStream stream, with PostgreSQL's event log as
// the outbox that fills any gap.
//
// Why that is enough: the PostgreSQL store takes a transaction advisory
// lock before it numbers a batch's events and holds it until the commit,
// so events become visible in Seq order across all nodes. When a node
// sees event N committed (its own commit, or a message from another
// node), every event below N that will ever exist is already readable;
// the node reads the ones it has not published (after its last Seq) from
// the database, then publishes N. JetStream carries the events so that
// nodes rarely need that read; a lost, late or duplicated message costs a
// read, never an event. A poll of the log every Poll covers a NATS outage.
package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/events"
)

// Bus is the node's in-process event bus.
type Bus interface {
	Publish(evs []events.Event)
}

// Log reads the durable event log.
type Log interface {
	// ReadEvents returns up to limit events with Seq > after, in order.
	ReadEvents(ctx context.Context, after int64, limit int) ([]events.Event, error)
}

// Options configure the fan-out.
type Options struct {
	// URLs of the NATS servers.
	URLs []string
	// Node is this node's id (a header of its messages).
	Node string
	// Name is the cluster's name: the stream is DEVICEHUB_<Name>_EVENTS on
	// subject devicehub.<Name>.events, so clusters (and tests) can share
	// a NATS server.
	Name string
	// Replicas of the JetStream stream (1..5; 3 in a 3-server cluster).
	Replicas int
	// Poll is how often the node reads the log without being told of new
	// events (default 1s): the path when NATS is down.
	Poll time.Duration
	// Batch is how many events one read of the log takes (default 512).
	Batch int
}

// Fanout relays committed events between the nodes. The committer
// publishes to it (Publish) instead of to the bus; Run publishes to the
// bus, in order.
type Fanout struct {
	opts    Options
	bus     Bus
	log     Log
	logger  *slog.Logger
	nc      *nats.Conn
	js      jetstream.JetStream
	stream  string
	subject string

	mu    sync.Mutex
	local [][]events.Event // committed here, not yet published to the bus
	wake  chan struct{}

	remote chan []byte
	last   int64 // Seq of the last event published to the bus (Run's own)

	lag       prometheus.Histogram
	gapReads  prometheus.Counter
	dropped   prometheus.Counter
	published prometheus.Counter
}

// New connects to NATS and makes sure the stream exists. last is the Seq
// of the last event the bus has seen (the log's last Seq at start).
func New(ctx context.Context, opts Options, bus Bus, log Log, last int64, logger *slog.Logger, reg prometheus.Registerer) (*Fanout, error) {
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.Batch <= 0 {
		opts.Batch = 512
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.Name == "" {
		opts.Name = "devicehub"
	}
	f := &Fanout{opts: opts, bus: bus, log: log, logger: logger, last: last,
		stream:  "DEVICEHUB_" + opts.Name + "_EVENTS",
		subject: "devicehub." + opts.Name + ".events",
		wake:    make(chan struct{}, 1),
		remote:  make(chan []byte, 4096),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devicehub_cluster_fanout_lag_seconds",
			Help:    "From an event's commit on another node to its publication on this node's bus.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5},
		}),
		gapReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_cluster_fanout_log_reads_total",
			Help: "Reads of the event log: the poll, and gaps (a message not yet arrived, lost, or NATS down).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_cluster_fanout_dropped_messages_total",
			Help: "NATS messages dropped because the node's queue was full (their events are read from the log).",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_cluster_fanout_remote_events_total",
			Help: "Events committed by other nodes published on this node's bus.",
		}),
	}
	if reg != nil {
		reg.MustRegister(f.lag, f.gapReads, f.dropped, f.published)
	}
	nc, err := nats.Connect(joinURLs(opts.URLs), nats.Name("devicehub "+opts.Node), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("cluster.nats: connect %v: %w", opts.URLs, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
		logger.Debug("fan-out publish failed (the other nodes read the log)", "msg_id", m.Header.Get(jetstream.MsgIDHeader), "err", err)
	}))
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster.nats: jetstream: %w", err)
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        f.stream,
		Description: "devicehub: committed events, relayed to every node (the event log in PostgreSQL is the outbox)",
		Subjects:    []string{f.subject},
		Storage:     jetstream.MemoryStorage,
		Replicas:    opts.Replicas,
		MaxAge:      time.Minute,
		Duplicates:  time.Minute,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster.nats: create stream %s: %w", f.stream, err)
	}
	f.nc, f.js = nc, js
	return f, nil
}

func joinURLs(urls []string) string {
	s := ""
	for i, u := range urls {
		if i > 0 {
			s += ","
		}
		s += u
	}
	return s
}

// Publish takes the events of one committed batch, in Seq order. It never
// waits: Run publishes them.
func (f *Fanout) Publish(evs []events.Event) {
	if len(evs) == 0 {
		return
	}
	f.mu.Lock()
	f.local = append(f.local, evs)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// nodeHeader names the node that committed a message's events.
const nodeHeader = "Devicehub-Node"

// Run relays events until ctx is done; then it publishes what was
// committed here meanwhile and closes the NATS connection.
func (f *Fanout) Run(ctx context.Context) error {
	defer f.nc.Close()
	cctx, stopConsume := context.WithCancel(ctx)
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		f.consume(cctx)
	}()
	defer func() {
		stopConsume()
		<-consumed
	}()
	poll := time.NewTicker(f.opts.Poll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			// The committer has stopped (the hub stops the fan-out after
			// it): publish its last batches.
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			f.drainLocal(dctx)
			cancel()
			return nil
		case <-f.wake:
			f.drainLocal(ctx)
		case data := <-f.remote:
			var evs []events.Event
			if err := json.Unmarshal(data, &evs); err != nil {
				f.logger.Warn("fan-out: undecodable message (its events are read from the log)", "err", err)
				f.fill(ctx, 0)
				continue
			}
			if n := f.deliver(ctx, evs); n > 0 {
				now := time.Now()
				for _, e := range evs[len(evs)-n:] {
					f.lag.Observe(now.Sub(e.Time).Seconds())
				}
				f.published.Add(float64(n))
			}
		case <-poll.C:
			f.fill(ctx, 0)
		}
	}
}

// consume feeds the messages of the other nodes to Run until ctx is done.
// While NATS cannot be reached it tries again every Poll; the events come
// from the log meanwhile.
func (f *Fanout) consume(ctx context.Context) {
	for {
		cons, err := f.js.OrderedConsumer(ctx, f.stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
		if err == nil {
			var cc jetstream.ConsumeContext
			cc, err = cons.Consume(func(m jetstream.Msg) {
				if m.Headers().Get(nodeHeader) == f.opts.Node {
					return
				}
				select {
				case f.remote <- m.Data():
				default:
					f.dropped.Inc()
				}
			})
			if err == nil {
				<-ctx.Done()
				cc.Stop()
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		f.logger.Warn("fan-out: cannot consume the event stream (events come from the log meanwhile)", "stream", f.stream, "err", err)
		t := time.NewTimer(f.opts.Poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// drainLocal publishes the batches committed here, and relays them.
func (f *Fanout) drainLocal(ctx context.Context) {
	f.mu.Lock()
	batches := f.local
	f.local = nil
	f.mu.Unlock()
	for _, evs := range batches {
		f.deliver(ctx, evs)
		data, err := json.Marshal(evs)
		if err != nil {
			f.logger.Warn("fan-out: encode events (the other nodes read them from the log)", "err", err)
			continue
		}
		msg := &nats.Msg{Subject: f.subject, Data: data, Header: nats.Header{}}
		msg.Header.Set(nodeHeader, f.opts.Node)
		id := fmt.Sprintf("%d-%d", evs[0].Seq, evs[len(evs)-1].Seq)
		if _, err := f.js.PublishMsgAsync(msg, jetstream.WithMsgID(id)); err != nil {
			f.logger.Debug("fan-out publish (the other nodes read the log)", "msg_id", id, "err", err)
		}
	}
}

// deliver publishes to the bus the events of evs after the last one
// published, first reading from the log any event between. It returns how
// many events of evs it published.
func (f *Fanout) deliver(ctx context.Context, evs []events.Event) int {
	if len(evs) == 0 || evs[len(evs)-1].Seq <= f.last {
		return 0
	}
	if evs[0].Seq > f.last+1 {
		f.fill(ctx, evs[0].Seq)
	}
	i := 0
	for i < len(evs) && evs[i].Seq <= f.last {
		i++
	}
	if i == len(evs) {
		return 0
	}
	f.bus.Publish(evs[i:])
	f.last = evs[len(evs)-1].Seq
	return len(evs) - i
}

// fill publishes the logged events after the last one published: those
// before Seq until when it is > 0, all of them when it is 0. A failed read
// is retried until ctx is done (an event must not be skipped).
func (f *Fanout) fill(ctx context.Context, until int64) {
	for {
		if until > 0 && f.last >= until-1 {
			return
		}
		f.gapReads.Inc()
		evs, err := f.log.ReadEvents(ctx, f.last, f.opts.Batch)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			f.logger.Warn("fan-out: read the event log", "after", f.last, "err", err)
			t := time.NewTimer(f.opts.Poll)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		n := len(evs)
		if until > 0 {
			for i, e := range evs {
				if e.Seq >= until {
					evs = evs[:i]
					break
				}
			}
		}
		if len(evs) > 0 {
			f.bus.Publish(evs)
			f.last = evs[len(evs)-1].Seq
		}
		if n < f.opts.Batch || len(evs) < n {
			return
		}
	}
}

// Close closes the NATS connection (Run closes it too); for a hub built
// and not run.
func (f *Fanout) Close() { f.nc.Close() }
