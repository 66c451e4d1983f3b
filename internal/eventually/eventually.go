// Package eventually is the one way tests wait for a condition that
// another goroutine, process or service makes true: poll it at an
// interval until it holds or a deadline passes, never sleep a guessed
// time. It is the shape of NATS server's checkFor.
package eventually

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// DefaultPoll is how often True checks its condition.
const DefaultPoll = 5 * time.Millisecond

// CheckFor calls fn every poll until it returns nil, and fails the test
// with fn's last error when wait has passed without that.
func CheckFor(t testing.TB, wait, poll time.Duration, fn func() error) {
	t.Helper()
	if err := check(wait, poll, fn); err != nil {
		t.Fatal(err)
	}
}

// True waits up to wait for cond to hold, checking it every DefaultPoll,
// and fails the test naming what it waited for when it does not.
func True(t testing.TB, wait time.Duration, what string, cond func() bool) {
	t.Helper()
	notYet := errors.New("not yet")
	err := check(wait, DefaultPoll, func() error {
		if cond() {
			return nil
		}
		return notYet
	})
	if err != nil {
		t.Fatalf("timed out after %s waiting for %s", wait, what)
	}
}

// check is CheckFor's loop: nil once fn succeeded, else fn's last error
// after wait.
func check(wait, poll time.Duration, fn func() error) error {
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s: %w", wait, err)
		}
		<-tick.C
	}
}
