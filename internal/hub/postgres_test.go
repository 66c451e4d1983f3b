package hub_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// postgresStorage returns the storage section of a hub configuration that
// uses PostgreSQL in a fresh schema (dropped when the test ends), or skips
// the test when DEVICEHUB_TEST_POSTGRES_DSN is not set.
func postgresStorage(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("DEVICEHUB_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("DEVICEHUB_TEST_POSTGRES_DSN is not set: skipping the end-to-end test on PostgreSQL")
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := "hub_e2e_" + hex.EncodeToString(b)
	t.Cleanup(func() {
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Errorf("drop schema: %v", err)
			return
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema: %v", err)
		}
	})
	return fmt.Sprintf("storage:\n  driver: postgres\n  postgres: {dsn: %q, schema: %s}\n", dsn, schema)
}
