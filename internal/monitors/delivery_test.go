package monitors_test

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
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

func httpSpec(url string, batch int, dur float64) monitors.Spec {
	return monitors.Spec{Topics: []string{"device_*"}, Transport: "http", URL: url, Method: "POST", BatchSize: batch, BatchDuration: fptr(dur)}
}

func TestBatchBySize(t *testing.T) {
	h := startHub(t, "", testOptions())
	var secret string
	rcv := newReceiver(t, func() []string { return []string{secret} })
	res := h.create(httpSpec(rcv.srv.URL, 10, 3600))
	secret = res.Secret
	want := h.publish(35, events.DeviceStatusChanged, "d1")
	eventually.True(t, 10*time.Second, "three full batches", func() bool { return len(rcv.sizes()) >= 3 })
	// The last 5 wait for the hour to pass or five more events.
	more := h.publish(5, events.DeviceStatusChanged, "d1")
	eventually.True(t, 10*time.Second, "a fourth full batch", func() bool { return len(rcv.sizes()) >= 4 })
	if got := rcv.sizes(); len(got) != 4 || got[0] != 10 || got[1] != 10 || got[2] != 10 || got[3] != 10 {
		t.Fatalf("batch sizes %v, want [10 10 10 10]", got)
	}
	assertOnceInOrder(t, rcv.seqs(), append(want, more...))
	if st := h.status(res.Monitor.ID); st != monitors.Active {
		t.Fatalf("status %s, want ACTIVE", st)
	}
}

func TestBatchByDuration(t *testing.T) {
	h := startHub(t, "", testOptions())
	var secret string
	rcv := newReceiver(t, func() []string { return []string{secret} })
	res := h.create(httpSpec(rcv.srv.URL, 1000, 0.2))
	secret = res.Secret
	start := time.Now()
	want := h.publish(7, events.DeviceStatusChanged, "d1")
	eventually.True(t, 10*time.Second, "the batch", func() bool { return len(rcv.sizes()) >= 1 })
	if time.Since(start) < 200*time.Millisecond {
		t.Fatalf("the batch came after %s, before its 200ms duration", time.Since(start))
	}
	if got := rcv.sizes(); len(got) != 1 || got[0] != 7 {
		t.Fatalf("batch sizes %v, want [7]", got)
	}
	assertOnceInOrder(t, rcv.seqs(), want)
	r := rcv.headers[0]
	if r.Get(monitorclient.HeaderMonitorID) != res.Monitor.ID || r.Get(monitorclient.HeaderFirstSeq) != strconv.FormatInt(want[0], 10) ||
		r.Get(monitorclient.HeaderLastSeq) != strconv.FormatInt(want[6], 10) || r.Get(monitorclient.HeaderCount) != "7" {
		t.Fatalf("headers %v", r)
	}
}

