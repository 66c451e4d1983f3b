package sqlite

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/readings"
	"github.com/devicehub/devicehub/internal/registry"
)

// latestQueries are the queries the snapshot must answer as the tables do.
var latestQueries = []struct {
	name string
	q    readings.LatestQuery
}{
	{"every device", readings.LatestQuery{}},
	{"one a page", readings.LatestQuery{Limit: 1}},
	{"pages of 7", readings.LatestQuery{Limit: 7}},
	{"pages of 128", readings.LatestQuery{Limit: 128}},
	{"after an id", readings.LatestQuery{After: "d-0100"}},
	{"after an id not stored", readings.LatestQuery{After: "d-0100x", Limit: 50}},
	{"after the last", readings.LatestQuery{After: "zzz"}},
	{"type", readings.LatestQuery{Type: "B"}},
	{"type, pages of 9", readings.LatestQuery{Type: "A", Limit: 9}},
	{"unknown type", readings.LatestQuery{Type: "nope"}},
	{"stream", readings.LatestQuery{Stream: "s2"}},
	{"field", readings.LatestQuery{Field: "t"}},
	{"stream and field, pages of 5", readings.LatestQuery{Stream: "s2", Field: "t", Limit: 5}},
	{"type and field", readings.LatestQuery{Type: "B", Field: "note"}},
}

// checkLatestSameAsTables compares every page of every latest query from
// the snapshot with the page read from the tables (what LatestValues
// answered before the snapshot): the same ids, the same bytes of values,
// the same next, so the same answer.
func checkLatestSameAsTables(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	snap := s.snap.Load()
	if snap == nil {
		t.Fatal("no snapshot")
	}
	for _, tt := range latestQueries {
		q := tt.q
		for page := 0; ; page++ {
			got, err := latestFromSnapshot(snap, q)
			if err != nil {
				t.Fatalf("%s: snapshot: %v", tt.name, err)
			}
			want, err := s.latestFromTables(ctx, q)
			if err != nil {
				t.Fatalf("%s: tables: %v", tt.name, err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s, page %d: snapshot and tables differ\n got %d devices, next %q\nwant %d devices, next %q",
					tt.name, page, len(got.Devices), got.Next, len(want.Devices), want.Next)
			}
			if got.Next == "" {
				break
			}
			q.After = got.Next
		}
	}
}

