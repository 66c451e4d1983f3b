package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/devicehub/devicehub/events"
)

// EventsOptions select the events of a stream. Empty lists select all.
type EventsOptions struct {
	Types       []events.Type
	DeviceTypes []string
	DeviceIDs   []string
	// From is the last event the caller has: with Replay (or From > 0)
	// the stream first replays the stored events with a greater sequence
	// number (From 0: every stored event), then the live ones. Without
	// either it streams only new events.
	From   int64
	Replay bool
}

// Events streams the hub's events and calls fn with each, in order, until
// ctx is done (it then returns nil), the server ends the stream (io.EOF),
// or fn returns an error (returned as is).
func (c *Client) Events(ctx context.Context, o EventsOptions, fn func(events.Event) error) error {
	q := url.Values{}
	for _, t := range o.Types {
		q.Add("type", string(t))
	}
	for _, t := range o.DeviceTypes {
		q.Add("device_type", t)
	}
	for _, id := range o.DeviceIDs {
		q.Add("device_id", id)
	}
	if o.From > 0 || o.Replay {
		q.Set("from", strconv.FormatInt(o.From, 10))
	}
	req, err := c.newRequest(ctx, http.MethodGet, "/api/v1/events", q, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("events: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("events: %w", readError(resp))
	}
	err = ReadSSE(resp.Body, func(m SSEMessage) error {
		var e events.Event
		if err := json.Unmarshal([]byte(m.Data), &e); err != nil {
			return fmt.Errorf("events: decode event %s: %w", m.ID, err)
		}
		return fn(e)
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// SSEMessage is one Server-Sent Events message.
type SSEMessage struct {
	ID    string
	Event string
	Data  string // data lines joined with "\n"
}

// maxSSELine bounds one line of a stream.
const maxSSELine = 4 << 20

// ReadSSE parses a Server-Sent Events stream and calls fn with each message
// that has data. It returns io.EOF when the stream ends, or fn's error.
func ReadSSE(r io.Reader, fn func(SSEMessage) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxSSELine)
	var (
		m       SSEMessage
		data    []string
		hasData bool
	)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if hasData {
				m.Data = strings.Join(data, "\n")
				if err := fn(m); err != nil {
					return err
				}
			}
			m, data, hasData = SSEMessage{ID: m.ID}, data[:0], false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment: heartbeat
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			m.ID = value
		case "event":
			m.Event = value
		case "data":
			data = append(data, value)
			hasData = true
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.EOF
}
