package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/devicehub/devicehub/internal/registry"
)

// certAuth is fakeAuth with pinned certificate fingerprints.
type certAuth struct {
	fakeAuth
	pins map[string][32]byte
}

func (a certAuth) AuthenticateCert(clientID string, fp [32]byte) (string, error) {
	d, ok := a.fakeAuth[clientID]
	if !ok {
		return "", registry.ErrNotFound
	}
	if pin, ok := a.pins[clientID]; !ok || pin != fp {
		return "", registry.ErrUnauthorized
	}
	if d.disabled {
		return "", registry.ErrDisabled
	}
	return d.typ, nil
}

// testCA is a certificate authority made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var serial int64

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key := newKey(t)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf certificate signed by the CA, for a server
// (127.0.0.1) or a client.
func (ca *testCA) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key := newKey(t)
	serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, dir, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	kb, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, other := newCA(t, "devicehub test CA"), newCA(t, "someone else")
	certFile, keyFile := writePEM(t, dir, "server", ca.issue(t, "hub", true))
	caFile := filepath.Join(dir, "ca.pem")
	os.WriteFile(caFile, ca.pem, 0o600)

	pinned, unpinned, foreign := ca.issue(t, "dev1", false), ca.issue(t, "x", false), other.issue(t, "dev1", false)
	offCert := ca.issue(t, "off1", false)
	fp := func(c tls.Certificate) [32]byte { return sha256.Sum256(c.Certificate[0]) }
	auth := certAuth{
		fakeAuth: fakeAuth{"dev1": {password: "pw1", typ: "sensor"}, "dev2": {password: "pw2", typ: "sensor"}, "off1": {password: "pw", typ: "sensor", disabled: true}},
		pins:     map[string][32]byte{"dev1": fp(pinned), "off1": fp(offCert)},
	}
	h := &harness{handler: &fakeHandler{errs: map[string]error{}}, presence: &fakePresence{}}
	b, err := New(Options{TLSAddr: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile},
		Deps{Authenticator: auth, PublishHandler: h.handler, Presence: h.presence}, slog.New(slog.NewTextHandler(io.Discard, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case <-b.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("broker not ready")
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	tests := []struct {
		name     string
		cert     *tls.Certificate
		id, user string
		password string
		// handshake: the TLS handshake itself must fail; else code is
		// the CONNACK reason code.
		handshake bool
		code      byte
	}{
		{name: "pinned certificate, no password", cert: &pinned, id: "dev1"},
		{name: "pinned certificate with its username", cert: &pinned, id: "dev1", user: "dev1"},
		{name: "pinned certificate, wrong password ignored", cert: &pinned, id: "dev1", user: "dev1", password: "nope"},
		{name: "pinned certificate of a disabled device", cert: &offCert, id: "off1", code: 0x87},
		{name: "unpinned certificate and password", cert: &unpinned, id: "dev2", user: "dev2", password: "pw2"},
		{name: "unpinned certificate, wrong password", cert: &unpinned, id: "dev2", user: "dev2", password: "nope", code: 0x86},
		{name: "another device's certificate", cert: &pinned, id: "dev2", user: "dev2", code: 0x86},
		{name: "pinned certificate, other username", cert: &pinned, id: "dev1", user: "dev2", code: 0x85},
		{name: "no client certificate", id: "dev1", user: "dev1", password: "pw1", handshake: true},
		{name: "certificate of another CA", cert: &foreign, id: "dev1", handshake: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
			if tt.cert != nil {
				cfg.Certificates = []tls.Certificate{*tt.cert}
			}
			d := &net.Dialer{Timeout: 5 * time.Second}
			conn, err := tls.DialWithDialer(d, "tcp", b.TLSAddr(), cfg)
			if err == nil {
				// TLS 1.3: the server checks the client certificate
				// after the client's handshake ends; the first read
				// tells.
				err = conn.Handshake()
			}
			if err != nil {
				if !tt.handshake {
					t.Fatalf("handshake: %v", err)
				}
				return
			}
			defer conn.Close()
			cl := paho.NewClient(paho.ClientConfig{Conn: conn, OnClientError: func(error) {}})
			cp := &paho.Connect{ClientID: tt.id, KeepAlive: 30, CleanStart: true}
			if tt.user != "" {
				cp.Username, cp.UsernameFlag = tt.user, true
			}
			if tt.password != "" {
				cp.Password, cp.PasswordFlag = []byte(tt.password), true
			}
			cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer ccancel()
			ca, err := cl.Connect(cctx, cp)
			switch {
			case tt.handshake:
				if err == nil {
					t.Fatal("connected without an acceptable client certificate")
				}
			case ca == nil:
				t.Fatalf("no CONNACK: %v", err)
			case ca.ReasonCode != tt.code:
				t.Fatalf("CONNACK 0x%02x, want 0x%02x", ca.ReasonCode, tt.code)
			case tt.code == 0:
				_ = cl.Disconnect(&paho.Disconnect{})
				<-cl.Done()
			}
		})
	}
}

func TestClientCAFileNeedsTLS(t *testing.T) {
	_, err := New(Options{Addr: "127.0.0.1:0", ClientCAFile: "ca.pem"}, Deps{Authenticator: fakeAuth{}, PublishHandler: &fakeHandler{}, Presence: &fakePresence{}},
		slog.New(slog.DiscardHandler), nil)
	if err == nil {
		t.Fatal("ClientCAFile without TLSAddr accepted")
	}
}
