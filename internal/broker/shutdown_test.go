package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
)

// stuckStore is a store whose Commit never returns until the test
// releases it, whatever its context says: a disk that stopped answering
// in the middle of an fsync. It is the condition under test, not a stand-in
// for a part of the hub.
type stuckStore struct {
	entered chan struct{} // a token per Commit begun
	release chan struct{} // closed: every Commit returns (failed)
}

func (s *stuckStore) Commit(context.Context, []*commit.Change) error {
	s.entered <- struct{}{}
	<-s.release
	return io.ErrUnexpectedEOF
}

type discardEvents struct{}

func (discardEvents) Publish([]events.Event) {}

// committerIngest takes a device's publishes in as the hub's ingest does:
// a change queued for the committer in the read loop's goroutine, its
// outcome handed to the broker by the ticket's OnDone callback.
type committerIngest struct{ c *commit.Committer }

func (ci committerIngest) HandlePublish(ctx context.Context, p *Publish) error {
	return ci.c.Submit(ctx, &commit.Change{DeviceID: p.DeviceID})
}

func (ci committerIngest) StartPublish(ctx context.Context, p *Publish, done func(error)) (bool, error) {
	t, err := ci.c.Enqueue(ctx, &commit.Change{DeviceID: p.DeviceID})
	if err != nil {
		return false, err
	}
	t.OnDone(done)
	return true, nil
}

// TestShutdownWithStuckStore: a store whose Commit hangs does not hang the
// hub's shutdown. The broker and the committer are stopped in the hub's
// order (docs/ARCHITECTURE.md, "Shutdown"): the broker gives up on the
// publish awaiting its commit after its ShutdownGrace, sends no PUBACK
// for it, closes the connection and returns; the committer cancels the
// commit's context after its StopTimeout and, the store not returning,
// gives up on it after another StopTimeout and says so (ErrStoreStuck).
func TestShutdownWithStuckStore(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st := &stuckStore{entered: make(chan struct{}, 16), release: make(chan struct{})}
	// Whatever happens, the store returns at the end, so that nothing
	// is left running (goleak).
	t.Cleanup(func() { close(st.release) })
	// Short bounds, so that the test is quick; the deadlines below are
	// far beyond them.
	c := commit.New(st, discardEvents{}, commit.Options{StopTimeout: 100 * time.Millisecond}, log, nil)
	b, err := New(Options{Addr: "127.0.0.1:0", ShutdownGrace: 200 * time.Millisecond},
		Deps{Authenticator: fakeAuth{"dev1": {password: "pw1", typ: "t"}}, PublishHandler: committerIngest{c}, Presence: &fakePresence{}},
		log, nil)
	if err != nil {
		t.Fatal(err)
	}

	// The hub's stages: the broker first, then the committer.
	frontCtx, stopFront := context.WithCancel(context.Background())
	defer stopFront()
	commitCtx, stopCommit := context.WithCancel(context.Background())
	defer stopCommit()
	brokerDone, commitDone := make(chan error, 1), make(chan error, 1)
	go func() { commitDone <- c.Run(commitCtx) }()
	go func() {
		defer stopCommit()
		brokerDone <- b.Run(frontCtx)
	}()
	<-b.Ready()

	cl, tap, _ := dialTapped(t, &harness{b: b})
	pctx, cancelPublish := context.WithCancel(context.Background())
	defer cancelPublish()
	go func() {
		// No PUBACK comes: it returns when the test ends.
		_, _ = cl.Publish(pctx, &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{"t":1}`)})
	}()
	select {
	case <-st.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the publish never reached the store")
	}

	stopFront()
	deadline := time.After(20 * time.Second)
	select {
	case err := <-brokerDone:
		if err != nil {
			t.Fatalf("broker run: %v", err)
		}
	case <-deadline:
		t.Fatal("the broker's shutdown did not return within 20s with the store's Commit hung")
	}
	select {
	case <-cl.Done():
	case <-deadline:
		t.Fatal("the device's connection was not closed")
	}
	// The wire says it: the shutdown's DISCONNECT (0x8b, server shutting
	// down), and no PUBACK.
	if got := tap.received(t); !slices.Equal(got, []string{"disconnect 0x8b"}) {
		t.Fatalf("the broker sent %q, want only the shutdown's DISCONNECT", got)
	}
	select {
	case err := <-commitDone:
		if !errors.Is(err, commit.ErrStoreStuck) {
			t.Fatalf("committer run: %v, want ErrStoreStuck", err)
		}
	case <-deadline:
		t.Fatal("the committer's stop did not return within 20s with the store's Commit hung")
	}
}
