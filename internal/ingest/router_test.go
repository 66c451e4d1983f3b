package ingest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestRouterMatch(t *testing.T) {
	r := NewRouter()
	for _, p := range []string{
		"devices/{device_id}/data",
		"devices/{device_id}/data/{stream}",
		"devices/{device_id}/status",
		"devices/{device_id}/heartbeat",
		"devices/{device_id}/commands/{command_id}/result",
	} {
		p := p
		if err := r.Route(p, HandlerFunc(func(_ context.Context, m *Msg) error {
			m.Result.MessageID = int64(len(p)) // says which route ran
			return nil
		})); err != nil {
			t.Fatalf("Route(%q): %v", p, err)
		}
	}
	tests := []struct {
		name    string
		topic   string
		pattern string // "" for no match
		params  map[string]string
	}{
		{"data", "devices/dev1/data", "devices/{device_id}/data", map[string]string{"device_id": "dev1"}},
		{"data stream", "devices/dev1/data/power", "devices/{device_id}/data/{stream}", map[string]string{"device_id": "dev1", "stream": "power"}},
		{"status", "devices/a.b:c-d_e/status", "devices/{device_id}/status", map[string]string{"device_id": "a.b:c-d_e"}},
		{"heartbeat", "devices/x/heartbeat", "devices/{device_id}/heartbeat", map[string]string{"device_id": "x"}},
		{"two params", "devices/d/commands/c42/result", "devices/{device_id}/commands/{command_id}/result", map[string]string{"device_id": "d", "command_id": "c42"}},
		{"too deep", "devices/dev1/data/a/b", "", nil},
		{"too short", "devices/dev1", "", nil},
		{"prefix only", "devices/", "", nil},
		{"empty device", "devices//data", "", nil},
		{"empty stream", "devices/dev1/data/", "", nil},
		{"trailing slash", "devices/dev1/status/", "", nil},
		{"unknown leaf", "devices/dev1/foo", "", nil},
		{"other root", "things/dev1/data", "", nil},
		{"empty", "", "", nil},
		{"case matters", "Devices/dev1/data", "", nil},
		{"leading slash", "/devices/dev1/data", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ps Params
			h, ok := r.Match(tt.topic, &ps)
			if ok != (tt.pattern != "") {
				t.Fatalf("Match(%q) = %v, want %v", tt.topic, ok, tt.pattern != "")
			}
			if !ok {
				if ps.Len() != 0 {
					t.Errorf("params set without a match: %d", ps.Len())
				}
				err := r.Handle(context.Background(), &Msg{Req: &Request{Topic: tt.topic}})
				var rej *Rejection
				if !errors.As(err, &rej) || rej.Code != CodeUnknownTopic {
					t.Errorf("Handle: %v, want unknown_topic", err)
				}
				return
			}
			m := &Msg{}
			if err := h.Handle(context.Background(), m); err != nil || m.Result.MessageID != int64(len(tt.pattern)) {
				t.Errorf("wrong handler for %q", tt.topic)
			}
			if ps.Len() != len(tt.params) {
				t.Errorf("%d params, want %d", ps.Len(), len(tt.params))
			}
			for k, v := range tt.params {
				if got := ps.Get(k); got != v {
					t.Errorf("param %s = %q, want %q", k, got, v)
				}
			}
			if got := ps.Get("nope"); got != "" {
				t.Errorf("absent param = %q", got)
			}
		})
	}
}

func TestRouteBadPatterns(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
	}{
		{"empty", ""},
		{"empty level", "devices//data"},
		{"trailing slash", "devices/{id}/"},
		{"plus", "devices/+/data"},
		{"hash", "devices/{id}/#"},
		{"partial param", "devices/x{id}/data"},
		{"unclosed", "devices/{id/data"},
		{"empty name", "devices/{}/data"},
		{"bad name", "devices/{a-b}/data"},
		{"twice", "devices/{id}/{id}"},
		{"same shape", "devices/{other}/status"},
		{"too many", "{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}"},
	}
	r := NewRouter()
	if err := r.Route("devices/{device_id}/status", HandlerFunc(nil)); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := r.Route(tt.pattern, HandlerFunc(nil)); !errors.Is(err, ErrBadPattern) {
				t.Errorf("Route(%q) = %v, want ErrBadPattern", tt.pattern, err)
			}
		})
	}
}

func TestRouteMiddleware(t *testing.T) {
	var order []string
	mw := func(name string) Middleware {
		return func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, m *Msg) error {
				order = append(order, name)
				return next.Handle(ctx, m)
			})
		}
	}
	r := NewRouter()
	h := HandlerFunc(func(context.Context, *Msg) error { order = append(order, "handler"); return nil })
	if err := r.Route("a/{x}", h, mw("first"), mw("second")); err != nil {
		t.Fatal(err)
	}
	if err := Chain(r, mw("outer")).Handle(context.Background(), &Msg{Req: &Request{Topic: "a/1"}}); err != nil {
		t.Fatal(err)
	}
	if want := []string{"outer", "first", "second", "handler"}; !slices.Equal(order, want) {
		t.Errorf("order %v, want %v", order, want)
	}
}

// naiveMatch is the obvious, allocating implementation of a pattern match.
func naiveMatch(pattern, topic string) (map[string]string, bool) {
	ps, ts := strings.Split(pattern, "/"), strings.Split(topic, "/")
	if len(ps) != len(ts) {
		return nil, false
	}
	out := map[string]string{}
	for i, p := range ps {
		if strings.HasPrefix(p, "{") {
			if ts[i] == "" {
				return nil, false
			}
			out[p[1:len(p)-1]] = ts[i]
		} else if p != ts[i] {
			return nil, false
		}
	}
	return out, true
}

func FuzzRoute(f *testing.F) {
	f.Add("devices/{device_id}/data/{stream}", "devices/dev1/data/power")
	f.Add("devices/{device_id}/data", "devices/dev1/data")
	f.Add("devices/{device_id}/status", "devices//status")
	f.Add("a/{b}/c", "a/b/c/")
	f.Add("{a}", "")
	f.Add("x", "x/")
	f.Fuzz(func(t *testing.T, pattern, topic string) {
		r := NewRouter()
		if err := r.Route(pattern, HandlerFunc(func(context.Context, *Msg) error { return nil })); err != nil {
			return
		}
		var ps Params
		_, ok := r.Match(topic, &ps)
		want, wantOK := naiveMatch(pattern, topic)
		if ok != wantOK {
			t.Fatalf("Match(%q, %q) = %v, naive %v", pattern, topic, ok, wantOK)
		}
		if !ok {
			return
		}
		if ps.Len() != len(want) {
			t.Fatalf("%d params, naive %d", ps.Len(), len(want))
		}
		// Putting the values back into the pattern gives the topic.
		for k, v := range want {
			if got := ps.Get(k); got != v {
				t.Fatalf("param %s = %q, naive %q", k, got, v)
			}
		}
		levels := strings.Split(pattern, "/")
		for i, l := range levels {
			if strings.HasPrefix(l, "{") {
				levels[i] = ps.Get(l[1 : len(l)-1])
			}
		}
		if rebuilt := strings.Join(levels, "/"); rebuilt != topic {
			t.Fatalf("rebuilt %q from %q, topic %q", rebuilt, pattern, topic)
		}
	})
}
