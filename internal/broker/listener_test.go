package broker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/childproc"
	"github.com/devicehub/devicehub/internal/eventually"
)

// childEnv makes the test binary run TestListenerChild as a broker with a
// lowered open-file limit.
const childEnv = "DEVICEHUB_TEST_LISTENER_CHILD"

// TestListenerChild is the child process of TestListenerAfterEMFILE and
// TestListenerConnectionCap: a broker whose process may open only 64
// files. It prints its address and serves until its stdin closes.
func TestListenerChild(t *testing.T) {
	maxConns := os.Getenv(childEnv)
	if maxConns == "" {
		t.Skip("child process of TestListenerAfterEMFILE")
	}
	lim := syscall.Rlimit{Cur: 64, Max: 64}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("setrlimit: %v", err)
	}
	n, err := strconv.Atoi(maxConns)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	b, err := New(Options{Addr: "127.0.0.1:0", MaxConnections: n},
		Deps{Authenticator: fakeAuth{"dev1": {password: "pw1", typ: "sensor"}}, PublishHandler: &fakeHandler{errs: map[string]error{}}, Presence: &fakePresence{}},
		log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	<-b.Ready()
	fmt.Printf("ADDR %s\n", b.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// child runs the broker in a child process with a 64-file limit and the
// given connection cap; it returns the broker's address and a function
// that waits for a line of its log containing s.
func child(t *testing.T, maxConns int) (addr string, waitLog func(s string)) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a child process")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestListenerChild$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+strconv.Itoa(maxConns))
	childproc.DieWithParent(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		lines []string
	)
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
		}
	}()
	outDone := make(chan struct{})
	addrc := make(chan string, 1)
	go func() {
		defer close(outDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "ADDR "); ok {
				addrc <- a
			}
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		<-outDone
		<-logDone
		if err := cmd.Wait(); err != nil {
			mu.Lock()
			t.Errorf("child: %v\n%s", err, strings.Join(lines, "\n"))
			mu.Unlock()
		}
	})
	select {
	case addr = <-addrc:
	case <-time.After(20 * time.Second):
		t.Fatal("child broker did not start")
	}
	return addr, func(s string) {
		t.Helper()
		eventually.True(t, 5*time.Second, "child log line "+strconv.Quote(s), func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, l := range lines {
				if strings.Contains(l, s) {
					return true
				}
			}
			return false
		})
	}
}

// hold opens n TCP connections to addr that never send CONNECT.
func hold(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	var cs []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		cs = append(cs, c)
	}
	return cs
}

func closeAll(cs []net.Conn) {
	for _, c := range cs {
		_ = c.Close()
	}
}

// The attack of finding 1: connections that never send CONNECT until the
// process is out of descriptors. The broker must keep accepting once they
// are gone, and say so in its log.
func TestListenerAfterEMFILE(t *testing.T) {
	addr, waitLog := child(t, -1) // no cap: run into EMFILE
	cs := hold(t, addr, 150)
	waitLog("mqtt accept failed, retrying")
	closeAll(cs)
	eventually.True(t, 5*time.Second, "a device connects again", func() bool { return connects(addr) })
}

// With its cap (three quarters of what is left of 64 files: 24), the
// broker refuses the excess at once and never runs out of descriptors.
func TestListenerConnectionCap(t *testing.T) {
	addr, waitLog := child(t, 0) // the default cap, from the lowered limit
	cs := hold(t, addr, 100)
	waitLog("connection limit reached")
	// A refused connection is closed, not left hanging.
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("connection beyond the cap: read %v, want EOF (closed at once)", err)
	}
	extra.Close()
	closeAll(cs)
	eventually.True(t, 5*time.Second, "a device connects again", func() bool { return connects(addr) })
}

// A permanent accept error stops the listener and fails Run: never a
// broker that looks alive and accepts nothing.
func TestListenerFailureIsFatal(t *testing.T) {
	h := &harness{handler: &fakeHandler{errs: map[string]error{}}, presence: &fakePresence{}}
	b, err := New(Options{Addr: "127.0.0.1:0"}, Deps{Authenticator: fakeAuth{}, PublishHandler: h.handler, Presence: h.presence},
		slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Run(context.Background()) }()
	<-b.Ready()
	// Close the socket under the listener, as a failing system would.
	ln := b.listeners[0].(*netListener).ln
	ln.(*net.TCPListener).Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "mqtt listener tcp stopped") {
			t.Fatalf("Run = %v, want the listener's failure", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run still running with its listener gone")
	}
}

