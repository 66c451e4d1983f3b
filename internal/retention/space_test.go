package retention

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// recorder is a Committer that keeps the events it is given.
type recorder struct {
	mu  sync.Mutex
	evs []events.Type
}

func (r *recorder) Submit(_ context.Context, ch *commit.Change) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range ch.Events {
		r.evs = append(r.evs, e.Type)
	}
	return nil
}

func TestSpace(t *testing.T) {
	var free uint64
	rec := &recorder{}
	s := NewSpace(SpaceOptions{Dir: "/data", MinFree: 1000, Statfs: func(string) (uint64, error) { return free, nil }},
		rec, slog.New(slog.DiscardHandler), nil)
	steps := []struct {
		name    string
		free    uint64
		refuse  bool
		events  []events.Type // stored so far
		freeMsg uint64        // the free bytes the refusal names
	}{
		{"above the floor", 5000, false, nil, 0},
		{"below: refuse", 999, true, []events.Type{events.StorageLow}, 999},
		{"lower still: one event", 500, true, []events.Type{events.StorageLow}, 500},
		{"at the floor: still refusing (10% margin)", 1050, true, []events.Type{events.StorageLow}, 1050},
		{"10% above: take again", 1100, false, []events.Type{events.StorageLow, events.StorageRecovered}, 0},
		{"at the floor, not below: take", 1000, false, []events.Type{events.StorageLow, events.StorageRecovered}, 0},
	}
	for _, st := range steps {
		free = st.free
		if err := s.Measure(context.Background()); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		err := s.Check()
		if (err != nil) != st.refuse {
			t.Fatalf("%s: Check = %v, want refusing %v", st.name, err, st.refuse)
		}
		var fe *FullError
		if st.refuse && (!errors.Is(err, ErrStorageFull) || !errors.As(err, &fe) || fe.Free != st.freeMsg || fe.Floor != 1000 || !fe.QuotaExceeded()) {
			t.Errorf("%s: error %#v", st.name, err)
		}
		if got := rec.evs; len(got) != len(st.events) || (len(got) > 0 && got[len(got)-1] != st.events[len(st.events)-1]) {
			t.Errorf("%s: events %v, want %v", st.name, got, st.events)
		}
	}
}

func TestSpaceNoFloor(t *testing.T) {
	rec := &recorder{}
	s := NewSpace(SpaceOptions{Dir: t.TempDir()}, rec, slog.New(slog.DiscardHandler), nil)
	// The real statfs(2) of the test's directory.
	if err := s.Measure(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(); err != nil || len(rec.evs) != 0 {
		t.Errorf("no floor: Check %v, events %v", err, rec.evs)
	}
}

func TestExisting(t *testing.T) {
	dir := t.TempDir()
	if got := existing(dir + "/not/yet"); got != dir {
		t.Errorf("existing = %q, want %q", got, dir)
	}
}
