package postgres

import (
	"context"
	"testing"
	"time"
)

// TestLeases: a lease has one holder; another takes it only after it
// expired, with a greater token, and the former token no longer passes
// the fencing check.
func TestLeases(t *testing.T) {
	s := openTest(t)
	ctx := context.Background()
	tok, ok, err := s.AcquireLease(ctx, "job", "a", time.Hour)
	if err != nil || !ok || tok != 1 {
		t.Fatalf("first acquire: %d %v %v", tok, ok, err)
	}
	if _, ok, err := s.AcquireLease(ctx, "job", "b", time.Hour); err != nil || ok {
		t.Fatalf("b took a held lease: %v %v", ok, err)
	}
	if ok, err := s.RenewLease(ctx, "job", "a", tok, time.Hour); err != nil || !ok {
		t.Fatalf("renew by its holder: %v %v", ok, err)
	}
	if ok, err := s.RenewLease(ctx, "job", "b", tok, time.Hour); err != nil || ok {
		t.Fatalf("renew by another: %v %v", ok, err)
	}
	if err := s.ReleaseLease(ctx, "job", "a", tok); err != nil {
		t.Fatal(err)
	}
	tokB, ok, err := s.AcquireLease(ctx, "job", "b", time.Hour)
	if err != nil || !ok || tokB != tok+1 {
		t.Fatalf("b after release: %d %v %v", tokB, ok, err)
	}
	if held, err := s.LeaseHeld(ctx, "job", tok); err != nil || held {
		t.Fatalf("old token still passes the fence: %v %v", held, err)
	}
	if held, err := s.LeaseHeld(ctx, "job", tokB); err != nil || !held {
		t.Fatalf("new token fails the fence: %v %v", held, err)
	}
	if ok, err := s.RenewLease(ctx, "job", "a", tok, time.Hour); err != nil || ok {
		t.Fatalf("former holder renewed: %v %v", ok, err)
	}
	// An expired lease is free, and cannot be renewed.
	tokC, ok, err := s.AcquireLease(ctx, "short", "a", time.Millisecond)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if _, err := s.pool.Exec(ctx, `SELECT pg_sleep(0.01)`); err != nil { // let the database's clock pass the expiry
		t.Fatal(err)
	}
	if ok, err := s.RenewLease(ctx, "short", "a", tokC, time.Hour); err != nil || ok {
		t.Fatalf("expired lease renewed: %v %v", ok, err)
	}
	if tok, ok, err := s.AcquireLease(ctx, "short", "b", time.Hour); err != nil || !ok || tok != tokC+1 {
		t.Fatalf("expired lease not taken: %d %v %v", tok, ok, err)
	}
	ls, err := s.Leases(ctx, "")
	if err != nil || len(ls) != 2 || ls[0].Name != "job" || ls[0].Holder != "b" || !ls[0].Live {
		t.Fatalf("leases: %+v %v", ls, err)
	}
	g1, err := s.NextSessionGeneration(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g2, err := s.NextSessionGeneration(ctx); err != nil || g2 <= g1 {
		t.Fatalf("generations %d then %d (%v)", g1, g2, err)
	}
}
