package ingest

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/registry"
)

// Handler handles one message. It returns nil when the message was
// accepted, a *Rejection when it is refused, and any other error when it
// could not be stored.
type Handler interface {
	Handle(ctx context.Context, m *Msg) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, m *Msg) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx context.Context, m *Msg) error { return f(ctx, m) }

// Middleware wraps a handler in a step that runs before it (and may refuse
// the message).
type Middleware func(Handler) Handler

// Chain wraps h in mw so that mw[0] runs first.
func Chain(h Handler, mw ...Middleware) Handler {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// Msg is one message on its way through the middleware chain to its
// handler.
type Msg struct {
	Req    *Request
	Params Params           // set by the router
	Type   *devicetype.Type // set by the type middleware
	Now    time.Time        // Req.Received in UTC, or the time Handle was called
	Result Result           // set by the handler

	info  *typeInfo
	lim   *limiterEntry // the device's limiter, once the rate limit ran
	msgID string        // the device's msg_id, once known, for the errors topic
	quiet bool          // the rejection is not recorded (a refusal flood)

	// deferWait makes the handler return without waiting for the commit
	// of an accepted message; the ticket to wait for is left in later
	// (see Pipeline.Start).
	deferWait bool
	later     *commit.Ticket

	// req is the pipeline's copy of the Request Handle or Start was
	// given (own).
	req Request
}

// own points m.Req at a copy of r held by m: the pipeline keeps no
// pointer to its caller's Request, which can then stay on the caller's
// stack (a transport builds one per message).
func (m *Msg) own(r *Request) {
	m.req = *r
	m.Req = &m.req
}

// space refuses every message while the store has no room (Deps.Space):
// with an error that is not a Rejection, so that nothing is written and
// the transport does not acknowledge.
func (p *Pipeline) space() Middleware {
	return func(next Handler) Handler {
		if p.deps.Space == nil {
			return next
		}
		return HandlerFunc(func(ctx context.Context, m *Msg) error {
			if err := p.deps.Space.Check(); err != nil {
				return err
			}
			return next.Handle(ctx, m)
		})
	}
}

// Identity refuses a message whose topic names another device than the one
// that sent it (identity_mismatch). Topics outside devices/ go on to the
// router, which refuses them as unknown.
func Identity() Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) error {
			if id, ok := registry.DeviceIDFromTopic(m.Req.Topic); ok && id != m.Req.DeviceID {
				return &Rejection{Code: CodeIdentityMismatch, Reason: fmt.Sprintf("topic of device %q published by device %q", id, m.Req.DeviceID)}
			}
			return next.Handle(ctx, m)
		})
	}
}

// withType resolves the device's type (unknown_device_type) and the limits
// in force for it.
func (p *Pipeline) withType() Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) error {
			t, err := p.deps.Types.Get(m.Req.DeviceType)
			if errors.Is(err, devicetype.ErrUnknownType) {
				return &Rejection{Code: CodeUnknownDeviceType, Reason: fmt.Sprintf("device type %q is not declared", m.Req.DeviceType)}
			}
			if err != nil {
				return fmt.Errorf("load device type %s: %w", m.Req.DeviceType, err)
			}
			m.Type = t
			m.info = p.typeInfo(t)
			return next.Handle(ctx, m)
		})
	}
}

// PayloadSize refuses payloads over the type's limit (payload_too_large).
func payloadSize() Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) error {
			if n, max := len(m.Req.Payload), m.info.maxPayload; n > max {
				return &Rejection{Code: CodePayloadTooLarge, Reason: fmt.Sprintf("payload of %d bytes is over the limit of %d", n, max)}
			}
			return next.Handle(ctx, m)
		})
	}
}

// rateLimit refuses messages over the device's token bucket (rate_limited).
// It runs before every check of the message's content, so that refused
// messages count against the rate as accepted ones do (an oversized
// payload takes a token too). Refusals that did not take a token
// (rate_limited itself, and those decided before: identity, unknown type)
// are recorded at most once per max(1s, 1/rate) per device; the others are
// counted and summed up in the next recorded refusal (Suppressed), so that
// a flood does not turn into a write flood.
func (p *Pipeline) rateLimit() Middleware {
	return func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, m *Msg) error {
			if m.info.unlimited {
				return next.Handle(ctx, m)
			}
			e := p.limiters.get(m.Req.DeviceID, m.info)
			m.lim = e
			now := time.Now()
			if e.lim.AllowN(now, 1) {
				return next.Handle(ctx, m)
			}
			m.quiet = !e.claimReport(now, m.info)
			return &Rejection{Code: CodeRateLimited, Reason: fmt.Sprintf("over %g messages/s (burst %d)", m.info.rate, m.info.burst)}
		})
	}
}

