// Package natstest starts a real NATS JetStream cluster inside a test
// process (the nats-server module), on loopback with random ports.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/devicehub/devicehub/internal/eventually"
)

// Cluster is a running JetStream cluster.
type Cluster struct {
	Servers []*server.Server

	routePorts []int        // the cluster port each server was given (0: no cluster)
	logs       []*serverLog // what each server logged above notice level
}

// URLs are the client URLs of the servers.
func (c *Cluster) URLs() []string {
	var out []string
	for _, s := range c.Servers {
		out = append(out, s.ClientURL())
	}
	return out
}

// freePort returns a loopback port that was free a moment ago (the route
// ports must be known before the servers start).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// readyWait is how long Start waits for the cluster to be ready. An idle
// machine needs well under a second; a loaded 2-core CI runner under
// -race once needed more than 30 s for the third server, so the wait is
// generous and a failure says which condition was not met.
const readyWait = 90 * time.Second * raceFactor

// Start starts n JetStream servers clustered together (n = 1: one
// server, no cluster) and waits until the cluster is ready: every server
// listens, has routes to every other, the JetStream meta group has a
// leader that sees all n peers and every server is current with it, and
// a stream of n replicas can be created. They stop at the test's cleanup.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	begin := time.Now()
	deadline := begin.Add(readyWait)
	c := start(t, n)
	// The route ports were free when picked, but another process can take
	// one before its server listens, and that server then never becomes
	// ready: start again on other ports.
	for attempt := 1; ; attempt++ {
		var failed error
		eventually.CheckFor(t, time.Until(deadline), 25*time.Millisecond, func() error {
			if failed = c.failed(); failed != nil {
				return nil
			}
			for _, s := range c.Servers {
				if !s.ReadyForConnections(100 * time.Millisecond) {
					return fmt.Errorf("nats server %s not ready for connections (client and route listeners; %s in all)\n%s", s.Name(), readyWait, c.state())
				}
			}
			return nil
		})
		if failed == nil {
			break
		}
		if attempt == 3 {
			t.Fatalf("%v (attempt %d)\n%s", failed, attempt, c.state())
		}
		t.Logf("%v; starting the servers again on other ports", failed)
		for _, s := range c.Servers {
			s.Shutdown()
		}
		c = start(t, n)
	}
	nc, err := nats.Connect(c.URLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	eventually.CheckFor(t, time.Until(deadline), 50*time.Millisecond, func() error {
		if err := c.formed(); err != nil {
			return fmt.Errorf("the nats cluster of %d servers is not ready (%s in all): %w\n%s", n, readyWait, err, c.state())
		}
		// The servers agree; the JetStream API must answer too.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NATSTEST_READY", Subjects: []string{"natstest.ready"}, Replicas: n, Storage: jetstream.MemoryStorage}); err != nil {
			return fmt.Errorf("the JetStream cluster of %d servers takes no stream of %d replicas (%s in all): %w\n%s", n, n, readyWait, err, c.state())
		}
		return js.DeleteStream(ctx, "NATSTEST_READY")
	})
	t.Logf("nats: cluster of %d ready in %s", n, time.Since(begin).Round(time.Millisecond))
	return c
}

// start starts n servers without waiting for them.
func start(t testing.TB, n int) *Cluster {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = freePort(t)
	}
	c := &Cluster{}
	for i := range n {
		opts := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       -1,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoLog:      true,
			NoSigs:     true,
		}
		if n > 1 {
			opts.Cluster = server.ClusterOpts{Name: "devicehub-test", Host: "127.0.0.1", Port: ports[i]}
			for j, p := range ports {
				if j != i {
					opts.Routes = append(opts.Routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", p)})
				}
			}
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatalf("nats server %d: %v", i+1, err)
		}
		// A server that cannot start (a listener, JetStream) says why only
		// in its log, and NoLog leaves it without one.
		log := &serverLog{}
		s.SetLogger(log, false, false)
		go s.Start()
		t.Cleanup(s.Shutdown)
		c.Servers = append(c.Servers, s)
		c.routePorts = append(c.routePorts, opts.Cluster.Port)
		c.logs = append(c.logs, log)
	}
	return c
}