func TestTemporaryAcceptError(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"EMFILE", &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EMFILE)}, true},
		{"ENFILE", &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ENFILE)}, true},
		{"ECONNABORTED", &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.ECONNABORTED)}, true},
		{"closed", net.ErrClosed, false},
		{"EBADF", &net.OpError{Op: "accept", Err: os.NewSyscallError("accept4", syscall.EBADF)}, false},
	}
	for _, tt := range tests {
		if got := temporaryAcceptError(tt.err); got != tt.want {
			t.Errorf("%s: temporary = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// A connection that sends no CONNECT is closed after ConnectTimeout,
// counted and logged (a device that gets no CONNACK sees only a closed
// connection); one that closes before its CONNECT is counted apart.
func TestConnectDeadline(t *testing.T) {
	reg := prometheus.NewRegistry()
	var logs syncBuffer
	b, err := New(Options{Addr: "127.0.0.1:0", ConnectTimeout: 200 * time.Millisecond},
		Deps{Authenticator: fakeAuth{}, PublishHandler: &fakeHandler{errs: map[string]error{}}, Presence: &fakePresence{}},
		slog.New(slog.NewTextHandler(&logs, nil)), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-b.Ready()
	c, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("silent connection: read %v, want closed by the broker", err)
	}
	eventually.True(t, 5*time.Second, "connection untracked", func() bool { return b.open.Load() == 0 })
	if n := connectsCounted(t, reg, "connect_timeout"); n != 1 {
		t.Errorf("connect_timeout counted %v times, want 1", n)
	}
	if !strings.Contains(logs.String(), "no CONNECT answered within the connect timeout") {
		t.Errorf("no log line for the connection closed at its connect timeout:\n%s", logs.String())
	}

	c2, err := net.Dial("tcp", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	eventually.True(t, 5*time.Second, "closed_before_connack counted", func() bool {
		return connectsCounted(t, reg, "closed_before_connack") == 1
	})
}

// connectsCounted is devicehub_mqtt_connects_total{result=result} in reg.
func connectsCounted(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "devicehub_mqtt_connects_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// syncBuffer is a log destination safe for the broker's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// connects reports whether a device gets a successful CONNACK from addr
// within two seconds.
func connects(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "dev1", Username: "dev1", UsernameFlag: true,
		Password: []byte("pw1"), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	if err != nil {
		return false
	}
	_ = c.Disconnect(&paho.Disconnect{})
	<-c.Done()
	return ca.ReasonCode == 0
}

// A CONNECT that arrived in time is answered even if the hub reads it
// only after its connect deadline (a CPU-starved hub: the runtime fires
// the deadline before it polls the socket). The deadline is set in the
// past here, with the CONNECT already waiting in the socket; without the
// peek the broker would close the connection and the device would read
// EOF.
func TestConnectReadLate(t *testing.T) {
	h := start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		ca  *paho.Connack
		err error
	}
	res := make(chan result, 1)
	pc := paho.NewClient(paho.ClientConfig{Conn: cc, OnClientError: func(error) {}})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ca, err := pc.Connect(ctx, &paho.Connect{ClientID: "dev1", Username: "dev1", UsernameFlag: true,
			Password: []byte("pw1"), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
		res <- result{ca, err}
	}()
	eventually.True(t, 5*time.Second, "CONNECT waiting in the socket", func() bool { return connectArrived(sc) })
	s, ok := h.b.track(sc)
	if !ok {
		t.Fatal("not tracked")
	}
	go h.b.serveConnBy("tcp", s, true, time.Now().Add(-time.Second))
	r := <-res
	if r.err != nil || r.ca.ReasonCode != 0 {
		t.Fatalf("connect: %v %+v, want a successful CONNACK", r.err, r.ca)
	}
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var late float64
	for _, mf := range mfs {
		if mf.GetName() == "devicehub_mqtt_connect_read_late_total" {
			late = mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	if late != 1 {
		t.Errorf("devicehub_mqtt_connect_read_late_total = %v, want 1", late)
	}
	_ = pc.Disconnect(&paho.Disconnect{})
	<-pc.Done()
}
