// Package pgtest opens PostgreSQL stores on a fresh schema for tests that
// need several connections to one database (several hub nodes).
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/devicehub/devicehub/internal/store/postgres"
)

// OpenStores opens n stores on one fresh schema named after prefix, and
// drops the schema when the test ends. It skips the test, saying what
// needs PostgreSQL, when DEVICEHUB_TEST_POSTGRES_DSN is not set.
func OpenStores(t *testing.T, prefix, what string, n int) []*postgres.Store {
	t.Helper()
	dsn := os.Getenv("DEVICEHUB_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skipf("DEVICEHUB_TEST_POSTGRES_DSN is not set: skipping %s (they need PostgreSQL)", what)
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := prefix + "_" + hex.EncodeToString(b)
	ctx := context.Background()
	var out []*postgres.Store
	t.Cleanup(func() {
		for _, s := range out {
			s.Close()
		}
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Errorf("drop schema: %v", err)
			return
		}
		defer conn.Close(ctx)
		conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
	})
	for range n {
		s, err := postgres.Open(ctx, postgres.Options{DSN: dsn, Schema: schema})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}
