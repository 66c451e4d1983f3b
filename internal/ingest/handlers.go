package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// Limits of the device protocol.
const (
	maxMsgIDLen  = 128 // characters of a msg_id
	maxStatusLen = 64  // characters of a status
	maxStreamLen = 64  // bytes of a stream name
)

// dataChange holds everything one data message allocates for its change,
// so that it costs one allocation instead of ten.
type dataChange struct {
	ch      commit.Change
	ops     [3]commit.Op
	msg     readings.Message
	rows    readings.Readings
	patch   registry.DevicePatch
	seen    time.Time
	ev      [1]commit.Event
	args    events.DataReceived
	reading [1]events.Reading
	row     [1]readings.Reading
}

// handleData takes in readings: devices/{id}/data and devices/{id}/data/{stream}.
func (p *Pipeline) handleData(ctx context.Context, m *Msg) error {
	r := m.Req
	stream := m.Params.Get("stream")
	if stream != "" && !validStream(stream) {
		return &Rejection{Code: CodeUnknownTopic, Reason: fmt.Sprintf("stream name %q: up to %d of A-Z a-z 0-9 . _ : -", stream, maxStreamLen)}
	}
	if isBatch(r.ContentType) {
		return p.handleBatch(ctx, m, stream)
	}
	if rej := checkContentType(r.ContentType); rej != nil {
		return rej
	}
	dc, rej := p.buildData(m, r, stream)
	if rej != nil {
		return rej
	}
	t, err := p.deps.Committer.Enqueue(ctx, &dc.ch)
	if err != nil {
		return fmt.Errorf("enqueue data of %s: %w", r.DeviceID, err)
	}
	m.Result = Result{MessageID: dc.msg.ID, Readings: len(dc.rows.Rows)}
	return p.wait(ctx, m, t)
}

// buildData decodes and validates the data message r (m.Req, or one
// message of a batch) and builds its change.
func (p *Pipeline) buildData(m *Msg, r *Request, stream string) (*dataChange, *Rejection) {
	dc := new(dataChange)
	d, rej := decodeData(r.Payload, dataLimits{now: m.Now, maxReadings: p.opts.MaxReadingsPerMessage, maxSkew: p.opts.MaxClockSkew, intern: m.info.fields}, dc.reading[:0])
	m.msgID = d.msgID
	if rej != nil {
		return nil, rej
	}
	array := len(d.readings) > 1
	for i := range d.readings {
		d.readings[i].Stream = stream
		if err := m.Type.Validate(d.readings[i].Values); err != nil {
			return nil, validationRejection(err, i, array)
		}
	}

	id := p.deps.IDs.Next()
	rows := dc.row[:0]
	if len(d.readings) > 1 {
		rows = make([]readings.Reading, 0, len(d.readings))
	}
	args, rows, err := appendDataArgs(r, id, d.msgID, stream, d.readings, rows)
	if err != nil {
		return nil, &Rejection{Code: CodeInvalidPayload, Reason: err.Error()}
	}

	dc.seen = m.Now
	dc.patch = registry.DevicePatch{LastSeen: &dc.seen}
	dc.msg = readings.Message{
		ID: id, Topic: r.Topic, Transport: r.Transport, QoS: r.QoS, Payload: r.Payload,
		MsgID: d.msgID, Accepted: true, ReceivedAt: m.Now,
	}
	dc.args = events.DataReceived{MessageID: id, MsgID: d.msgID, Topic: r.Topic, Stream: stream, Transport: r.Transport, Readings: d.readings}
	dc.ev[0] = commit.Event{
		Event: events.Event{Type: events.DeviceDataReceived, Time: m.Now, DeviceID: r.DeviceID, DeviceType: r.DeviceType, Args: &dc.args},
		Args:  args,
	}
	dc.rows = readings.Readings{Message: &dc.msg, Rows: rows}
	dc.ops = [3]commit.Op{&dc.msg, &dc.rows, &dc.patch}
	dc.ch = commit.Change{DeviceID: r.DeviceID, Ops: dc.ops[:], Events: dc.ev[:]}

	return dc, nil
}

func validationRejection(err error, i int, array bool) *Rejection {
	at := ""
	if array {
		at = "reading " + strconv.Itoa(i) + ": "
	}
	var fe *devicetype.FieldError
	if errors.As(err, &fe) {
		return &Rejection{Code: CodeValidationFailed, Field: fe.Field, Reason: fmt.Sprintf("%sfield %q %s (rule %s)", at, fe.Field, fe.Msg, fe.Rule)}
	}
	return &Rejection{Code: CodeValidationFailed, Reason: at + err.Error()}
}

