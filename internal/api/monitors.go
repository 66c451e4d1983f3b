package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/monitors"
)

// Monitors manages push monitors (*monitors.Service).
type Monitors interface {
	Create(ctx context.Context, spec monitors.Spec) (*monitors.CreateResult, error)
	Get(ctx context.Context, id string) (*monitors.Monitor, error)
	List(ctx context.Context, opts monitors.ListOptions) ([]monitors.Monitor, error)
	Update(ctx context.Context, id string, spec monitors.Spec) (*monitors.Monitor, error)
	Enable(ctx context.Context, id string) (*monitors.Monitor, error)
	Delete(ctx context.Context, id string) error
	RotateSecret(ctx context.Context, id string, overlap time.Duration) (string, error)
	RotateToken(ctx context.Context, id string) (string, error)
	// Backlog returns the events committed after the monitor's cursor and
	// the age in seconds of the oldest event it holds unacknowledged.
	Backlog(id string) (events int64, lagSeconds float64)
}

func (a *API) registerMonitors() {
	if a.deps.MonitorStream != nil {
		// The stream authenticates with the monitor's id and token in its
		// first frame, not with an operator token.
		a.mux.Handle("GET /api/v1/monitors/stream", a.deps.MonitorStream)
	}
	register(a, permOperator, huma.Operation{
		OperationID: "createMonitor", Method: http.MethodPost, Path: "/api/v1/monitors", Tags: []string{"monitors"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Create a monitor",
		Description: "A push monitor delivers the events of its topics to an outside system: by HTTP (a signed PUT or POST " +
			"of each batch to url) or as a stream the receiver reads from the hub's monitor port or WebSocket " +
			"(/api/v1/monitors/stream). It starts at the end of the event log. The answer carries the signing secret " +
			"(http) or the stream token (tcp): the only time they are shown. An http URL that resolves to a loopback, " +
			"link-local or private address is refused unless monitors.allow_private_targets is set.",
	}, a.createMonitor)
	register(a, permViewer, huma.Operation{
		OperationID: "listMonitors", Method: http.MethodGet, Path: "/api/v1/monitors", Tags: []string{"monitors"},
		Summary: "List monitors",
		Description: "Every monitor, or those matching a condition such as `status = \"DISABLED\"` or " +
			"`transport = \"http\" and status != \"ACTIVE\"`, or those with exactly the given topics.",
	}, a.listMonitors)
	register(a, permViewer, huma.Operation{
		OperationID: "getMonitor", Method: http.MethodGet, Path: "/api/v1/monitors/{monitor_id}", Tags: []string{"monitors"},
		Summary: "Get a monitor", Description: "Its definition and state: status, last connection, last delivery, backlog and lag.",
	}, a.getMonitor)
	register(a, permOperator, huma.Operation{
		OperationID: "updateMonitor", Method: http.MethodPatch, Path: "/api/v1/monitors/{monitor_id}", Tags: []string{"monitors"},
		Summary: "Change a monitor",
		Description: "Changes the given fields (the transport cannot change). The monitor restarts after its cursor; " +
			"a DISABLED monitor is enabled again, from the end of the log.",
	}, a.updateMonitor)
	register(a, permOperator, huma.Operation{
		OperationID: "enableMonitor", Method: http.MethodPost, Path: "/api/v1/monitors/{monitor_id}/enable", Tags: []string{"monitors"},
		Summary: "Enable a DISABLED monitor", Description: "It delivers the events committed from now on; other monitors are left as they are.",
	}, a.enableMonitor)
	register(a, permOperator, huma.Operation{
		OperationID: "deleteMonitor", Method: http.MethodDelete, Path: "/api/v1/monitors/{monitor_id}", Tags: []string{"monitors"},
		Summary: "Delete a monitor", Description: "Stops it and removes it with its cursor; answers the monitor as it was.",
	}, a.deleteMonitor)
	register(a, permOperator, huma.Operation{
		OperationID: "rotateMonitorSecret", Method: http.MethodPost, Path: "/api/v1/monitors/{monitor_id}/rotate-secret", Tags: []string{"monitors"},
		Summary: "Rotate an http monitor's signing secret",
		Description: "Answers a new secret. During the overlap deliveries carry signatures with the old and the new secret, " +
			"so receivers can switch without losing a delivery.",
	}, a.rotateMonitorSecret)
	register(a, permOperator, huma.Operation{
		OperationID: "rotateMonitorToken", Method: http.MethodPost, Path: "/api/v1/monitors/{monitor_id}/rotate-token", Tags: []string{"monitors"},
		Summary: "Rotate a tcp monitor's stream token", Description: "The old token stops working for new connections at once.",
	}, a.rotateMonitorToken)
}

// MonitorSpec is a monitor's definition (the body of POST /api/v1/monitors).
type MonitorSpec struct {
	Topics              []string `json:"topics" minItems:"1" maxItems:"64" doc:"Event types with * wildcards, optionally narrowed: device_*, config_*, *, device_data_received[type=sensor|camera,group=north,id=ws-1]." example:"[\"device_*\"]"`
	Transport           string   `json:"transport" enum:"http,tcp" doc:"http: the hub sends each batch to url. tcp: the receiver connects to the hub's monitor port (or WebSocket) with the monitor id and token."`
	URL                 string   `json:"url,omitempty" doc:"http: where to send batches." example:"https://example.com/hooks/devicehub"`
	Method              string   `json:"method,omitempty" enum:"PUT,POST," doc:"http: PUT (default) or POST."`
	BasicAuth           string   `json:"basic_auth,omitempty" doc:"http: user:password for basic authentication; never shown back."`
	ConnectTimeoutMS    int      `json:"connect_timeout_ms,omitempty" minimum:"0" maximum:"600000" doc:"http: milliseconds to connect; 0 means 5000."`
	ResponseTimeoutMS   int      `json:"response_timeout_ms,omitempty" minimum:"0" maximum:"600000" doc:"http: milliseconds to wait for the answer; 0 means 5000."`
	Ack                 string   `json:"ack,omitempty" enum:"explicit,off," doc:"tcp: explicit (the receiver acknowledges each batch) or off (acknowledged when written, the default)."`
	BatchSize           int      `json:"batch_size,omitempty" minimum:"0" maximum:"10000" doc:"Upper bound of events per delivery; default 100."`
	BatchDuration       *float64 `json:"batch_duration,omitempty" minimum:"0" maximum:"3600" doc:"Upper bound of seconds an event waits for its batch; default 10."`
	Compression         string   `json:"compression,omitempty" enum:"none,zlib,gzip," doc:"zlib deflates the body (gzip is accepted as a synonym and also means deflate)."`
	Format              string   `json:"format,omitempty" enum:"json,xml," doc:"json (default) or xml."`
	AutoReplayOnConnect bool     `json:"auto_replay_on_connect,omitempty" doc:"Keep the events missed while disconnected and deliver them first on reconnect."`
	Description         string   `json:"description,omitempty" maxLength:"1024"`
}

// Monitor is a monitor as the API shows it: never its secrets.
type Monitor struct {
	ID                  string     `json:"id" example:"mon_3f2a9c1b7d4e5f60a1b2"`
	Topics              []string   `json:"topics"`
	Transport           string     `json:"transport" enum:"http,tcp"`
	URL                 string     `json:"url,omitempty"`
	Method              string     `json:"method,omitempty"`
	BasicAuth           bool       `json:"basic_auth" doc:"Whether basic authentication credentials are set."`
	ConnectTimeoutMS    int        `json:"connect_timeout_ms,omitempty"`
	ResponseTimeoutMS   int        `json:"response_timeout_ms,omitempty"`
	Ack                 string     `json:"ack,omitempty"`
	BatchSize           int        `json:"batch_size"`
	BatchDuration       float64    `json:"batch_duration"`
	Compression         string     `json:"compression" enum:"none,zlib"`
	Format              string     `json:"format" enum:"json,xml"`
	AutoReplayOnConnect bool       `json:"auto_replay_on_connect"`
	Description         string     `json:"description,omitempty"`
	Status              string     `json:"status" enum:"CONNECTING,ACTIVE,INACTIVE,SUSPENDED,DISABLED"`
	StatusReason        string     `json:"status_reason,omitempty"`
	LastConnect         *time.Time `json:"last_connect,omitempty"`
	LastSent            *time.Time `json:"last_sent,omitempty"`
	FailingSince        *time.Time `json:"failing_since,omitempty"`
	Cursor              int64      `json:"cursor" doc:"Seq of the last event acknowledged (or skipped)."`
	Backlog             int64      `json:"backlog" doc:"Events committed after the cursor."`
	LagSeconds          float64    `json:"lag_seconds" doc:"Age of the oldest event held and not acknowledged."`
	CreatedAt           time.Time  `json:"created_at"`
	UpdatedAt           time.Time  `json:"updated_at"`
}

func (a *API) monitorOut(m *monitors.Monitor) Monitor {
	backlog, lag := a.deps.Monitors.Backlog(m.ID)
	return Monitor{
		ID: m.ID, Topics: m.Topics, Transport: m.Transport, URL: m.URL, Method: m.Method, BasicAuth: m.BasicAuth != "",
		ConnectTimeoutMS: m.ConnectTimeoutMS, ResponseTimeoutMS: m.ResponseTimeoutMS, Ack: m.Ack,
		BatchSize: m.BatchSize, BatchDuration: m.Duration().Seconds(), Compression: m.Compression, Format: m.Format,
		AutoReplayOnConnect: m.AutoReplayOnConnect, Description: m.Description,
		Status: string(m.Status), StatusReason: m.StatusReason, LastConnect: m.LastConnect, LastSent: m.LastSent,
		FailingSince: m.FailingSince, Cursor: m.Cursor, Backlog: backlog, LagSeconds: lag,
		CreatedAt: m.CreatedAt, UpdatedAt: m.UpdatedAt,
	}
}

func (s *MonitorSpec) spec() monitors.Spec {
	return monitors.Spec{
		Topics: s.Topics, Transport: s.Transport, URL: s.URL, Method: s.Method, BasicAuth: s.BasicAuth,
		ConnectTimeoutMS: s.ConnectTimeoutMS, ResponseTimeoutMS: s.ResponseTimeoutMS, Ack: s.Ack,
		BatchSize: s.BatchSize, BatchDuration: s.BatchDuration, Compression: s.Compression, Format: s.Format,
		AutoReplayOnConnect: s.AutoReplayOnConnect, Description: s.Description,
	}
}

// MonitorAnswer is the answer of the operations on one monitor.
type MonitorAnswer struct {
	Monitor Monitor `json:"monitor"`
}

// CreatedMonitor is the answer of POST /api/v1/monitors.
type CreatedMonitor struct {
	Monitor Monitor `json:"monitor"`
	Secret  string  `json:"secret,omitempty" doc:"http: the signing secret (whsec_…) of the Standard Webhooks signatures; shown only this once."`
	Token   string  `json:"token,omitempty" doc:"tcp: the stream token; shown only this once."`
}

// MonitorIDInput is the path parameter of the operations on one monitor.
type MonitorIDInput struct {
	ID string `path:"monitor_id" maxLength:"64" example:"mon_3f2a9c1b7d4e5f60a1b2"`
}

type createMonitorInput struct{ Body MonitorSpec }

type createMonitorOutput struct{ Body CreatedMonitor }

func (a *API) createMonitor(ctx context.Context, in *createMonitorInput) (*createMonitorOutput, error) {
	if a.deps.Monitors == nil {
		return nil, errNotImplemented
	}
	res, err := a.deps.Monitors.Create(ctx, in.Body.spec())
	if err != nil {
		return nil, err
	}
	setTarget(ctx, res.Monitor.ID)
	return &createMonitorOutput{Body: CreatedMonitor{Monitor: a.monitorOut(&res.Monitor), Secret: res.Secret, Token: res.Token}}, nil
}

// MonitorList is the answer of GET /api/v1/monitors.
type MonitorList struct {
	Monitors []Monitor `json:"monitors"`
}

type listMonitorsInput struct {
	Condition string `query:"condition" maxLength:"4096" doc:"Only monitors matching this condition: attribute op value, combined with and, or, not, parentheses. Attributes: id, status, transport, format, compression, method, ack, url, description, batch_size, batch_duration, connect_timeout_ms, response_timeout_ms, auto_replay_on_connect, last_connect, last_sent, created_at, topic." example:"transport = \"http\" and status != \"ACTIVE\""`
	Topics    string `query:"topics" maxLength:"8192" doc:"Only monitors with exactly these topics (comma separated, in any order)." example:"device_*,config_*"`
}

type monitorListOutput struct{ Body MonitorList }

func (a *API) listMonitors(ctx context.Context, in *listMonitorsInput) (*monitorListOutput, error) {
	if a.deps.Monitors == nil {
		return nil, errNotImplemented
	}
	cond, err := monitors.ParseCondition(in.Condition)
	if err != nil {
		return nil, err
	}
	opts := monitors.ListOptions{Condition: cond}
	if in.Topics != "" {
		// A comma inside a narrowing separates its keys, not topics.
		opts.Topics = splitTopics(in.Topics)
	}
	ms, err := a.deps.Monitors.List(ctx, opts)
	if err != nil {
		return nil, err
	}
	out := MonitorList{Monitors: make([]Monitor, 0, len(ms))}
	for i := range ms {
		out.Monitors = append(out.Monitors, a.monitorOut(&ms[i]))
	}
	return &monitorListOutput{Body: out}, nil
}

// splitTopics splits a comma separated topic list, keeping the commas
// inside [...].
func splitTopics(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

type monitorOutput struct{ Body MonitorAnswer }

func (a *API) getMonitor(ctx context.Context, in *MonitorIDInput) (*monitorOutput, error) {
	if a.deps.Monitors == nil {
		return nil, errNotImplemented
	}
	m, err := a.deps.Monitors.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &monitorOutput{Body: MonitorAnswer{Monitor: a.monitorOut(m)}}, nil
}

// MonitorPatch changes a monitor: the fields given replace the current
// ones.
type MonitorPatch struct {
	Topics              []string `json:"topics,omitempty" minItems:"1" maxItems:"64"`
	URL                 *string  `json:"url,omitempty"`
	Method              *string  `json:"method,omitempty" enum:"PUT,POST"`
	BasicAuth           *string  `json:"basic_auth,omitempty" doc:"user:password, or \"\" to remove it."`
	ConnectTimeoutMS    *int     `json:"connect_timeout_ms,omitempty" minimum:"0" maximum:"600000"`
	ResponseTimeoutMS   *int     `json:"response_timeout_ms,omitempty" minimum:"0" maximum:"600000"`
	Ack                 *string  `json:"ack,omitempty" enum:"explicit,off"`
	BatchSize           *int     `json:"batch_size,omitempty" minimum:"1" maximum:"10000"`
	BatchDuration       *float64 `json:"batch_duration,omitempty" minimum:"0" maximum:"3600"`
	Compression         *string  `json:"compression,omitempty" enum:"none,zlib,gzip"`
	Format              *string  `json:"format,omitempty" enum:"json,xml"`
	AutoReplayOnConnect *bool    `json:"auto_replay_on_connect,omitempty"`
	Description         *string  `json:"description,omitempty" maxLength:"1024"`
}

type updateMonitorInput struct {
	MonitorIDInput
	Body MonitorPatch
}

func (a *API) updateMonitor(ctx context.Context, in *updateMonitorInput) (*monitorOutput, error) {
	setTarget(ctx, in.ID)
	if a.deps.Monitors == nil {
		return nil, errNotImplemented
	}
	cur, err := a.deps.Monitors.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	s := cur.Spec
	s.Topics = append([]string(nil), s.Topics...)
	p := &in.Body
	if p.Topics != nil {
		s.Topics = p.Topics
	}
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&s.URL, p.URL)
	set(&s.Method, p.Method)
	set(&s.BasicAuth, p.BasicAuth)
	set(&s.Ack, p.Ack)
	set(&s.Compression, p.Compression)
	set(&s.Format, p.Format)
	set(&s.Description, p.Description)
	if p.ConnectTimeoutMS != nil {
		s.ConnectTimeoutMS = *p.ConnectTimeoutMS
	}
	if p.ResponseTimeoutMS != nil {
		s.ResponseTimeoutMS = *p.ResponseTimeoutMS
	}
	if p.BatchSize != nil {
		s.BatchSize = *p.BatchSize
	}
	if p.BatchDuration != nil {
		s.BatchDuration = p.BatchDuration
	}
	if p.AutoReplayOnConnect != nil {
		s.AutoReplayOnConnect = *p.AutoReplayOnConnect
	}
	m, err := a.deps.Monitors.Update(ctx, in.ID, s)
	if err != nil {
		return nil, err
	}
	return &monitorOutput{Body: MonitorAnswer{Monitor: a.monitorOut(m)}}, nil
}

func (a *API) enableMonitor(ctx context.Context, in *MonitorIDInput) (*monitorOutput, error) {
	setTarget(ctx, in.ID)
	if a.deps.Monitors == nil {
		return nil, errNotImplemented
	}
	m, err := a.deps.Monitors.Enable(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &monitorOutput{Body: MonitorAnswer{Monitor: a.monitorOut(m)}}, nil
}

func (a *API) deleteMonitor(ctx context.Context, in *MonitorIDInput) (*monitorOutput, error) {
	setTarget(ctx, in.ID)
	if a.deps.Monitors == nil {
		return nil, errNotImplemented
	}
	m, err := a.deps.Monitors.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	out := a.monitorOut(m)
	if err := a.deps.Monitors.Delete(ctx, in.ID); err != nil {
		return nil, err
	}
	return &monitorOutput{Body: MonitorAnswer{Monitor: out}}, nil
}

// RotateSecretRequest is the body of POST /api/v1/monitors/{id}/rotate-secret.
type RotateSecretRequest struct {
	Overlap string `json:"overlap,omitempty" doc:"How long the old secret keeps signing too (Go duration); default monitors.secret_overlap (24h); \"0s\" stops it at once." example:"24h"`
}

// RotatedSecret is the answer of rotate-secret.
type RotatedSecret struct {
	Secret string `json:"secret" doc:"The new signing secret; shown only this once."`
}

type rotateSecretInput struct {
	MonitorIDInput
	Body *RotateSecretRequest
}

type rotateSecretOutput struct{ Body RotatedSecret }

func (a *API) rotateMonitorSecret(ctx context.Context, in *rotateSecretInput) (*rotateSecretOutput, error) {
	setTarget(ctx, in.ID)
	if a.deps.Monitors == nil {
		return nil, errNotImplemented
	}
	var overlap time.Duration
	if in.Body != nil && in.Body.Overlap != "" {
		d, err := time.ParseDuration(in.Body.Overlap)
		if err != nil || d < 0 {
			return nil, invalidArg("overlap", "must be a Go duration such as 24h, got %q", in.Body.Overlap)
		}
		overlap = d
		if d == 0 {
			overlap = -1 // stop at once
		}
	}
	sec, err := a.deps.Monitors.RotateSecret(ctx, in.ID, overlap)
	if err != nil {
		return nil, err
	}
	return &rotateSecretOutput{Body: RotatedSecret{Secret: sec}}, nil
}

// RotatedToken is the answer of rotate-token.
type RotatedToken struct {
	Token string `json:"token" doc:"The new stream token; shown only this once."`
}

type rotateTokenOutput struct{ Body RotatedToken }

func (a *API) rotateMonitorToken(ctx context.Context, in *MonitorIDInput) (*rotateTokenOutput, error) {
	setTarget(ctx, in.ID)
	if a.deps.Monitors == nil {
		return nil, errNotImplemented
	}
	tok, err := a.deps.Monitors.RotateToken(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &rotateTokenOutput{Body: RotatedToken{Token: tok}}, nil
}
