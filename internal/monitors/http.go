package monitors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/devicehub/devicehub/monitorclient"
)

// httpTarget sends a monitor's deliveries to its URL.
type httpTarget struct {
	spec    Spec
	client  *http.Client
	signers map[string]*monitorclient.Signer // by secret; used by the send loop only
}

func newHTTPTarget(spec *Spec, allowPrivate bool) *httpTarget {
	connect := time.Duration(spec.ConnectTimeoutMS) * time.Millisecond
	response := time.Duration(spec.ResponseTimeoutMS) * time.Millisecond
	if connect <= 0 {
		connect = DefaultTimeoutMS * time.Millisecond
	}
	if response <= 0 {
		response = DefaultTimeoutMS * time.Millisecond
	}
	d := &net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = dialControl
	}
	tr := &http.Transport{
		// No proxy: a proxy would reach what the private-address check
		// refuses.
		Proxy:                 nil,
		DialContext:           d.DialContext,
		TLSHandshakeTimeout:   connect,
		ResponseHeaderTimeout: response,
		MaxIdleConnsPerHost:   2,
		// A delivery's headers and body in one write: with the default
		// 4 KiB a batch of 100 events took five system calls.
		WriteBufferSize:   64 << 10,
		IdleConnTimeout:   90 * time.Second,
		ForceAttemptHTTP2: true,
	}
	return &httpTarget{spec: *spec, signers: map[string]*monitorclient.Signer{}, client: &http.Client{
		Transport: tr,
		// Never follow a redirect: a 3xx is a failed delivery (and a
		// redirect could lead to where the URL check would not).
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       connect + response + 5*time.Second,
	}}
}

func (t *httpTarget) close() { t.client.CloseIdleConnections() }

// postResult is the outcome of one attempt.
type postResult struct {
	err        error
	status     int           // HTTP status, 0 if none
	reason     string        // for the monitor's status_reason
	retryAfter time.Duration // from a Retry-After header
}

// bodyBuf is an HTTP send loop's delivery buffer, reused from batch to
// batch. The transport may close a request's body after RoundTrip has
// returned (net/http says so), so the buffer is reused only once every
// body that reads it was closed.
type bodyBuf struct {
	buf     []byte
	readers atomic.Int32 // bodies over buf the transport has not closed
}

// take returns the buffer to encode the next delivery into: nil (a new
// one) while a request may still read the last one.
func (b *bodyBuf) take() []byte {
	if b.readers.Load() != 0 {
		b.buf = nil
	}
	return b.buf
}

// reader is the body of the attempts of a delivery encoded in b.
func (b *bodyBuf) reader(data []byte) requestBody { return requestBody{data: data, n: &b.readers} }

// requestBody is a delivery's bytes with the count of open readers.
type requestBody struct {
	data []byte
	n    *atomic.Int32
}

func (rb requestBody) open() io.ReadCloser {
	rb.n.Add(1)
	return &bodyReader{Reader: bytes.NewReader(rb.data), n: rb.n}
}

type bodyReader struct {
	*bytes.Reader
	n      *atomic.Int32
	closed atomic.Bool
}

func (r *bodyReader) Close() error {
	if r.closed.CompareAndSwap(false, true) {
		r.n.Add(-1)
	}
	return nil
}

// post sends one attempt of a delivery, signed with secrets.
func (t *httpTarget) post(ctx context.Context, b *delivery, rb requestBody, secrets []string, now time.Time) postResult {
	body := rb.data
	req, err := http.NewRequestWithContext(ctx, t.spec.Method, t.spec.URL, nil)
	if err != nil {
		return postResult{err: err, reason: "bad request: " + err.Error()}
	}
	h := req.Header
	h.Set("Content-Type", monitorclient.ContentType(t.spec.Format))
	if t.spec.Compression == "zlib" {
		h.Set("Content-Encoding", "deflate")
	}
	h.Set("User-Agent", "devicehub-monitor/1")
	h.Set(monitorclient.HeaderID, b.id)
	h.Set(monitorclient.HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	sig, err := t.sign(secrets, b.id, now, body)
	if err != nil {
		return postResult{err: err, reason: "signing secret: " + err.Error()}
	}
	h.Set(monitorclient.HeaderSignature, sig)
	h.Set(monitorclient.HeaderMonitorID, b.monitor)
	h.Set(monitorclient.HeaderFormat, t.spec.Format)
	h.Set(monitorclient.HeaderFirstSeq, strconv.FormatInt(b.first, 10))
	h.Set(monitorclient.HeaderLastSeq, strconv.FormatInt(b.last, 10))
	h.Set(monitorclient.HeaderCount, strconv.Itoa(b.n))
	if u, p, ok := strings.Cut(t.spec.BasicAuth, ":"); ok {
		req.SetBasicAuth(u, p)
	}
	// The body is opened last: from here the transport closes it.
	req.ContentLength = int64(len(body))
	req.GetBody = func() (io.ReadCloser, error) { return rb.open(), nil }
	req.Body = rb.open()
	resp, err := t.client.Do(req)
	if err != nil {
		reason := "cannot reach the receiver"
		var ne net.Error
		switch {
		case errors.Is(err, ErrPrivateTarget):
			reason = "the target resolves to a private address"
		case errors.As(err, &ne) && ne.Timeout():
			reason = "timed out"
		}
		return postResult{err: err, reason: reason}
	}
	// Drain a little so that the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return postResult{status: resp.StatusCode}
	}
	return postResult{
		err:        fmt.Errorf("receiver answered %s", resp.Status),
		status:     resp.StatusCode,
		reason:     "HTTP " + strconv.Itoa(resp.StatusCode),
		retryAfter: retryAfter(resp.Header.Get("Retry-After"), now),
	}
}

// sign returns the Webhook-Signature header of a delivery: one signature
// per secret, space separated. A Signer per secret is kept (while the
// secret signs) so that its key is decoded once.
func (t *httpTarget) sign(secrets []string, id string, now time.Time, body []byte) (string, error) {
	if len(t.signers) > len(secrets) {
		for sec := range t.signers {
			if !slices.Contains(secrets, sec) {
				delete(t.signers, sec)
			}
		}
	}
	sigs := ""
	for i, sec := range secrets {
		sg := t.signers[sec]
		if sg == nil {
			var err error
			if sg, err = monitorclient.NewSigner(sec); err != nil {
				return "", err
			}
			t.signers[sec] = sg
		}
		if i > 0 {
			sigs += " "
		}
		sigs += sg.Sign(id, now, body)
	}
	return sigs, nil
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n <= 0 {
			return 0
		}
		return time.Duration(min(n, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
