package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/devicehub/devicehub/internal/eventually"
)

// TestDeepReaders checks the pool of deep readers on its own: who runs a
// deep read, how many readers stay, and that shutdown ends them.
func TestDeepReaders(t *testing.T) {
	errRead := errors.New("read done")
	for _, tc := range []struct {
		name string
		// concurrent deep reads in flight at once, each held until all
		// have started; then a second wave of as many reads
		concurrent  int
		wantStarted int64 // readers started over both waves
		wantIdle    int32 // readers left waiting for work
	}{
		{name: "one connection at a time reuses one reader", concurrent: 1, wantStarted: 1, wantIdle: 1},
		{name: "a burst starts readers that stay for the next", concurrent: 5, wantStarted: 5, wantIdle: 5},
		{name: "readers beyond the idle bound end", concurrent: maxIdleDeepReaders + 4, wantIdle: maxIdleDeepReaders},
	} {
		t.Run(tc.name, func(t *testing.T) {
			quit := make(chan struct{})
			release := make(chan struct{})
			entered := make(chan struct{}, tc.concurrent)
			d := newDeepReaders(quit, func(*clientConn) error {
				entered <- struct{}{}
				<-release
				return errRead
			})
			wave := func() {
				conns := make([]*clientConn, tc.concurrent)
				for i := range conns {
					conns[i] = &clientConn{done: make(chan error, 1)}
					d.run(conns[i])
				}
				for range conns {
					<-entered // every read runs at once: no reader is free to take two
				}
				for range conns {
					release <- struct{}{}
				}
				for i, c := range conns {
					if err := <-c.done; !errors.Is(err, errRead) {
						t.Fatalf("conn %d answered %v, want the read's error", i, err)
					}
				}
				eventually.True(t, 5*time.Second, "finished readers wait or end", func() bool {
					return d.running.Load() == d.idle.Load()
				})
			}
			wave()
			if got := d.idle.Load(); got != tc.wantIdle {
				t.Errorf("after the first wave %d readers wait, want %d", got, tc.wantIdle)
			}
			started := d.started.Load()
			wave()
			if tc.wantStarted != 0 && d.started.Load() != tc.wantStarted {
				t.Errorf("%d readers started, want %d (the waiting ones take the second wave)", d.started.Load(), tc.wantStarted)
			}
			// The second wave needs no more readers than the first left
			// waiting could not serve.
			if more, want := d.started.Load()-started, int64(tc.concurrent)-int64(tc.wantIdle); more > want {
				t.Errorf("the second wave started %d readers, want at most %d", more, want)
			}
			if got := d.idle.Load(); got != tc.wantIdle {
				t.Errorf("after the second wave %d readers wait, want %d", got, tc.wantIdle)
			}
			close(quit)
			d.wait()
			if n := d.running.Load(); n != 0 {
				t.Errorf("%d readers still running after quit", n)
			}
		})
	}
}

// TestDeepReadsReuseReaders checks that a device publishing one message
// after the other (each after its PUBACK) is served by kept deep readers,
// not by a goroutine per message.
func TestDeepReadsReuseReaders(t *testing.T) {
	st := newStoredHandler()
	st.run(t)
	h := startWith(t, st)
	c := mustDial(t, h, "dev1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := &paho.Publish{Topic: "devices/dev1/data", QoS: 1, Payload: []byte(`{"temperature":21.25}`)}
	const n = 200
	before := h.b.deepReaders.started.Load()
	for i := range n {
		if _, err := c.Publish(ctx, p); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	// Each publish wakes the connection once; a reader may be started
	// while the one that answered the previous publish has not gone back
	// to wait yet, so allow a few.
	if started := h.b.deepReaders.started.Load() - before; started > maxIdleDeepReaders {
		t.Errorf("%d deep readers started for %d publishes, want at most %d", started, n, maxIdleDeepReaders)
	}
}
