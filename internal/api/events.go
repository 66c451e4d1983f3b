package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/devicehub/devicehub/events"
)

// events streams committed events as Server-Sent Events: each event is
// "id: <seq>", "event: <type>" and "data: <event JSON>". A client that
// reconnects with Last-Event-ID: <seq> (or asks ?from=<seq>) first gets the
// stored events after that sequence number, then the live ones; without
// either it gets only new events. The stream ends when the client goes
// away or the API shuts down.
func (a *API) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := SubscribeOptions{Filter: eventFilter(q)}
	if s := strings.TrimSpace(r.Header.Get("Last-Event-ID")); s != "" {
		seq, err := strconv.ParseInt(s, 10, 64)
		if err != nil || seq < 0 {
			a.writeError(w, r, invalidArg("Last-Event-ID", "must be an event sequence number, got %q", s))
			return
		}
		opts.From = seq
	} else if s := q.Get("from"); s != "" {
		seq, err := strconv.ParseInt(s, 10, 64)
		if err != nil || seq < 0 {
			a.writeError(w, r, invalidArg("from", "must be an event sequence number, got %q", s))
			return
		}
		opts.From = seq
	}

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
	// A stream lives longer than any server write timeout.
	_ = rc.SetWriteDeadline(time.Time{})
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