// The receiver decodes a zlib XML delivery with the standard library alone.
func TestZlibXMLStandardParsers(t *testing.T) {
	h := startHub(t, "", testOptions())
	type xmlArg struct {
		XMLName xml.Name
		Type    string `xml:"type,attr"`
		Text    string `xml:",chardata"`
	}
	type xmlEvent struct {
		Seq      int64    `xml:"seq,attr"`
		Type     string   `xml:"type,attr"`
		DeviceID string   `xml:"device_id,attr"`
		Args     []xmlArg `xml:"args>new_status"`
	}
	type xmlDoc struct {
		XMLName xml.Name   `xml:"delivery"`
		Monitor string     `xml:"monitor_id,attr"`
		Events  []xmlEvent `xml:"event"`
	}
	var mu sync.Mutex
	var docs []xmlDoc
	var problems []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodPut || r.Header.Get("Content-Encoding") != "deflate" || r.Header.Get("Content-Type") != "application/xml" {
			problems = append(problems, r.Method+" "+r.Header.Get("Content-Encoding")+" "+r.Header.Get("Content-Type"))
		}
		zr, err := zlib.NewReader(bytes.NewReader(body))
		if err != nil {
			problems = append(problems, "inflate: "+err.Error())
			return
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			problems = append(problems, "inflate: "+err.Error())
			return
		}
		var d xmlDoc
		if err := xml.Unmarshal(raw, &d); err != nil {
			problems = append(problems, "xml: "+err.Error())
			return
		}
		docs = append(docs, d)
		w.WriteHeader(http.StatusOK)
	}))
	defer srv.Close()
	spec := monitors.Spec{Topics: []string{"device_*"}, Transport: "http", URL: srv.URL, BatchSize: 5, BatchDuration: fptr(0.05),
		Compression: "gzip", Format: "xml"}
	res := h.create(spec)
	if res.Monitor.Compression != "zlib" || res.Monitor.Method != "PUT" {
		t.Fatalf("compression %q method %q: gzip must mean zlib, PUT is the default", res.Monitor.Compression, res.Monitor.Method)
	}
	want := h.publish(12, events.DeviceStatusChanged, "ws-1")
	eventually.True(t, 10*time.Second, "12 events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, d := range docs {
			n += len(d.Events)
		}
		return n >= 12 || len(problems) > 0
	})
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		t.Fatal(problems)
	}
	var got []int64
	for _, d := range docs {
		if d.Monitor != res.Monitor.ID {
			t.Fatalf("monitor_id %q", d.Monitor)
		}
		for _, e := range d.Events {
			got = append(got, e.Seq)
			if e.Type != "device_status_changed" || e.DeviceID != "ws-1" || len(e.Args) != 1 || e.Args[0].Type != "string" || !strings.HasPrefix(e.Args[0].Text, "s") {
				t.Fatalf("event %+v", e)
			}
		}
	}
	assertOnceInOrder(t, got, want)
}

// TestReceiverDownReplayOn: every event arrives once, in order, after the
// receiver came back; also with a queue and a tail so small that the
// monitor falls behind the tail and reads the durable log, the tail
// bounded by its count or by its bytes (1 KiB: four or five of these
// events, while the monitor is 30 behind).
func TestReceiverDownReplayOn(t *testing.T) {
	small := testOptions()
	small.QueueSize, small.TailSize = 3, 4
	fewBytes := testOptions()
	fewBytes.QueueSize, fewBytes.TailBytes = 3, 1024
	for name, opts := range map[string]monitors.Options{"default": testOptions(), "behind the tail": small,
		"behind the byte-bounded tail": fewBytes} {
		t.Run(name, func(t *testing.T) { testReceiverDownReplayOn(t, opts) })
	}
}

// startBehindDownReceiver starts a hub with opts and an http monitor
// (batches of 7, replay on connect) whose receiver answers 503, then
// publishes 30 events: the monitor falls behind them. It returns the
// receiver, the monitor and the events' seqs.
func startBehindDownReceiver(t *testing.T, opts monitors.Options) (*hub, *receiver, *monitors.CreateResult, []int64) {
	t.Helper()
	h := startHub(t, "", opts)
	var secret string
	rcv := newReceiver(t, func() []string { return []string{secret} })
	rcv.setStatus(http.StatusServiceUnavailable)
	spec := httpSpec(rcv.srv.URL, 7, 0.01)
	spec.AutoReplayOnConnect = true
	res := h.create(spec)
	secret = res.Secret
	h.tailFollows() // else it may start after the events below, holding none of them
	return h, rcv, res, h.publish(30, events.DeviceStatusChanged, "d1")
}

