package api

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/audit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

const (
	defaultLimit    = 100
	maxDeviceLimit  = 1000
	maxReadingLimit = 10000
)

// DeviceList is the answer of GET /api/v1/devices.
type DeviceList struct {
	Devices []registry.Device `json:"devices"`
	Next    string            `json:"next,omitempty"`
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := limitParam(q, maxDeviceLimit)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	opts := registry.ListOptions{
		Type: q.Get("type"), Group: q.Get("group"), Status: q.Get("status"),
		After: q.Get("after"), Limit: limit + 1, // one more tells whether there is a next page
	}
	if s := q.Get("connected"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			a.writeError(w, r, invalidArg("connected", "must be true or false, got %q", s))
			return
		}
		opts.Connected = &b
	}
	devs, err := a.deps.Devices.List(r.Context(), opts)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := DeviceList{Devices: devs}
	if len(devs) > limit {
		out.Devices = devs[:limit]
		out.Next = devs[limit-1].ID
	}
	if out.Devices == nil {
		out.Devices = []registry.Device{}
	}
	writeJSON(w, http.StatusOK, out)
}

// ProvisionRequest is the body of POST /api/v1/devices.
type ProvisionRequest struct {
	ID       string         `json:"id"`
	Type     string         `json:"type"`
	Name     string         `json:"name,omitempty"`
	Group    string         `json:"group,omitempty"`
	Tags     []string       `json:"tags,omitempty"`
	Metadata map[string]any `json:"metadata,omitempty"`
	// Replace re-provisions an existing device with new credentials.
	Replace bool `json:"replace,omitempty"`
}

// Credentials are a device's plaintext credentials, shown once.
type Credentials struct {
	DeviceID     string `json:"device_id"`
	MQTTUsername string `json:"mqtt_username"`
	MQTTPassword string `json:"mqtt_password"`
	APIKey       string `json:"api_key"`
}

// Provisioned is the answer of POST /api/v1/devices.
type Provisioned struct {
	Device      *registry.Device `json:"device"`
	Credentials Credentials      `json:"credentials"`
}

func (a *API) provision(w http.ResponseWriter, r *http.Request) {
	var req ProvisionRequest
	if err := decodeBody(w, r, a.opts.MaxBodyBytes, &req); err != nil {
		a.writeError(w, r, err)
		return
	}
	switch {
	case req.ID == "":
		a.writeError(w, r, invalidArg("id", "required"))
		return
	case !registry.ValidID(req.ID):
		a.writeError(w, r, invalidArg("id", "must match %s", registry.IDPattern))
		return
	case req.Type == "":
		a.writeError(w, r, invalidArg("type", "required"))
		return
	}
	creds, err := a.deps.Devices.Provision(r.Context(), registry.ProvisionRequest{
		ID: req.ID, Type: req.Type, Name: req.Name, Group: req.Group,
		Tags: req.Tags, Metadata: req.Metadata, Replace: req.Replace,
	})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := Provisioned{Credentials: Credentials{
		DeviceID: req.ID, MQTTUsername: creds.MQTTUsername, MQTTPassword: creds.MQTTPassword, APIKey: creds.APIKey,
	}}
	dev, err := a.deps.Devices.Get(r.Context(), req.ID)
	if err != nil {
		// The device exists and these credentials are the only copy: answer
		// with what the request said rather than lose them to an error.
		a.log.Warn("read provisioned device", "device_id", req.ID, "err", err)
		dev = &registry.Device{ID: req.ID, Type: req.Type, Name: req.Name, Group: req.Group, Tags: req.Tags, Metadata: req.Metadata}
	}
	out.Device = dev
	writeJSON(w, http.StatusCreated, out)
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	dev, err := a.deps.Devices.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"device": dev})
}

// ReadingsPage is the answer of GET /api/v1/devices/{id}/readings.
type ReadingsPage struct {
	Readings []readings.Record `json:"readings"`
	Next     string            `json:"next,omitempty"`
}

func (a *API) readings(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	query := readings.Query{DeviceID: r.PathValue("id"), Stream: q.Get("stream"), Field: q.Get("field"), Cursor: q.Get("cursor")}
	var err error
	if query.Limit, err = limitParam(q, maxReadingLimit); err != nil {
		a.writeError(w, r, err)
		return
	}
	if query.From, err = timeParam(q, "from"); err != nil {
		a.writeError(w, r, err)
		return
	}
	if query.To, err = timeParam(q, "to"); err != nil {
		a.writeError(w, r, err)
		return
	}
	if !query.From.IsZero() && !query.To.IsZero() && !query.From.Before(query.To) {
		a.writeError(w, r, invalidArg("to", "must be after from"))
		return
	}
	if a.deps.Devices != nil {
		// An unknown device is a 404, not an empty page.
		if _, err := a.deps.Devices.Get(r.Context(), query.DeviceID); err != nil {
			a.writeError(w, r, err)
			return
		}
	}
	page, err := a.deps.Readings.QueryReadings(r.Context(), query)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := ReadingsPage{Readings: page.Readings, Next: page.Next}
	if out.Readings == nil {
		out.Readings = []readings.Record{}
	}
	writeJSON(w, http.StatusOK, out)
}

