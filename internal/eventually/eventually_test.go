package eventually

import (
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		succeed int // the call that first returns nil; 0: never
		wantErr string
	}{
		{name: "at once", succeed: 1},
		{name: "after a few polls", succeed: 4},
		{name: "never", wantErr: "not within 50ms: still 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			err := check(50*time.Millisecond, time.Millisecond, func() error {
				n := int(calls.Add(1))
				if tt.succeed != 0 && n >= tt.succeed {
					return nil
				}
				return errors.New("still 3")
			})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("err = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			case tt.succeed != 0 && int(calls.Load()) != tt.succeed:
				t.Fatalf("%d calls, want %d (it stops at the first success)", calls.Load(), tt.succeed)
			}
		})
	}
}

// A condition another goroutine makes true is seen.
func TestTrueSeesAnotherGoroutine(t *testing.T) {
	var done atomic.Bool
	go func() { done.Store(true) }()
	True(t, 5*time.Second, "the flag", done.Load)
}