func testReceiverDownReplayOn(t *testing.T, opts monitors.Options) {
	h, rcv, res, want := startBehindDownReceiver(t, opts)
	if opts.TailBytes > 0 {
		// The tail is filled by its own goroutine: wait until it dropped
		// events the monitor has not delivered, within its budget.
		eventually.True(t, 10*time.Second, "the tail moved past the monitor", func() bool {
			n, bytes, covered := monitors.TailStats(h.svc)
			return covered >= want[len(want)/2] && covered < want[len(want)-1] && bytes <= opts.TailBytes && n > 0
		})
	}
	eventually.True(t, 10*time.Second, "SUSPENDED", func() bool { return h.status(res.Monitor.ID) == monitors.Suspended })
	hits := rcv.hitCount()
	eventually.True(t, 10*time.Second, "retries", func() bool { return rcv.hitCount() > hits+2 })
	rcv.setStatus(0)
	want = append(want, h.publish(10, events.DeviceStatusChanged, "d1")...)
	eventually.True(t, 10*time.Second, "every event", func() bool { return len(rcv.seqs()) >= len(want) })
	assertOnceInOrder(t, rcv.seqs(), want)
	eventually.True(t, 10*time.Second, "ACTIVE", func() bool { return h.status(res.Monitor.ID) == monitors.Active })
	var path []string
	for _, s := range h.statusEvents(res.Monitor.ID) {
		path = append(path, s.OldStatus+">"+s.NewStatus)
	}
	if strings.Join(path, " ") != "CONNECTING>SUSPENDED SUSPENDED>ACTIVE" {
		t.Fatalf("monitor_status_changed events: %v", path)
	}
}

// TestReceiverDownByteBoundedQueue: a monitor whose queue is full by its
// bytes while its receiver is down gets every event once and in order
// when the receiver is back, as one full by its count does (its feeder
// waits, and reads the durable log once the tail has moved past it);
// within the tail, behind the tail bounded by count, and behind the tail
// bounded by bytes. Batches (of up to 7) carry no more events than the
// queue's bytes hold; an event larger than the whole bound still goes,
// alone.
func TestReceiverDownByteBoundedQueue(t *testing.T) {
	// The events published below are all of one estimated size.
	one := monitors.RetainedSize(&events.Event{Type: events.DeviceStatusChanged, DeviceID: "d1", DeviceType: "sensor",
		Args: &events.StatusChanged{OldStatus: "online", NewStatus: "s10"}})
	tests := []struct {
		name       string
		queueBytes int64 // of the queue
		tailBytes  int64 // 0: the default
		tailSize   int   // 0: the default
		fit        int   // the events the queue holds
	}{
		{"full by bytes, within the tail", 4*one + one/2, 0, 0, 4},
		{"full by bytes, behind the tail", 4*one + one/2, 0, 4, 4},
		{"full by bytes, behind the byte-bounded tail", 4*one + one/2, 4*one + one/2, 0, 4},
		{"every event larger than the bound", one / 2, 0, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions()
			opts.QueueBytes, opts.TailBytes, opts.TailSize = tt.queueBytes, tt.tailBytes, tt.tailSize
			h, rcv, res, want := startBehindDownReceiver(t, opts)
			// One batch is retried while the queue fills up again to its
			// bound, and the feeder waits.
			eventually.True(t, 10*time.Second, "the queue full by bytes", func() bool {
				n, bytes := monitors.QueueStats(h.svc, res.Monitor.ID)
				return n == tt.fit && (bytes <= tt.queueBytes || n == 1)
			})
			if tt.tailBytes > 0 || tt.tailSize > 0 {
				eventually.True(t, 10*time.Second, "the tail moved past the monitor", func() bool {
					_, _, covered := monitors.TailStats(h.svc)
					return covered >= want[len(want)/2]
				})
			}
			hits := rcv.hitCount()
			eventually.True(t, 10*time.Second, "retries", func() bool { return rcv.hitCount() > hits+2 })
			rcv.setStatus(0)
			want = append(want, h.publish(10, events.DeviceStatusChanged, "d1")...)
			eventually.True(t, 10*time.Second, "every event", func() bool { return len(rcv.seqs()) >= len(want) })
			assertOnceInOrder(t, rcv.seqs(), want)
			for _, n := range rcv.sizes() {
				if n > tt.fit {
					t.Fatalf("a batch of %d events, more than the %d the queue's bytes hold: %v", n, tt.fit, rcv.sizes())
				}
			}
			if n, bytes := monitors.QueueStats(h.svc, res.Monitor.ID); n != 0 || bytes != 0 {
				t.Fatalf("the queue holds %d events, %d bytes, after every event was delivered", n, bytes)
			}
		})
	}
}

