package hub_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/hub"
)

// hangingCommits passes the committer's batches to the real store until
// hang is set; from then on a Commit waits for release whatever its
// context says, as one stuck in an fsync would. The hung store is the
// condition under test.
type hangingCommits struct {
	commit.Store
	hang    atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (s *hangingCommits) Commit(ctx context.Context, batch []*commit.Change) error {
	if !s.hang.Load() {
		return s.Store.Commit(ctx, batch)
	}
	select {
	case s.entered <- struct{}{}:
	default:
	}
	<-s.release
	return errors.New("the disk gave up")
}

// TestStopWithHungStore: the hub's stop returns although the store's
// Commit never does. The device's publish, handed to the store, gets no
// PUBACK (ack means stored); the broker gives up on it after its shutdown
// grace, the committer on the commit after twice its stop timeout, and
// Run says which store is stuck. Once the commit returns after all, the
// committer's goroutine ends and the store is closed (goleak, TestMain).
func TestStopWithHungStore(t *testing.T) {
	dir := t.TempDir()
	cfg := loadTestConfig(t, dir, fmt.Sprintf("data_dir: %s\nmqtt:\n  addr: 127.0.0.1:0\nhttp:\n  addr: 127.0.0.1:0\n%s", dir, testTypes))
	st := &hangingCommits{entered: make(chan struct{}, 1), release: make(chan struct{})}
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(st.release) }) }
	t.Cleanup(release)
	wrap := func(s commit.Store) commit.Store { st.Store = s; return st }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Short bounds, so that the test is quick; its deadlines are far
	// beyond them.
	h, err := hub.NewWithCommits(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), wrap, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	th := readyHub(t, h, dir, done, cancel)
	cr := th.provision(t, "ws-1", "WeatherStation")
	c, _, err := dial(t, h.MQTTAddr(), cr.DeviceID, cr.MQTTUsername, cr.MQTTPassword)
	if err != nil {
		t.Fatal(err)
	}

	st.hang.Store(true)
	published := make(chan error, 1)
	pctx, cancelPublish := context.WithCancel(context.Background())
	defer cancelPublish()
	go func() {
		_, err := c.Publish(pctx, &paho.Publish{Topic: "devices/ws-1/data", QoS: 1, Payload: []byte(`{"temperature": 21.5}`)})
		published <- err
	}()
	select {
	case <-st.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the publish never reached the store")
	}

	cancel()
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the hub's stop did not return within 20s with the store's Commit hung")
	}
	if !errors.Is(err, commit.ErrStoreStuck) || !strings.Contains(err.Error(), "sqlite "+filepath.Join(dir, "devicehub.db")) {
		t.Fatalf("hub run: %v; want ErrStoreStuck naming the SQLite file", err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the device's connection was not closed")
	}
	select {
	case err := <-published:
		if err == nil {
			t.Fatal("the publish was acknowledged although it was never stored")
		}
	default: // no PUBACK came
	}
	if err := h.Close(); err != nil {
		t.Fatalf("close after the stop: %v", err)
	}
	// The commit returns after all: the committer's goroutine drains and
	// ends, and the store is closed.
	release()
	select {
	case <-hub.CommitterDone(h):
	case <-time.After(10 * time.Second):
		t.Fatal("the committer's goroutine did not end once the commit returned")
	}
}
