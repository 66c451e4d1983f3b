package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/store/storetest"
)

// dsnEnv names the PostgreSQL server the tests use; without it they skip.
const dsnEnv = "DEVICEHUB_TEST_POSTGRES_DSN"

// openTest opens a store in a fresh schema that is dropped at cleanup.
func openTest(t testing.TB) *Store {
	t.Helper()
	dsn := os.Getenv(dsnEnv)
	if dsn == "" {
		t.Skipf("PostgreSQL tests skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", dsnEnv)
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := "devicehub_test_" + hex.EncodeToString(b)
	ctx := context.Background()
	s, err := Open(ctx, Options{DSN: dsn, Schema: schema})
	t.Cleanup(func() {
		if s != nil {
			s.Close()
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP SCHEMA IF EXISTS `+pgx.Identifier{schema}.Sanitize()+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestContract(t *testing.T) {
	if os.Getenv(dsnEnv) == "" {
		t.Skipf("PostgreSQL tests skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)", dsnEnv)
	}
	storetest.Run(t, func(t *testing.T) storetest.Backend { return openTest(t) })
}

// TestConcurrentNodes commits from two stores on one schema (two hub
// nodes) while a reader follows the event log: seqs must become visible in
// increasing order, so a reader that continues after the last seq it saw
// misses nothing.
func TestConcurrentNodes(t *testing.T) {
	first := openTest(t)
	ctx := context.Background()
	second, err := Open(ctx, Options{DSN: os.Getenv(dsnEnv), Schema: first.pool.Config().ConnConfig.RuntimeParams["search_path"]})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()

	const batches, perBatch = 40, 5
	var g errgroup.Group
	for n, s := range []*Store{first, second} {
		g.Go(func() error {
			for i := range batches {
				var batch []*commit.Change
				for j := range perBatch {
					ev, err := commit.NewEvent(events.Event{Type: "test_event", Time: time.Now(), DeviceID: fmt.Sprintf("n%d-%d-%d", n, i, j)})
					if err != nil {
						return err
					}
					batch = append(batch, &commit.Change{DeviceID: "x", Events: []commit.Event{ev}})
				}
				if err := s.Commit(ctx, batch); err != nil {
					return err
				}
			}
			return nil
		})
	}
	done := make(chan error, 1)
	go func() { done <- g.Wait() }()

	var after int64
	seen := 0
	deadline := time.Now().Add(30 * time.Second)
	for finished := false; ; {
		evs, err := first.ReadEvents(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if e.Seq <= after {
				t.Fatalf("seq %d after %d", e.Seq, after)
			}
			after = e.Seq
			seen++
		}
		if finished && len(evs) == 0 {
			break
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("commits did not finish")
		}
	}
	if want := 2 * batches * perBatch; seen != want {
		t.Errorf("reader saw %d events, want %d: seqs became visible out of order", seen, want)
	}
}
