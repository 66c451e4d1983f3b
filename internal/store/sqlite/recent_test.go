package sqlite

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/audit"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
)

// TestFold checks that rows read the same before and after they are
// folded from the staging tables into the indexed ones (ids, cursors,
// counts), and that the msg_id dedupe sees both, across a reopen.
func TestFold(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hub.db")
	open := func() *Store {
		t.Helper()
		s, err := Open(ctx, Options{Path: path, foldEvery: 1 << 30})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	fold := func(s *Store) {
		t.Helper()
		s.wmu.Lock()
		defer s.wmu.Unlock()
		if err := s.foldLocked(ctx); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	var id int64 = 1000
	send := func(s *Store, msgID string, sec int) *commit.Change {
		t.Helper()
		id++
		ch := &commit.Change{DeviceID: "d", Message: &commit.Message{ID: id, Topic: "devices/d/data", Transport: "mqtt", QoS: 1,
			Payload: []byte(`{}`), MsgID: msgID, Accepted: true, ReceivedAt: base},
			Readings: []commit.Reading{{Time: base.Add(time.Duration(sec) * time.Second), Values: []byte(`{"t":1}`)}}}
		if err := s.Commit(ctx, []*commit.Change{ch}); err != nil || ch.Err != nil {
			t.Fatalf("Commit: %v, %v", err, ch.Err)
		}
		return ch
	}
	// snapshot is what the queries return, as comparable strings.
	snapshot := func(s *Store) (ids []int64, n int64) {
		t.Helper()
		page, err := s.QueryReadings(ctx, readings.Query{DeviceID: "d", Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for page.Readings != nil {
			for _, r := range page.Readings {
				ids = append(ids, r.ID)
			}
			if page.Next == "" {
				break
			}
			if page, err = s.QueryReadings(ctx, readings.Query{DeviceID: "d", Limit: 2, Cursor: page.Next}); err != nil {
				t.Fatal(err)
			}
		}
		msgs, err := s.ListMessages(ctx, audit.Query{DeviceID: "d"})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			ids = append(ids, -m.ID)
		}
		if n, err = s.CountReadings(ctx, "d"); err != nil {
			t.Fatal(err)
		}
		return ids, n
	}

	s := open()
	nd := &commit.Change{DeviceID: "d", NewDevice: &commit.NewDevice{Type: "t", MQTTUsername: "d",
		PasswordHash: []byte{1}, APIKeyHash: []byte{2}, CreatedAt: base}}
	if err := s.Commit(ctx, []*commit.Change{nd}); err != nil || nd.Err != nil {
		t.Fatalf("Commit: %v, %v", err, nd.Err)
	}
	send(s, "m1", 1)
	send(s, "", 2)
	fold(s)
	send(s, "m2", 3)
	send(s, "", 3) // same ts: ordered by id
	before, n := snapshot(s)
	if n != 4 || len(before) != 8 {
		t.Fatalf("before the fold: %d readings, %v", n, before)
	}
	if ch := send(s, "m1", 9); !ch.Duplicate {
		t.Error("m1 (folded) stored twice")
	}
	if ch := send(s, "m2", 9); !ch.Duplicate {
		t.Error("m2 (staged) stored twice")
	}
	fold(s)
	if after, n := snapshot(s); n != 4 || !equal(after, before) {
		t.Errorf("after the fold: %d readings, %v; want %v", n, after, before)
	}
	send(s, "m3", 4)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = open() // folds m3
	defer s.Close()
	for _, m := range []string{"m1", "m2", "m3"} {
		if ch := send(s, m, 9); !ch.Duplicate {
			t.Errorf("%s stored twice after a reopen", m)
		}
	}
	if ch := send(s, "m4", 5); ch.Duplicate {
		t.Error("m4 taken for a duplicate")
	}
	ids, n := snapshot(s)
	if n != 6 || ids[0] <= before[0] {
		t.Errorf("after the reopen: %d readings, %v", n, ids)
	}
	if max, err := s.MaxMessageID(ctx); err != nil || max != id {
		t.Errorf("MaxMessageID = %d, %v; want %d", max, err, id)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
