package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/api"
	"github.com/devicehub/devicehub/internal/api/apitest"
	"github.com/devicehub/devicehub/internal/readings"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func setup(t *testing.T, token string) (*apitest.Fakes, *client.Client) {
	t.Helper()
	f := apitest.New()
	srv, _ := f.Server(t, api.Options{})
	return f, client.New(srv.URL+"/", token, srv.Client())
}

func TestDevices(t *testing.T) {
	ctx := context.Background()
	_, c := setup(t, apitest.OperatorToken)
	p, err := c.ProvisionDevice(ctx, client.ProvisionRequest{ID: "ws-1", Type: "WeatherStation", Name: "Roof", Tags: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Device.ID != "ws-1" || p.Device.Name != "Roof" || p.Credentials.DeviceID != "ws-1" || p.Credentials.MQTTPassword == "" || p.Credentials.APIKey == "" {
		t.Errorf("provisioned %+v", p)
	}
	if _, err := c.ProvisionDevice(ctx, client.ProvisionRequest{ID: "ws-2", Type: "WeatherStation"}); err != nil {
		t.Fatal(err)
	}
	d, err := c.GetDevice(ctx, "ws-1")
	if err != nil || d.Type != "WeatherStation" || d.CreatedAt.IsZero() {
		t.Fatalf("GetDevice = %+v, %v", d, err)
	}
	list, err := c.ListDevices(ctx, client.ListOptions{Limit: 1})
	if err != nil || len(list.Devices) != 1 || list.Next != "ws-1" {
		t.Fatalf("page 1 = %+v, %v", list, err)
	}
	no := false
	list, err = c.ListDevices(ctx, client.ListOptions{After: list.Next, Connected: &no, Type: "WeatherStation"})
	if err != nil || len(list.Devices) != 1 || list.Devices[0].ID != "ws-2" || list.Next != "" {
		t.Fatalf("page 2 = %+v, %v", list, err)
	}
}

func TestReadings(t *testing.T) {
	ctx := context.Background()
	f, c := setup(t, apitest.ViewerToken)
	f.Devices.Put(apitestDevice("ws-1"))
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Readings.Add(
		readings.Record{ID: 1, DeviceID: "ws-1", Time: t0, Values: map[string]any{"temperature": 1.5}},
		readings.Record{ID: 2, DeviceID: "ws-1", Time: t0.Add(time.Second), Values: map[string]any{"temperature": 2.5}},
	)
	page, err := c.Readings(ctx, client.ReadingsQuery{DeviceID: "ws-1", Limit: 1, From: t0, To: t0.Add(time.Hour), Field: "temperature"})
	if err != nil || len(page.Readings) != 1 || page.Readings[0].ID != 2 || page.Next == "" {
		t.Fatalf("page 1 = %+v, %v", page, err)
	}
	if q := f.Readings.Last; !q.From.Equal(t0) || !q.To.Equal(t0.Add(time.Hour)) || q.Field != "temperature" || q.Limit != 1 {
		t.Errorf("query %+v", q)
	}
	page, err = c.Readings(ctx, client.ReadingsQuery{DeviceID: "ws-1", Cursor: page.Next})
	if err != nil || len(page.Readings) != 1 || page.Readings[0].Values["temperature"] != 1.5 || !page.Readings[0].Time.Equal(t0) {
		t.Fatalf("page 2 = %+v, %v", page, err)
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		token  string
		call   func(c *client.Client) error
		status int
		code   string
		field  string
	}{
		{"unauthorized", "nope", func(c *client.Client) error { _, err := c.GetDevice(ctx, "x"); return err }, 401, "unauthorized", ""},
		{"forbidden", apitest.ViewerToken, func(c *client.Client) error {
			_, err := c.ProvisionDevice(ctx, client.ProvisionRequest{ID: "x", Type: "WeatherStation"})
			return err
		}, 403, "forbidden", ""},
		{"not found", apitest.ViewerToken, func(c *client.Client) error { _, err := c.GetDevice(ctx, "missing"); return err }, 404, "not_found", ""},
		{"unknown type", apitest.AdminToken, func(c *client.Client) error {
			_, err := c.ProvisionDevice(ctx, client.ProvisionRequest{ID: "x", Type: "Toaster"})
			return err
		}, 400, "unknown_device_type", "type"},
		{"bad cursor", apitest.AdminToken, func(c *client.Client) error {
			_, err := c.Readings(ctx, client.ReadingsQuery{DeviceID: "ws-1", Cursor: "zzz"})
			return err
		}, 400, "bad_cursor", "cursor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, c := setup(t, tt.token)
			f.Devices.Put(apitestDevice("ws-1"))
			err := tt.call(c)
			var e *client.Error
			if !errors.As(err, &e) {
				t.Fatalf("err %v is not a *client.Error", err)
			}
			if e.Status != tt.status || e.Code != tt.code || e.Field != tt.field || e.Message == "" {
				t.Errorf("error %+v", e)
			}
			if client.StatusOf(err) != tt.status {
				t.Errorf("StatusOf = %d", client.StatusOf(err))
			}
		})
	}
}

func TestNonJSONError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway", http.StatusBadGateway)
	}))
	defer srv.Close()
	_, err := client.New(srv.URL, "", srv.Client()).GetDevice(context.Background(), "x")
	var e *client.Error
	if !errors.As(err, &e) || e.Status != 502 || e.Message != "bad gateway" || e.Code != "" {
		t.Fatalf("err %#v", err)
	}
}