// appendDataArgs encodes the arguments of the device_data_received event
// as encoding/json would encode *events.DataReceived, and hands each
// reading's values object, a slice of the same buffer, to a reading row
// appended to rows: the values are encoded once for the rows and the event.
func appendDataArgs(r *Request, id int64, msgID, stream string, rds []events.Reading, rows []readings.Reading) ([]byte, []readings.Reading, error) {
	b := make([]byte, 0, len(r.Payload)*5/4+len(r.Topic)+len(msgID)+128+len(rds)*(64+len(stream)))
	b = append(b, `{"message_id":`...)
	b = strconv.AppendInt(b, id, 10)
	if msgID != "" {
		b = append(b, `,"msg_id":`...)
		b = appendString(b, msgID)
	}
	b = append(b, `,"topic":`...)
	b = appendString(b, r.Topic)
	if stream != "" {
		b = append(b, `,"stream":`...)
		b = appendString(b, stream)
	}
	b = append(b, `,"transport":`...)
	b = appendString(b, r.Transport)
	b = append(b, `,"readings":[`...)
	var offArr [8][2]int
	offs := offArr[:0]
	for i := range rds {
		rd := &rds[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"ts":"`...)
		b = rd.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
		if rd.Stream != "" {
			b = append(b, `,"stream":`...)
			b = appendString(b, rd.Stream)
		}
		b = append(b, `,"values":`...)
		start := len(b)
		var err error
		if b, err = appendObject(b, rd.Values); err != nil {
			return nil, rows, fmt.Errorf("reading %d: %w", i, err)
		}
		offs = append(offs, [2]int{start, len(b)})
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	for i, o := range offs {
		rows = append(rows, readings.Reading{Stream: rds[i].Stream, Time: rds[i].Time, Values: b[o[0]:o[1]:o[1]]})
	}
	return b, rows, nil
}

func validStream(s string) bool {
	if len(s) > maxStreamLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return s != ""
}

// checkContentType accepts JSON only; compressed payloads were decoded
// before (encoding.go).
func checkContentType(ct string) *Rejection {
	if ct == "" || ct == "application/json" {
		return nil
	}
	base, _, _ := strings.Cut(ct, ";")
	if strings.EqualFold(strings.TrimSpace(base), "application/json") {
		return nil
	}
	return &Rejection{Code: CodeInvalidPayload, Reason: fmt.Sprintf("content type %q is not supported; send application/json, or application/json+gzip or +zstd", ct)}
}

// dataLimits are what decodeData checks besides the JSON.
type dataLimits struct {
	now         time.Time // the default ts, and what MaxClockSkew is counted from
	maxReadings int
	maxSkew     time.Duration
	intern      map[string]string
}

// dataPayload is a decoded data message.
type dataPayload struct {
	msgID    string
	readings []events.Reading // Values without ts and msg_id; Time in UTC
}

// decodeData parses a data payload: a JSON object of field → value, or an
// array of them, each with an optional ts and msg_id. Readings are appended
// to dst. A payload that is not JSON is invalid_json even when an earlier
// part of it was already refused for another reason.
func decodeData(b []byte, lim dataLimits, dst []events.Reading) (dataPayload, *Rejection) {
	d := dataPayload{readings: dst}
	p := parser{b: b, intern: lim.intern}
	var (
		objs   []map[string]any
		single [1]map[string]any
		shape  *Rejection // refused for its shape; reported if the JSON is valid
	)
	if p.atEnd() {
		return d, &Rejection{Code: CodeInvalidJSON, Reason: "empty payload"}
	}
	first := p.peek()
	switch first {
	case '{':
		o, err := p.object()
		if err != nil {
			return d, jsonRejection(err)
		}
		single[0] = o
		objs = single[:]
	case '[':
		var err error
		if objs, shape, err = p.readingArray(lim.maxReadings); err != nil {
			return d, jsonRejection(err)
		}
	default:
		if _, err := p.value(); err != nil {
			return d, jsonRejection(err)
		}
		shape = &Rejection{Code: CodeInvalidPayload, Reason: "data must be a JSON object or an array of objects"}
	}
	if err := p.end(); err != nil {
		return d, jsonRejection(err)
	}
	if shape != nil {
		return d, shape
	}
	for i, o := range objs {
		if rej := d.add(o, lim); rej != nil {
			if first == '[' {
				rej.Reason = "reading " + strconv.Itoa(i) + ": " + rej.Reason
			}
			return d, rej
		}
	}
	return d, nil
}

// add takes ts and msg_id out of o and appends it as a reading.
func (d *dataPayload) add(o map[string]any, lim dataLimits) *Rejection {
	if v, ok := o["msg_id"]; ok {
		delete(o, "msg_id")
		if v != nil {
			s, isStr := v.(string)
			switch {
			case !isStr:
				return &Rejection{Code: CodeInvalidPayload, Field: "msg_id", Reason: "msg_id must be a string"}
			case s == "" || utf8.RuneCountInString(s) > maxMsgIDLen:
				return &Rejection{Code: CodeInvalidPayload, Field: "msg_id", Reason: fmt.Sprintf("msg_id must have 1 to %d characters", maxMsgIDLen)}
			case d.msgID != "" && s != d.msgID:
				return &Rejection{Code: CodeInvalidPayload, Field: "msg_id", Reason: "msg_id differs between readings of one message"}
			}
			d.msgID = s
		}
	}
	ts := lim.now
	if v, ok := o["ts"]; ok {
		delete(o, "ts")
		if v != nil {
			var rej *Rejection
			if ts, rej = parseTS(v, lim.now, lim.maxSkew); rej != nil {
				return rej
			}
		}
	}
	if len(o) == 0 {
		return &Rejection{Code: CodeInvalidPayload, Reason: "reading has no fields"}
	}
	d.readings = append(d.readings, events.Reading{Time: ts, Values: o})
	return nil
}

// readingArray parses an array of reading objects. Elements that are not
// objects, or more than max, make shape; the array is parsed to its end
// anyway so that a syntax error later on wins.
func (p *parser) readingArray(max int) (objs []map[string]any, shape *Rejection, err error) {
	p.depth++
	p.i++ // [
	if p.peek() == ']' {
		p.i++
		return nil, &Rejection{Code: CodeInvalidPayload, Reason: "no readings"}, nil
	}
	for n := 0; ; n++ {
		v, err := p.value()
		if err != nil {
			return nil, nil, err
		}
		if shape == nil {
			o, ok := v.(map[string]any)
			switch {
			case !ok:
				shape = &Rejection{Code: CodeInvalidPayload, Reason: fmt.Sprintf("reading %d is not a JSON object", n)}
			case n >= max:
				shape = &Rejection{Code: CodePayloadTooLarge, Reason: fmt.Sprintf("more than %d readings in one message", max)}
			default:
				objs = append(objs, o)
			}
			if shape != nil {
				objs = nil
			}
		}
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			p.depth--
			return objs, shape, nil
		default:
			return nil, nil, p.unexpected()
		}
	}
}

func jsonRejection(err error) *Rejection {
	var je *jsonError
	if errors.As(err, &je) {
		if je.code == CodeInvalidJSON {
			return &Rejection{Code: CodeInvalidJSON, Reason: "payload is not valid JSON: " + je.Error()}
		}
		return &Rejection{Code: je.code, Reason: je.Error()}
	}
	return &Rejection{Code: CodeInvalidJSON, Reason: err.Error()}
}

// maxUnixMilli is 9999-12-31T23:59:59.999Z, the last time RFC 3339 can
// write.
const maxUnixMilli = 253402300799999

// parseTS reads a ts: an RFC 3339 string or a number of Unix milliseconds,
// from 1970 to MaxClockSkew after now.
func parseTS(v any, now time.Time, maxSkew time.Duration) (time.Time, *Rejection) {
	var t time.Time
	switch x := v.(type) {
	case string:
		pt, err := time.Parse(time.RFC3339Nano, x)
		if err != nil {
			return t, &Rejection{Code: CodeInvalidTimestamp, Field: "ts", Reason: fmt.Sprintf("ts %q is not an RFC 3339 time", x)}
		}
		t = pt.UTC()
	case float64:
		if x < 0 || x > maxUnixMilli {
			return t, &Rejection{Code: CodeInvalidTimestamp, Field: "ts", Reason: fmt.Sprintf("ts %v is not Unix milliseconds from 1970 to 9999", x)}
		}
		ms := math.Floor(x)
		t = time.UnixMilli(int64(ms)).Add(time.Duration((x - ms) * 1e6)).UTC()
	default:
		return t, &Rejection{Code: CodeInvalidTimestamp, Field: "ts", Reason: "ts must be an RFC 3339 string or a number of Unix milliseconds"}
	}
	if t.Unix() < 0 {
		return t, &Rejection{Code: CodeInvalidTimestamp, Field: "ts", Reason: "ts is before 1970"}
	}
	if t.After(now.Add(maxSkew)) {
		return t, &Rejection{Code: CodeInvalidTimestamp, Field: "ts", Reason: fmt.Sprintf("ts %s is more than %s in the future", t.Format(time.RFC3339), maxSkew)}
	}
	return t, nil
}

// decodeObject parses a payload that must be one JSON object.
func decodeObject(r *Request) (map[string]any, *Rejection) {
	if rej := checkContentType(r.ContentType); rej != nil {
		return nil, rej
	}
	p := parser{b: r.Payload}
	if p.atEnd() {
		return nil, &Rejection{Code: CodeInvalidJSON, Reason: "empty payload"}
	}
	v, err := p.value()
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return nil, jsonRejection(err)
	}
	o, ok := v.(map[string]any)
	if !ok {
		return nil, &Rejection{Code: CodeInvalidPayload, Reason: "payload must be a JSON object"}
	}
	return o, nil
}

