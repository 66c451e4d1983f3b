package broker

import (
	"fmt"
	"testing"
)

// TestPubacksBySettleAndWriter: the PUBACKs of a plain TCP connection are
// written by settle in the committer's goroutine (writeAcksNow), those of
// other connections by the session's writer (writerAcks stands for them
// here); either way in publish order, whatever the order of the commits,
// and none before its publish and every one before it are stored.
func TestPubacksBySettleAndWriter(t *testing.T) {
	for _, mode := range []struct {
		name       string
		writerAcks bool
	}{{"settle", false}, {"writer", true}} {
		t.Run(mode.name, func(t *testing.T) {
			g := newGatedHandler()
			h := startOpts(t, Options{writerAcks: mode.writerAcks}, g)
			c, tap, _ := dialTapped(t, h)
			var topics []string
			for i := range 6 {
				topics = append(topics, fmt.Sprintf("devices/dev1/data/s%d", i))
			}
			res := publishAll(ctx5(t), t, c, g, topics)
			if q := &sessionOfDevice(t, h.b, "dev1").pubacks; (q.raw == nil) != mode.writerAcks {
				t.Fatalf("settle writes the PUBACKs = %v", q.raw != nil)
			}
			// Stored in the order 1, 0, 3, 2, 5, 4: each odd one waits for
			// the one before it; then both go out.
			for i := 0; i < len(topics); i += 2 {
				g.commit(t, topics[i+1], nil)
				_, ids := tap.publishIDs(t)
				var want []string
				for _, id := range ids[:i] {
					want = append(want, fmt.Sprintf("puback %d 0x0", id))
				}
				if got := tap.received(t); fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("with %s not stored the broker sent %v, want %v", topics[i], got, want)
				}
				g.commit(t, topics[i], nil)
				for range 2 {
					if r := <-res; r.err != nil || r.pr.ReasonCode != 0 {
						t.Fatalf("publish %s: %+v, %v", r.topic, r.pr, r.err)
					}
				}
			}
			sent, ids := tap.publishIDs(t)
			if fmt.Sprint(sent) != fmt.Sprint(topics) {
				t.Fatalf("the client sent %v, want %v", sent, topics)
			}
			var want []string
			for _, id := range ids {
				want = append(want, fmt.Sprintf("puback %d 0x0", id))
			}
			if got := tap.received(t); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("broker sent %v, want %v (PUBACKs in publish order)", got, want)
			}
		})
	}
}
