package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"
)

// dialProbe watches one TCP dial of the load generator. When a dial
// fails, net.Dialer has already closed its socket, and with it the
// evidence of whose fault the failure was: a SYN the system under test's
// kernel never answered (the socket is still in SYN-SENT) or a handshake
// that completed in the kernel while the generator itself did not see it
// in time (ESTABLISHED). The probe keeps a duplicate of the socket's
// descriptor from just before the connect, so that the kernel's state of
// the connection can still be read after a failure (tcpState).
type dialProbe struct {
	mu   sync.Mutex
	fd   int // the duplicate, -1 if none
	at   time.Time
	done bool
}

func newDialProbe() *dialProbe { return &dialProbe{fd: -1} }

// control is a net.Dialer.ControlContext: it runs after the socket was
// made and before it is bound and connected.
func (p *dialProbe) control(_ context.Context, _, _ string, c syscall.RawConn) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.at = time.Now()
	if p.done || p.fd >= 0 {
		return nil
	}
	return c.Control(func(fd uintptr) {
		if d, err := dupCloexec(int(fd)); err == nil {
			p.fd = d
		}
	})
}

// release closes the duplicate.
func (p *dialProbe) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done = true
	if p.fd >= 0 {
		closeFD(p.fd)
		p.fd = -1
	}
}

// failure describes a failed dial: how long the generator took to reach
// the connect (a late start is the generator's own delay), and the
// kernel's state of the connection now. It releases the duplicate.
func (p *dialProbe) failure(start time.Time) dialFailure {
	p.mu.Lock()
	f := dialFailure{state: "unknown", lport: -1}
	if !p.at.IsZero() {
		f.toConnect = p.at.Sub(start)
	}
	if p.fd >= 0 {
		var lastAck time.Duration
		f.state, f.retransmits, lastAck = tcpState(p.fd)
		if lastAck >= 0 && !p.at.IsZero() {
			f.answered = time.Since(p.at) - lastAck
		}
		if sa, err := syscall.Getsockname(p.fd); err == nil {
			if in4, ok := sa.(*syscall.SockaddrInet4); ok {
				f.lport = in4.Port
			}
		}
	}
	p.mu.Unlock()
	p.release()
	return f
}

// dialProbed dials addr over TCP with d (whose ControlContext it sets);
// a failure is a *dialError that tells the kernel's state of the socket.
func dialProbed(ctx context.Context, d *net.Dialer, addr string) (net.Conn, error) {
	probe := newDialProbe()
	d.ControlContext = probe.control
	start := time.Now()
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, &dialError{err: err, f: probe.failure(start)}
	}
	probe.release()
	return nc, nil
}

// dialFailure is what a dialProbe learnt of a failed dial.
type dialFailure struct {
	state       string        // the kernel's TCP state of the socket after the failure
	retransmits int           // the segments it sent again (a dialing socket sends only SYNs)
	toConnect   time.Duration // from the dial's start to its connect
	lport       int           // the local port, -1 if not known
	// answered: from the connect to the SYN-ACK (ESTABLISHED only; the
	// kernel keeps milliseconds).
	answered time.Duration
}

// late reports whether the dial failed only because the generator was
// late: the kernel had the connection established from the first SYN (no
// retransmission, so before the first retransmission timeout of one
// second, well within the dial's time), and the generator's dial did not
// see it. The socket may be ESTABLISHED, or CLOSE_WAIT when the system
// under test has given up on a connection that sent it no CONNECT in the
// meantime (as devicehub does after its connect timeout, which is also
// ten seconds). The system under test did its part; a new dial of the
// same device is fair to every system.
func (f dialFailure) late() bool {
	return (f.state == "ESTABLISHED" || f.state == "CLOSE_WAIT") && f.retransmits == 0
}

// dialError is a failed TCP dial with what its probe saw.
type dialError struct {
	err error
	f   dialFailure
}

func (e *dialError) Error() string {
	s := fmt.Sprintf("%v (tcp state %s, %d syn retransmits, local port %d, connect %.3fs after the dial's start",
		e.err, e.f.state, e.f.retransmits, e.f.lport, e.f.toConnect.Seconds())
	if e.f.state == "ESTABLISHED" {
		s += fmt.Sprintf(", syn-ack %.3fs after the connect", e.f.answered.Seconds())
	}
	return s + ")"
}

func (e *dialError) Unwrap() error { return e.err }

// isTimeout reports whether err is a dial or connect that ran out of time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}
