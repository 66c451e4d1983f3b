// Package api serves devicehub's REST API under /api/v1: devices, readings,
// the message audit log, device types, a Server-Sent Events stream of the
// event log, the HTTP data endpoint for devices that cannot speak MQTT, and
// /healthz, /readyz and /metrics.
//
// Handlers are thin: they parse the request, call one of the small
// interfaces in Deps, and write JSON. Every error goes through one function,
// httpError, that maps it to an HTTP status and a stable machine code.
package api

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/audit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// Devices provisions and reads devices.
type Devices interface {
	Provision(ctx context.Context, req registry.ProvisionRequest) (events.Credentials, error)
	Get(ctx context.Context, id string) (*registry.Device, error)
	List(ctx context.Context, opts registry.ListOptions) ([]registry.Device, error)
}

// Readings queries stored readings.
type Readings interface {
	QueryReadings(ctx context.Context, q readings.Query) (readings.Page, error)
}

// Messages reads the message audit log.
type Messages interface {
	ListMessages(ctx context.Context, q audit.Query) ([]audit.Message, error)
}

// SubscribeOptions say which events a subscription receives and from where:
// From > 0 replays the stored events with Seq > From before the live ones.
type SubscribeOptions = eventlog.SubscribeOptions

// Subscription is a live event subscription.
type Subscription interface{ Close() }

// Events subscribes to committed events. fn is called in order from the
// subscription's own goroutine; it may block, which holds back only this
// subscription.
type Events interface {
	Subscribe(opts SubscribeOptions, fn func(events.Event)) (Subscription, error)
}

// DataResult is what the ingest pipeline did with a device's HTTP message.
type DataResult struct {
	MessageID int64 `json:"message_id"`
	Readings  int   `json:"readings"`
	Duplicate bool  `json:"duplicate"`
}

// Rejection is implemented by the errors of DeviceData that refuse a
// message for its content (bad JSON, a value out of range, too many
// readings, a rate limit, ...). The API answers them with 422 (429 for the
// code "rate_limited", 413 for "payload_too_large") and the rejection's
// code and field.
type Rejection interface {
	error
	RejectCode() string  // stable machine code, e.g. "invalid_payload"
	RejectField() string // the field at fault, "" if none
}

// DeviceData takes in the readings a device posts over HTTP, the same
// payload as on the MQTT topic devices/{id}/data[/{stream}].
type DeviceData interface {
	HandleHTTPData(ctx context.Context, deviceID, deviceType, stream string, payload []byte, contentType string) (DataResult, error)
}

// DeviceAuth authenticates a device by its API key.
type DeviceAuth interface {
	AuthenticateAPIKey(key string) (id, typ string, err error)
}

// Tokens verifies operators' bearer tokens.
type Tokens interface {
	Verify(ctx context.Context, bearer string) (*access.Token, error)
}

// Types lists the declared device types.
type Types interface {
	List() []*devicetype.Type
}

// Deps are the API's collaborators. A nil dependency makes its endpoints
// answer 501 not_implemented.
type Deps struct {
	Devices    Devices
	Readings   Readings
	Messages   Messages
	Events     Events
	DeviceData DeviceData
	DeviceAuth DeviceAuth
	Tokens     Tokens
	Types      Types
	// Ready reports whether the hub serves; nil means always ready.
	Ready func() error
	// Metrics serves /metrics (a promhttp handler); nil serves 404.
	Metrics http.Handler
}

// Options tune the API. Zero values take the defaults.
type Options struct {
	// MaxBodyBytes bounds admin request bodies; default 1 MiB.
	MaxBodyBytes int64
	// MaxDataBytes bounds device data bodies; default 1 MiB. The ingest
	// pipeline applies the per-type payload limit itself.
	MaxDataBytes int64
	// Heartbeat is the interval of SSE keep-alive comments; default 15s.
	Heartbeat time.Duration
	// EventBuffer is the SSE stream's queue of events not yet written;
	// default 256.
	EventBuffer int
}

// API is the REST API. Create it with New; serve Handler.
type API struct {
	deps Deps
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux

	shutdownOnce sync.Once
	shutdown     chan struct{}
}