func TestReceiverDownReplayOff(t *testing.T) {
	h := startHub(t, "", testOptions())
	var secret string
	rcv := newReceiver(t, func() []string { return []string{secret} })
	rcv.setStatus(http.StatusBadGateway)
	res := h.create(httpSpec(rcv.srv.URL, 5, 0.01))
	secret = res.Secret
	missed := h.publish(20, events.DeviceStatusChanged, "d1")
	eventually.True(t, 10*time.Second, "INACTIVE and the missed events dropped", func() bool {
		m, _ := h.svc.Get(context.Background(), res.Monitor.ID)
		return m.Status == monitors.Inactive && m.Cursor >= missed[len(missed)-1]
	})
	rcv.setStatus(0)
	// New events until the receiver gets some: only new ones, in order.
	var fresh []int64
	eventually.True(t, 10*time.Second, "new events delivered", func() bool {
		fresh = append(fresh, h.publish(3, events.DeviceStatusChanged, "d1")...)
		return len(rcv.seqs()) > 0
	})
	got := rcv.seqs()
	for i, s := range got {
		if s <= missed[len(missed)-1] {
			t.Fatalf("a missed event %d was delivered without replay: %v", s, got)
		}
		if i > 0 && s <= got[i-1] {
			t.Fatalf("out of order: %v", got)
		}
	}
	eventually.True(t, 10*time.Second, "ACTIVE", func() bool { return h.status(res.Monitor.ID) == monitors.Active })
}

// A clean restart in the middle of a stream neither loses nor resends
// acknowledged events.
func TestRestartMidStream(t *testing.T) {
	opts := testOptions()
	h := startHub(t, "", opts)
	var secret string
	rcv := newReceiver(t, func() []string { return []string{secret} })
	spec := httpSpec(rcv.srv.URL, 10, 0.005)
	spec.AutoReplayOnConnect = true
	res := h.create(spec)
	secret = res.Secret
	var want []int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Keep committing while the monitor delivers.
		for range 20 {
			want = append(want, h.publish(10, events.DeviceStatusChanged, "d1")...)
		}
	}()
	eventually.True(t, 10*time.Second, "deliveries under way", func() bool { return len(rcv.seqs()) >= 30 })
	<-done
	h.stop()
	before := len(rcv.seqs())
	h2 := startHub(t, h.dir, opts)
	want = append(want, h2.publish(50, events.DeviceStatusChanged, "d1")...)
	eventually.True(t, 10*time.Second, "every event after the restart", func() bool { return len(rcv.seqs()) >= len(want) })
	assertOnceInOrder(t, rcv.seqs(), want)
	t.Logf("%d of %d events delivered before the restart", before, len(want))
}

