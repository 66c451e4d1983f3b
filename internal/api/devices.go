package api

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/danielgtaylor/huma/v2"

	"github.com/devicehub/devicehub/internal/messagelog"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

const (
	defaultLimit    = 100
	maxDeviceLimit  = 1000
	maxReadingLimit = 10000
)

// Device is a registered device as the API shows it.
type Device struct {
	ID       string         `json:"id" doc:"Device id: [A-Za-z0-9._:-]{1,128}; also the MQTT client id." example:"ws-1"`
	Type     string         `json:"type" doc:"Device type." example:"WeatherStation"`
	Name     string         `json:"name,omitempty" doc:"Display name."`
	Group    string         `json:"group,omitempty" doc:"Device group."`
	Tags     []string       `json:"tags,omitempty" doc:"Tags."`
	Metadata map[string]any `json:"metadata,omitempty" doc:"Free-form metadata."`
	Location *Location      `json:"location,omitempty" doc:"Where the device is."`
	// FirmwareVersion, HardwareVersion and ManagementIP are what the
	// operator (or the device's registration) last said.
	FirmwareVersion string         `json:"firmware_version,omitempty"`
	HardwareVersion string         `json:"hardware_version,omitempty"`
	ManagementIP    string         `json:"management_ip,omitempty" doc:"The device's management IP address."`
	Status          string         `json:"status" doc:"Last reported status: online, offline, error, maintenance, unknown, ..." example:"online"`
	Connected       bool           `json:"connected" doc:"Whether the device has a live connection."`
	LastSeen        *time.Time     `json:"last_seen,omitempty" doc:"When the hub last heard from the device, to a resolution of one second: a message that comes less than a second after the time stored does not move it, so it may lag the device's last message by up to a second (a status, connection or heartbeat change always stores the time of its message)."`
	Metrics         map[string]any `json:"metrics,omitempty" doc:"The latest heartbeat metrics."`
	Disabled        bool           `json:"disabled" doc:"A disabled device may not connect or post data."`
	CreatedAt       time.Time      `json:"created_at"`
	UpdatedAt       time.Time      `json:"updated_at"`
}

// Location is where a device is.
type Location struct {
	Lat         float64 `json:"lat" minimum:"-90" maximum:"90"`
	Lon         float64 `json:"lon" minimum:"-180" maximum:"180"`
	Description string  `json:"description,omitempty" maxLength:"512"`
}

func deviceOut(d *registry.Device) Device {
	out := Device{
		ID: d.ID, Type: d.Type, Name: d.Name, Group: d.Group, Tags: d.Tags, Metadata: d.Metadata,
		FirmwareVersion: d.FirmwareVersion, HardwareVersion: d.HardwareVersion, ManagementIP: d.ManagementIP,
		Status: d.Status, Connected: d.Connected, LastSeen: d.LastSeen, Metrics: d.Metrics,
		Disabled: d.Disabled, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt,
	}
	if d.Location != nil {
		out.Location = &Location{Lat: d.Location.Lat, Lon: d.Location.Lon, Description: d.Location.Description}
	}
	return out
}

func (a *API) registerDevices() {
	register(a, permViewer, huma.Operation{
		OperationID: "listDevices", Method: http.MethodGet, Path: "/api/v1/devices", Tags: []string{"devices"},
		Summary:     "List devices",
		Description: "Devices by id, one page at a time: pass a page's next as after for the next page. Filters combine with AND.",
	}, a.listDevices)
	register(a, permOperator, huma.Operation{
		OperationID: "provisionDevice", Method: http.MethodPost, Path: "/api/v1/devices", Tags: []string{"devices"},
		DefaultStatus: http.StatusCreated,
		Summary:       "Provision a device",
		Description:   "Creates a device and answers its credentials: the only time they are shown. With replace, re-provisions an existing device with new credentials.",
	}, a.provision)
	register(a, permViewer, huma.Operation{
		OperationID: "getDevice", Method: http.MethodGet, Path: "/api/v1/devices/{id}", Tags: []string{"devices"},
		Summary: "Get a device",
	}, a.getDevice)
	register(a, permViewer, huma.Operation{
		OperationID: "listReadings", Method: http.MethodGet, Path: "/api/v1/devices/{id}/readings", Tags: []string{"devices"},
		Summary:     "List a device's readings",
		Description: "Readings newest first, one page at a time: pass a page's next as cursor for the next page.",
		// The body is written by appendReadingsPage, not by huma's
		// encoder; its schema is ReadingsPage's.
		Responses: map[string]*huma.Response{
			"200":     {Description: "OK", Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{Ref: "#/components/schemas/ReadingsPage"}}}},
			"default": {Description: "Error", Content: map[string]*huma.MediaType{"application/json": {Schema: &huma.Schema{Ref: "#/components/schemas/ErrorResponse"}}}},
		},
	}, a.readings)
	a.huma.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[ReadingsPage](), true, "ReadingsPage")
	register(a, permViewer, huma.Operation{
		OperationID: "listMessages", Method: http.MethodGet, Path: "/api/v1/devices/{id}/messages", Tags: []string{"devices"},
		Summary:     "List a device's message log",
		Description: "The message log of one device, newest first: every message it sent, accepted or rejected (what operators did is the audit trail, /api/v1/audit). Pass a page's next as before for the next page.",
	}, a.messages)
	a.registerReadingQueries() // readings.go
}

