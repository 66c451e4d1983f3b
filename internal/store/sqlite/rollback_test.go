package sqlite

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// TestFailedInsertRollsBackAll: the commit's inserts are INSERT OR
// ROLLBACK, so a statement that fails ends the transaction in SQLite
// itself. Each table's insert is made to fail in turn (a row that takes
// the key its next insert writes): the commit fails, nothing of its batch
// is stored (the statements before the failing one included), and once the
// row is gone the same store commits the batch again.
func TestFailedInsertRollsBackAll(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name         string
		block, clear string // statements that make the insert fail, then let it pass
	}{
		{"message batch (the first insert)", `INSERT INTO message_batches (first_id, last_id, n, rejected, max_received, data) VALUES (%[1]d, %[1]d, 1, 0, 0, x'01')`, `DELETE FROM message_batches WHERE first_id = %[1]d`},
		{"events (the last insert)", `INSERT INTO events (seq, type, time) VALUES (%[2]d, 'x', 0)`, `DELETE FROM events WHERE seq = %[2]d`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, now := openWithDevice(t, "d1")
			batch := func() []*commit.Change {
				var out []*commit.Change
				for i := range 3 {
					m := &readings.Message{ID: int64(100 + i), Topic: "devices/d1/data", Transport: "mqtt", QoS: 1,
						Payload: []byte(`{"t":1}`), MsgID: fmt.Sprint("m", i), Accepted: true, ReceivedAt: now}
					out = append(out, &commit.Change{DeviceID: "d1",
						Ops:    withReadings(m, []readings.Reading{{Time: now.Add(time.Duration(i) * time.Second), Values: []byte(`{"t":1}`)}}),
						Events: []commit.Event{{Event: events.Event{Type: events.DeviceDataReceived, Time: now, DeviceID: "d1"}, Args: []byte(`{}`)}}})
				}
				return out
			}
			block, clear := fmt.Sprintf(tc.block, 100, s.seq+2), fmt.Sprintf(tc.clear, 100, s.seq+2)
			if _, err := s.w.ExecContext(ctx, block); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(ctx, batch()); err == nil {
				t.Fatal("Commit with a conflicting row: no error")
			}
			count := func() (n int) {
				t.Helper()
				q := `SELECT (SELECT coalesce(sum(n), 0) FROM message_batches WHERE first_id = 100 AND last_id = 102) +
					(SELECT coalesce(sum(n), 0) FROM reading_batches) + (SELECT count(*) FROM latest_fields) +
					(SELECT count(*) FROM events WHERE type = 'device_data_received')`
				if err := s.w.QueryRowContext(ctx, q).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			if n := count(); n != 0 {
				t.Fatalf("after the failed commit: %d rows of its batch stored, want 0", n)
			}
			if _, err := s.w.ExecContext(ctx, clear); err != nil {
				t.Fatal(err)
			}
			if err := s.Commit(ctx, batch()); err != nil {
				t.Fatalf("Commit once the row is gone: %v", err)
			}
			if n := count(); n != 3+3+1+3 {
				t.Fatalf("after the commit: %d rows stored, want 10", n)
			}
		})
	}
}

// cancelOp ends its batch's context when its domain writes, after the
// domains of lower rank (the messages, readings and latest values) and
// before the events.
type cancelOp struct{ cancel context.CancelFunc }

var cancelDomain = &commit.Domain{Name: "cancel (test)", Rank: 1000,
	Write: func(_ context.Context, _ commit.Tx, ops []commit.Pending) error {
		for _, p := range ops {
			p.Op.(*cancelOp).cancel()
		}
		return nil
	}}

func (*cancelOp) Domain() *commit.Domain { return cancelDomain }

// TestCommitAfterFailure: a commit that fails between its multi-row
// writes (its context ended; the writer's connection dropped by the pool
// and opened again) stores nothing of its batch, and the same store
// commits the next batch, its writes' statements prepared again on a new
// connection when the old one is gone.
func TestCommitAfterFailure(t *testing.T) {
	for _, tc := range []struct {
		name     string
		replaced bool // the writer's connection is a new one after the failure
		fail     func(t *testing.T, s *Store) (context.Context, commit.Op)
	}{
		{"context canceled", false, func(t *testing.T, s *Store) (context.Context, commit.Op) {
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			return ctx, &cancelOp{cancel}
		}},
		{"context canceled, connection replaced", true, func(t *testing.T, s *Store) (context.Context, commit.Op) {
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			// No idle connection: the pool closes the writer's when the
			// failed commit gives it back, and opens a new one after.
			s.w.SetMaxIdleConns(0)
			t.Cleanup(func() { s.w.SetMaxIdleConns(1) })
			return ctx, &cancelOp{cancel}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			s, now := openWithDevice(t, "d1")
			batch := func(more ...commit.Op) []*commit.Change {
				var out []*commit.Change
				for i := range 300 { // more rows than the largest statement
					m := &readings.Message{ID: int64(100 + i), Topic: "devices/d1/data", Transport: "mqtt", QoS: 1,
						Payload: []byte(`{"t":1}`), Accepted: true, ReceivedAt: now}
					out = append(out, &commit.Change{DeviceID: "d1",
						Ops:    withReadings(m, []readings.Reading{{Time: now.Add(time.Duration(i) * time.Second), Values: []byte(`{"t":1}`)}}, more...),
						Events: []commit.Event{{Event: events.Event{Type: events.DeviceDataReceived, Time: now, DeviceID: "d1"}, Args: []byte(`{}`)}}})
					more = nil
				}
				return out
			}
			count := func() (n int) {
				t.Helper()
				q := `SELECT (SELECT coalesce(sum(n), 0) FROM message_batches) +
					(SELECT coalesce(sum(n), 0) FROM reading_batches) + (SELECT count(*) FROM latest_fields) +
					(SELECT count(*) FROM events WHERE type = 'device_data_received')`
				if err := s.r.QueryRowContext(ctx, q).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			before := s.inserts["events"].rawOn
			fctx, op := tc.fail(t, s)
			if err := s.Commit(fctx, batch(op)); !errors.Is(err, context.Canceled) {
				t.Fatalf("Commit whose context ends: %v, want context.Canceled", err)
			}
			if n := count(); n != 0 {
				t.Fatalf("after the failed commit: %d rows of its batch stored, want 0", n)
			}
			s.w.SetMaxIdleConns(1)
			if err := s.Commit(ctx, batch()); err != nil {
				t.Fatalf("Commit after the failed one: %v", err)
			}
			if n := count(); n != 300+300+1+300 {
				t.Fatalf("after the commit: %d rows stored, want 901", n)
			}
			if after := s.inserts["events"].rawOn; (after != before) != tc.replaced {
				t.Fatalf("writer's connection replaced: %v, want %v", after != before, tc.replaced)
			}
		})
	}
}

// openWithDevice opens a test store holding one device, id, and returns
// the time it was created at.
func openWithDevice(t *testing.T, id string) (*Store, time.Time) {
	t.Helper()
	s := openTest(t)
	now := time.Now()
	if err := s.Commit(context.Background(), []*commit.Change{{DeviceID: id, Ops: []commit.Op{&registry.NewDevice{
		Type: "T", MQTTUsername: id, PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: now,
	}}}}); err != nil {
		t.Fatal(err)
	}
	return s, now
}
