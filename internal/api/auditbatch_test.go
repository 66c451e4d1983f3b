package api

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"

	"github.com/devicehub/devicehub/internal/access"
)

type batchStore struct {
	mu      sync.Mutex
	batches []int
	entries int
	gate    chan struct{} // holds the first write until closed
	err     error
}

func (s *batchStore) AppendAudits(_ context.Context, es []access.AuditEntry) error {
	s.mu.Lock()
	first := len(s.batches) == 0
	s.batches = append(s.batches, len(es))
	s.entries += len(es)
	s.mu.Unlock()
	if first && s.gate != nil {
		<-s.gate
	}
	return s.err
}

// TestAuditBatcher: entries queued while a write is in progress are
// written together by the writer, each caller hears of its own entry.
func TestAuditBatcher(t *testing.T) {
	st := &batchStore{gate: make(chan struct{})}
	b := &auditBatcher{store: st}
	const n = 50
	errs := make(chan error, n)
	go func() { errs <- b.append(context.Background(), access.AuditEntry{Target: "first"}) }()
	// Wait until the first write holds the writer, then queue the rest.
	for {
		st.mu.Lock()
		started := len(st.batches) == 1
		st.mu.Unlock()
		if started {
			break
		}
		runtime.Gosched()
	}
	var wg sync.WaitGroup
	for range n - 1 {
		wg.Add(1)
		go func() { defer wg.Done(); errs <- b.append(context.Background(), access.AuditEntry{}) }()
	}
	// Every other caller is queued behind the held write.
	for {
		b.mu.Lock()
		queued := len(b.pending)
		b.mu.Unlock()
		if queued == n-1 {
			break
		}
		runtime.Gosched()
	}
	close(st.gate)
	wg.Wait()
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if st.entries != n || len(st.batches) != 2 || st.batches[1] != n-1 {
		t.Fatalf("batches %v, %d entries", st.batches, st.entries)
	}

	st2 := &batchStore{err: errors.New("disk full")}
	if err := (&auditBatcher{store: st2}).append(context.Background(), access.AuditEntry{}); err == nil {
		t.Fatal("a failed write must reach its caller")
	}
}
