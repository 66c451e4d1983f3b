package fdlimit

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Listener caps the open connections accepted from a net.Listener. A
// connection beyond the cap is handed to Refuse (which should write a
// short answer and must close it) and never returned from Accept, so the
// server behind it never holds more than Max descriptors; unlike
// golang.org/x/net/netutil's LimitListener it does not leave the excess
// waiting in the kernel's backlog with no answer.
type Listener struct {
	net.Listener
	Max    int
	Refuse func(net.Conn)
	// Refused, if set, is called (with the number refused so far) for
	// each refusal, for a metric or a sampled log line.
	Refused func(total int64)

	open    atomic.Int64
	refused atomic.Int64
}

// Open is the number of connections accepted and not yet closed.
func (l *Listener) Open() int64 { return l.open.Load() }

// Accept returns the next connection within the cap.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.open.Add(1) > int64(l.Max) {
			l.open.Add(-1)
			n := l.refused.Add(1)
			if l.Refused != nil {
				l.Refused(n)
			}
			if l.Refuse != nil {
				l.Refuse(c) // a write to a new socket does not block; RefuseHTTP bounds it anyway
			} else {
				_ = c.Close()
			}
			continue
		}
		return &conn{Conn: c, l: l}, nil
	}
}

type conn struct {
	net.Conn
	l    *Listener
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.open.Add(-1) })
	return err
}

// RefuseHTTP answers a connection beyond the cap with 503 and closes it.
func RefuseHTTP(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	_, _ = c.Write([]byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 28\r\n\r\ntoo many connections to hub\n"))
	_ = c.Close()
}