// ListDevicesInput are the filters and the page of GET /api/v1/devices.
type ListDevicesInput struct {
	Type      string `query:"type" doc:"Only devices of this type."`
	Group     string `query:"group" doc:"Only devices in this group."`
	Status    string `query:"status" doc:"Only devices with this status."`
	Connected string `query:"connected" enum:"true,false" doc:"Only connected (true) or disconnected (false) devices."`
	Tag       string `query:"tag" doc:"Only devices with this tag."`
	Q         string `query:"q" maxLength:"128" doc:"Text search: only devices whose id or name contains this, ignoring case."`
	Sort      string `query:"sort" enum:"id,last_seen" doc:"Order: by id (the default) or last_seen (most recently seen first, never seen last, ties by id). The order holds across pages: the store sorts, and next is a cursor of that order."`
	After     string `query:"after" doc:"Cursor: the previous page's next (by id: list devices after this id)."`
	Limit     int    `query:"limit" minimum:"1" maximum:"1000" doc:"Page size; default 100."`
}

// DeviceList is the answer of GET /api/v1/devices.
type DeviceList struct {
	Devices []Device `json:"devices"`
	Next    string   `json:"next,omitempty" doc:"The cursor of the next page (pass as after); absent on the last page."`
}

type deviceListOutput struct{ Body DeviceList }

func (a *API) listDevices(ctx context.Context, in *ListDevicesInput) (*deviceListOutput, error) {
	if a.deps.Devices == nil {
		return nil, errNotImplemented
	}
	limit := in.Limit
	if limit == 0 {
		limit = defaultLimit
	}
	// The store applies every filter in its query; one more device than
	// the page tells whether there is a next one.
	opts := registry.ListOptions{Type: in.Type, Group: in.Group, Status: in.Status, Tag: in.Tag, Text: in.Q, After: in.After, Limit: limit + 1}
	if in.Sort == "last_seen" {
		opts.Order = registry.OrderLastSeen
		if in.After != "" {
			if err := registry.ParseSeenCursor(in.After, &opts); err != nil {
				return nil, err
			}
		}
	}
	if in.Connected != "" {
		b := in.Connected == "true"
		opts.Connected = &b
	}
	devs, err := a.deps.Devices.List(ctx, opts)
	if err != nil {
		return nil, err
	}
	out := DeviceList{Devices: make([]Device, 0, min(len(devs), limit))}
	for i := range devs {
		if i == limit {
			out.Next = devs[i-1].ID
			if opts.Order == registry.OrderLastSeen {
				out.Next = registry.SeenCursor(&devs[i-1])
			}
			break
		}
		out.Devices = append(out.Devices, deviceOut(&devs[i]))
	}
	return &deviceListOutput{Body: out}, nil
}

// ProvisionRequest is the body of POST /api/v1/devices.
type ProvisionRequest struct {
	ID       string         `json:"id" minLength:"1" maxLength:"128" pattern:"^[A-Za-z0-9._:-]+$" doc:"Device id." example:"ws-1"`
	Type     string         `json:"type" minLength:"1" doc:"A declared device type." example:"WeatherStation"`
	Name     string         `json:"name,omitempty" maxLength:"256" doc:"Display name."`
	Group    string         `json:"group,omitempty" maxLength:"128" doc:"Device group."`
	Tags     []string       `json:"tags,omitempty" maxItems:"64" doc:"Tags."`
	Metadata map[string]any `json:"metadata,omitempty" doc:"Free-form metadata."`
	Replace  bool           `json:"replace,omitempty" doc:"Re-provision an existing device: new credentials; the old ones stop working."`
}