func TestDisabledAfterPeriod(t *testing.T) {
	opts := testOptions()
	opts.DisableAfter = 150 * time.Millisecond
	h := startHub(t, "", opts)
	var secret string
	rcv := newReceiver(t, func() []string { return []string{secret} })
	rcv.setStatus(http.StatusInternalServerError)
	spec := httpSpec(rcv.srv.URL, 1, 0)
	spec.AutoReplayOnConnect = true
	res := h.create(spec)
	secret = res.Secret
	id := res.Monitor.ID
	h.publish(3, events.DeviceStatusChanged, "d1")
	eventually.True(t, 10*time.Second, "DISABLED", func() bool { return h.status(id) == monitors.Disabled })
	m, _ := h.svc.Get(context.Background(), id)
	if !strings.Contains(m.StatusReason, "no delivery since") {
		t.Fatalf("reason %q", m.StatusReason)
	}
	// Disabled: nothing is sent any more, even for new events.
	hits := rcv.hitCount()
	h.publish(3, events.DeviceStatusChanged, "d1")
	rcv.setStatus(0)
	lst, err := h.svc.List(context.Background(), monitors.ListOptions{Condition: mustCond(t, `status = "DISABLED"`)})
	if err != nil || len(lst) != 1 || lst[0].ID != id {
		t.Fatalf("list DISABLED: %v %v", lst, err)
	}
	if rcv.hitCount() != hits {
		t.Fatal("a DISABLED monitor sent a request")
	}
	// Enabled again through the API: it starts at the end of the log.
	if _, err := h.svc.Enable(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if st := h.status(id); st != monitors.Connecting {
		t.Fatalf("after Enable: %s, want CONNECTING", st)
	}
	want := h.publish(2, events.DeviceStatusChanged, "d1")
	eventually.True(t, 10*time.Second, "delivery after enabling", func() bool { return len(rcv.seqs()) >= 2 })
	assertOnceInOrder(t, rcv.seqs(), want)
	var path []string
	for _, s := range h.statusEvents(id) {
		path = append(path, s.NewStatus)
	}
	if got := strings.Join(path, " "); got != "SUSPENDED DISABLED CONNECTING ACTIVE" {
		t.Fatalf("status events %q", got)
	}
}

func TestGoneDisablesAtOnce(t *testing.T) {
	h := startHub(t, "", testOptions())
	rcv := newReceiver(t, func() []string { return nil })
	rcv.setStatus(http.StatusGone)
	res := h.create(httpSpec(rcv.srv.URL, 1, 0))
	h.publish(1, events.DeviceStatusChanged, "d1")
	eventually.True(t, 10*time.Second, "DISABLED", func() bool { return h.status(res.Monitor.ID) == monitors.Disabled })
	if n := rcv.hitCount(); n != 1 {
		t.Fatalf("%d requests, want 1 (410 is final)", n)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	opts := testOptions()
	opts.MinBackoff, opts.MaxBackoff = time.Millisecond, time.Millisecond
	h := startHub(t, "", opts)
	var secret string
	rcv := newReceiver(t, func() []string { return []string{secret} })
	rcv.mu.Lock()
	rcv.status, rcv.retry = http.StatusTooManyRequests, "1"
	rcv.mu.Unlock()
	spec := httpSpec(rcv.srv.URL, 1, 0)
	spec.AutoReplayOnConnect = true
	res := h.create(spec)
	secret = res.Secret
	h.publish(1, events.DeviceStatusChanged, "d1")
	eventually.True(t, 5*time.Second, "first attempt", func() bool { return rcv.hitCount() >= 1 })
	start := time.Now()
	eventually.True(t, 5*time.Second, "second attempt", func() bool { return rcv.hitCount() >= 2 })
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("retried after %s despite Retry-After: 1 (backoff alone is 1ms)", d)
	}
}

func TestNoRedirects(t *testing.T) {
	h := startHub(t, "", testOptions())
	hit := false
	var mu sync.Mutex
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hit = true
		mu.Unlock()
	}))
	defer target.Close()
	redir := newReceiver(t, func() []string { return nil })
	redir.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		redir.mu.Lock()
		redir.hits++
		redir.mu.Unlock()
		http.Redirect(w, r, target.URL, http.StatusTemporaryRedirect)
	})
	spec := httpSpec(redir.srv.URL, 1, 0)
	spec.AutoReplayOnConnect = true
	res := h.create(spec)
	h.publish(1, events.DeviceStatusChanged, "d1")
	eventually.True(t, 10*time.Second, "SUSPENDED", func() bool { return h.status(res.Monitor.ID) == monitors.Suspended })
	eventually.True(t, 10*time.Second, "a retry", func() bool { return redir.hitCount() >= 2 })
	mu.Lock()
	defer mu.Unlock()
	if hit {
		t.Fatal("the redirect was followed")
	}
	m, _ := h.svc.Get(context.Background(), res.Monitor.ID)
	if m.StatusReason != "HTTP 307" {
		t.Fatalf("reason %q", m.StatusReason)
	}
}

