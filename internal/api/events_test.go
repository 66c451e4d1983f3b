package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
)

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	id, event, data string
}

// sseReader reads events and comments from a stream.
type sseReader struct {
	sc       *bufio.Scanner
	comments []string
}

func (r *sseReader) next(t *testing.T) sseEvent {
	t.Helper()
	var e sseEvent
	for r.sc.Scan() {
		line := r.sc.Text()
		switch {
		case line == "":
			if e.data != "" {
				return e
			}
		case strings.HasPrefix(line, ":"):
			r.comments = append(r.comments, strings.TrimSpace(line[1:]))
		case strings.HasPrefix(line, "id: "):
			e.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			e.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			e.data = line[6:]
		}
	}
	t.Fatalf("stream ended: %v", r.sc.Err())
	return e
}

func openStream(t *testing.T, ctx context.Context, url string, header http.Header) (*http.Response, *sseReader) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header
	req.Header.Set("Authorization", "Bearer "+apitest.ViewerToken)
	hc := &http.Client{Transport: contractClient{t: t, next: http.DefaultTransport}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp, &sseReader{sc: bufio.NewScanner(resp.Body)}
}

func TestEventStream(t *testing.T) {
	f := apitest.New()
	srv, _ := f.Server(t, api.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, rd := openStream(t, ctx, srv.URL+"/api/v1/events?device_type=WeatherStation", http.Header{})
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	apitest.WaitFor(t, 5*time.Second, func() bool { return f.Events.Subscribers() == 1 })

	f.Events.Publish(events.Event{Type: events.DeviceConnected, DeviceID: "other", DeviceType: "Door", Args: &events.Connected{}})
	f.Events.Publish(events.Event{Type: events.DeviceDataReceived, DeviceID: "ws-1", DeviceType: "WeatherStation",
		Args: &events.DataReceived{MessageID: 7, Readings: []events.Reading{{Values: map[string]any{"temperature": 20.5}}}}})
	f.Events.Publish(events.Event{Type: events.DeviceProvisioned, DeviceID: "ws-2", DeviceType: "WeatherStation",
		Args: &events.Provisioned{Credentials: &events.Credentials{MQTTPassword: "plaintext"}}})

	e := rd.next(t)
	if e.id != "2" || e.event != "device_data_received" {
		t.Fatalf("first event %+v (the Door event must be filtered out)", e)
	}
	checkSchema(t, "Event", []byte(e.data))
	var ev events.Event
	if err := json.Unmarshal([]byte(e.data), &ev); err != nil {
		t.Fatal(err)
	}
	if args, ok := ev.Args.(*events.DataReceived); !ok || ev.DeviceID != "ws-1" || args.MessageID != 7 || args.Readings[0].Values["temperature"] != 20.5 {
		t.Errorf("event %+v args %+v", ev, ev.Args)
	}
	e = rd.next(t)
	if e.id != "3" || strings.Contains(e.data, "plaintext") {
		t.Errorf("provisioned event %+v: credentials must never be streamed", e)
	}

	cancel() // the client goes away: the subscription must end
	apitest.WaitFor(t, 5*time.Second, func() bool { return f.Events.Subscribers() == 0 })
}

func TestEventStreamReplay(t *testing.T) {
	f := apitest.New()
	srv, _ := f.Server(t, api.Options{})
	for i := 0; i < 5; i++ {
		f.Events.Publish(events.Event{Type: events.DeviceStatusChanged, DeviceID: "d" + strconv.Itoa(i), DeviceType: "WeatherStation", Args: &events.StatusChanged{NewStatus: "online"}})
	}
	tests := []struct {
		name   string
		query  string
		header http.Header
		first  string
	}{
		{"from", "?from=2", http.Header{}, "3"},
		{"from 0 replays the first event", "?from=0", http.Header{}, "1"},
		{"from 1 is after the first", "?from=1", http.Header{}, "2"},
		{"last event id 0", "", http.Header{"Last-Event-Id": {"0"}}, "1"},
		{"last event id", "", http.Header{"Last-Event-Id": {"3"}}, "4"},
		{"last event id wins over from", "?from=1", http.Header{"Last-Event-Id": {"4"}}, "5"},
		{"device id filter", "?from=1&device_id=d3,d4", http.Header{}, "4"},
		{"type filter", "?from=1&type=device_connected&type=device_status_changed", http.Header{}, "2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, rd := openStream(t, ctx, srv.URL+"/api/v1/events"+tt.query, tt.header)
			if e := rd.next(t); e.id != tt.first {
				t.Errorf("first event id %s, want %s", e.id, tt.first)
			}
		})
	}
}

func TestEventStreamBadArgs(t *testing.T) {
	f := apitest.New()
	h := api.New(f.Deps(), api.Options{}, nil).Handler()
	for _, path := range []string{"/api/v1/events?from=x", "/api/v1/events?from=-1"} {
		r := do(t, h, "GET", path, apitest.ViewerToken, "")
		if code, field := errCode(r); r.status != 400 || code != "invalid_argument" || field != "from" {
			t.Errorf("%s: %d %s", path, r.status, r.raw)
		}
	}
	f.Events.Err = apitest.ErrBoom
	if r := do(t, h, "GET", "/api/v1/events", apitest.ViewerToken, ""); r.status != 500 {
		t.Errorf("subscribe error: %d", r.status)
	}
}

func TestEventStreamHeartbeatAndShutdown(t *testing.T) {
	f := apitest.New()
	srv, a := f.Server(t, api.Options{Heartbeat: 20 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, rd := openStream(t, ctx, srv.URL+"/api/v1/events", http.Header{})
	for !containsString(rd.comments, "heartbeat") {
		if !rd.sc.Scan() {
			t.Fatal("stream ended before a heartbeat")
		}
		if line := rd.sc.Text(); strings.HasPrefix(line, ":") {
			rd.comments = append(rd.comments, strings.TrimSpace(line[1:]))
		}
	}
	a.Shutdown()
	for rd.sc.Scan() {
	}
	if f.Events.Subscribers() != 0 {
		apitest.WaitFor(t, 5*time.Second, func() bool { return f.Events.Subscribers() == 0 })
	}
}

func containsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