// Message is one audit record as the API shows it: the payload as text
// when it is UTF-8, else base64 in PayloadBase64.
type Message struct {
	ID            int64     `json:"id"`
	DeviceID      string    `json:"device_id"`
	Topic         string    `json:"topic"`
	Transport     string    `json:"transport"`
	QoS           byte      `json:"qos"`
	Payload       string    `json:"payload,omitempty"`
	PayloadBase64 []byte    `json:"payload_base64,omitempty"`
	MsgID         string    `json:"msg_id,omitempty"`
	Accepted      bool      `json:"accepted"`
	Code          string    `json:"code,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	ReceivedAt    time.Time `json:"received_at"`
}

// MessageList is the answer of GET /api/v1/devices/{id}/messages.
type MessageList struct {
	Messages []Message `json:"messages"`
	Next     string    `json:"next,omitempty"` // pass as ?before= for the next page
}

func (a *API) messages(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := limitParam(q, maxDeviceLimit)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	query := audit.Query{DeviceID: r.PathValue("id"), Limit: limit + 1}
	if s := q.Get("rejected"); s != "" {
		if query.Rejected, err = strconv.ParseBool(s); err != nil {
			a.writeError(w, r, invalidArg("rejected", "must be true or false, got %q", s))
			return
		}
	}
	if s := q.Get("before"); s != "" {
		if query.Before, err = strconv.ParseInt(s, 10, 64); err != nil || query.Before < 1 {
			a.writeError(w, r, invalidArg("before", "must be a message id, got %q", s))
			return
		}
	}
	msgs, err := a.deps.Messages.ListMessages(r.Context(), query)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	out := MessageList{Messages: make([]Message, 0, len(msgs))}
	if len(msgs) > limit {
		msgs = msgs[:limit]
		out.Next = strconv.FormatInt(msgs[limit-1].ID, 10)
	}
	for _, m := range msgs {
		v := Message{ID: m.ID, DeviceID: m.DeviceID, Topic: m.Topic, Transport: m.Transport, QoS: m.QoS,
			MsgID: m.MsgID, Accepted: m.Accepted, Code: m.Code, Reason: m.Reason, ReceivedAt: m.ReceivedAt}
		if utf8.Valid(m.Payload) {
			v.Payload = string(m.Payload)
		} else {
			v.PayloadBase64 = m.Payload
		}
		out.Messages = append(out.Messages, v)
	}
	writeJSON(w, http.StatusOK, out)
}

// DeviceType is a declared device type as the API shows it, with
// durations as Go duration strings.
type DeviceType struct {
	Name               string                      `json:"name"`
	HeartbeatInterval  string                      `json:"heartbeat_interval,omitempty"`
	HeartbeatTimeout   string                      `json:"heartbeat_timeout,omitempty"`
	Fields             map[string]devicetype.Field `json:"fields"`
	AllowUnknownFields bool                        `json:"allow_unknown_fields"`
	Commands           []string                    `json:"commands"`
	RateLimit          *devicetype.RateLimit       `json:"rate_limit,omitempty"`
	MaxPayloadBytes    int                         `json:"max_payload_bytes,omitempty"`
}

func (a *API) deviceTypes(w http.ResponseWriter, r *http.Request) {
	types := a.deps.Types.List()
	out := make([]DeviceType, 0, len(types))
	for _, t := range types {
		v := DeviceType{Name: t.Name, Fields: t.Fields, AllowUnknownFields: t.AllowUnknownFields,
			Commands: t.Commands, RateLimit: t.RateLimit, MaxPayloadBytes: t.MaxPayloadBytes}
		if t.HeartbeatInterval > 0 {
			v.HeartbeatInterval = t.HeartbeatInterval.String()
		}
		if d := t.Timeout(); d > 0 {
			v.HeartbeatTimeout = d.String()
		}
		if v.Fields == nil {
			v.Fields = map[string]devicetype.Field{}
		}
		if v.Commands == nil {
			v.Commands = []string{}
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"device_types": out})
}

func limitParam(q url.Values, max int) (int, error) {
	s := q.Get("limit")
	if s == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > max {
		return 0, invalidArg("limit", "must be an integer from 1 to %d, got %q", max, s)
	}
	return n, nil
}

// parseTime reads an RFC 3339 time or Unix milliseconds.
func parseTime(s string) (time.Time, bool) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms).UTC(), true
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}

func timeParam(q url.Values, name string) (time.Time, error) {
	s := strings.TrimSpace(q.Get(name))
	if s == "" {
		return time.Time{}, nil
	}
	t, ok := parseTime(s)
	if !ok {
		return time.Time{}, invalidArg(name, "must be an RFC 3339 time or Unix milliseconds, got %q", s)
	}
	return t, nil
}

// eventFilter reads the event filters of a query: each may repeat or hold
// a comma-separated list.
func eventFilter(q url.Values) events.Filter {
	var f events.Filter
	for _, t := range listParam(q, "type") {
		f.Types = append(f.Types, events.Type(t))
	}
	f.DeviceTypes = listParam(q, "device_type")
	f.DeviceIDs = listParam(q, "device_id")
	return f
}

func listParam(q url.Values, name string) []string {
	var out []string
	for _, v := range q[name] {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