// Credentials are a device's plaintext credentials, shown once.
type Credentials struct {
	DeviceID     string `json:"device_id"`
	MQTTUsername string `json:"mqtt_username"`
	MQTTPassword string `json:"mqtt_password"`
	APIKey       string `json:"api_key" doc:"For the HTTP data endpoint: Authorization: Bearer <api_key>."`
}

// Provisioned is the answer of POST /api/v1/devices.
type Provisioned struct {
	Device      Device      `json:"device"`
	Credentials Credentials `json:"credentials"`
}

type provisionInput struct{ Body ProvisionRequest }

type provisionOutput struct{ Body Provisioned }

func (a *API) provision(ctx context.Context, in *provisionInput) (*provisionOutput, error) {
	req := in.Body
	setTarget(ctx, req.ID)
	if a.deps.Devices == nil {
		return nil, errNotImplemented
	}
	if !registry.ValidID(req.ID) {
		return nil, invalidArg("id", "must be %s", registry.IDRule)
	}
	creds, err := a.deps.Devices.Provision(ctx, registry.ProvisionRequest{
		ID: req.ID, Type: req.Type, Name: req.Name, Group: req.Group,
		Tags: req.Tags, Metadata: req.Metadata, Replace: req.Replace,
	})
	if err != nil {
		return nil, err
	}
	out := Provisioned{Credentials: Credentials{
		DeviceID: req.ID, MQTTUsername: creds.MQTTUsername, MQTTPassword: creds.MQTTPassword, APIKey: creds.APIKey,
	}}
	dev, err := a.deps.Devices.Get(ctx, req.ID)
	if err != nil {
		// The device exists and these credentials are the only copy: answer
		// with what the request said rather than lose them to an error.
		a.log.Warn("read provisioned device", "device_id", req.ID, "err", err)
		dev = &registry.Device{ID: req.ID, Type: req.Type, Name: req.Name, Group: req.Group, Tags: req.Tags, Metadata: req.Metadata, Status: "unknown"}
	}
	out.Device = deviceOut(dev)
	return &provisionOutput{Body: out}, nil
}

// DeviceIDInput is the device id in an operation's path.
type DeviceIDInput struct {
	ID string `path:"id" doc:"Device id." example:"ws-1"`
}

// DeviceAnswer is the answer of GET /api/v1/devices/{id}.
type DeviceAnswer struct {
	Device Device `json:"device"`
}

type deviceOutput struct{ Body DeviceAnswer }

func (a *API) getDevice(ctx context.Context, in *DeviceIDInput) (*deviceOutput, error) {
	if a.deps.Devices == nil {
		return nil, errNotImplemented
	}
	dev, err := a.deps.Devices.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &deviceOutput{Body: DeviceAnswer{Device: deviceOut(dev)}}, nil
}

// ReadingsInput selects readings of GET /api/v1/devices/{id}/readings.
type ReadingsInput struct {
	DeviceIDInput
	Stream string `query:"stream" doc:"Only this stream (\"\" is the default stream's and every stream's)."`
	Field  string `query:"field" doc:"Only readings with this field, and only its value."`
	From   string `query:"from" doc:"From this time, inclusive: RFC 3339 or Unix milliseconds." example:"2025-03-01T12:00:00Z"`
	To     string `query:"to" doc:"Up to this time, exclusive: RFC 3339 or Unix milliseconds."`
	Limit  int    `query:"limit" minimum:"1" maximum:"10000" doc:"Page size; default 100."`
	Cursor string `query:"cursor" doc:"The previous page's next."`
}

// Reading is one stored reading.
type Reading struct {
	ID         int64          `json:"id"`
	DeviceID   string         `json:"device_id"`
	Stream     string         `json:"stream,omitempty"`
	Time       time.Time      `json:"ts" doc:"When the reading was taken (the device's ts, else when it arrived)."`
	ReceivedAt time.Time      `json:"received_at"`
	MessageID  int64          `json:"message_id"`
	Values     map[string]any `json:"values" doc:"Field → value."`
}

