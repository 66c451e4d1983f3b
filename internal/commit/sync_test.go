package commit_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

// gatedSyncer is a SQLite store whose Sync the test holds: each Sync
// reports on entered and waits for its result on results, nil meaning the
// store's own Sync. Each CommitUnsynced reports its batch's devices on
// committed.
type gatedSyncer struct {
	*sqlite.Store
	committed chan []string
	entered   chan struct{}
	results   chan error
}

func (g *gatedSyncer) CommitUnsynced(ctx context.Context, batch []*commit.Change) error {
	err := g.Store.CommitUnsynced(ctx, batch)
	ids := make([]string, len(batch))
	for i, ch := range batch {
		ids[i] = ch.DeviceID
	}
	g.committed <- ids
	return err
}

func (g *gatedSyncer) Sync(ctx context.Context) error {
	g.entered <- struct{}{}
	if err := <-g.results; err != nil {
		return err
	}
	return g.Store.Sync(ctx)
}

func openSQLite(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), sqlite.Options{Path: filepath.Join(t.TempDir(), "hub.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newDevice is a change that creates device id, with one event.
func newDevice(id string) *commit.Change {
	return &commit.Change{
		DeviceID: id,
		Ops: []commit.Op{&registry.NewDevice{Type: "Sensor", MQTTUsername: id,
			PasswordHash: make([]byte, 32), APIKeyHash: make([]byte, 32), CreatedAt: time.Now()}},
		Events: []commit.Event{{Event: events.Event{Type: events.DeviceRegistered, DeviceID: id, DeviceType: "Sensor"}}},
	}
}

func done(tk *commit.Ticket) bool {
	select {
	case <-tk.Done():
		return true
	default:
		return false
	}
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s after 10s", what)
		var zero T
		return zero
	}
}

// TestSyncFailure: the committer writes the next batch while a Sync runs,
// acks nothing before a Sync that covers it succeeded, fails the tickets a
// failed Sync covered, and acks the later batches only after a Sync of
// their own.
func TestSyncFailure(t *testing.T) {
	g := &gatedSyncer{Store: openSQLite(t), committed: make(chan []string, 10), entered: make(chan struct{}), results: make(chan error)}
	pub := &fakePub{}
	c := newCommitter(g, pub, commit.Options{})
	run(t, c)
	ctx := context.Background()

	a, err := c.Enqueue(ctx, newDevice("a"))
	if err != nil {
		t.Fatal(err)
	}
	recv(t, g.committed, "commit of a")
	recv(t, g.entered, "sync of a")
	// The committer goes on while the first Sync is held.
	var later []*commit.Ticket
	for _, id := range []string{"b", "c"} {
		tk, err := c.Enqueue(ctx, newDevice(id))
		if err != nil {
			t.Fatal(err)
		}
		later = append(later, tk)
	}
	for n := 0; n < 2; {
		n += len(recv(t, g.committed, "commit of b, c"))
	}
	if done(a) || done(later[0]) || done(later[1]) {
		t.Fatal("a ticket completed before its Sync returned")
	}

	boom := errors.New("fsync: input/output error")
	g.results <- boom
	if err := a.Wait(ctx); !errors.Is(err, boom) {
		t.Fatalf("a after a failed Sync: %v, want %v", err, boom)
	}
	recv(t, g.entered, "sync of b, c")
	if done(later[0]) || done(later[1]) {
		t.Fatal("a batch committed after a failed Sync was acked before a Sync of its own")
	}
	if got := pub.devices(); len(got) != 0 {
		t.Fatalf("published %v before a Sync succeeded", got)
	}
	g.results <- nil
	for _, tk := range later {
		if err := tk.Wait(ctx); err != nil {
			t.Fatalf("%s after a successful Sync: %v", tk.Change.DeviceID, err)
		}
	}
	if got, want := pub.devices(), []string{"b", "c"}; !slices.Equal(got, want) {
		t.Errorf("published %v, want %v", got, want)
	}
}

// orderPub checks, at each Publish, that the tickets of the events
// published before are complete and those of the events it gets are not:
// events and tickets follow commit order.
type orderPub struct {
	t       *testing.T
	mu      sync.Mutex
	tickets map[string]*commit.Ticket
	devices []string
}

func (p *orderPub) Publish(evs []events.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, id := range p.devices {
		if !done(p.tickets[id]) {
			p.t.Errorf("events of %s published before the ticket of %s completed", evs[0].DeviceID, id)
		}
	}
	for _, e := range evs {
		if done(p.tickets[e.DeviceID]) {
			p.t.Errorf("ticket of %s completed before its events were published", e.DeviceID)
		}
		p.devices = append(p.devices, e.DeviceID)
	}
}

// TestSyncOrder: with a real SQLite store and its own Sync, events are
// published and tickets completed in commit order, and every change is
// stored once acked.
func TestSyncOrder(t *testing.T) {
	st := openSQLite(t)
	pub := &orderPub{t: t, tickets: map[string]*commit.Ticket{}}
	c := newCommitter(st, pub, commit.Options{MaxBatch: 7})
	run(t, c)
	ctx := context.Background()
	var ids []string
	var ts []*commit.Ticket
	for i := range 200 {
		id := fmt.Sprintf("dev-%03d", i)
		ch := newDevice(id)
		pub.mu.Lock()
		tk, err := c.Enqueue(ctx, ch)
		if err == nil {
			pub.tickets[id] = tk
		}
		pub.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		ts = append(ts, tk)
	}
	for i, err := range waitAll(t, ts) {
		if err != nil {
			t.Fatalf("ticket %d: %v", i, err)
		}
	}
	pub.mu.Lock()
	got := slices.Clone(pub.devices)
	pub.mu.Unlock()
	if !slices.Equal(got, ids) {
		t.Errorf("published %d events out of commit order: %v", len(got), got)
	}
	for _, id := range []string{ids[0], ids[len(ids)-1]} {
		if _, err := st.GetDevice(ctx, id); err != nil {
			t.Errorf("acked device %s: %v", id, err)
		}
	}
}
