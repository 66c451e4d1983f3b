package sqlite

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/retention"
	"github.com/devicehub/devicehub/internal/store/storetest"
)

// TestCompactionFailure: a compaction that fails at its last step (the
// blocks written, the rows deleted, before the commit), of one device or
// of a run of devices in one transaction, leaves every reading where it
// was, once; the next one moves them.
func TestCompactionFailure(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var batch []*commit.Change
	for _, id := range []string{"c1", "c2"} {
		batch = append(batch, &commit.Change{DeviceID: id, Ops: []commit.Op{&registry.NewDevice{Type: "T", MQTTUsername: id, PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: base}}})
	}
	if err := s.Commit(ctx, batch); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		batch = batch[:0]
		for _, id := range []string{"c1", "c2"} {
			msg := &readings.Message{ID: int64(2*i + len(batch) + 1), Topic: "t", Transport: "mqtt", QoS: 1, MsgID: fmt.Sprint("m", i), Accepted: true, ReceivedAt: base.Add(time.Duration(i) * time.Minute)}
			batch = append(batch, &commit.Change{DeviceID: id, Ops: []commit.Op{msg, &readings.Readings{Message: msg, Rows: []readings.Reading{{
				Time: base.Add(time.Duration(i) * time.Minute), Values: fmt.Appendf(nil, `{"t":%d.%d,"n":%d}`, i%30, i%10, i)}}}}})
		}
		if err := s.Commit(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	before := storetest.ReadingsView(t, s, "c1", "c2")
	injected := errors.New("injected")
	s.compactHook = func() error { return injected }
	for _, tt := range []struct {
		name    string
		compact func() error
	}{
		{"one device", func() error {
			_, err := s.CompactReadings(ctx, "c1", base.Add(24*time.Hour), 0, 1000)
			return err
		}},
		{"a run of devices", func() error {
			_, _, err := s.CompactDevices(ctx, []string{"c1", "c2"}, base.Add(24*time.Hour), 0, 1000)
			return err
		}},
	} {
		if err := tt.compact(); !errors.Is(err, injected) {
			t.Fatalf("%s: err = %v, want the injected failure", tt.name, err)
		}
	}
	var blocks int
	if err := s.r.QueryRow(`SELECT count(*) FROM reading_blocks`).Scan(&blocks); err != nil || blocks != 0 {
		t.Fatalf("%d blocks after a failed compaction (%v)", blocks, err)
	}
	if after := storetest.ReadingsView(t, s, "c1", "c2"); !slices.Equal(after, before) {
		t.Fatal("a failed compaction changed the answers")
	}
	s.compactHook = nil
	for _, id := range []string{"c1", "c2"} {
		n, err := s.CompactReadings(ctx, id, base.Add(24*time.Hour), 0, 1000)
		if err != nil || n == 0 {
			t.Fatalf("compact %s: %d, %v", id, n, err)
		}
	}
	if err := s.r.QueryRow(`SELECT count(*) FROM reading_blocks`).Scan(&blocks); err != nil || blocks == 0 {
		t.Fatalf("%d blocks after compaction (%v)", blocks, err)
	}
	if after := storetest.ReadingsView(t, s, "c1", "c2"); !slices.Equal(after, before) {
		t.Fatal("compaction changed the answers")
	}
}

// TestCompactorPass: the compactor moves the readings older than After,
// in batches, and with rollups only those summed up.
func TestCompactorPass(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ids := []string{"p1", "p2", "p3"}
	var batch []*commit.Change
	for _, id := range ids {
		batch = append(batch, &commit.Change{DeviceID: id, Ops: []commit.Op{&registry.NewDevice{Type: "T", MQTTUsername: id, PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: base}}})
	}
	if err := s.Commit(ctx, batch); err != nil {
		t.Fatal(err)
	}
	msgID := int64(0)
	for i := range 100 { // one reading a minute per device
		batch = batch[:0]
		for _, id := range ids {
			msgID++
			msg := &readings.Message{ID: msgID, Topic: "t", Transport: "mqtt", QoS: 1, Accepted: true, ReceivedAt: base.Add(time.Duration(i) * time.Minute)}
			batch = append(batch, &commit.Change{DeviceID: id, Ops: []commit.Op{msg, &readings.Readings{Message: msg, Rows: []readings.Reading{{
				Time: base.Add(time.Duration(i) * time.Minute), Values: fmt.Appendf(nil, `{"t":%d}`, i)}}}}})
		}
		if err := s.Commit(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	now := base.Add(100 * time.Minute)
	tests := []struct {
		name    string
		opts    retention.CompactOptions
		prepare func(t *testing.T)
		moved   int
	}{
		{"rollups and nothing summed up", retention.CompactOptions{Rollups: true, After: 50 * time.Minute}, nil, 0},
		{"rollups summed up to id 30", retention.CompactOptions{Rollups: true, After: 50 * time.Minute}, func(t *testing.T) {
			if err := s.ApplyRollups(ctx, nil, 0, 30); err != nil {
				t.Fatal(err)
			}
		}, 30},
		{"older than 50 minutes, batches of 7", retention.CompactOptions{After: 50 * time.Minute, Batch: 7}, nil, 3*50 - 30},
		{"again: nothing new", retention.CompactOptions{After: 50 * time.Minute}, nil, 0},
		{"everything but the newest row", retention.CompactOptions{After: time.Nanosecond}, nil, 3*50 - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.prepare != nil {
				tt.prepare(t)
			}
			tt.opts.Now = func() time.Time { return now }
			c := retention.NewCompactor(s, tt.opts, slog.New(slog.DiscardHandler), nil)
			n, err := c.Pass(ctx)
			if err != nil || n != tt.moved {
				t.Fatalf("moved %d (%v), want %d", n, err, tt.moved)
			}
			total, err := s.CountReadings(ctx, "")
			if err != nil || total != 300 {
				t.Fatalf("%d readings (%v), want 300", total, err)
			}
		})
	}
	// Expiry drops whole blocks: p1's one block ends before the cutoff,
	// p2's ends after it and stays.
	n, err := s.ExpireReadings(ctx, []retention.Cutoff{{DeviceID: "p1", Before: now}, {DeviceID: "p2", Before: base.Add(50 * time.Minute)}}, 1000)
	if err != nil || n != 100 {
		t.Fatalf("expired %d (%v), want p1's 100", n, err)
	}
	for id, want := range map[string]int64{"p1": 0, "p2": 100, "p3": 100} {
		if got, err := s.CountReadings(ctx, id); err != nil || got != want {
			t.Errorf("%s: %d readings (%v), want %d", id, got, err, want)
		}
	}
}
