package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/monitorclient"
)

// killReceiver is the webhook receiver of the kill test's push monitor:
// a real HTTP server that checks what the cluster promises a monitor
// through kills of the node running it:
//   - nothing acknowledged is sent again: an event it answered 2xx for
//     never comes back;
//   - a delivery is sent only once the cursor of the one acknowledged
//     before it is stored (read from PostgreSQL when it arrives), so a
//     node killed at any moment leaves nothing acknowledged unstored;
//   - one node at a time: never two deliveries at once.
//
// hold makes it keep the next delivery unanswered (the test kills the
// node sending it meanwhile); that delivery is answered 503, not
// acknowledged, and comes again from the survivor.
type killReceiver struct {
	*httptest.Server
	db        *pgx.Conn
	schema    string
	monitorID string

	dbmu       sync.Mutex // guards db
	mu         sync.Mutex
	secret     string
	acked      map[int64]int
	lastAcked  int64
	ackTimes   []time.Time // of every acknowledgement, in order
	inFlight   int
	violations []string
	holdNext   bool
	holding    chan struct{} // closed when a delivery is held
	release    chan struct{} // closed to answer it
}

func newKillReceiver(t *testing.T, dsn, schema string) *killReceiver {
	db, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	r := &killReceiver{db: db, schema: schema, acked: map[int64]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *killReceiver) violate(format string, args ...any) {
	r.mu.Lock()
	r.violations = append(r.violations, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *killReceiver) storedCursor() (int64, error) {
	r.dbmu.Lock()
	defer r.dbmu.Unlock()
	var seq int64
	err := r.db.QueryRow(context.Background(), `SELECT seq FROM `+r.schema+`.monitor_cursors WHERE monitor_id = $1`, r.monitorID).Scan(&seq)
	return seq, err
}

var errHeld = errors.New("held while the node sending it was killed")

func (r *killReceiver) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	secret := r.secret
	r.mu.Unlock()
	monitorclient.NewHandler(monitorclient.HandlerOptions{Secrets: []string{secret}}, func(_ context.Context, b *monitorclient.Batch) error {
		r.mu.Lock()
		r.inFlight++
		if r.inFlight > 1 {
			r.violations = append(r.violations, fmt.Sprintf("two deliveries at once (events %d-%d)", b.FirstSeq(), b.LastSeq()))
		}
		last := r.lastAcked
		hold := r.holdNext
		if hold {
			r.holdNext = false
			r.inFlight-- // answered only after the sending node is dead
		}
		r.mu.Unlock()
		if !hold {
			defer func() {
				r.mu.Lock()
				r.inFlight--
				r.mu.Unlock()
			}()
		}
		if stored, err := r.storedCursor(); err != nil {
			r.violate("read the stored cursor: %v", err)
		} else if stored < last {
			r.violate("delivery %d-%d sent while the cursor stored was %d, below the %d acknowledged", b.FirstSeq(), b.LastSeq(), stored, last)
		}
		r.mu.Lock()
		for _, e := range b.Events {
			if r.acked[e.Seq] > 0 {
				r.violations = append(r.violations, fmt.Sprintf("event %d, acknowledged, sent again", e.Seq))
			}
		}
		r.mu.Unlock()
		if hold {
			close(r.holding)
			<-r.release
			return errHeld
		}
		r.mu.Lock()
		for _, e := range b.Events {
			r.acked[e.Seq]++
			r.lastAcked = max(r.lastAcked, e.Seq)
		}
		r.ackTimes = append(r.ackTimes, time.Now())
		r.mu.Unlock()
		return nil
	}).ServeHTTP(w, req)
}

// hold arms the receiver to keep the next delivery; wait for it on the
// returned channel, and answer it with the returned function.
func (r *killReceiver) hold() (held <-chan struct{}, answer func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holdNext = true
	r.holding, r.release = make(chan struct{}), make(chan struct{})
	return r.holding, sync.OnceFunc(func() { close(r.release) })
}

// lastAck returns the greatest Seq acknowledged.
func (r *killReceiver) lastAck() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastAcked
}

// firstAckAfter returns the time of the first acknowledgement after t
// (zero if none).
func (r *killReceiver) firstAckAfter(t time.Time) time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, at := range r.ackTimes {
		if at.After(t) {
			return at
		}
	}
	return time.Time{}
}

// check reports the violations, and every stored event of the monitor's
// type not acknowledged exactly once.
func (r *killReceiver) check(t *testing.T, stored []int64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range r.violations {
		t.Error("monitor: " + v)
	}
	missing := 0
	for _, seq := range stored {
		if r.acked[seq] != 1 {
			missing++
			if missing <= 10 {
				t.Errorf("monitor: event %d acknowledged %d times", seq, r.acked[seq])
			}
		}
	}
	if missing > 0 {
		t.Errorf("monitor: %d of %d events not acknowledged exactly once", missing, len(stored))
	}
}
