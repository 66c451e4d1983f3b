// Package api serves devicehub's REST API under /api/v1: devices, readings,
// the message log, device types, a Server-Sent Events stream of the
// event log, the HTTP data endpoint for devices that cannot speak MQTT,
// operator tokens and the API audit trail, and /healthz, /readyz and
// /metrics.
//
// Operations are huma operations on the standard ServeMux: huma validates
// requests and writes the OpenAPI 3.1 document (/api/v1/openapi.json) from
// the Go types; /api/v1/docs renders it without the internet. Each
// operation states the least role it needs; one middleware (guard)
// authenticates, enforces that role and writes the audit trail of changes.
//
// Handlers are thin: they call one of the small interfaces in Deps. Every
// error goes through one function, httpError, that maps it to an HTTP
// status and a stable machine code, and huma's own errors have the same
// shape, {"error": {"code", "message", "field"}}.
package api

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/access"
	"github.com/devicehub/devicehub/internal/accounts"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/eventlog"
	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/throttle"
)

// Devices provisions and reads devices.
type Devices interface {
	Provision(ctx context.Context, req registry.ProvisionRequest) (events.Credentials, error)
	Get(ctx context.Context, id string) (*registry.Device, error)
	List(ctx context.Context, opts registry.ListOptions) ([]registry.Device, error)
}

// DeviceControl changes devices: their fields, their state and their
// credentials (*registry.Service).
type DeviceControl interface {
	Update(ctx context.Context, id string, req registry.UpdateRequest) (*registry.Device, error)
	Disable(ctx context.Context, id, reason string) error
	Enable(ctx context.Context, id string) error
	Revoke(ctx context.Context, id, reason string) error
	Rotate(ctx context.Context, id string, overlap time.Duration) (registry.RotateResult, error)
	PinCertificate(ctx context.Context, id string, fingerprint [32]byte) error
}

// Groups keeps device groups (*registry.Service).
type Groups interface {
	CreateGroup(ctx context.Context, req registry.CreateGroupRequest) (*registry.Group, error)
	RenameGroup(ctx context.Context, id, name string) (*registry.Group, error)
	GetGroup(ctx context.Context, id string) (*registry.Group, error)
	ListGroups(ctx context.Context) ([]registry.Group, error)
	ListGroupDevices(ctx context.Context, id string, opts registry.ListOptions) ([]registry.Device, error)
}

// Importer provisions devices in bulk from a file (*registry.Service).
type Importer interface {
	ImportCSV(ctx context.Context, r io.Reader, opts registry.ImportOptions) (*registry.ImportReport, error)
	ImportJSON(ctx context.Context, b []byte, opts registry.ImportOptions) (*registry.ImportReport, error)
}

// ProvisioningTokens issues and revokes provisioning tokens
// (*provisioning.Service).
type ProvisioningTokens interface {
	CreateToken(ctx context.Context, req provisioning.CreateTokenRequest) (*provisioning.CreateTokenResponse, error)
	ListTokens(ctx context.Context) ([]provisioning.Token, error)
	RevokeToken(ctx context.Context, id string) error
}

// ProvisioningOperations runs provisioning operations: a device asks, an
// operator approves or rejects, the device polls (*provisioning.Service).
type ProvisioningOperations interface {
	CreateOperation(ctx context.Context, req provisioning.CreateOperationRequest, remoteAddr string) (*provisioning.CreateOperationResponse, error)
	PollOperation(ctx context.Context, id, secret string) (*provisioning.OperationStatus, error)
	ListOperations(ctx context.Context, status string, limit int) ([]provisioning.Operation, error)
	GetOperation(ctx context.Context, id string) (*provisioning.Operation, error)
	ApproveOperation(ctx context.Context, id string, req provisioning.ApproveRequest) (*provisioning.Operation, error)
	RejectOperation(ctx context.Context, id string, req provisioning.RejectRequest) (*provisioning.Operation, error)
}

// Registration is self-registration with the shared secret
// (*provisioning.Service).
type Registration interface {
	Register(ctx context.Context, req provisioning.RegisterRequest) (*provisioning.RegisterResponse, error)
}

// Readings queries stored readings.
type Readings interface {
	QueryReadings(ctx context.Context, q readings.Query) (readings.Page, error)
}

// Messages reads the message log.
type Messages interface {
	ListMessages(ctx context.Context, q messagelog.Query) ([]messagelog.Message, error)
}

