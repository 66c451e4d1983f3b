package bench

import (
	"fmt"
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func dupCloexec(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }

func closeFD(fd int) { _ = unix.Close(fd) }

// tcpState returns the kernel's view of the socket fd (TCP_INFO): its
// state, the SYNs it sent again (all its retransmissions: a dialing
// socket sends nothing else), and how long ago it last received an ACK
// (for a socket that only did the handshake, the SYN-ACK).
func tcpState(fd int) (state string, retrans int, lastAck time.Duration) {
	ti, err := unix.GetsockoptTCPInfo(fd, syscall.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return "unknown", 0, -1
	}
	lastAck = -1
	if ti.State == 1 { // ESTABLISHED
		lastAck = time.Duration(ti.Last_ack_recv) * time.Millisecond
	}
	return tcpStateName(ti.State), int(ti.Total_retrans), lastAck
}

// tcpStateName names the states of include/net/tcp_states.h.
func tcpStateName(s uint8) string {
	names := [...]string{1: "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"}
	if int(s) < len(names) && names[s] != "" {
		return names[s]
	}
	return "unknown"
}

// socketNote says what the kernel holds for a connected socket when an
// MQTT exchange on it timed out: bytes that arrived and wait unread (the
// answer came and the generator did not read it: its own delay), how long
// ago data last arrived, and what is not yet sent or not yet acknowledged
// (the request did not leave, or was not taken in by the peer).
func socketNote(c net.Conn) string {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return ""
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return ""
	}
	var note string
	_ = rc.Control(func(fd uintptr) {
		buf := make([]byte, 64<<10)
		n, _, err := unix.Recvfrom(int(fd), buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err != nil {
			n = 0
		}
		ti, err := unix.GetsockoptTCPInfo(int(fd), syscall.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return
		}
		note = fmt.Sprintf("socket %s: %d bytes arrived unread, data last arrived %.1fs ago, %d bytes not sent, %d segments unacknowledged",
			tcpStateName(ti.State), n, float64(ti.Last_data_recv)/1000, ti.Notsent_bytes, ti.Unacked)
	})
	return note
}
