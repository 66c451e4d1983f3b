package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// stoppable is a listener the broker stops itself before it closes mochi's
// server (see Broker.shutdown).
type stoppable interface {
	listeners.Listener
	// stop stops accepting and returns once no new connection can start.
	stop()
}

// netListener serves a net.Listener the broker opened itself, so that its
// address (":0" included) is known before Serve and a bind error is
// returned from Run, and tracks every connection from accept on. mochi's
// own TCP listener sets no deadline before CONNECT and leaves connections
// that never sent one open at shutdown.
type netListener struct {
	id, proto string
	ln        net.Listener
	b         *Broker
	done      chan struct{} // closed when Serve returned
	quit      chan struct{} // closed by stop: ends a backoff wait
	once      sync.Once
}

var _ stoppable = (*netListener)(nil)

func newNetListener(id, proto string, ln net.Listener, b *Broker) *netListener {
	return &netListener{id: id, proto: proto, ln: ln, b: b, done: make(chan struct{}), quit: make(chan struct{})}
}

func (l *netListener) ID() string              { return l.id }
func (l *netListener) Address() string         { return l.ln.Addr().String() }
func (l *netListener) Protocol() string        { return l.proto }
func (l *netListener) Init(*slog.Logger) error { return nil }

// Accept backoff after a temporary error (the net/http schedule): from
// minAcceptDelay doubling to maxAcceptDelay, reset by the next success.
const (
	minAcceptDelay = 5 * time.Millisecond
	maxAcceptDelay = time.Second
)

// Serve accepts connections until the listener is stopped. A temporary
// accept error (out of descriptors, an aborted handshake) is waited out
// with a backoff, as net/http does, and counted; any other error stops
// the listener and fails the broker's Run: a listener never dies silently.
// mochi's establish function is not used: the broker serves the
// connection itself (serveConn).
func (l *netListener) Serve(listeners.EstablishFn) {
	defer close(l.done)
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.quit:
				return // stopped
			default:
			}
			if temporaryAcceptError(err) {
				delay = min(max(2*delay, minAcceptDelay), maxAcceptDelay)
				l.b.acceptFailed(l.id, err, delay)
				select {
				case <-time.After(delay):
				case <-l.quit:
					return
				}
				continue
			}
			l.b.fail(fmt.Errorf("mqtt listener %s stopped: accept: %w", l.id, err))
			return
		}
		delay = 0
		s, ok := l.b.track(c)
		if !ok {
			_ = c.Close()
			continue
		}
		go l.b.serveConn(l.id, s, true)
	}
}

// temporaryAcceptError reports whether an accept error is worth waiting
// out: the process or the system ran out of descriptors or buffers, or a
// connection was aborted before it was accepted. net.Error's Temporary is
// deprecated; these are the errors it meant for accept.
func temporaryAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EAGAIN, syscall.EINTR, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (l *netListener) stop() {
	l.once.Do(func() { close(l.quit) })
	_ = l.ln.Close()
	if l.b.served.Load() { // else Serve was never started
		<-l.done
	}
}

// Close is called by mochi's Server.Close, after the broker stopped the
// listener and closed its connections.
func (l *netListener) Close(listeners.CloseFn) { l.stop() }

// wsListener is mochi's WebSocket listener with the broker's connection
// tracking, serving its connections itself (serveConn).
type wsListener struct {
	listeners.Listener
	b      *Broker
	done   chan struct{}
	inited bool // mochi's Close panics before Init
}

func (l *wsListener) Init(log *slog.Logger) error {
	if err := l.Listener.Init(log); err != nil {
		return err
	}
	l.inited = true
	return nil
}

var _ stoppable = (*wsListener)(nil)

func (l *wsListener) Serve(listeners.EstablishFn) {
	defer close(l.done)
	l.Listener.Serve(func(id string, c net.Conn) error {
		s, ok := l.b.track(c)
		if !ok {
			_ = c.Close()
			return nil
		}
		// mochi's handler closes the connection when this returns:
		// serve it on this goroutine.
		l.b.serveConn(id, s, false)
		return nil
	})
}

func (l *wsListener) stop() {
	if !l.inited {
		return
	}
	l.Listener.Close(func(string) {}) // the broker closes the connections itself
	if l.b.served.Load() {
		<-l.done
	}
}

func (l *wsListener) Close(listeners.CloseFn) { l.stop() }
