package registry

import (
	"slices"
	"testing"
	"time"
)

func TestSeenCache(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	status, connected := "online", true
	// step is one transaction with one patch: the patch's last_seen (at,
	// after t0; nil with noSeen), its other fields, whether the commit
	// fails, and whether Filter must keep the patch.
	type step struct {
		dev       string
		at        time.Duration
		noSeen    bool
		status    bool
		connected bool
		metrics   bool
		session   uint64
		fail      bool
		want      bool
	}
	for _, tc := range []struct {
		name  string
		res   time.Duration
		steps []step
	}{
		{"within the resolution skipped", time.Second, []step{
			{at: 0, want: true},
			{at: 500 * time.Millisecond, want: false},
			{at: 999 * time.Millisecond, want: false},
			{at: time.Second, want: true},
			{at: 1500 * time.Millisecond, want: false},
			{at: 2 * time.Second, want: true},
		}},
		{"a status change always written", time.Second, []step{
			{at: 0, want: true},
			{at: 200 * time.Millisecond, status: true, want: true},
			{at: 400 * time.Millisecond, connected: true, want: true},
			{at: 600 * time.Millisecond, metrics: true, want: true},
			// remembered from the metrics patch: 0.6 s + 1 s
			{at: 1500 * time.Millisecond, want: false},
			{at: 1600 * time.Millisecond, want: true},
		}},
		{"a failed commit does not lose a write", time.Second, []step{
			{at: 0, want: true},
			{at: 1200 * time.Millisecond, fail: true, want: true},
			{at: 1500 * time.Millisecond, want: true},
			{at: 2 * time.Second, want: false},
		}},
		{"a failed status change is not remembered", time.Second, []step{
			{at: 0, want: true},
			{at: 1100 * time.Millisecond, status: true, fail: true, want: true},
			{at: 1200 * time.Millisecond, want: true},
		}},
		{"a session's patch is not remembered", time.Second, []step{
			{at: 0, connected: true, session: 7, want: true},
			{at: 100 * time.Millisecond, want: true},
			{at: 200 * time.Millisecond, want: false},
		}},
		{"an older last_seen skipped", time.Second, []step{
			{at: time.Second, want: true},
			{at: 0, want: false},
		}},
		{"a patch without last_seen written, not remembered", time.Second, []step{
			{noSeen: true, status: true, want: true},
			{at: 0, want: true},
		}},
		{"devices apart", time.Second, []step{
			{dev: "a", at: 0, want: true},
			{dev: "b", at: 100 * time.Millisecond, want: true},
			{dev: "a", at: 200 * time.Millisecond, want: false},
			{dev: "b", at: 300 * time.Millisecond, want: false},
		}},
		{"resolution 0 writes every patch", 0, []step{
			{at: 0, want: true},
			{at: time.Microsecond, want: true},
			{at: time.Microsecond, want: true},
			{at: 0, want: false}, // older than the written one
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewSeenCache(tc.res)
			for i, s := range tc.steps {
				dev := s.dev
				if dev == "" {
					dev = "d1"
				}
				p := DevicePatch{Session: s.session}
				if !s.noSeen {
					at := t0.Add(s.at)
					p.LastSeen = &at
				}
				if s.status {
					p.Status = &status
				}
				if s.connected {
					p.Connected = &connected
				}
				if s.metrics {
					p.Metrics = []byte(`{"battery":80}`)
				}
				ids, patches, writes := c.Filter([]string{dev}, []DevicePatch{p}, nil)
				if got := len(ids) == 1; got != s.want || len(patches) != len(ids) {
					t.Fatalf("step %d (%s at %v): written %v, want %v", i, dev, s.at, got, s.want)
				}
				if !s.fail {
					c.Committed(writes)
				}
			}
		})
	}
}

// TestSeenCacheFilterKeepsOrder checks that Filter compacts a batch of
// several devices in place, in order, each id with its own patch.
func TestSeenCacheFilterKeepsOrder(t *testing.T) {
	t0 := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { v := t0.Add(d); return &v }
	c := NewSeenCache(time.Second)
	_, _, w := c.Filter([]string{"a", "b", "c"}, []DevicePatch{{LastSeen: at(0)}, {LastSeen: at(0)}, {LastSeen: at(0)}}, nil)
	c.Committed(w)
	st := "error"
	ids, patches, w := c.Filter([]string{"a", "b", "c", "d"},
		[]DevicePatch{{LastSeen: at(time.Second)}, {LastSeen: at(time.Millisecond)}, {LastSeen: at(time.Millisecond), Status: &st}, {LastSeen: at(0)}}, nil)
	if want := []string{"a", "c", "d"}; !slices.Equal(ids, want) {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	if !patches[0].LastSeen.Equal(t0.Add(time.Second)) || patches[1].Status != &st || !patches[2].LastSeen.Equal(t0) {
		t.Fatalf("patches not kept with their ids: %+v", patches)
	}
	if want := []SeenWrite{{"a", t0.Add(time.Second)}, {"c", t0.Add(time.Millisecond)}, {"d", t0}}; !slices.Equal(w, want) {
		t.Fatalf("writes %v, want %v", w, want)
	}
	var nilCache *SeenCache
	if ids, _, _ := nilCache.Filter([]string{"a"}, []DevicePatch{{LastSeen: at(0)}}, nil); len(ids) != 1 {
		t.Fatal("a nil cache filtered a patch")
	}
}