// ReadingsPage is the answer of GET /api/v1/devices/{id}/readings.
type ReadingsPage struct {
	Readings []Reading `json:"readings"`
	Next     string    `json:"next,omitempty" doc:"The cursor of the next page; absent on the last page."`
}

// readingsOutput is a ReadingsPage written by appendReadingsPage.
type readingsOutput struct {
	ContentType string `header:"Content-Type"`
	Body        []byte
}

func (a *API) readings(ctx context.Context, in *ReadingsInput) (*readingsOutput, error) {
	if a.deps.Readings == nil {
		return nil, errNotImplemented
	}
	query := readings.Query{DeviceID: in.ID, Stream: in.Stream, Field: in.Field, Cursor: in.Cursor, Limit: in.Limit}
	if query.Limit == 0 {
		query.Limit = defaultLimit
	}
	var err error
	if query.From, err = timeParam("from", in.From); err != nil {
		return nil, err
	}
	if query.To, err = timeParam("to", in.To); err != nil {
		return nil, err
	}
	if !query.From.IsZero() && !query.To.IsZero() && !query.From.Before(query.To) {
		return nil, invalidArg("to", "must be after from")
	}
	if a.deps.Devices != nil {
		// An unknown device is a 404, not an empty page.
		if _, err := a.deps.Devices.Get(ctx, query.DeviceID); err != nil {
			return nil, err
		}
	}
	page, err := a.deps.Readings.QueryReadings(ctx, query)
	if err != nil {
		return nil, err
	}
	body, err := appendReadingsPage(nil, page)
	if err != nil {
		return nil, fmt.Errorf("readings of %s: %w", query.DeviceID, err)
	}
	return &readingsOutput{ContentType: "application/json", Body: body}, nil
}

// MessagesInput selects messages of GET /api/v1/devices/{id}/messages.
type MessagesInput struct {
	DeviceIDInput
	Rejected bool  `query:"rejected" doc:"Only rejected messages."`
	Before   int64 `query:"before" minimum:"1" doc:"Cursor: messages with an id below this (the previous page's next)."`
	Limit    int   `query:"limit" minimum:"1" maximum:"1000" doc:"Page size; default 100."`
}

// Message is one record of the message log as the API shows it: the payload as text
// when it is UTF-8, else base64 in PayloadBase64.
type Message struct {
	ID            int64     `json:"id"`
	DeviceID      string    `json:"device_id"`
	Topic         string    `json:"topic"`
	Transport     string    `json:"transport" doc:"mqtt or http."`
	QoS           byte      `json:"qos"`
	Payload       string    `json:"payload,omitempty" doc:"The payload, when it is UTF-8 text."`
	PayloadBase64 []byte    `json:"payload_base64,omitempty" doc:"The payload in base64, when it is not UTF-8."`
	MsgID         string    `json:"msg_id,omitempty"`
	Accepted      bool      `json:"accepted"`
	Code          string    `json:"code,omitempty" doc:"Why the message was rejected: a stable machine code."`
	Reason        string    `json:"reason,omitempty"`
	ReceivedAt    time.Time `json:"received_at"`
}

// MessageList is the answer of GET /api/v1/devices/{id}/messages.
type MessageList struct {
	Messages []Message `json:"messages"`
	Next     string    `json:"next,omitempty" doc:"Pass as before for the next page; absent on the last page."`
}

type messagesOutput struct{ Body MessageList }

func (a *API) messages(ctx context.Context, in *MessagesInput) (*messagesOutput, error) {
	if a.deps.Messages == nil {
		return nil, errNotImplemented
	}
	limit := in.Limit
	if limit == 0 {
		limit = defaultLimit
	}
	msgs, err := a.deps.Messages.ListMessages(ctx, messagelog.Query{DeviceID: in.ID, Rejected: in.Rejected, Before: in.Before, Limit: limit + 1})
	if err != nil {
		return nil, err
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
	return &messagesOutput{Body: out}, nil
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

func timeParam(name, s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	t, ok := parseTime(s)
	if !ok {
		return time.Time{}, invalidArg(name, "must be an RFC 3339 time or Unix milliseconds, got %q", s)
	}
	return t, nil
}