// SubscribeOptions say which events a subscription receives and from where:
// From > 0 replays the stored events with Seq > From before the live ones,
// From < 0 every stored event.
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
	MessageID int64 `json:"message_id" doc:"The stored message's id (the first one's, for a duplicate)."`
	Readings  int   `json:"readings" doc:"How many readings were stored."`
	Duplicate bool  `json:"duplicate" doc:"The msg_id was seen before; nothing new was stored."`
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

// Tokens verifies, creates, lists and revokes operators' bearer tokens
// (*access.Service).
type Tokens interface {
	Verify(ctx context.Context, bearer string) (*access.Token, error)
	Create(ctx context.Context, name string, role access.Role) (string, access.Token, error)
	List(ctx context.Context) ([]access.Token, error)
	Revoke(ctx context.Context, id string) error
}

// AuditLog keeps the API audit trail: every change asked of the API.
type AuditLog = access.AuditStore

// Types lists the declared device types.
type Types interface {
	List() []*devicetype.Type
}

// Sessions authenticates a dashboard session by its cookie's secret
// (*accounts.Service).
type Sessions interface {
	Authenticate(ctx context.Context, secret string) (*accounts.User, *accounts.Session, error)
}

// Users manages operator accounts (*accounts.Service).
type Users interface {
	AddUser(ctx context.Context, name, password string, role access.Role) (*accounts.User, error)
	ListUsers(ctx context.Context) ([]accounts.User, error)
	DeleteUser(ctx context.Context, name string) error
}

// Deps are the API's collaborators. A nil dependency makes its endpoints
// answer 501 not_implemented.
type Deps struct {
	Devices Devices
	// Control updates, disables, revokes and rotates devices; Groups
	// keeps groups; Import provisions devices from files.
	Control DeviceControl
	Groups  Groups
	Import  Importer
	// ProvisioningTokens, ProvisioningOps and Registration serve
	// provisioning tokens, operations and self-registration.
	ProvisioningTokens ProvisioningTokens
	ProvisioningOps    ProvisioningOperations
	Registration       Registration

	Readings Readings
	// ReadingQueries: latest values of the fleet, aggregates (readings.go).
	ReadingQueries ReadingQueries
	Messages       Messages
	Events         Events
	DeviceData     DeviceData
	DeviceAuth     DeviceAuth
	Tokens         Tokens
	// Audit records every change asked of the API; nil records nothing
	// (and GET /api/v1/audit answers 501).
	Audit AuditLog
	Types Types
	// Commands sends commands to devices; Twin keeps their twins.
	Commands Commands
	Twin     Twin
	// Monitors manages push monitors; MonitorStream serves their streams
	// over WebSocket at /api/v1/monitors/stream.
	Monitors      Monitors
	MonitorStream http.Handler
	// Sessions authenticates the dashboard's signed-in users by their
	// session cookie; Users manages their accounts. nil: no cookie is
	// accepted, and the users endpoints answer 501.
	Sessions Sessions
	Users    Users
	// Counter counts the devices for GET /api/v1/fleet/summary.
	Counter DeviceCounter
	// History reads a device's presence history.
	History PresenceHistory
	// Config is configuration management: templates, groups' and
	// devices' configurations, and the devices' config endpoints.
	Config Config
	// Firmware runs firmware artifacts and rollouts and the devices'
	// downloads and reports.
	Firmware Firmware
	// Alerts lists and handles alerts, alert rules and silences.
	Alerts Alerts
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
	// RotationOverlap is how long a device's old credentials stay valid
	// after a rotation that names no overlap (provisioning.rotation_overlap);
	// 0: they stop at once.
	RotationOverlap time.Duration
	// Guessing throttles the failed attempts with a secret (see
	// secrets.go); zero values take throttle's defaults.
	Guessing throttle.Options
	// Registerer receives the API's metrics; nil: none are exported.
	Registerer prometheus.Registerer
}

// Version is the version of the API the OpenAPI document states.
const Version = "1.0.0"

