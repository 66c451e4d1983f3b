package monitors_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"math/big"
	"net"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/eventually"
	"github.com/devicehub/devicehub/internal/monitors"
	"github.com/devicehub/devicehub/monitorclient"
)

// serveStream runs the hub's monitor port on a random port, with TLS if
// cfg is set.
func (h *hub) serveStream(t testing.TB, cfg *tls.Config) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := h.svc.ServeStream(ctx, ln); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ln.Addr().String()
}

// collector is a stream callback that records batches.
type collector struct {
	mu      sync.Mutex
	batches []*monitorclient.Batch
}

func (c *collector) callback(b *monitorclient.Batch) bool {
	c.mu.Lock()
	c.batches = append(c.batches, b)
	c.mu.Unlock()
	return true
}

func (c *collector) seqs() []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int64
	for _, b := range c.batches {
		for _, e := range b.Events {
			out = append(out, e.Seq)
		}
	}
	return out
}

func runStream(t testing.TB, opts monitorclient.StreamOptions) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	s := monitorclient.NewStream(opts)
	go func() { errc <- s.Run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() { cancel(); err = <-errc })
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

func selfSigned(t testing.TB) (*tls.Config, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "hub"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}, pool
}

func TestStreamTLSExplicitAcks(t *testing.T) {
	h := startHub(t, "", testOptions())
	srvTLS, pool := selfSigned(t)
	addr := h.serveStream(t, srvTLS)
	res := h.create(monitors.Spec{Topics: []string{"device_*"}, Transport: "tcp", Ack: "explicit", BatchSize: 4, BatchDuration: fptr(0.01),
		Compression: "zlib", AutoReplayOnConnect: true})
	if res.Token == "" || res.Secret != "" {
		t.Fatalf("tcp monitor: token %q secret %q", res.Token, res.Secret)
	}
	id := res.Monitor.ID

	// A wrong token is refused for good.
	err := monitorclient.NewStream(monitorclient.StreamOptions{Addr: addr, TLS: &tls.Config{RootCAs: pool}, MonitorID: id, Token: "mtk_wrong",
		Callback: func(*monitorclient.Batch) bool { return true }}).Run(context.Background())
	if !errors.Is(err, monitorclient.ErrRefused) {
		t.Fatalf("bad token: %v, want ErrRefused", err)
	}

	// Events committed before the receiver connects are kept (replay on).
	want := h.publish(10, events.DeviceStatusChanged, "d1")
	var c collector
	connected := make(chan monitorclient.ConnectResponse, 4)
	stop := runStream(t, monitorclient.StreamOptions{Addr: addr, TLS: &tls.Config{RootCAs: pool}, MonitorID: id, Token: res.Token,
		Callback: c.callback, Workers: 2, OnConnect: func(r monitorclient.ConnectResponse) { connected <- r }})
	r := <-connected
	if r.Ack != "explicit" || r.Compression != "zlib" || r.Format != "json" {
		t.Fatalf("connect response %+v", r)
	}
	want = append(want, h.publish(9, events.DeviceStatusChanged, "d1")...)
	eventually.True(t, 10*time.Second, "every event", func() bool { return len(c.seqs()) >= len(want) })
	eventually.True(t, 10*time.Second, "cursor moved by the acks", func() bool {
		m, _ := h.svc.Get(context.Background(), id)
		return m.Cursor >= want[len(want)-1] && m.Status == monitors.Active
	})
	got := c.seqs()
	seen := map[int64]bool{}
	for _, s := range got {
		if seen[s] {
			t.Fatalf("seq %d twice: %v", s, got)
		}
		seen[s] = true
	}
	if len(got) != len(want) {
		t.Fatalf("got %v want %v", got, want)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "SUSPENDED after the receiver left", func() bool { return h.status(id) == monitors.Suspended })
}

func TestStreamWebSocketAckOff(t *testing.T) {
	h := startHub(t, "", testOptions())
	srv := httptest.NewServer(h.svc.StreamHandler())
	defer srv.Close()
	res := h.create(monitors.Spec{Topics: []string{"device_*"}, Transport: "tcp", BatchSize: 3, BatchDuration: fptr(0.01), Format: "xml"})
	id := res.Monitor.ID
	if st := h.status(id); st != monitors.Inactive {
		t.Fatalf("new tcp monitor without replay: %s, want INACTIVE", st)
	}
	// Without replay, events before the connection are not delivered.
	missed := h.publish(5, events.DeviceStatusChanged, "d1")
	var c collector
	connected := make(chan monitorclient.ConnectResponse, 1)
	stop := runStream(t, monitorclient.StreamOptions{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), MonitorID: id, Token: res.Token,
		Callback: c.callback, OnConnect: func(r monitorclient.ConnectResponse) { connected <- r }})
	<-connected
	eventually.True(t, 10*time.Second, "ACTIVE", func() bool { return h.status(id) == monitors.Active })
	want := h.publish(7, events.DeviceStatusChanged, "d1")
	eventually.True(t, 10*time.Second, "the new events", func() bool { return len(c.seqs()) >= len(want) })
	assertOnceInOrder(t, c.seqs(), want)
	if c.seqs()[0] <= missed[len(missed)-1] {
		t.Fatal("missed events delivered")
	}
	stop()
	eventually.True(t, 10*time.Second, "INACTIVE", func() bool { return h.status(id) == monitors.Inactive })
}

