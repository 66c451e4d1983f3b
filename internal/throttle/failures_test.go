package throttle

import (
	"testing"
	"time"
)

func TestFailuresBounded(t *testing.T) {
	th := NewFailures(2, time.Minute, 3)
	now := time.Now()
	for _, k := range []string{"a", "b", "c", "d"} {
		th.Fail(k, now)
	}
	if len(th.entries) != 3 {
		t.Fatalf("entries: %d, want at most 3", len(th.entries))
	}
	th.Fail("e", now.Add(2*time.Minute)) // the old ones expired: room again
	if len(th.entries) != 1 {
		t.Fatalf("entries after expiry: %d, want 1", len(th.entries))
	}
}
