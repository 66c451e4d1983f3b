// Package ingest takes in what devices publish: it routes each message by
// its topic (devices/{device_id}/data, .../data/{stream}, .../status,
// .../heartbeat, .../commands/{command_id}/result, .../twin/reported,
// .../config/status),
// runs it through a middleware chain (identity, payload size, per-device
// rate limit) and a handler that validates it against the device's type,
// and hands the result to the commit path as one Change.
//
// The outcome of Pipeline.Handle tells the transport what to answer:
//
//   - nil: accepted and durably stored (for MQTT QoS 0, only queued);
//   - a *Rejection: refused, and the refusal recorded in the message log and
//     the event log (a message_rejected event), and after its commit sent
//     to the device on devices/{id}/errors. The refusal is always waited
//     for, whatever the QoS. One exception keeps a flood from becoming a
//     write flood: every message takes a token of the device's rate limit
//     before its content is looked at, and of the refusals that take none
//     (rate_limited, and identity or type refusals), only the first of
//     each device in max(1s, 1/rate) is recorded and answered; the others
//     are counted, and summed up in the next recorded refusal (the
//     *Rejection is returned all the same, with Result.MessageID 0). So no
//     device makes the hub write faster than its rate allows;
//   - any other error: nothing could be stored; the transport must not
//     acknowledge the message, so that the device sends it again.
//
// The checks run in this order, and the first that fails decides the
// code: identity (the topic names the sending device), device type,
// rate limit, payload size, chunk reassembly (chunks.go), decompression
// (encoding.go), topic (the router), then the handler's content type, JSON
// and validation checks.
//
// Everything of the hot path (decode, validate, encode readings and event
// arguments) runs in the caller's goroutine, so that ingest scales with the
// transport's goroutines and the single commit loop only writes.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// ErrBadPattern is returned by Router.Route for a malformed topic pattern.
var ErrBadPattern = errors.New("bad topic pattern")

// Rejection codes: stable, machine-readable reasons a message was refused.
const (
	CodeInvalidJSON       = "invalid_json"        // the payload is not JSON
	CodeInvalidPayload    = "invalid_payload"     // JSON, but not the shape the topic takes, or an unsupported content type
	CodeValidationFailed  = "validation_failed"   // a value breaks the device type (Field says which)
	CodeInvalidTimestamp  = "invalid_timestamp"   // ts is malformed, before 1970 or too far in the future
	CodePayloadTooLarge   = "payload_too_large"   // over the payload limit, or too many readings in one message
	CodeRateLimited       = "rate_limited"        // over the device's rate limit
	CodeUnknownTopic      = "unknown_topic"       // no handler for the topic
	CodeIdentityMismatch  = "identity_mismatch"   // the topic names another device
	CodeUnknownDeviceType = "unknown_device_type" // the device's type is not declared
)

// Request is one message as a transport received it.
type Request struct {
	DeviceID    string // the authenticated device
	DeviceType  string
	Topic       string
	Payload     []byte // kept by the message log record: not modified after Handle
	QoS         byte
	Transport   string // "mqtt" or "http"
	ContentType string // "" or "application/json"
	Will        bool   // the broker published the device's last will
	Received    time.Time
	// ActivityNoted says that the transport told Presence of the
	// device's activity with this message already (the broker does for
	// every packet a device sends): the pipeline does not tell it again.
	ActivityNoted bool
}

// Result says what became of an accepted message.
type Result struct {
	MessageID int64 // the message log record (0 for a duplicate)
	Readings  int   // readings stored
	Duplicate bool  // the msg_id was stored before: acknowledged, not stored again
}

// Rejection is a refused message: the code, the field at fault if any, and
// a reason for people.
type Rejection struct {
	Code   string
	Field  string
	Reason string
}

func (r *Rejection) Error() string {
	if r.Field != "" {
		return fmt.Sprintf("message rejected (%s, field %s): %s", r.Code, r.Field, r.Reason)
	}
	return fmt.Sprintf("message rejected (%s): %s", r.Code, r.Reason)
}

