package broker

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/devicehub/devicehub/internal/registry"
)

// CertAuthenticator authenticates a device by the client certificate it
// presented on the TLS listener: the SHA-256 of the certificate's DER
// bytes must be the fingerprint pinned to the device. It reports
// registry.ErrNotFound, registry.ErrUnauthorized (no pin, or another one)
// or registry.ErrDisabled. The broker uses it when the Authenticator
// implements it too (registry.Service does).
type CertAuthenticator interface {
	AuthenticateCert(clientID string, fingerprint [32]byte) (deviceType string, err error)
}

// clientTLS makes cfg require a client certificate signed by a CA of
// caFile (PEM) and verify it in the handshake.
func clientTLS(cfg *tls.Config, caFile string) error {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("read client CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("client CA file %s: no PEM certificate", caFile)
	}
	cfg.ClientCAs = pool
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	return nil
}

// peerFingerprint returns the SHA-256 of the verified client certificate
// of a TLS connection, if it has one.
func peerFingerprint(s *session) ([32]byte, bool) {
	tc, ok := s.conn.(*tls.Conn)
	if !ok {
		return [32]byte{}, false
	}
	st := tc.ConnectionState()
	if !st.HandshakeComplete || len(st.PeerCertificates) == 0 {
		return [32]byte{}, false
	}
	return sha256.Sum256(st.PeerCertificates[0].Raw), true
}

// certAuthenticate authenticates a client by its certificate when it
// presented one pinned to the device it claims to be. handled is false
// when the certificate decides nothing (no certificate, no pin, another
// pin): the password is checked as usual. A pinned certificate lets the
// device in without a password; the username, if sent, must still be the
// device id.
func (b *Broker) certAuthenticate(cl *mqtt.Client, s *session, username string) (typ string, handled bool, err error) {
	ca, ok := b.deps.Authenticator.(CertAuthenticator)
	if !ok {
		return "", false, nil
	}
	fp, ok := peerFingerprint(s)
	if !ok || (username != "" && username != cl.ID) {
		return "", false, nil
	}
	typ, err = ca.AuthenticateCert(cl.ID, fp)
	switch {
	case err == nil:
		return typ, true, nil
	case errors.Is(err, registry.ErrDisabled):
		return "", true, err
	}
	return "", false, nil
}

// TLSAddr is the address the TLS listener is bound to (after Ready), ""
// without one.
func (b *Broker) TLSAddr() string {
	select {
	case <-b.ready:
	default:
		return ""
	}
	for _, l := range b.listeners {
		if l.ID() == "tls" {
			return l.Address()
		}
	}
	return ""
}
