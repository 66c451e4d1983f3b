package hub_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/internal/hub"
)

// leakOpts are the goroutines other tests of this package may leave: the
// test client's idle keep-alive connections (see TestMain).
var leakOpts = []goleak.Option{
	goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
	goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
}

// A hub built and not run holds its store (connections, and their
// goroutines) until Close, which releases everything New acquired; a
// second Close does nothing.
func TestCloseWithoutRun(t *testing.T) {
	before := goleak.IgnoreCurrent()
	dir := t.TempDir()
	cfg := loadTestConfig(t, dir, fmt.Sprintf("data_dir: %s\nmqtt:\n  addr: 127.0.0.1:0\nhttp:\n  addr: 127.0.0.1:0\n%s", dir, testTypes))
	h, err := hub.New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// The check can fail: before Close the store's goroutines are there.
	if err := goleak.Find(append(leakOpts, before)...); err == nil {
		t.Fatal("no goroutine of the open store found before Close: this test would not see a leak")
	}
	if err := h.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	goleak.VerifyNone(t, append(leakOpts, before)...)
}
