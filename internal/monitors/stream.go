package monitors

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/devicehub/devicehub/monitorclient"
)

// conn is a stream connection speaking the frames of monitorclient over
// TCP or WebSocket.
type conn interface {
	readFrame() (byte, []byte, error)
	// writeFrame writes one frame, failing after timeout.
	writeFrame(typ byte, p []byte, timeout time.Duration) error
	setReadDeadline(t time.Time) error
	close() error
	remote() string
}

type tcpConn struct {
	c  net.Conn
	r  *bufio.Reader
	mu sync.Mutex
}

func (t *tcpConn) readFrame() (byte, []byte, error) { return monitorclient.ReadFrame(t.r, 1<<20) }
func (t *tcpConn) writeFrame(typ byte, p []byte, timeout time.Duration) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	_ = t.c.SetWriteDeadline(time.Now().Add(timeout))
	_, err := t.c.Write(monitorclient.AppendFrame(nil, typ, p))
	return err
}
func (t *tcpConn) setReadDeadline(d time.Time) error { return t.c.SetReadDeadline(d) }
func (t *tcpConn) close() error                      { return t.c.Close() }
func (t *tcpConn) remote() string                    { return t.c.RemoteAddr().String() }

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
			return monitorclient.ParseFrame(b)
		}
	}
}
func (w *wsConn) writeFrame(typ byte, p []byte, timeout time.Duration) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_ = w.c.SetWriteDeadline(time.Now().Add(timeout))
	return w.c.WriteMessage(websocket.BinaryMessage, monitorclient.AppendFrame(nil, typ, p))
}
func (w *wsConn) setReadDeadline(d time.Time) error { return w.c.SetReadDeadline(d) }
func (w *wsConn) close() error                      { return w.c.Close() }
func (w *wsConn) remote() string                    { return w.c.RemoteAddr().String() }

// session is a receiver connected to a tcp monitor.
type session struct {
	c      conn
	acks   chan uint64
	dead   chan struct{}
	once   sync.Once
	reason string // why it ended, set before dead is closed
}

func newSession(c conn) *session {
	return &session{c: c, acks: make(chan uint64, 64), dead: make(chan struct{})}
}

// end closes the connection once, with a reason.
func (ss *session) end(reason string) {
	ss.once.Do(func() {
		ss.reason = reason
		ss.c.close()
		close(ss.dead)
	})
}

// ServeStream accepts stream receivers on ln until ctx is done; then it
// closes ln and every connection it accepted, and returns once their
// goroutines returned.
func (s *Service) ServeStream(ctx context.Context, ln net.Listener) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("monitor stream: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handleConn(ctx, &tcpConn{c: c, r: bufio.NewReaderSize(c, 4096)})
		}()
	}
}

var upgrader = websocket.Upgrader{
	ReadBufferSize: 4096, WriteBufferSize: 64 << 10,
	// The stream authenticates with its monitor id and token, never with a
	// cookie, so a browser page of any origin may open it.
	CheckOrigin: func(*http.Request) bool { return true },
}

// StreamHandler serves the stream over WebSocket: the same frames as over
// TCP, one per binary message.
func (s *Service) StreamHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // the upgrader answered
		}
		c.SetReadLimit(1 << 20)
		s.handleConn(r.Context(), &wsConn{c: c})
	})
}

// handleConn authenticates a receiver and hands its connection to the
// monitor's send loop; it then reads the receiver's acks until the
// connection ends.
func (s *Service) handleConn(ctx context.Context, c conn) {
	defer c.close()
	_ = c.setReadDeadline(time.Now().Add(10 * time.Second))
	typ, p, err := c.readFrame()
	if err != nil {
		return
	}
	var req monitorclient.ConnectRequest
	refuse := func(msg string) {
		b, _ := json.Marshal(monitorclient.ConnectResponse{OK: false, Error: msg})
		_ = c.writeFrame(monitorclient.FrameConnected, b, 5*time.Second)
	}
	if typ != monitorclient.FrameConnect || json.Unmarshal(p, &req) != nil {
		refuse("expected a connection request")
		return
	}
	if req.Protocol != monitorclient.Protocol {
		refuse(fmt.Sprintf("protocol %d not supported (want %d)", req.Protocol, monitorclient.Protocol))
		return
	}
	if s.opts.RunsElsewhere != nil && !s.Running() {
		// Cluster mode: the send loops run on another node; waiting here
		// would deliver nothing.
		msg := s.opts.RunsElsewhere()
		s.log.Info("monitor stream refused: the monitors run elsewhere", "monitor", req.MonitorID, "remote", c.remote(), "where", msg)
		refuse(msg)
		return
	}
	sd, err := s.authenticate(req.MonitorID, req.Token)
	if err != nil {
		s.log.Info("monitor stream refused", "monitor", req.MonitorID, "remote", c.remote(), "err", err)
		refuse(err.Error())
		return
	}
	_ = c.setReadDeadline(time.Time{})
	b, _ := json.Marshal(monitorclient.ConnectResponse{OK: true, Format: sd.spec.Format, Compression: sd.spec.Compression, Ack: sd.spec.Ack})
	if err := c.writeFrame(monitorclient.FrameConnected, b, 10*time.Second); err != nil {
		return
	}
	ss := newSession(c)
	select {
	case sd.attach <- ss:
	case <-sd.done:
		return
	case <-ctx.Done():
		return
	}
	for {
		typ, p, err := c.readFrame()
		if err != nil {
			ss.end("the receiver disconnected")
			return
		}
		if typ != monitorclient.FrameAck {
			continue
		}
		block, err := monitorclient.ParseAck(p)
		if err != nil {
			ss.end("bad ack frame")
			return
		}
		select {
		case ss.acks <- block:
		case <-ss.dead:
			return
		}
	}
}