// failed is the fatal error a server logged: it stopped starting.
func (c *Cluster) failed() error {
	for i, s := range c.Servers {
		if f := c.logs[i].firstFatal(); f != "" {
			return fmt.Errorf("nats server %s could not start: %s", s.Name(), f)
		}
	}
	return nil
}

// formed says which readiness condition the servers do not meet yet: the
// full mesh of routes, and a JetStream meta leader that sees every server
// as a peer with every server current with it.
func (c *Cluster) formed() error {
	n := len(c.Servers)
	for _, s := range c.Servers {
		if !s.JetStreamEnabled() {
			return fmt.Errorf("server %s: JetStream not enabled", s.Name())
		}
	}
	if n == 1 {
		return nil
	}
	for _, s := range c.Servers {
		if got := routedTo(s); len(got) != n-1 {
			return fmt.Errorf("server %s: routes to %v, want all %d others", s.Name(), got, n-1)
		}
	}
	var leader *server.Server
	for _, s := range c.Servers {
		if s.JetStreamIsLeader() {
			leader = s
		}
	}
	if leader == nil {
		return errors.New("no JetStream meta leader elected")
	}
	if peers := leader.JetStreamClusterPeers(); len(peers) != n {
		return fmt.Errorf("JetStream meta leader %s sees peers %v, want %d", leader.Name(), peers, n)
	}
	for _, s := range c.Servers {
		if !s.JetStreamIsCurrent() {
			return fmt.Errorf("server %s: JetStream meta group not current with leader %s", s.Name(), leader.Name())
		}
	}
	return nil
}

// routedTo is the names of the servers s has a route to (a pair of
// servers has several route connections: a pool, and one for the system
// account).
func routedTo(s *server.Server) []string {
	rz, err := s.Routez(nil)
	if err != nil {
		return nil
	}
	var names []string
	for _, r := range rz.Routes {
		if !slices.Contains(names, r.RemoteName) {
			names = append(names, r.RemoteName)
		}
	}
	slices.Sort(names)
	return names
}

// state describes every server for a readiness failure: its listeners,
// routes, JetStream status and last logged errors.
func (c *Cluster) state() string {
	var b strings.Builder
	for i, s := range c.Servers {
		fmt.Fprintf(&b, "  server %s: client listener %v", s.Name(), s.Addr())
		if c.routePorts[i] != 0 {
			fmt.Fprintf(&b, ", route listener %v (port %d), routes to %v", s.ClusterAddr(), c.routePorts[i], routedTo(s))
		}
		fmt.Fprintf(&b, "; JetStream enabled %t, clustered %t, meta leader %t, current %t",
			s.JetStreamEnabled(), s.JetStreamIsClustered(), s.JetStreamIsLeader(), s.JetStreamIsCurrent())
		if s.JetStreamIsLeader() {
			fmt.Fprintf(&b, ", peers %v", s.JetStreamClusterPeers())
		}
		b.WriteString("\n")
		for _, l := range c.logs[i].lines() {
			fmt.Fprintf(&b, "    %s\n", l)
		}
	}
	return b.String()
}

// serverLog keeps a server's last warnings and errors for state.
type serverLog struct {
	mu    sync.Mutex
	last  []string
	fatal string // the first fatal error
}

func (l *serverLog) add(level, format string, v []any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.last = append(l.last, time.Now().Format("15:04:05.000 ")+level+": "+fmt.Sprintf(format, v...))
	if len(l.last) > 8 {
		l.last = l.last[len(l.last)-8:]
	}
}

func (l *serverLog) firstFatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}

func (l *serverLog) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.last)
}

func (l *serverLog) Warnf(format string, v ...any)  { l.add("warning", format, v) }
func (l *serverLog) Errorf(format string, v ...any) { l.add("error", format, v) }
func (l *serverLog) Fatalf(format string, v ...any) {
	l.add("fatal", format, v)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fatal == "" {
		l.fatal = fmt.Sprintf(format, v...)
	}
}
func (l *serverLog) Noticef(string, ...any) {}
func (l *serverLog) Debugf(string, ...any)  {}
func (l *serverLog) Tracef(string, ...any)  {}
