package commit_test

import (
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
)

func TestIDsMonotonicUnderConcurrency(t *testing.T) {
	const workers, each = 8, 2000
	var g commit.IDs
	got := make([][]int64, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			ids := make([]int64, each)
			for i := range ids {
				ids[i] = g.Next()
			}
			got[w] = ids
		})
	}
	wg.Wait()
	seen := make(map[int64]bool, workers*each)
	for w, ids := range got {
		for i, id := range ids {
			if i > 0 && id <= ids[i-1] {
				t.Fatalf("worker %d: id %d after %d", w, id, ids[i-1])
			}
			if seen[id] {
				t.Fatalf("id %d handed out twice", id)
			}
			seen[id] = true
		}
	}
}

func TestIDsSeed(t *testing.T) {
	future := time.Now().Add(time.Hour).UnixMicro()
	tests := []struct {
		name  string
		seeds []int64
		above int64 // the next id must be greater
	}{
		{"no seed: the clock", nil, time.Now().UnixMicro() - 1},
		{"seed in the past", []int64{42}, time.Now().UnixMicro() - 1},
		{"seed in the future", []int64{future}, future},
		{"a lower seed does not go back", []int64{future, 42}, future},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g commit.IDs
			for _, s := range tt.seeds {
				g.Seed(s)
			}
			a, b := g.Next(), g.Next()
			if a <= tt.above {
				t.Errorf("first id %d, want > %d", a, tt.above)
			}
			if b <= a {
				t.Errorf("second id %d, want > %d", b, a)
			}
		})
	}
}

// TestIDsSlots: nodes with different slots never hand out the same id,
// even seeded with the same stored maximum, and each node's ids increase.
func TestIDsSlots(t *testing.T) {
	const nodes, each = 3, 3000
	gens := make([]*commit.IDs, nodes)
	for i := range gens {
		gens[i] = &commit.IDs{}
		gens[i].Slots(int64(i), 16)
		gens[i].Seed(time.Now().Add(time.Hour).UnixMicro() * 16) // ahead of the clock: ids come from the counter
	}
	seen := map[int64]int{}
	for n, g := range gens {
		var last int64
		for range each {
			id := g.Next()
			if id <= last {
				t.Fatalf("node %d: id %d after %d", n, id, last)
			}
			if id%16 != int64(n) {
				t.Fatalf("node %d: id %d not in its slot", n, id)
			}
			if other, ok := seen[id]; ok {
				t.Fatalf("id %d handed out by nodes %d and %d", id, other, n)
			}
			seen[id] = n
			last = id
		}
	}
}