// TestLatestSnapshot: the snapshot answers every query as the tables do
// as devices get their first readings (in an order that splits chunks in
// the middle), newer and older values, another type by re-provisioning,
// a batch that failed, and a restart.
func TestLatestSnapshot(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "hub.db")
	s, err := Open(ctx, Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	const devices = 700 // more than 4 chunks
	ids := make([]string, devices)
	var batch []*commit.Change
	for d := range devices {
		ids[d] = fmt.Sprintf("d-%04d", d)
		batch = append(batch, &commit.Change{DeviceID: ids[d], Ops: []commit.Op{&registry.NewDevice{Type: string(rune('A' + d%3)),
			MQTTUsername: ids[d], PasswordHash: []byte{1}, APIKeyHash: []byte{2}, CreatedAt: time.Now()}}})
	}
	commitAll(t, s, batch)
	// A device without readings is in no answer, nor in the snapshot.
	if snap := s.snap.Load(); snap == nil || snap.n != 0 {
		t.Fatalf("snapshot before readings: %+v", snap)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	msgID := int64(0)
	base := time.Date(2026, 12, 3, 10, 0, 0, 123456000, time.UTC)
	reading := func(d int, sec int) *commit.Change {
		msgID++
		values := []string{
			fmt.Sprintf(`{"t":%d.5,"h":%d}`, sec, d),
			`{"note":"héllo <b> \"q\"","cfg":{"k": [1, 2]}}`,
			fmt.Sprintf(`{"t":%d,"on":true,"v":null}`, -sec),
		}[rng.IntN(3)]
		stream := []string{"", "s1", "s2"}[rng.IntN(3)]
		m := &readings.Message{ID: msgID, Topic: "t", Transport: "mqtt", QoS: 1, Accepted: true, ReceivedAt: base}
		return &commit.Change{DeviceID: ids[d], Ops: withReadings(m, []readings.Reading{{Stream: stream, Time: base.Add(time.Duration(sec) * time.Second), Values: []byte(values)}})}
	}
	tests := []struct {
		name  string
		apply func(t *testing.T)
	}{
		{"first readings, random order", func(t *testing.T) {
			perm := rng.Perm(devices)
			for _, round := range [][2]int{{0, 300}, {300, devices}} {
				batch = batch[:0]
				for _, d := range perm[round[0]:round[1]] {
					batch = append(batch, reading(d, 10))
				}
				commitAll(t, s, batch)
			}
		}},
		{"one device at a time", func(t *testing.T) {
			for range 50 {
				commitAll(t, s, []*commit.Change{reading(rng.IntN(devices), 20)})
			}
		}},
		{"older values arriving late", func(t *testing.T) {
			batch = batch[:0]
			for d := range devices {
				batch = append(batch, reading(d, 5))
			}
			commitAll(t, s, batch)
		}},
		{"another type", func(t *testing.T) {
			batch = batch[:0]
			for _, d := range []int{3, 4, 5, 500} {
				batch = append(batch, &commit.Change{DeviceID: ids[d], Ops: []commit.Op{&registry.NewDevice{Type: "B", Replace: true,
					MQTTUsername: ids[d], PasswordHash: []byte{3}, APIKeyHash: []byte{4}, CreatedAt: time.Now()}}})
			}
			batch = append(batch, reading(5, 30))
			commitAll(t, s, batch)
			if e, ok := s.snap.Load().get(ids[3]); !ok || e.typ != "B" {
				t.Errorf("type of %s: %+v", ids[3], e)
			}
		}},
		{"readers during commits", func(t *testing.T) {
			// For the race detector: readers walk snapshots while
			// commits publish new ones.
			stop := make(chan struct{})
			done := make(chan error, 2)
			for range 2 {
				go func() {
					for {
						select {
						case <-stop:
							done <- nil
							return
						default:
						}
						p, err := s.LatestValues(ctx, readings.LatestQuery{Field: "t"})
						if err == nil {
							for _, d := range p.Devices {
								_ = string(d.Values[0].Value)
							}
							_, err = s.LatestValues(ctx, readings.LatestQuery{})
						}
						if err != nil {
							done <- err
							return
						}
					}
				}()
			}
			for range 20 {
				commitAll(t, s, []*commit.Change{reading(rng.IntN(devices), 25), reading(rng.IntN(devices), 25)})
			}
			close(stop)
			for range 2 {
				if err := <-done; err != nil {
					t.Error(err)
				}
			}
		}},
		{"a failed batch", func(t *testing.T) {
			failed := reading(7, 40)
			failed.Ops = append(failed.Ops, failingOp{})
			if err := s.Commit(ctx, []*commit.Change{failed}); err == nil {
				t.Fatal("a batch with a failing op committed")
			}
			if s.snap.Load() != nil {
				t.Fatal("the snapshot was kept after a failed batch")
			}
			// The tables answer meanwhile; the next batch builds it again.
			commitAll(t, s, []*commit.Change{reading(8, 40)})
		}},
		{"a restart", func(t *testing.T) {
			before, err := s.LatestValues(ctx, readings.LatestQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if s, err = Open(ctx, Options{Path: path}); err != nil {
				t.Fatal(err)
			}
			after, err := s.LatestValues(ctx, readings.LatestQuery{})
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(before, after) || len(after.Devices) != devices {
				t.Errorf("after a restart: %d devices, before %d", len(after.Devices), len(before.Devices))
			}
			commitAll(t, s, []*commit.Change{reading(9, 50)})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.apply(t)
			checkLatestSameAsTables(t, s)
			if snap := s.snap.Load(); snap.n != devices {
				t.Errorf("snapshot of %d devices, want %d", snap.n, devices)
			}
		})
	}
}

// commitAll commits batch, which must succeed change by change.
func commitAll(t *testing.T, s *Store, batch []*commit.Change) {
	t.Helper()
	if err := s.Commit(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	for _, ch := range batch {
		if ch.Err != nil {
			t.Fatalf("change of %s: %v", ch.DeviceID, ch.Err)
		}
	}
}

var failingDomain = &commit.Domain{Name: "sqlite-test-failing", Rank: 99, Write: func(context.Context, commit.Tx, []commit.Pending) error {
	return errors.New("failing domain")
}}

// failingOp fails the batch it is in, after its readings were written.
type failingOp struct{}

func (failingOp) Domain() *commit.Domain { return failingDomain }

// TestLatestSnapshotChunks: with keeps entries sorted, counts and sizes
// them, splits chunks, and leaves the snapshot it came from unchanged.
func TestLatestSnapshotChunks(t *testing.T) {
	e := func(id string) latestEntry { return latestEntry{id: id, typ: "T", raw: []byte("[" + id + "]")} }
	var s latestSnap
	var all []string
	tests := []struct {
		name string
		ids  []string
	}{
		{"first", []string{"m010", "m020"}},
		{"before, between, after, replaced", []string{"a", "m015", "m020", "z"}},
		{"many in the middle", func() []string {
			var ids []string
			for i := range 600 {
				ids = append(ids, fmt.Sprintf("m%03d", i))
			}
			return ids
		}()},
		{"one", []string{"m300"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			upd := make([]latestEntry, len(tt.ids))
			for i, id := range tt.ids {
				upd[i] = e(id)
			}
			prev := s
			prevChunks := make([][]latestEntry, len(prev.chunks))
			for i, c := range prev.chunks {
				prevChunks[i] = append([]latestEntry(nil), c...)
			}
			s = *prev.with(upd)
			if !reflect.DeepEqual(prev.chunks, prevChunks) && len(prevChunks) > 0 {
				t.Error("with changed the snapshot it came from")
			}
			seen := map[string]bool{}
			for _, id := range all {
				seen[id] = true
			}
			for _, id := range tt.ids {
				if !seen[id] {
					all = append(all, id)
					seen[id] = true
				}
			}
			var got []string
			var bytes int64
			for _, c := range s.chunks {
				if len(c) == 0 || len(c) >= 2*latestChunkSize {
					t.Errorf("chunk of %d", len(c))
				}
				for i := range c {
					got = append(got, c[i].id)
					bytes += c[i].size()
				}
			}
			if s.n != len(all) || len(got) != len(all) || s.bytes != bytes {
				t.Errorf("n %d, %d ids, bytes %d; want %d, %d", s.n, len(got), s.bytes, len(all), bytes)
			}
			for i := 1; i < len(got); i++ {
				if got[i-1] >= got[i] {
					t.Fatalf("ids out of order: %q then %q", got[i-1], got[i])
				}
			}
			for _, id := range all {
				if en, ok := s.get(id); !ok || string(en.raw) != "["+id+"]" {
					t.Errorf("get %q: %v", id, ok)
				}
			}
			if _, ok := s.get("m0155"); ok {
				t.Error("got an id never added")
			}
		})
	}
}
