package bench

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func dupCloexec(fd int) (int, error) { return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0) }

func closeFD(fd int) { _ = unix.Close(fd) }

// tcpState returns the kernel's TCP state of the socket fd and its count
// of unrecovered retransmission timeouts (TCP_INFO).
func tcpState(fd int) (string, int) {
	ti, err := unix.GetsockoptTCPInfo(fd, syscall.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return "unknown", 0
	}
	return tcpStateName(ti.State), int(ti.Retransmits)
}

// tcpStateName names the states of include/net/tcp_states.h.
func tcpStateName(s uint8) string {
	names := [...]string{1: "ESTABLISHED", "SYN_SENT", "SYN_RECV", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", "CLOSE", "CLOSE_WAIT", "LAST_ACK", "LISTEN", "CLOSING", "NEW_SYN_RECV"}
	if int(s) < len(names) && names[s] != "" {
		return names[s]
	}
	return "unknown"
}
