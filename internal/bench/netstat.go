package bench

import (
	"os"
	"strconv"
	"strings"
)

// tcpCounters reads the kernel's machine-wide TCP counters that tell
// whether dials were dropped or retried below the processes
// (/proc/net/netstat, the TcpExt lines): ListenOverflows (a connection
// the listener's accept queue had no room for: its SYN or final ACK
// dropped), ListenDrops, TCPSynRetrans (SYNs and SYN-ACKs sent again) and
// TCPTimeouts. Empty where the file is not there.
func tcpCounters() map[string]float64 {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return nil
	}
	return parseNetstat(string(b))
}

// parseNetstat reads the pairs of header and value lines of
// /proc/net/netstat into "Prefix:Name" → value, for TcpExt only.
func parseNetstat(s string) map[string]float64 {
	out := map[string]float64{}
	lines := strings.Split(s, "\n")
	for i := 0; i+1 < len(lines); i++ {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(values) != len(names) || values[0] != "TcpExt:" {
			continue
		}
		for k := 1; k < len(names); k++ {
			if v, err := strconv.ParseFloat(values[k], 64); err == nil {
				out[names[k]] = v
			}
		}
		i++
	}
	return out
}

// kernelFigures adds the change of the counters of tcpCounters between
// two readings to f (the machine's, not only the system under test's:
// the runner runs one system at a time).
func kernelFigures(f, before, after map[string]float64) {
	if before == nil || after == nil {
		return
	}
	for fig, name := range map[string]string{
		"kernel_listen_overflows": "ListenOverflows",
		"kernel_syn_retrans":      "TCPSynRetrans",
		"kernel_tcp_timeouts":     "TCPTimeouts",
	} {
		f[fig] = after[name] - before[name]
	}
}