func TestEvents(t *testing.T) {
	f, c := setup(t, apitest.ViewerToken)
	f.Events.Publish(events.Event{Type: events.DeviceConnected, DeviceID: "a", DeviceType: "WeatherStation", Args: &events.Connected{Transport: "mqtt"}})
	f.Events.Publish(events.Event{Type: events.DeviceConnected, DeviceID: "b", DeviceType: "WeatherStation", Args: &events.Connected{Transport: "mqtt"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var got []events.Event
	stop := errors.New("stop")
	err := c.Events(ctx, client.EventsOptions{From: 1, DeviceIDs: []string{"b", "c"}, Types: []events.Type{events.DeviceConnected}}, func(e events.Event) error {
		got = append(got, e)
		if e.DeviceID == "c" {
			return stop
		}
		if len(got) == 1 {
			go f.Events.Publish(events.Event{Type: events.DeviceConnected, DeviceID: "c", Args: &events.Connected{}})
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v", err)
	}
	if len(got) != 2 || got[0].DeviceID != "b" || got[0].Seq != 2 || got[1].Seq != 3 {
		t.Fatalf("events %+v", got)
	}
	if a, ok := got[0].Args.(*events.Connected); !ok || a.Transport != "mqtt" {
		t.Errorf("args %#v", got[0].Args)
	}

	// Cancelling ends the stream without an error.
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Events(ctx2, client.EventsOptions{}, func(events.Event) error { return nil }) }()
	apitest.WaitFor(t, 5*time.Second, func() bool { return f.Events.Subscribers() == 1 })
	cancel2()
	if err := <-done; err != nil {
		t.Errorf("after cancel: %v", err)
	}
}

func TestEventsUnauthorized(t *testing.T) {
	_, c := setup(t, "")
	err := c.Events(context.Background(), client.EventsOptions{}, func(events.Event) error { return nil })
	if client.StatusOf(err) != 401 {
		t.Fatalf("err = %v", err)
	}
}

func TestReadSSE(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []client.SSEMessage
	}{
		{"one", "id: 1\nevent: x\ndata: {}\n\n", []client.SSEMessage{{ID: "1", Event: "x", Data: "{}"}}},
		{"comments and multi-line data", ": hi\n\ndata: a\ndata: b\n\n", []client.SSEMessage{{Data: "a\nb"}}},
		{"no space after colon", "id:7\ndata:z\n\n", []client.SSEMessage{{ID: "7", Data: "z"}}},
		{"id carries over", "id: 1\ndata: a\n\ndata: b\n\n", []client.SSEMessage{{ID: "1", Data: "a"}, {ID: "1", Data: "b"}}},
		{"unterminated message dropped", "data: a\n", nil},
		{"crlf", "data: a\r\n\r\n", []client.SSEMessage{{Data: "a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []client.SSEMessage
			err := client.ReadSSE(strings.NewReader(tt.in), func(m client.SSEMessage) error { got = append(got, m); return nil })
			if err != io.EOF {
				t.Fatalf("err = %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("message %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func FuzzReadSSE(f *testing.F) {
	f.Add([]byte("id: 1\nevent: x\ndata: {}\n\n: hb\n\n"))
	f.Add([]byte("data:\n\n\n\ndata"))
	f.Fuzz(func(t *testing.T, in []byte) {
		n := 0
		err := client.ReadSSE(strings.NewReader(string(in)), func(m client.SSEMessage) error { n++; return nil })
		if err == nil {
			t.Fatal("ReadSSE returned nil; want io.EOF or an error")
		}
		if n > len(in) {
			t.Fatalf("%d messages from %d bytes", n, len(in))
		}
	})
}
