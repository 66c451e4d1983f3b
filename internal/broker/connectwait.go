//go:build unix

package broker

import (
	"net"
	"syscall"
)

// connectArrived reports whether bytes wait unread in c's socket, by a
// peek that neither blocks nor consumes. A read of the CONNECT that timed
// out with bytes waiting means the hub, not the device, was late: under a
// CPU-starved hub the runtime fires a connection's read deadline before
// it polls the socket that became readable in time (its timers run before
// its network poll when it gets the CPU back). Only plain TCP connections
// can be asked; the others report false.
func connectArrived(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	var buf [1]byte
	// Control, not Read: Read refuses to start once the deadline passed.
	if err := rc.Control(func(fd uintptr) {
		n, _, _ = syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}); err != nil {
		return false
	}
	return n > 0
}
