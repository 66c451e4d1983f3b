package broker

import (
	"log/slog"
	"net"

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
}

var _ stoppable = (*netListener)(nil)

func newNetListener(id, proto string, ln net.Listener, b *Broker) *netListener {
	return &netListener{id: id, proto: proto, ln: ln, b: b, done: make(chan struct{})}
}

func (l *netListener) ID() string              { return l.id }
func (l *netListener) Address() string         { return l.ln.Addr().String() }
func (l *netListener) Protocol() string        { return l.proto }
func (l *netListener) Init(*slog.Logger) error { return nil }

// Serve accepts connections until the listener is closed.
func (l *netListener) Serve(establish listeners.EstablishFn) {
	defer close(l.done)
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return // closed
		}
		s, ok := l.b.track(c)
		if !ok {
			_ = c.Close()
			continue
		}
		go func() {
			if err := l.b.serveConn(l.id, s, establish); err != nil {
				l.b.log.Debug("mqtt connection ended", "listener", l.id, "remote", c.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

func (l *netListener) stop() {
	_ = l.ln.Close()
	if l.b.served.Load() { // else Serve was never started
		<-l.done
	}
}

// Close is called by mochi's Server.Close, after the broker stopped the
// listener and closed its connections.
func (l *netListener) Close(listeners.CloseFn) { l.stop() }

// wsListener is mochi's WebSocket listener with the broker's connection
// tracking around its establish function.
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

func (l *wsListener) Serve(establish listeners.EstablishFn) {
	defer close(l.done)
	l.Listener.Serve(func(id string, c net.Conn) error {
		s, ok := l.b.track(c)
		if !ok {
			_ = c.Close()
			return nil
		}
		return l.b.serveConn(id, s, establish)
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