func TestSignatureWithRotatedSecret(t *testing.T) {
	h := startHub(t, "", testOptions())
	var mu sync.Mutex
	type req struct {
		h    http.Header
		body []byte
	}
	var reqs []req
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		reqs = append(reqs, req{r.Header.Clone(), b})
		mu.Unlock()
	}))
	defer srv.Close()
	res := h.create(httpSpec(srv.URL, 1, 0))
	id, oldSecret := res.Monitor.ID, res.Secret
	last := func(n int) req {
		eventually.True(t, 10*time.Second, "a delivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(reqs) >= n })
		mu.Lock()
		defer mu.Unlock()
		return reqs[n-1]
	}
	verify := func(r req, secrets ...string) error {
		return monitorclient.Verify(secrets, r.h, r.body, 0, time.Now())
	}
	h.publish(1, events.DeviceStatusChanged, "d1")
	r1 := last(1)
	if err := verify(r1, oldSecret); err != nil {
		t.Fatalf("verify with the secret: %v", err)
	}
	if err := verify(r1, monitorclient.NewSecret()); !errors.Is(err, monitorclient.ErrBadSignature) {
		t.Fatalf("verify with another secret: %v", err)
	}
	tampered := r1
	tampered.body = append(bytes.Clone(r1.body), ' ')
	if err := verify(tampered, oldSecret); !errors.Is(err, monitorclient.ErrBadSignature) {
		t.Fatalf("verify a changed body: %v", err)
	}
	if err := monitorclient.Verify([]string{oldSecret}, r1.h, r1.body, time.Minute, time.Now().Add(time.Hour)); !errors.Is(err, monitorclient.ErrStale) {
		t.Fatalf("verify an old delivery: %v", err)
	}

	// Rotation with an overlap: both secrets verify.
	newSecret, err := h.svc.RotateSecret(context.Background(), id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	h.publish(1, events.DeviceStatusChanged, "d1")
	r2 := last(2)
	if err := verify(r2, oldSecret); err != nil {
		t.Fatalf("old secret during the overlap: %v", err)
	}
	if err := verify(r2, newSecret); err != nil {
		t.Fatalf("new secret during the overlap: %v", err)
	}
	if n := len(strings.Fields(r2.h.Get(monitorclient.HeaderSignature))); n != 2 {
		t.Fatalf("%d signatures during the overlap, want 2", n)
	}
	// Rotation without overlap: only the newest verifies.
	newest, err := h.svc.RotateSecret(context.Background(), id, -1)
	if err != nil {
		t.Fatal(err)
	}
	h.publish(1, events.DeviceStatusChanged, "d1")
	r3 := last(3)
	if err := verify(r3, newest); err != nil {
		t.Fatal(err)
	}
	if err := verify(r3, oldSecret, newSecret); !errors.Is(err, monitorclient.ErrBadSignature) {
		t.Fatalf("retired secrets still verify: %v", err)
	}
}

// Plaintext credentials of device_provisioned never reach a receiver.
func TestProvisionedWithoutCredentials(t *testing.T) {
	h := startHub(t, "", testOptions())
	var mu sync.Mutex
	var bodies [][]byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, b)
		mu.Unlock()
	}))
	defer srv.Close()
	h.create(monitors.Spec{Topics: []string{"device_provisioned"}, Transport: "http", URL: srv.URL, BatchSize: 1, BatchDuration: fptr(0)})
	ev, err := commit.NewEvent(events.Event{Type: events.DeviceProvisioned, Time: time.Now(), DeviceID: "d9", DeviceType: "sensor",
		Args: &events.Provisioned{Via: events.ViaOperator, Credentials: &events.Credentials{MQTTUsername: "d9", MQTTPassword: "pw-SECRET-123", APIKey: "key-SECRET-456"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.com.Submit(context.Background(), &commit.Change{DeviceID: "d9", Events: []commit.Event{ev}}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, 10*time.Second, "the delivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(bodies) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if bytes.Contains(bodies[0], []byte("SECRET")) || !bytes.Contains(bodies[0], []byte(`"via":"operator"`)) {
		t.Fatalf("body %s", bodies[0])
	}
}

func TestTopicsNarrowing(t *testing.T) {
	h := startHub(t, "", testOptions())
	h.groups["n1"] = "north"
	h.groups["s1"] = "south"
	var secret string
	rcv := newReceiver(t, func() []string { return []string{secret} })
	res := h.create(monitors.Spec{Topics: []string{"device_status_*[group=north]", "device_connected[id=s1]"}, Transport: "http",
		URL: rcv.srv.URL, BatchSize: 100, BatchDuration: fptr(0.01)})
	secret = res.Secret
	var want []int64
	want = append(want, h.publish(2, events.DeviceStatusChanged, "n1")...)
	h.publish(2, events.DeviceStatusChanged, "s1")
	h.publish(2, events.DeviceConnected, "n1")
	want = append(want, h.publish(1, events.DeviceConnected, "s1")...)
	h.publish(2, events.DeviceDisconnected, "s1")
	want = append(want, h.publish(1, events.DeviceStatusChanged, "n1")...)
	eventually.True(t, 10*time.Second, "the selected events", func() bool { return len(rcv.seqs()) >= len(want) })
	assertOnceInOrder(t, rcv.seqs(), want)
	// Skipped events move the cursor too once the monitor is idle.
	eventually.True(t, 10*time.Second, "cursor at the end", func() bool {
		m, _ := h.svc.Get(context.Background(), res.Monitor.ID)
		last, _ := h.st.LastSeq(context.Background())
		return m.Cursor == last
	})
}

func TestPrivateTargetRefused(t *testing.T) {
	opts := testOptions()
	opts.AllowPrivateTargets = false
	h := startHub(t, "", opts)
	for _, u := range []string{"http://127.0.0.1:9/x", "http://10.1.2.3/x", "https://[::1]/x", "http://169.254.169.254/latest", "http://localhost:8080/", "http://192.168.1.1/"} {
		_, err := h.svc.Create(context.Background(), httpSpec(u, 1, 0))
		if !errors.Is(err, monitors.ErrPrivateTarget) {
			t.Errorf("%s: %v, want ErrPrivateTarget", u, err)
		}
	}
	if _, err := h.svc.Create(context.Background(), httpSpec("https://93.184.215.14/hook", 1, 0)); err != nil {
		t.Fatalf("a public address: %v", err)
	}
}

func mustCond(t *testing.T, s string) *monitors.Condition {
	t.Helper()
	c, err := monitors.ParseCondition(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A receiver that answers 500 forever holds back nothing but its own
// monitor: every event commits, its queue stays within its bound (the
// subscription falls back to the store), and another monitor keeps
// delivering. (The rate with and without it: BenchmarkIngest.)
func TestFailingReceiverNeverHoldsIngest(t *testing.T) {
	opts := testOptions()
	opts.QueueSize = 20
	h := startHub(t, "", opts)
	bad := newReceiver(t, func() []string { return nil })
	bad.setStatus(http.StatusInternalServerError)
	spec := httpSpec(bad.srv.URL, 10, 0.01)
	spec.AutoReplayOnConnect = true
	failing := h.create(spec)
	var secret string
	good := newReceiver(t, func() []string { return []string{secret} })
	res := h.create(httpSpec(good.srv.URL, 100, 0.01))
	secret = res.Secret
	want := h.publish(3000, events.DeviceStatusChanged, "d1")
	eventually.True(t, 20*time.Second, "the healthy monitor's deliveries", func() bool { return len(good.seqs()) >= len(want) })
	assertOnceInOrder(t, good.seqs(), want)
	m, _ := h.svc.Get(context.Background(), failing.Monitor.ID)
	if m.Status != monitors.Suspended || m.Cursor >= want[0] {
		t.Fatalf("failing monitor: %s cursor %d", m.Status, m.Cursor)
	}
	if backlog, _ := h.svc.Backlog(failing.Monitor.ID); backlog < int64(len(want)) {
		t.Fatalf("failing monitor's backlog %d, want at least %d", backlog, len(want))
	}
}
