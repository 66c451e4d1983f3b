package monitors

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// Resolver resolves host names (*net.Resolver).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

type defaultResolver struct{}

func (defaultResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, network, host)
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// privateAddr reports whether a is an address a monitor must not reach
// unless allowed: loopback, private (RFC 1918, fc00::/7), link-local,
// unspecified, multicast, or carrier-grade NAT.
func privateAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() || cgnat.Contains(a)
}

// checkTarget refuses an HTTP monitor whose URL resolves to a private
// address (see privateAddr) unless the service allows it. The dialer
// checks again at every connection (dialControl), so that a name that
// later resolves elsewhere cannot get around it.
func (s *Service) checkTarget(ctx context.Context, spec *Spec) error {
	if spec.Transport != TransportHTTP || s.opts.AllowPrivateTargets {
		return nil
	}
	u, err := url.Parse(spec.URL)
	if err != nil {
		return fieldErr("url", "%v", err)
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		if privateAddr(a) {
			return fmt.Errorf("url: %s: %w (monitors.allow_private_targets is off)", host, ErrPrivateTarget)
		}
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := s.opts.Resolver.LookupNetIP(rctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return fieldErr("url", "cannot resolve %s", host)
	}
	for _, a := range addrs {
		if privateAddr(a) {
			return fmt.Errorf("url: %s resolves to %s: %w (monitors.allow_private_targets is off)", host, a, ErrPrivateTarget)
		}
	}
	return nil
}

// dialControl refuses connections to private addresses.
func dialControl(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("monitor target %s: %w", address, err)
	}
	if privateAddr(ap.Addr()) {
		return fmt.Errorf("monitor target %s: %w", address, ErrPrivateTarget)
	}
	return nil
}