// auditMessage is the accepted message log record of m.
func (p *Pipeline) auditMessage(m *Msg) *readings.Message {
	r := m.Req
	return &readings.Message{
		ID: p.deps.IDs.Next(), Topic: r.Topic, Transport: r.Transport, QoS: r.QoS, Payload: r.Payload,
		Accepted: true, ReceivedAt: m.Now,
	}
}

// handleStatus takes in devices/{id}/status: {"status": "...", ...}.
func (p *Pipeline) handleStatus(ctx context.Context, m *Msg) error {
	r := m.Req
	o, rej := decodeObject(r)
	if rej != nil {
		return rej
	}
	status, ok := o["status"].(string)
	switch {
	case !ok && o["status"] == nil:
		return &Rejection{Code: CodeValidationFailed, Field: "status", Reason: "status is required"}
	case !ok:
		return &Rejection{Code: CodeValidationFailed, Field: "status", Reason: "status must be a string"}
	case status == "" || utf8.RuneCountInString(status) > maxStatusLen:
		return &Rejection{Code: CodeValidationFailed, Field: "status", Reason: fmt.Sprintf("status must have 1 to %d characters", maxStatusLen)}
	}
	msg := p.auditMessage(m)
	t, err := p.deps.Presence.RecordStatus(ctx, r.DeviceID, r.DeviceType, status, msg, r.Will)
	if err != nil {
		return fmt.Errorf("record status of %s: %w", r.DeviceID, err)
	}
	m.Result = Result{MessageID: msg.ID}
	return p.wait(ctx, m, t)
}