// rawReceiver connects to the monitor port and reads Publish frames but
// never acknowledges them.
func rawReceiver(t *testing.T, addr, id, token string) (frames chan monitorclient.PublishHeader, closed chan struct{}) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	req, _ := json.Marshal(monitorclient.ConnectRequest{MonitorID: id, Token: token, Protocol: monitorclient.Protocol})
	if _, err := c.Write(monitorclient.AppendFrame(nil, monitorclient.FrameConnect, req)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	typ, p, err := monitorclient.ReadFrame(r, 0)
	if err != nil || typ != monitorclient.FrameConnected || !strings.Contains(string(p), `"ok":true`) {
		t.Fatalf("connect: %d %s %v", typ, p, err)
	}
	frames = make(chan monitorclient.PublishHeader, 1000)
	closed = make(chan struct{})
	go func() {
		defer close(closed)
		for {
			typ, p, err := monitorclient.ReadFrame(r, 0)
			if err != nil {
				return
			}
			if typ == monitorclient.FramePublish {
				h, _, err := monitorclient.ParsePublish(p)
				if err != nil {
					return
				}
				frames <- h
			}
		}
	}()
	return frames, closed
}

// An explicit-ack receiver that never acks gets MaxInFlight batches, then
// nothing (backpressure, while ingest goes on), then the hub drops it and
// the monitor is SUSPENDED; a receiver that acks then gets everything.
func TestStreamNeverAcks(t *testing.T) {
	opts := testOptions()
	opts.MaxInFlight = 2
	opts.QueueSize = 10
	opts.AckTimeout = 400 * time.Millisecond
	h := startHub(t, "", opts)
	addr := h.serveStream(t, nil)
	res := h.create(monitors.Spec{Topics: []string{"device_*"}, Transport: "tcp", Ack: "explicit", BatchSize: 5, BatchDuration: fptr(0),
		AutoReplayOnConnect: true})
	id := res.Monitor.ID
	frames, closed := rawReceiver(t, addr, id, res.Token)
	eventually.True(t, 10*time.Second, "ACTIVE", func() bool { return h.status(id) == monitors.Active })
	// Ingest is not held back: 2000 events commit while the receiver sits.
	want := h.publish(2000, events.DeviceStatusChanged, "d1")
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the hub did not drop the receiver that never acks")
	}
	if n := len(frames); n != opts.MaxInFlight {
		t.Fatalf("%d batches sent without acks, want MaxInFlight = %d", n, opts.MaxInFlight)
	}
	eventually.True(t, 10*time.Second, "SUSPENDED", func() bool { return h.status(id) == monitors.Suspended })
	m, _ := h.svc.Get(context.Background(), id)
	if !strings.Contains(m.StatusReason, "no ack") || m.Cursor >= want[0] {
		t.Fatalf("status reason %q cursor %d", m.StatusReason, m.Cursor)
	}
	var c collector
	runStream(t, monitorclient.StreamOptions{Addr: addr, MonitorID: id, Token: res.Token, Callback: c.callback})
	eventually.True(t, 20*time.Second, "every event replayed", func() bool { return len(c.seqs()) >= len(want) })
	assertOnceInOrder(t, c.seqs(), want)
}

// TestStreamBacklogFromTheStore: events in the log that this hub's bus
// never carried (written to the store by another process, as another hub
// on the same database does) reach a stream receiver that connects
// afterwards, once each and in order, before the live ones.
func TestStreamBacklogFromTheStore(t *testing.T) {
	h := startHub(t, "", testOptions())
	addr := h.serveStream(t, nil)
	res := h.create(monitors.Spec{Topics: []string{"device_*"}, Transport: "tcp", BatchSize: 100, BatchDuration: fptr(0.01), AutoReplayOnConnect: true})
	ctx := context.Background()
	ev, err := commit.NewEvent(events.Event{Type: events.DeviceStatusChanged, Time: time.Now().UTC(), DeviceID: "d1", DeviceType: "sensor",
		Args: &events.StatusChanged{OldStatus: "online", NewStatus: "offline"}})
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]*commit.Change, 3000)
	for i := range batch {
		batch[i] = &commit.Change{DeviceID: "d1", Events: []commit.Event{ev}}
	}
	if err := h.st.Commit(ctx, batch); err != nil {
		t.Fatal(err)
	}
	var want []int64
	for _, ch := range batch {
		want = append(want, ch.Events[0].Seq)
	}
	var c collector
	runStream(t, monitorclient.StreamOptions{Addr: addr, MonitorID: res.Monitor.ID, Token: res.Token, Callback: c.callback})
	want = append(want, h.publish(5, events.DeviceStatusChanged, "d1")...)
	eventually.True(t, 20*time.Second, "every event", func() bool { return len(c.seqs()) >= len(want) })
	assertOnceInOrder(t, c.seqs(), want)
}
