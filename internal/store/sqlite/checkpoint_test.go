package sqlite

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/readings"
)

// TestCheckpointer checks that enough commits start a checkpoint that
// brings the whole WAL into the database, so that the next commit starts
// the WAL over, and that Run returns when its context ends.
func TestCheckpointer(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "ck.db")})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- s.Run(rctx) }()
	now := time.Now()
	var ids commit.IDs
	batch := make([]*commit.Change, 500)
	for n := 0; n < checkpointChanges; n += len(batch) {
		for i := range batch {
			batch[i] = &commit.Change{DeviceID: fmt.Sprintf("d%d", i), Ops: []commit.Op{&readings.Message{
				ID: ids.Next(), Topic: "t", Transport: "mqtt", Payload: []byte("{}"), Accepted: false, Code: "unknown_device", ReceivedAt: now}}}
		}
		if err := s.Commit(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	eventually.CheckFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if s.ckDone.Load() == 0 {
			return fmt.Errorf("no checkpoint yet")
		}
		return nil
	})
	// Everything was copied: the next commit starts the WAL over, so the
	// WAL then holds that commit's pages only.
	batch = batch[:1]
	batch[0] = &commit.Change{DeviceID: "d0", Ops: []commit.Op{&readings.Message{
		ID: ids.Next(), Topic: "t", Transport: "mqtt", Payload: []byte("{}"), Accepted: false, Code: "unknown_device", ReceivedAt: now}}}
	if err := s.Commit(ctx, batch); err != nil {
		t.Fatal(err)
	}
	st, err := s.walCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.log > 20 {
		t.Errorf("after the checkpoint and one commit the WAL holds %d pages: it was not started over", st.log)
	}
	stop()
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCheckpointConsumesItsRequest: commits during a checkpoint's
// background rounds ask for a checkpoint again (the count is still past
// checkpointChanges); the blocking round takes that request, so that a
// second checkpoint does not stall the commits again at once.
func TestCheckpointConsumesItsRequest(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Options{Path: filepath.Join(t.TempDir(), "ck.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.wmu.Lock()
	s.committed(checkpointChanges) // a request, as from commits beside the background rounds
	s.wmu.Unlock()
	if err := s.checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.ckKick:
		t.Error("the checkpoint left the request of its own commits queued: a second checkpoint would follow at once")
	default:
	}
	if s.uncheckpointed != 0 {
		t.Errorf("%d changes counted after the checkpoint, want 0", s.uncheckpointed)
	}
}
