package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// signalWriter closes ready when a line containing want is written.
type signalWriter struct {
	want  string
	once  sync.Once
	ready chan struct{}
}

func (w *signalWriter) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.want) {
		w.once.Do(func() { close(w.ready) })
	}
	return len(p), nil
}

// TestDeviceClientHeap: a connected device of the load generator keeps
// little heap (measured with the broker, mochi, in the same process).
// paho sized each client's incoming queue for 65,535 PUBLISHes (512 KiB
// of pointers) when the CONNECT named no Receive Maximum, and the
// generator's GC scanning a thousand of them held it for most of a second
// in the middle of the open-loop runs.
func TestDeviceClientHeap(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	w := &signalWriter{want: "mochi serving", ready: make(chan struct{})}
	done := make(chan error, 1)
	go func() { done <- RunMochi(ctx, addr, w) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	select {
	case <-w.ready:
	case err := <-done:
		t.Fatalf("mochi: %v", err)
	}
	g := &loadGen{spec: LoadSpec{Addr: addr}, log: io.Discard, res: &LoadResult{}}
	const devices = 50
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	conns := make([]*conn, 0, devices)
	defer func() { disconnectAll(conns) }()
	for i := range devices {
		c, err := g.dial(ctx, Device{ID: fmt.Sprintf("heap%03d", i)}, 60, nil)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	per := (int64(ms.HeapAlloc) - int64(before)) / devices
	// The process holds mochi's side of each connection too (~70 KiB
	// together); paho's queue alone was 512 KiB.
	if per > 256<<10 {
		t.Errorf("each connected device keeps %d KiB of heap (load generator and broker), want at most 256", per>>10)
	}
	t.Logf("%d B of heap per connected device", per)
}