// unmetered is the typeInfo used to bound the recording of refusals
// decided before the device's type is known (identity, unknown type).
var unmetered = &typeInfo{unlimited: true}

// limiterShards spreads the per-device limiters over independently locked
// maps, so that devices rarely contend on a lock.
const limiterShards = 64

// limiters holds one token bucket per device, created on its first message.
type limiters struct {
	seed   maphash.Seed
	shards [limiterShards]limiterShard
}

type limiterShard struct {
	mu sync.RWMutex
	m  map[string]*limiterEntry
	_  [40]byte // keep shards on separate cache lines
}

type limiterEntry struct {
	lim        *rate.Limiter
	cfg        atomic.Pointer[typeInfo] // the limits lim was last set to
	lastReport atomic.Int64             // unix nanos of the last recorded unmetered refusal
	suppressed atomic.Int64             // refusals not recorded since the last recorded one
}

func newLimiters() *limiters {
	l := &limiters{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = make(map[string]*limiterEntry)
	}
	return l
}

// get returns the device's limiter, set to the limits of info.
func (l *limiters) get(deviceID string, info *typeInfo) *limiterEntry {
	sh := &l.shards[maphash.String(l.seed, deviceID)%limiterShards]
	sh.mu.RLock()
	e := sh.m[deviceID]
	sh.mu.RUnlock()
	if e == nil {
		sh.mu.Lock()
		if e = sh.m[deviceID]; e == nil {
			e = &limiterEntry{lim: rate.NewLimiter(rate.Limit(info.rate), info.burst)}
			e.cfg.Store(info)
			sh.m[deviceID] = e
		}
		sh.mu.Unlock()
	}
	// The type was changed (or the device changed type): take its limits.
	if cur := e.cfg.Load(); cur != info {
		if cur.rate != info.rate || cur.burst != info.burst {
			e.lim.SetLimit(rate.Limit(info.rate))
			e.lim.SetBurst(info.burst)
		}
		e.cfg.Store(info)
	}
	return e
}

// claimReport reports whether a refusal at now may be recorded: the first
// in max(1s, 1/rate) of the device. A refusal that may not is counted in
// suppressed.
func (e *limiterEntry) claimReport(now time.Time, info *typeInfo) bool {
	every := int64(time.Second)
	if !info.unlimited && info.rate > 0 && info.rate < 1 {
		every = int64(float64(time.Second) / info.rate)
	}
	n := now.UnixNano()
	last := e.lastReport.Load()
	if n-last < every || !e.lastReport.CompareAndSwap(last, n) {
		e.suppressed.Add(1)
		return false
	}
	return true
}

// typeInfo is what the pipeline derives from a device type: its limits and
// its field names, interned so that decoding needs no string per key.
type typeInfo struct {
	t          *devicetype.Type
	maxPayload int
	unlimited  bool
	rate       float64
	burst      int
	fields     map[string]string
}

// typeInfo returns the cached info of t, rebuilding it when the type was
// replaced.
func (p *Pipeline) typeInfo(t *devicetype.Type) *typeInfo {
	if v, ok := p.types.Load(t.Name); ok {
		if ti := v.(*typeInfo); ti.t == t {
			return ti
		}
	}
	ti := &typeInfo{t: t, maxPayload: p.opts.DefaultMaxPayloadBytes, fields: make(map[string]string, len(t.Fields)+2)}
	if t.MaxPayloadBytes > 0 {
		ti.maxPayload = t.MaxPayloadBytes
	}
	rl := p.opts.DefaultRateLimit
	if t.RateLimit != nil {
		rl = *t.RateLimit
	}
	ti.unlimited = rl.Rate <= 0
	ti.rate, ti.burst = rl.Rate, max(rl.Burst, 1)
	ti.fields["ts"], ti.fields["msg_id"] = "ts", "msg_id"
	for name := range t.Fields {
		ti.fields[name] = name
	}
	p.types.Store(t.Name, ti)
	return ti
}
