package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"

	"github.com/devicehub/devicehub/events"
)

func (a *API) registerEvents() {
	op := huma.Operation{
		OperationID: "streamEvents", Method: http.MethodGet, Path: "/api/v1/events", Tags: []string{"events"},
		Summary: "Stream events (Server-Sent Events)",
		Description: "Streams committed events as Server-Sent Events: each message has id: <seq>, event: <type> and " +
			"data: <the event as JSON> (schema Event). from=N and Last-Event-ID: N mean the same: the last event the " +
			"client has; the stream first replays every stored event with a sequence number greater than N, then the " +
			"live ones. Sequence numbers start at 1, so from=0 replays every stored event from the first, and " +
			"from=<the latest seq> replays nothing. Without from and Last-Event-ID the stream has only new events. " +
			"Comment lines are keep-alives. Filters repeat or take comma-separated lists.",
		Responses: map[string]*huma.Response{"200": {
			Description: "An endless text/event-stream of events.",
			Content: map[string]*huma.MediaType{"text/event-stream": {Schema: &huma.Schema{
				Type:        huma.TypeString,
				Description: "Server-Sent Events whose data lines are " + eventSchemaRef,
			}}},
		}},
	}
	a.huma.OpenAPI().Components.Schemas.Schema(reflect.TypeFor[events.Event](), true, "Event")
	register(a, permViewer, op, a.events)
}

// eventSchemaRef names the schema of one event's data.
const eventSchemaRef = "#/components/schemas/Event"

// EventsInput selects the events of a stream.
type EventsInput struct {
	LastEventID string   `header:"Last-Event-ID" doc:"Resume after this event sequence number."`
	From        int64    `query:"from" minimum:"0" doc:"The last event the client has: replay the stored events with a greater sequence number first (0: every stored event, from the first). Absent: only new events."`
	Type        []string `query:"type,explode" doc:"Only events of these types."`
	DeviceType  []string `query:"device_type,explode" doc:"Only events of devices of these types."`
	DeviceID    []string `query:"device_id,explode" doc:"Only events of these devices."`

	filter  events.Filter
	fromSet bool // from was given (from=0 replays everything)
}

// Resolve reads the filters from the raw query, where each may repeat or
// hold a comma-separated list.
func (in *EventsInput) Resolve(ctx huma.Context) []error {
	u := ctx.URL()
	in.filter = eventFilter(u.Query())
	in.fromSet = u.Query().Has("from")
	return nil
}

// replayAfter turns "the last event the client has" into the bus's From:
// after 0 is every stored event (From < 0); nothing asked is live only.
func replayAfter(seq int64, asked bool) int64 {
	switch {
	case !asked:
		return 0
	case seq == 0:
		return -1
	}
	return seq
}

type eventsOutput struct{ Body func(huma.Context) }

// events answers a stream of committed events; see registerEvents.
func (a *API) events(ctx context.Context, in *EventsInput) (*eventsOutput, error) {
	if a.deps.Events == nil {
		return nil, errNotImplemented
	}
	opts := SubscribeOptions{Filter: in.filter, From: replayAfter(in.From, in.fromSet)}
	if s := strings.TrimSpace(in.LastEventID); s != "" {
		seq, err := strconv.ParseInt(s, 10, 64)
		if err != nil || seq < 0 {
			return nil, invalidArg("Last-Event-ID", "must be an event sequence number, got %q", s)
		}
		opts.From = replayAfter(seq, true)
	}
	return &eventsOutput{Body: func(hctx huma.Context) {
		r, w := humago.Unwrap(hctx)
		a.stream(w, r, opts)
	}}, nil
}

// stream writes the event stream until the client goes away or the API
// shuts down.
func (a *API) stream(w http.ResponseWriter, r *http.Request, opts SubscribeOptions) {
	ch := make(chan events.Event, a.opts.EventBuffer)
	gone := make(chan struct{})
	sub, err := a.deps.Events.Subscribe(opts, func(e events.Event) {
		// Blocking here holds back only this subscription; gone frees the
		// bus's goroutine once the stream has ended.
		select {
		case ch <- e:
		case <-gone:
		}
	})
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer func() {
		close(gone)
		sub.Close()
	}()

	rc := http.NewResponseController(w)
	// A stream lives longer than the server's read and write timeouts: it
	// sets its own write deadline before each write (a client that stops
	// reading is dropped) and reads nothing after the request.
	_ = rc.SetReadDeadline(time.Time{})
	writeWait := max(2*a.opts.Heartbeat, 30*time.Second)
	_ = rc.SetWriteDeadline(time.Now().Add(writeWait))
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write([]byte(": devicehub events\n\n")); err != nil {
		return
	}
	if err := rc.Flush(); err != nil {
		return
	}

	tick := time.NewTicker(a.opts.Heartbeat)
	defer tick.Stop()
	var buf bytes.Buffer
	for {
		select {
		case <-r.Context().Done():
			return
		case <-a.shutdown:
			return
		case <-tick.C:
			_ = rc.SetWriteDeadline(time.Now().Add(writeWait))
			if _, err := w.Write([]byte(": heartbeat\n\n")); err != nil {
				return
			}
		case e := <-ch:
			buf.Reset()
			if err := writeEvent(&buf, &e); err != nil {
				a.log.Error("encode event", "seq", e.Seq, "type", e.Type, "err", err)
				continue
			}
			// Write whatever else is queued before flushing once.
			for more := true; more && buf.Len() < 64<<10; {
				select {
				case e := <-ch:
					if err := writeEvent(&buf, &e); err != nil {
						a.log.Error("encode event", "seq", e.Seq, "type", e.Type, "err", err)
					}
				default:
					more = false
				}
			}
			_ = rc.SetWriteDeadline(time.Now().Add(writeWait))
			if _, err := w.Write(buf.Bytes()); err != nil {
				return
			}
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func writeEvent(buf *bytes.Buffer, e *events.Event) error {
	data, err := json.Marshal(e)
	if err != nil {
		return err
	}
	buf.WriteString("id: ")
	buf.WriteString(strconv.FormatInt(e.Seq, 10))
	buf.WriteString("\nevent: ")
	buf.WriteString(string(e.Type))
	buf.WriteString("\ndata: ")
	buf.Write(data)
	buf.WriteString("\n\n")
	return nil
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