// RejectCode returns the stable code, for transports that map it to a
// reason code or an HTTP status without importing this package.
func (r *Rejection) RejectCode() string { return r.Code }

// RejectField returns the field at fault, "" if none.
func (r *Rejection) RejectField() string { return r.Field }

// Committer queues changes for the commit path.
type Committer interface {
	Enqueue(ctx context.Context, ch *commit.Change) (*commit.Ticket, error)
}

// Types looks up declared device types.
type Types interface {
	Get(name string) (*devicetype.Type, error)
}

// Publisher sends messages to devices.
type Publisher interface {
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// Presence tracks whether devices are online.
type Presence interface {
	// Activity notes that the device was heard from.
	Activity(deviceID string)
	// RecordStatus records a status message (msg is its message log record) and
	// returns the ticket of the change that stores it, nil if none.
	RecordStatus(ctx context.Context, deviceID, deviceType, status string, msg *readings.Message, will bool) (*commit.Ticket, error)
}

// Deps are what the pipeline works with.
type Deps struct {
	Committer
	Types
	Publisher
	Presence
	IDs *commit.IDs // message ids; a fresh generator when nil
	// Commands and Twin take command results and reported properties
	// (devicecmd.go); nil refuses those topics with unknown_topic.
	Commands CommandResults
	Twin     ReportedProperties
	// Config takes configuration reports (config.go); nil refuses them
	// with unknown_topic.
	Config ConfigReports
	// Firmware takes firmware update reports (firmware.go); nil refuses
	// them with unknown_topic.
	Firmware FirmwareReports
	// Space, when set, is asked before every message; while it returns
	// an error (the disk is nearly full) messages are refused with it,
	// not stored and not recorded: the device keeps them and resends.
	Space Space
}

// Space says whether there is room to store device messages.
type Space interface {
	Check() error
}

// Options are the pipeline's limits. Zero values take the defaults.
type Options struct {
	// DefaultMaxPayloadBytes applies to types without MaxPayloadBytes
	// (default 64 KiB).
	DefaultMaxPayloadBytes int
	// DefaultRateLimit applies to types without RateLimit (default 100/s,
	// burst 200). The zero value takes the default; a negative Rate means
	// unlimited. In a type's RateLimit, Rate 0 means unlimited.
	DefaultRateLimit devicetype.RateLimit
	// MaxReadingsPerMessage caps the readings of one data message
	// (default 1000).
	MaxReadingsPerMessage int
	// MaxClockSkew is how far in the future a reading's ts may be
	// (default 24h).
	MaxClockSkew time.Duration
	// ChunkMemory bounds the bytes of chunked messages held for all
	// devices together (default 64 MiB); ChunkTimeout drops a chunked
	// message not completed in time (default 5m). See chunks.go.
	ChunkMemory  int
	ChunkTimeout time.Duration
}

func (o *Options) setDefaults() {
	if o.DefaultMaxPayloadBytes <= 0 {
		o.DefaultMaxPayloadBytes = 64 << 10
	}
	if o.DefaultRateLimit == (devicetype.RateLimit{}) {
		o.DefaultRateLimit = devicetype.RateLimit{Rate: 100, Burst: 200}
	}
	if o.DefaultRateLimit.Rate > 0 && o.DefaultRateLimit.Burst < 1 {
		o.DefaultRateLimit.Burst = max(1, int(o.DefaultRateLimit.Rate))
	}
	if o.MaxReadingsPerMessage <= 0 {
		o.MaxReadingsPerMessage = 1000
	}
	if o.MaxClockSkew <= 0 {
		o.MaxClockSkew = 24 * time.Hour
	}
	if o.ChunkMemory <= 0 {
		o.ChunkMemory = 64 << 20
	}
	if o.ChunkTimeout <= 0 {
		o.ChunkTimeout = 5 * time.Minute
	}
}

// Pipeline routes, checks and stores device messages. It is safe for
// concurrent use; it starts no goroutines.
type Pipeline struct {
	deps     Deps
	opts     Options
	log      *slog.Logger
	chain    Handler
	router   *Router
	limiters *limiters
	chunks   *chunkSets
	types    sync.Map // type name → *typeInfo
	msgs     sync.Pool
	m        *metrics
}

// New returns a pipeline. reg may be nil.
func New(deps Deps, opts Options, log *slog.Logger, reg prometheus.Registerer) *Pipeline {
	opts.setDefaults()
	if deps.IDs == nil {
		deps.IDs = new(commit.IDs)
	}
	p := &Pipeline{
		deps:     deps,
		opts:     opts,
		log:      log,
		router:   NewRouter(),
		limiters: newLimiters(),
		chunks:   newChunkSets(opts.ChunkMemory, opts.ChunkTimeout),
		m:        newMetrics(reg),
	}
	p.msgs.New = func() any { return new(Msg) }
	for _, r := range []struct {
		pattern string
		h       HandlerFunc
	}{
		{"devices/{device_id}/data", p.handleData},
		{"devices/{device_id}/data/{stream}", p.handleData},
		{"devices/{device_id}/status", p.handleStatus},
		{"devices/{device_id}/heartbeat", p.handleHeartbeat},
		{"devices/{device_id}/commands/{command_id}/result", p.handleCommandResult},
		{"devices/{device_id}/twin/reported", p.handleReported},
		{"devices/{device_id}/config/status", p.handleConfigStatus},
		{"devices/{device_id}/firmware/status", p.handleFirmwareStatus},
	} {
		if err := p.router.Route(r.pattern, r.h); err != nil {
			panic(err) // the patterns above are constants
		}
	}
	p.chain = Chain(p.router, p.space(), Identity(), p.withType(), p.rateLimit(), payloadSize(), p.reassemble(), p.decompress())
	return p
}

// Handle takes in one message. See the package documentation for what its
// outcome means. r.Payload is kept by the message log record and must not be
// modified afterwards.
func (p *Pipeline) Handle(ctx context.Context, r *Request) (Result, error) {
	start := time.Now()
	if !r.ActivityNoted {
		p.deps.Presence.Activity(r.DeviceID)
	}
	m := p.msgs.Get().(*Msg)
	*m = Msg{Now: r.Received.UTC()}
	m.own(r)
	if r.Received.IsZero() {
		m.Now = start.UTC()
	}
	err := p.chain.Handle(ctx, m)
	res := m.Result
	if err == nil {
		if res.Duplicate {
			p.m.duplicate.Inc()
		} else {
			p.m.accepted.Inc()
		}
	} else {
		res, err = p.failed(ctx, m, err)
	}
	*m = Msg{}
	p.msgs.Put(m)
	p.m.latency.Observe(time.Since(start).Seconds())
	return res, err
}

// Pending is a message Start accepted and queued whose commit decides its
// outcome.
type Pending struct {
	p        *Pipeline
	t        *commit.Ticket
	deviceID string
	start    time.Time
	fn       func(error) // OnDone's
}

// Start is Handle for a transport that acknowledges in order but need not
// hold a device's next message until the previous one is stored (MQTT QoS
// 1 with several messages in flight): it checks the message and queues its
// change for the commit, in the caller's goroutine, so that a device's
// changes are committed in the order the transport received them, and
// returns before the commit. When the outcome is already known (a
// rejection, which is recorded before Start returns; QoS 0; any handler
// that waits itself) pending is nil and err is the outcome; otherwise
// pending.Wait gives it.
func (p *Pipeline) Start(ctx context.Context, r *Request) (pending *Pending, err error) {
	start := time.Now()
	if !r.ActivityNoted {
		p.deps.Presence.Activity(r.DeviceID)
	}
	m := p.msgs.Get().(*Msg)
	*m = Msg{Now: r.Received.UTC(), deferWait: true}
	m.own(r)
	if r.Received.IsZero() {
		m.Now = start.UTC()
	}
	err = p.chain.Handle(ctx, m)
	switch {
	case err != nil:
		_, err = p.failed(ctx, m, err)
		p.m.latency.Observe(time.Since(start).Seconds())
	case m.later != nil:
		pending = &Pending{p: p, t: m.later, deviceID: r.DeviceID, start: start}
	default:
		if m.Result.Duplicate {
			p.m.duplicate.Inc()
		} else {
			p.m.accepted.Inc()
		}
		p.m.latency.Observe(time.Since(start).Seconds())
	}
	*m = Msg{}
	p.msgs.Put(m)
	return pending, err
}

// Wait waits for the commit of the message: nil once it is stored (or was
// a duplicate), an error if it could not be stored.
func (pd *Pending) Wait(ctx context.Context) error {
	return pd.settled(pd.t.Wait(ctx))
}

// OnDone has fn called once with what Wait would return, when the commit
// of the message succeeded or failed (or the commit path stopped without
// it), with no goroutine waiting for it. fn runs in the commit path's
// goroutine (commit.Ticket.OnDone), after the pipeline counted the
// outcome: it must be quick and never block. If the outcome is already
// known, fn runs at once in the caller's goroutine. OnDone bounds no
// time: a transport that must give up on a message not stored in time
// watches the time itself.
func (pd *Pending) OnDone(fn func(error)) {
	pd.fn = fn
	pd.t.Notify((*pendingDone)(pd))
}

// pendingDone is a Pending as the ticket's Completion: the callback
// without a closure per message.
type pendingDone Pending

func (d *pendingDone) Completed(err error) {
	pd := (*Pending)(d)
	pd.fn(pd.settled(err))
}

// settled counts the outcome err of the commit and returns the message's.
func (pd *Pending) settled(err error) error {
	p := pd.p
	p.m.latency.Observe(time.Since(pd.start).Seconds())
	if err != nil {
		return fmt.Errorf("commit message of %s: %w", pd.deviceID, err)
	}
	if pd.t.Change != nil && pd.t.Change.Duplicate {
		p.m.duplicate.Inc()
	} else {
		p.m.accepted.Inc()
	}
	return nil
}

// failed records a rejection; other errors are returned as they are.
func (p *Pipeline) failed(ctx context.Context, m *Msg, err error) (Result, error) {
	var rej *Rejection
	if !errors.As(err, &rej) {
		return Result{}, err
	}
	p.m.rejected(rej.Code).Inc()
	if m.lim == nil && (rej.Code == CodeIdentityMismatch || rej.Code == CodeUnknownDeviceType) {
		// Decided before the rate limit: bounded like rate_limited.
		m.lim = p.limiters.get(m.Req.DeviceID, unmetered)
		m.quiet = !m.lim.claimReport(time.Now(), unmetered)
	}
	if m.quiet {
		p.m.rejectedUnrecorded.Inc()
		return Result{}, rej
	}
	id, rerr := p.recordRejection(ctx, m, rej)
	if rerr != nil {
		return Result{}, rerr
	}
	return Result{MessageID: id}, rej
}

// keepRejected bounds the payload a message log record keeps of a payload that
// was refused for its size.
const keepRejected = 1 << 10

// recordRejection stores the refusal (message log record and message_rejected
// event), waits for its commit and then tells the device.
func (p *Pipeline) recordRejection(ctx context.Context, m *Msg, rej *Rejection) (int64, error) {
	r := m.Req
	id := p.deps.IDs.Next()
	payload := r.Payload
	if rej.Code == CodePayloadTooLarge && len(payload) > keepRejected {
		payload = payload[:keepRejected:keepRejected]
	}
	var suppressed int64
	if m.lim != nil {
		suppressed = m.lim.suppressed.Swap(0)
	}
	reason := rej.Reason
	if suppressed > 0 {
		reason = fmt.Sprintf("%s (and %d more refusals of this device not recorded)", reason, suppressed)
	}
	ev, err := commit.NewEvent(events.Event{
		Type: events.MessageRejected, Time: m.Now, DeviceID: r.DeviceID, DeviceType: r.DeviceType,
		Args: &events.Rejected{MessageID: id, Topic: r.Topic, Transport: r.Transport, Code: rej.Code, Field: rej.Field, Reason: rej.Reason, Suppressed: suppressed},
	})
	if err != nil {
		return 0, err
	}
	// No MsgID: a refused message must not make the corrected retry with
	// the same msg_id a duplicate.
	ch := &commit.Change{
		DeviceID: r.DeviceID,
		Ops: []commit.Op{&readings.Message{
			ID: id, Topic: r.Topic, Transport: r.Transport, QoS: r.QoS, Payload: payload,
			Code: rej.Code, Reason: reason, ReceivedAt: m.Now,
		}},
		Events: []commit.Event{ev},
	}
	t, err := p.deps.Committer.Enqueue(ctx, ch)
	if err != nil {
		return 0, fmt.Errorf("record rejection of %s: %w", r.DeviceID, err)
	}
	if err := t.Wait(ctx); err != nil {
		return 0, fmt.Errorf("record rejection of %s: %w", r.DeviceID, err)
	}
	p.publishError(m, rej)
	return id, nil
}

// errorReport is what a device receives on devices/{id}/errors.
type errorReport struct {
	Topic  string `json:"topic"`
	Code   string `json:"code"`
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
	MsgID  string `json:"msg_id,omitempty"` // the device's msg_id, when it was read
}

func (p *Pipeline) publishError(m *Msg, rej *Rejection) {
	b, err := json.Marshal(errorReport{Topic: m.Req.Topic, Code: rej.Code, Field: rej.Field, Reason: rej.Reason, MsgID: m.msgID})
	if err != nil {
		p.log.Error("encode error report", "device", m.Req.DeviceID, "err", err)
		return
	}
	if err := p.deps.Publisher.Publish(registry.TopicPrefix+m.Req.DeviceID+"/errors", b, false, 1); err != nil {
		p.log.Warn("publish error report", "device", m.Req.DeviceID, "code", rej.Code, "err", err)
	}
}

// wait waits for the commit when the transport acknowledges only stored
// messages (QoS 1 and 2, HTTP), or leaves the ticket to Start's caller.
func (p *Pipeline) wait(ctx context.Context, m *Msg, t *commit.Ticket) error {
	if t == nil || (m.Req.QoS == 0 && m.Req.Transport != "http") {
		return nil
	}
	if m.deferWait {
		m.later = t
		return nil
	}
	if err := t.Wait(ctx); err != nil {
		return fmt.Errorf("commit message of %s: %w", m.Req.DeviceID, err)
	}
	if t.Change != nil && t.Change.Duplicate {
		m.Result = Result{Duplicate: true}
	}
	return nil
}

type metrics struct {
	messages  *prometheus.CounterVec
	accepted  prometheus.Counter
	duplicate prometheus.Counter
	byCode    map[string]prometheus.Counter
	latency   prometheus.Histogram
	// rejectedUnrecorded counts refusals not written (see rateLimit).
	rejectedUnrecorded prometheus.Counter
}

var allCodes = []string{
	CodeInvalidJSON, CodeInvalidPayload, CodeValidationFailed, CodeInvalidTimestamp, CodePayloadTooLarge,
	CodeRateLimited, CodeUnknownTopic, CodeIdentityMismatch, CodeUnknownDeviceType,
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "devicehub_messages_total",
			Help: "Device messages handled, by result (accepted, duplicate, rejected) and rejection code.",
		}, []string{"result", "reason"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "devicehub_ingest_handle_duration_seconds",
			Help:    "Time to handle one device message, including the wait for its commit.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
		byCode: make(map[string]prometheus.Counter, len(allCodes)),
		rejectedUnrecorded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "devicehub_messages_rejected_unrecorded_total",
			Help: "Refused device messages counted but not written to the audit and event logs (a refusal flood, summed up in the next recorded refusal).",
		}),
	}
	m.accepted = m.messages.WithLabelValues("accepted", "")
	m.duplicate = m.messages.WithLabelValues("duplicate", "")
	for _, c := range allCodes {
		m.byCode[c] = m.messages.WithLabelValues("rejected", c)
	}
	if reg != nil {
		reg.MustRegister(m.messages, m.latency, m.rejectedUnrecorded)
	}
	return m
}

func (m *metrics) rejected(code string) prometheus.Counter {
	if c, ok := m.byCode[code]; ok {
		return c
	}
	return m.messages.WithLabelValues("rejected", code)
}
