// Package monitorstest runs a webhook receiver in a process of its own for
// the monitors' benchmarks: a receiver is an outside system, so its CPU
// (checking signatures, inflating and decoding every delivery) must not be
// counted as the hub's. A test binary calls ReceiverMain first thing in
// TestMain; a benchmark calls StartReceiver, which runs the test binary
// again as the receiver.
package monitorstest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devicehub/devicehub/internal/childproc"
	"github.com/devicehub/devicehub/monitorclient"
)

const envMode = "DEVICEHUB_MONITORS_RECEIVER"

// ReceiverMain serves as the receiver and exits if this process was
// started by StartReceiver; otherwise it returns at once. The receiver
// checks every delivery's signature with its monitor's secret (POST
// /secret?id=…&secret=…), decodes it with monitorclient (mode "decode")
// or only checks the signature (mode "verify"), counts its events (GET
// /count) and answers 204. It exits when its standard input closes.
func ReceiverMain() {
	mode := os.Getenv(envMode)
	if mode == "" {
		return
	}
	var secrets sync.Map
	var n atomic.Int64
	secretOf := func(r *http.Request) []string {
		s, _ := secrets.Load(r.Header.Get(monitorclient.HeaderMonitorID))
		sec, _ := s.(string)
		return []string{sec}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /secret", func(w http.ResponseWriter, r *http.Request) {
		secrets.Store(r.FormValue("id"), r.FormValue("secret"))
	})
	mux.HandleFunc("GET /count", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, n.Load())
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if mode == "decode" {
			monitorclient.NewHandler(monitorclient.HandlerOptions{Secrets: secretOf(r)}, func(_ context.Context, b *monitorclient.Batch) error {
				n.Add(int64(len(b.Events)))
				return nil
			}).ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil || monitorclient.Verify(secretOf(r), r.Header, body, 0, time.Now()) != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		c, _ := strconv.Atoi(r.Header.Get(monitorclient.HeaderCount))
		n.Add(int64(c))
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver:", err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().String())
	go func() { _ = http.Serve(ln, mux) }()
	_, _ = io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// Receiver is a receiver process.
type Receiver struct {
	URL string // where monitors deliver
	tb  testing.TB
	c   *http.Client // without keep-alive: no idle connection outlives the test
}

// StartReceiver runs the test binary again as a receiver (mode "decode" or
// "verify", see ReceiverMain) and stops it when tb ends.
func StartReceiver(tb testing.TB, mode string) *Receiver {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envMode+"="+mode)
	childproc.DieWithParent(cmd)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		tb.Fatalf("receiver process: %v", err)
	}
	return &Receiver{URL: "http://" + strings.TrimSpace(addr), tb: tb,
		c: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}}
}

// Secret tells the receiver a monitor's signing secret.
func (r *Receiver) Secret(monitorID, secret string) {
	resp, err := r.c.PostForm(r.URL+"/secret", url.Values{"id": {monitorID}, "secret": {secret}})
	if err != nil {
		r.tb.Fatal(err)
	}
	resp.Body.Close()
}

// Count is the number of events received so far.
func (r *Receiver) Count() int64 {
	resp, err := r.c.Get(r.URL + "/count")
	if err != nil {
		r.tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.tb.Fatal(err)
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		r.tb.Fatalf("receiver count %q: %v", b, err)
	}
	return n
}

// CPUTime is the user and system CPU time this process used so far (not
// the receiver's).
func CPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
