package sim

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// proxy sits between one simulated device and the hub's MQTT listener, so
// that the simulator can cut the device's network: drop closes its
// connections (the device reconnects), pause also refuses new ones for a
// while (the device works offline and catches up).
type proxy struct {
	target string
	ln     net.Listener

	mu          sync.Mutex
	conns       map[net.Conn]struct{}
	pausedUntil time.Time
	wg          sync.WaitGroup
}

func newProxy(target string) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &proxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}}, nil
}

// addr is where the device connects.
func (p *proxy) addr() string { return p.ln.Addr().String() }

// run accepts and forwards connections until ctx is done.
func (p *proxy) run(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() {
		p.ln.Close()
		p.drop()
	})
	defer stop()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				break
			}
			continue
		}
		p.mu.Lock()
		paused := time.Now().Before(p.pausedUntil)
		p.mu.Unlock()
		if paused {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.forward(ctx, c)
		}()
	}
	p.wg.Wait()
}

func (p *proxy) forward(ctx context.Context, c net.Conn) {
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// drop closes every connection now.
func (p *proxy) drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// pause cuts the network for d.
func (p *proxy) pause(d time.Duration) {
	p.mu.Lock()
	p.pausedUntil = time.Now().Add(d)
	p.mu.Unlock()
	p.drop()
}