// API is the REST API. Create it with New; serve Handler.
type API struct {
	deps Deps
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
	huma huma.API
	// secrets throttles and counts failed attempts with a secret.
	secrets *secretGuards

	shutdownOnce sync.Once
	shutdown     chan struct{}
	audits       *auditBatcher // when the Audit store writes batches
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
	humaSettings()
	a := &API{deps: deps, opts: opts, log: log, mux: http.NewServeMux(), shutdown: make(chan struct{})}
	a.secrets = newSecretGuards(opts.Guessing, log, opts.Registerer)
	if ab, ok := deps.Audit.(auditBatchAppender); ok {
		a.audits = &auditBatcher{store: ab}
	}
	a.huma = humago.New(a.mux, humaConfig())
	a.huma.UseMiddleware(a.guard)
	a.routes()
	return a
}

// humaConfig is huma's default configuration without what does not fit
// the hub: no docs page loading scripts from the internet (docs.go serves
// our own), no $schema links in bodies, the document under /api/v1.
func humaConfig() huma.Config {
	cfg := huma.DefaultConfig("devicehub", Version)
	cfg.OpenAPIPath = "/api/v1/openapi"
	cfg.DocsPath = ""
	cfg.SchemasPath = ""
	cfg.CreateHooks = nil
	cfg.Info.Description = "The REST API of devicehub, an IoT device hub. Operators authenticate with a bearer token " +
		"whose role (viewer, operator, admin) decides what it may do; devices post data with their API key. " +
		"Every error answer is {\"error\": {\"code\", \"message\", \"field\"}}. Lists page with cursors: pass a page's " +
		"`next` back as the cursor parameter."
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		schemeBearer: {Type: "http", Scheme: "bearer", Description: "An operator token (devicehub token create). Its role decides what it may do."},
		schemeDevice: {Type: "http", Scheme: "bearer", Description: "A device's API key, from its provisioning."},
		schemeOperation: {Type: "http", Scheme: "bearer", Description: "A provisioning operation's secret, from its creation: " +
			"the device polls its operation with it."},
	}
	cfg.Tags = []*huma.Tag{
		{Name: "devices", Description: "Devices, their readings and their message log (every message a device sent, accepted or rejected)"},
		{Name: "device", Description: "Endpoints for devices (API key)"},
		{Name: "groups", Description: "Device groups"},
		{Name: "provisioning", Description: "Provisioning tokens and operations, self-registration"},
		{Name: "events", Description: "The event stream"},
		{Name: "tokens", Description: "Operator tokens"},
		{Name: "audit", Description: "The audit trail: what operators (tokens) asked of the API. A device's own messages are its message log (devices)."},
		{Name: "users", Description: "Operator accounts of the dashboard"},
		{Name: "commands", Description: "Commands to devices and their results"},
		{Name: "twin", Description: "Device twins: desired and reported properties"},
		{Name: "monitors", Description: "Push monitors: events delivered to outside systems by webhook or stream"},
	}
	return cfg
}

// Handler returns the HTTP handler of the whole API.
func (a *API) Handler() http.Handler { return a.recoverer(a.mux) }

// OpenAPI returns the API's OpenAPI document.
func (a *API) OpenAPI() *huma.OpenAPI { return a.huma.OpenAPI() }

// Shutdown ends every open event stream, so that http.Server.Shutdown does
// not wait for them. Call it before shutting the server down (or register
// it with http.Server.RegisterOnShutdown). It is idempotent.
func (a *API) Shutdown() {
	a.shutdownOnce.Do(func() { close(a.shutdown) })
}

// routes registers every endpoint. Each group of operations lives in its
// own file with a registerXxx method; adding an operation is one call of
// register there (see register's doc).
func (a *API) routes() {
	m := a.mux
	m.HandleFunc("GET /healthz", a.healthz)
	m.HandleFunc("GET /readyz", a.readyz)
	m.HandleFunc("GET /metrics", a.metrics)
	m.HandleFunc("GET /api/v1/docs", a.docs)

	a.registerDevices()
	a.registerManage()
	a.registerGroups()
	a.registerProvisioning()
	a.registerDeviceTypes()
	a.registerData()
	a.registerEvents()
	a.registerTokens()
	a.registerAudit()
	a.registerCommands() // commands.go
	a.registerTwin()     // twin.go
	a.registerMonitors() // monitors.go
	a.registerAlerts()   // alerts.go
	a.registerUsers()    // users.go
	a.registerSummary()  // summary.go
	a.registerPresence() // summary.go
	a.registerConfig()   // deviceconfig.go
	a.registerFirmware() // firmware.go

	m.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		a.writeError(w, r, &Error{Status: http.StatusNotFound, Code: "not_found", Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
	})
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
