package monitorclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// ErrRefused is returned by Stream.Run when the hub refuses the connection
// request (unknown monitor, bad token, not a stream monitor): retrying
// would not help.
var ErrRefused = errors.New("stream refused by the hub")

// StreamOptions configure a stream receiver.
type StreamOptions struct {
	// Addr is the hub's monitor port (host:port) for TCP, or URL the
	// WebSocket stream (ws://host/api/v1/monitors/stream, or wss://).
	// Set one of them.
	Addr string
	URL  string
	// TLS, if set, wraps the TCP connection in TLS (and configures wss).
	TLS *tls.Config
	// MonitorID and Token authenticate the stream.
	MonitorID string
	Token     string
	// Callback is called with every batch, from a pool of Workers
	// goroutines (default 1, which keeps the batches in order). Returning
	// true acknowledges the batch (for monitors with explicit acks);
	// false leaves it unacknowledged, so the hub sends it again after a
	// reconnect.
	Callback func(b *Batch) bool
	Workers  int
	// Queue bounds the batches received and waiting for a worker (default
	// Workers); when it is full the receiver stops reading, which pushes
	// back on the hub.
	Queue int
	// MinBackoff and MaxBackoff bound the wait between reconnects
	// (defaults 100ms and 30s); the wait doubles, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// OnConnect, if set, is called after each successful connection
	// request (from Run's goroutine).
	OnConnect func(ConnectResponse)
	// Logger receives connection errors (default: discard).
	Logger *slog.Logger
}

// Stream receives a monitor's stream; create it with NewStream.
type Stream struct {
	opts StreamOptions
}

// NewStream returns a stream receiver; Run runs it.
func NewStream(opts StreamOptions) *Stream {
	if opts.Workers <= 0 {
		opts.Workers = 1
	}
	if opts.Queue <= 0 {
		opts.Queue = opts.Workers
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Stream{opts: opts}
}

// Run connects, receives and reconnects with backoff until ctx is done;
// then it closes the connection, waits for the callbacks in progress and
// returns nil. It returns an error wrapping ErrRefused if the hub refuses
// the connection request.
func (s *Stream) Run(ctx context.Context) error {
	if s.opts.Callback == nil {
		return errors.New("monitorclient: stream without a callback")
	}
	backoff := s.opts.MinBackoff
	for {
		connected, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrRefused) {
			return err
		}
		if connected {
			backoff = s.opts.MinBackoff
		}
		s.opts.Logger.Warn("monitor stream: disconnected", "monitor", s.opts.MonitorID, "err", err)
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(backoff*2, s.opts.MaxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// frameConn is one connection speaking frames.
type frameConn interface {
	readFrame() (byte, []byte, error)
	writeFrame(typ byte, p []byte) error
	Close() error
}

type tcpConn struct {
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex
}

func (t *tcpConn) readFrame() (byte, []byte, error) { return ReadFrame(t.r, MaxFrame) }
func (t *tcpConn) writeFrame(typ byte, p []byte) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, err := t.c.Write(AppendFrame(nil, typ, p))
	return err
}
func (t *tcpConn) Close() error { return t.c.Close() }

type wsConn struct {
	c  *websocket.Conn
	mu sync.Mutex
}

func (w *wsConn) readFrame() (byte, []byte, error) {
	for {
		mt, b, err := w.c.ReadMessage()
		if err != nil {
			return 0, nil, err
		}
		if mt == websocket.BinaryMessage {
			return ParseFrame(b)
		}
	}
}
func (w *wsConn) writeFrame(typ byte, p []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.c.WriteMessage(websocket.BinaryMessage, AppendFrame(nil, typ, p))
}
func (w *wsConn) Close() error { return w.c.Close() }

func (s *Stream) dial(ctx context.Context) (frameConn, error) {
	if s.opts.URL != "" {
		d := websocket.Dialer{TLSClientConfig: s.opts.TLS, HandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment}
		c, resp, err := d.DialContext(ctx, s.opts.URL, nil)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", s.opts.URL, err)
		}
		c.SetReadLimit(MaxFrame + 5)
		return &wsConn{c: c}, nil
	}
	var d net.Dialer
	d.Timeout = 10 * time.Second
	c, err := d.DialContext(ctx, "tcp", s.opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", s.opts.Addr, err)
	}
	if s.opts.TLS != nil {
		cfg := s.opts.TLS.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName, _, _ = strings.Cut(s.opts.Addr, ":")
		}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("tls handshake with %s: %w", s.opts.Addr, err)
		}
		c = tc
	}
	return &tcpConn{c: c, r: bufio.NewReaderSize(c, 64<<10)}, nil
}

// session runs one connection; it reports whether the hub accepted it.
func (s *Stream) session(ctx context.Context) (bool, error) {
	conn, err := s.dial(ctx)
	if err != nil {
		return false, err
	}
	// Closing the connection is how ctx ends a blocked read.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()

	req, _ := json.Marshal(ConnectRequest{MonitorID: s.opts.MonitorID, Token: s.opts.Token, Protocol: Protocol})
	if err := conn.writeFrame(FrameConnect, req); err != nil {
		return false, fmt.Errorf("send connection request: %w", err)
	}
	typ, p, err := conn.readFrame()
	if err != nil {
		return false, fmt.Errorf("read connection response: %w", err)
	}
	var resp ConnectResponse
	if typ != FrameConnected || json.Unmarshal(p, &resp) != nil {
		return false, fmt.Errorf("%w: unexpected frame %d instead of the connection response", ErrFrame, typ)
	}
	if !resp.OK {
		return false, fmt.Errorf("%w: %s", ErrRefused, resp.Error)
	}
	if s.opts.OnConnect != nil {
		s.opts.OnConnect(resp)
	}
	explicit := resp.Ack == "explicit"

	type job struct {
		block uint64
		b     *Batch
	}
	jobs := make(chan job, s.opts.Queue)
	var wg sync.WaitGroup
	for range s.opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if s.opts.Callback(j.b) && explicit {
					// A failed write ends the session through the reader.
					_ = conn.writeFrame(FrameAck, AckPayload(j.block))
				}
			}
		}()
	}
	defer wg.Wait()
	defer close(jobs)
	for {
		typ, p, err := conn.readFrame()
		if err != nil {
			return true, err
		}
		if typ != FramePublish {
			continue
		}
		h, body, err := ParsePublish(p)
		if err != nil {
			return true, err
		}
		b, err := Decode(body, h.Format, h.Compression, MaxFrame)
		if err != nil {
			return true, fmt.Errorf("block %d: %w", h.Block, err)
		}
		select {
		case jobs <- job{block: h.Block, b: b}:
		case <-ctx.Done():
			return true, ctx.Err()
		}
	}
}