// New returns an API over deps.
func New(deps Deps, opts Options, log *slog.Logger) *API {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 1 << 20
	}
	if opts.MaxDataBytes <= 0 {
		opts.MaxDataBytes = 1 << 20
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = 15 * time.Second
	}
	if opts.EventBuffer <= 0 {
		opts.EventBuffer = 256
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &API{deps: deps, opts: opts, log: log, mux: http.NewServeMux(), shutdown: make(chan struct{})}
	a.routes()
	return a
}

// Handler returns the HTTP handler of the whole API.
func (a *API) Handler() http.Handler { return a.recoverer(a.mux) }

// Shutdown ends every open event stream, so that http.Server.Shutdown does
// not wait for them. Call it before shutting the server down (or register
// it with http.Server.RegisterOnShutdown). It is idempotent.
func (a *API) Shutdown() {
	a.shutdownOnce.Do(func() { close(a.shutdown) })
}

func (a *API) routes() {
	m := a.mux
	m.HandleFunc("GET /healthz", a.healthz)
	m.HandleFunc("GET /readyz", a.readyz)
	m.HandleFunc("GET /metrics", a.metrics)

	m.Handle("GET /api/v1/devices", a.admin(false, a.deps.Devices != nil, a.listDevices))
	m.Handle("POST /api/v1/devices", a.admin(true, a.deps.Devices != nil, a.provision))
	m.Handle("GET /api/v1/devices/{id}", a.admin(false, a.deps.Devices != nil, a.getDevice))
	m.Handle("GET /api/v1/devices/{id}/readings", a.admin(false, a.deps.Readings != nil, a.readings))
	m.Handle("GET /api/v1/devices/{id}/messages", a.admin(false, a.deps.Messages != nil, a.messages))
	m.Handle("GET /api/v1/device-types", a.admin(false, a.deps.Types != nil, a.deviceTypes))
	m.Handle("GET /api/v1/events", a.admin(false, a.deps.Events != nil, a.events))

	m.Handle("POST /api/v1/device/data", a.device(a.deviceData))
	m.Handle("POST /api/v1/device/data/{stream}", a.device(a.deviceData))

	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		a.writeError(w, r, &Error{Status: http.StatusNotFound, Code: "not_found", Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
}

// admin wraps an operator endpoint: it checks the bearer token and that
// its role may read (write false) or change (write true).
func (a *API) admin(write, available bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.deps.Tokens == nil {
			a.writeError(w, r, errNotImplemented)
			return
		}
		bearer, ok := bearerToken(r)
		if !ok {
			a.writeError(w, r, access.ErrUnauthorized)
			return
		}
		tok, err := a.deps.Tokens.Verify(r.Context(), bearer)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		if !access.Allowed(tok.Role, write) {
			a.writeError(w, r, access.ErrForbidden)
			return
		}
		if !available {
			a.writeError(w, r, errNotImplemented)
			return
		}
		h(w, r)
	})
}

// deviceKey is the context key of the authenticated device.
type deviceKey struct{}

type deviceIdentity struct{ id, typ string }

// device wraps a device endpoint: the bearer is the device's API key.
func (a *API) device(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.deps.DeviceAuth == nil || a.deps.DeviceData == nil {
			a.writeError(w, r, errNotImplemented)
			return
		}
		key, ok := bearerToken(r)
		if !ok {
			a.writeError(w, r, registry.ErrUnauthorized)
			return
		}
		id, typ, err := a.deps.DeviceAuth.AuthenticateAPIKey(key)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		ctx := context.WithValue(r.Context(), deviceKey{}, deviceIdentity{id: id, typ: typ})
		h(w, r.WithContext(ctx))
	})
}

func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	const prefix = "bearer "
	if len(h) <= len(prefix) || !equalFold(h[:len(prefix)], prefix) {
		return "", false
	}
	return h[len(prefix):], true
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// recoverer turns a handler panic into a 500 and a log line instead of a
// dropped connection.
func (a *API) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", v)
				a.writeError(w, r, errPanic)
			}
		}()
		next.ServeHTTP(w, r)
	})
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *API) readyz(w http.ResponseWriter, r *http.Request) {
	if a.deps.Ready != nil {
		if err := a.deps.Ready(); err != nil {
			a.writeError(w, r, &Error{Status: http.StatusServiceUnavailable, Code: "not_ready", Message: err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	if a.deps.Metrics == nil {
		http.NotFound(w, r)
		return
	}
	a.deps.Metrics.ServeHTTP(w, r)
}
