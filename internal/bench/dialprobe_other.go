//go:build !linux

package bench

import (
	"errors"
	"net"
	"time"
)

func dupCloexec(int) (int, error) { return -1, errors.New("no dial probe on this system") }

func closeFD(int) {}

func tcpState(int) (string, int, time.Duration) { return "unknown", 0, -1 }

func socketNote(net.Conn) string { return "" }
