//go:build !linux

package bench

import "errors"

func dupCloexec(int) (int, error) { return -1, errors.New("no dial probe on this system") }

func closeFD(int) {}

func tcpState(int) (string, int) { return "unknown", 0 }