// handleHeartbeat takes in devices/{id}/heartbeat: an optional JSON object
// of metrics, kept as the device's latest metrics.
func (p *Pipeline) handleHeartbeat(ctx context.Context, m *Msg) error {
	r := m.Req
	var metrics []byte
	if len(bytes.TrimSpace(r.Payload)) > 0 {
		o, rej := decodeObject(r)
		if rej != nil {
			return rej
		}
		var err error
		if metrics, err = appendObject(nil, o); err != nil {
			return &Rejection{Code: CodeInvalidPayload, Reason: err.Error()}
		}
	}
	hb := &struct {
		ch    commit.Change
		ops   [2]commit.Op
		patch registry.DevicePatch
		seen  time.Time
	}{seen: m.Now}
	msg := p.auditMessage(m)
	hb.patch = registry.DevicePatch{LastSeen: &hb.seen, Metrics: metrics}
	hb.ops = [2]commit.Op{msg, &hb.patch}
	hb.ch = commit.Change{DeviceID: r.DeviceID, Ops: hb.ops[:]}
	t, err := p.deps.Committer.Enqueue(ctx, &hb.ch)
	if err != nil {
		return fmt.Errorf("enqueue heartbeat of %s: %w", r.DeviceID, err)
	}
	m.Result = Result{MessageID: msg.ID}
	return p.wait(ctx, m, t)
}