// inflight is a batch sent on a stream and not acknowledged yet.
type inflight struct {
	block  uint64
	upto   int64
	n      int
	sentAt time.Time
	first  time.Time // its first event's time
	acked  bool
}

// runStream serves the receivers of a tcp monitor, one at a time (a new
// connection replaces the current one), until ctx is done.
func (sd *sender) runStream(ctx context.Context) {
	s := sd.svc
	var ss *session
	for {
		if ss == nil {
			select {
			case ss = <-sd.attach:
			case <-ctx.Done():
				return
			}
		}
		next, reason := sd.serveSession(ctx, ss)
		ss.end(reason)
		ss = next
		if ctx.Err() != nil {
			return
		}
		if next == nil {
			idle := s.streamIdleStatus(&sd.spec)
			s.update(ctx, sd.e, func(m *Monitor) string {
				m.Status = idle
				return reason
			})
		}
	}
}

// serveSession streams to one receiver until it goes, a new one replaces
// it (returned), or ctx is done. It returns why the session ended.
func (sd *sender) serveSession(ctx context.Context, ss *session) (*session, string) {
	s := sd.svc
	if !sd.spec.AutoReplayOnConnect {
		// Without replay, what was missed is skipped.
		head, err := s.deps.Events.LastSeq(ctx)
		if err != nil {
			return nil, "read the event log: " + err.Error()
		}
		sd.ack(ctx, head, 0)
	}
	q, sub, err := sd.subscribe(sd.cursor.Load())
	if err != nil {
		return nil, "subscribe: " + err.Error()
	}
	defer sub.Close()
	defer q.close()
	now := s.opts.Now().UTC()
	s.update(ctx, sd.e, func(m *Monitor) string {
		m.Status, m.LastConnect = Active, &now
		return "a receiver connected from " + ss.c.remote()
	})

	explicit := sd.spec.Ack == AckExplicit
	var pending []inflight
	var block uint64
	lastSave := s.opts.Now()
	defer sd.oldestUnacked.Store(0)
	for {
		now := s.opts.Now()
		var timeout time.Duration
		if len(pending) > 0 {
			sd.oldestUnacked.Store(pending[0].first.UnixNano())
			left := pending[0].sentAt.Add(s.opts.AckTimeout).Sub(now)
			if left <= 0 {
				return nil, fmt.Sprintf("no ack for block %d within %s", pending[0].block, s.opts.AckTimeout)
			}
			timeout = left
		} else {
			sd.oldestUnacked.Store(0)
		}
		canSend := !explicit || len(pending) < s.opts.MaxInFlight
		var wake chan struct{}
		if canSend {
			batch, upto, due := sd.poll(q, now)
			if batch != nil {
				block++
				b := sd.newDelivery(batch)
				first := batch[0].Time
				body, err := sd.encodeBatch(nil, b.id, batch)
				sd.release()
				if err != nil {
					s.log.Error("monitor: encode batch", "monitor", sd.id, "err", err)
					sd.ack(ctx, upto, 0)
					continue
				}
				payload, err := monitorclient.PublishPayload(monitorclient.PublishHeader{
					Block: block, DeliveryID: b.id, MonitorID: sd.id, FirstSeq: b.first, LastSeq: b.last,
					Count: b.n, Format: sd.spec.Format, Compression: sd.spec.Compression,
				}, body)
				if err != nil {
					return nil, err.Error()
				}
				if err := ss.c.writeFrame(monitorclient.FramePublish, payload, s.opts.AckTimeout); err != nil {
					sd.mm.failures.Inc()
					return nil, "write to the receiver failed"
				}
				if explicit {
					pending = append(pending, inflight{block: block, upto: upto, n: b.n, sentAt: s.opts.Now(), first: first})
				} else {
					sd.ack(ctx, upto, b.n)
					sd.markSent()
				}
				continue
			}
			if due == 0 && len(pending) == 0 && upto > sd.cursor.Load() && now.Sub(lastSave) >= s.opts.IdleCursorSave {
				sd.ack(ctx, upto, 0)
				lastSave = now
			}
			if due == 0 {
				due = s.opts.IdleCursorSave
			}
			if timeout == 0 || due < timeout {
				timeout = due
			}
			wake = q.wake
		}
		if timeout == 0 {
			timeout = s.opts.IdleCursorSave
		}
		t := sd.sleepTimer(timeout)
		select {
		case <-wake:
		case <-t.C:
		case b := <-ss.acks:
			pending = sd.acked(ctx, pending, b)
		case <-ss.dead:
			t.Stop()
			return nil, ss.reason
		case next := <-sd.attach:
			t.Stop()
			return next, "replaced by a new connection from " + next.c.remote()
		case <-ctx.Done():
			t.Stop()
			return nil, "the hub is stopping"
		}
		t.Stop()
	}
}

// acked marks block acknowledged and moves the cursor over the
// acknowledged blocks at the front of pending.
func (sd *sender) acked(ctx context.Context, pending []inflight, block uint64) []inflight {
	for i := range pending {
		if pending[i].block == block {
			pending[i].acked = true
		}
	}
	n, events := 0, 0
	var upto int64
	for n < len(pending) && pending[n].acked {
		upto = pending[n].upto
		events += pending[n].n
		n++
	}
	if n == 0 {
		return pending
	}
	sd.ack(ctx, upto, events)
	sd.markSent()
	return pending[copy(pending, pending[n:]):]
}

func (sd *sender) markSent() {
	now := sd.svc.opts.Now().UTC()
	sd.svc.update(context.Background(), sd.e, func(m *Monitor) string {
		m.LastSent = &now
		return ""
	})
}
