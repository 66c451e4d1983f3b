package bench

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/eventually"
)

// listenNoAccept listens on a loopback port with the smallest accept
// queue Linux has (one connection, listen(fd, 0)) and never accepts: a
// hub whose accept loop has fallen behind, in small.
func listenNoAccept(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		syscall.Close(fd)
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "listener")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// TestDialProbeTellsWhoseFault dials a listener that never accepts. The
// first dial succeeds: the kernel completes the handshake and queues the
// connection without the server process doing anything, so a server that
// is slow to accept does not make a dial time out. The second finds the
// accept queue full: the kernel drops its SYN (and would drop every
// retransmission), the dial gives up, and the probe reports SYN_SENT, the
// state that counts against the server. A socket whose handshake is done
// reads ESTABLISHED: a dial that timed out in that state was the
// generator's own delay.
func TestDialProbeTellsWhoseFault(t *testing.T) {
	addr := listenNoAccept(t)
	ctx := context.Background()

	c1, err := dialProbed(ctx, &net.Dialer{}, addr)
	if err != nil {
		t.Fatalf("first dial: %v", err)
	}
	defer c1.Close()

	// The accept queue holds c1: this SYN is dropped. The deadline only
	// makes the dial give up; its length is not asserted.
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = dialProbed(dctx, &net.Dialer{}, addr)
	var de *dialError
	if !errors.As(err, &de) {
		t.Fatalf("second dial: got %v, want a *dialError", err)
	}
	if !isTimeout(err) {
		t.Errorf("second dial: %v is not a timeout", err)
	}
	if de.f.state != "SYN_SENT" {
		t.Errorf("second dial: state %s, want SYN_SENT (%v)", de.f.state, err)
	}
	if de.f.late() {
		t.Errorf("second dial: an unanswered SYN reads as the generator's delay")
	}
	if de.f.lport <= 0 {
		t.Errorf("second dial: local port %d not read", de.f.lport)
	}

	// The probe of an established connection.
	raw, err := c1.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	p := newDialProbe()
	if err := p.control(ctx, "tcp", addr, raw); err != nil {
		t.Fatal(err)
	}
	if f := p.failure(time.Now()); f.state != "ESTABLISHED" || !f.late() {
		t.Errorf("established connection: state %s, late %v, want ESTABLISHED and late", f.state, f.late())
	}
}

// An answer that arrived and waits unread shows in socketNote: the
// generator, not the peer, was late.
func TestSocketNoteUnread(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Write([]byte("suback")); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 5*time.Second, "six bytes unread", func() bool {
		return strings.Contains(socketNote(c), "ESTABLISHED: 6 bytes arrived unread")
	})
}
