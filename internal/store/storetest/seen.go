package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
)

// testSeenResolution: a patch that only moves last_seen by less than
// registry.SeenResolution past the value last written is not written; one
// that changes anything else is, with its last_seen; a failed commit
// leaves nothing remembered that would skip a later patch.
func testSeenResolution(t *testing.T, b Backend) {
	provision(t, b, "ls1")
	t0 := at(5000)
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for i, s := range []struct {
		name   string
		at     time.Duration
		status string // also patched, when set
		fail   bool   // the batch fails after the patch
		want   time.Duration
	}{
		{name: "first", at: 0, want: 0},
		{name: "within the resolution", at: ms(500), want: 0},
		{name: "a resolution later", at: registry.SeenResolution, want: registry.SeenResolution},
		{name: "with a status change", at: registry.SeenResolution + ms(200), status: "maintenance", want: registry.SeenResolution + ms(200)},
		{name: "failed", at: 2*registry.SeenResolution + ms(500), fail: true, want: registry.SeenResolution + ms(200)},
		{name: "after the failed one", at: 2*registry.SeenResolution + ms(700), want: 2*registry.SeenResolution + ms(700)},
	} {
		seen := t0.Add(s.at)
		p := &registry.DevicePatch{LastSeen: &seen}
		if s.status != "" {
			p.Status = &s.status
		}
		ch := &commit.Change{DeviceID: "ls1", Ops: []commit.Op{p}}
		if s.fail {
			ch.Ops = append(ch.Ops, failingOp{})
			if err := b.Commit(context.Background(), []*commit.Change{ch}); err == nil {
				t.Fatalf("step %d (%s): a batch with a failing op committed", i, s.name)
			}
		} else {
			mustCommit(t, b, ch)
		}
		d := getDevice(t, b, "ls1")
		if d.LastSeen == nil || !d.LastSeen.Equal(t0.Add(s.want)) {
			t.Errorf("step %d (%s): last_seen %v, want %v", i, s.name, d.LastSeen, t0.Add(s.want))
		}
		if s.status != "" && d.Status != s.status {
			t.Errorf("step %d (%s): status %q, want %q", i, s.name, d.Status, s.status)
		}
	}
}
