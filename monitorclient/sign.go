package monitorclient

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers of an HTTP delivery. The first three are the Standard Webhooks
// ones (https://www.standardwebhooks.com/).
const (
	HeaderID        = "Webhook-Id"        // the delivery id; the same on every retry
	HeaderTimestamp = "Webhook-Timestamp" // Unix seconds when this attempt was signed
	HeaderSignature = "Webhook-Signature" // "v1,<base64 HMAC-SHA256>", space separated
	HeaderMonitorID = "Devicehub-Monitor-Id"
	HeaderFirstSeq  = "Devicehub-First-Seq"
	HeaderLastSeq   = "Devicehub-Last-Seq"
	HeaderCount     = "Devicehub-Count"  // events in the delivery
	HeaderFormat    = "Devicehub-Format" // json or xml (also in Content-Type)
)

// SecretPrefix starts every signing secret.
const SecretPrefix = "whsec_"

// Errors of Verify.
var (
	ErrNoSignature  = errors.New("missing webhook signature headers")
	ErrBadSignature = errors.New("no webhook signature matches")
	ErrStale        = errors.New("webhook timestamp outside the tolerance")
	ErrBadSecret    = errors.New("bad signing secret")
)

// NewSecret returns a new random signing secret, "whsec_" and 32 random
// bytes in base64.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return SecretPrefix + base64.StdEncoding.EncodeToString(b)
}

func secretKey(secret string) ([]byte, error) {
	s, ok := strings.CutPrefix(secret, SecretPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: it does not start with %s", ErrBadSecret, SecretPrefix)
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(k) < 16 {
		return nil, fmt.Errorf("%w: not base64 of at least 16 bytes", ErrBadSecret)
	}
	return k, nil
}

// Sign returns the signature of a delivery with one secret: "v1," and the
// base64 HMAC-SHA256 of "id.timestamp.body" keyed with the secret's bytes.
func Sign(secret, id string, ts time.Time, body []byte) (string, error) {
	k, err := secretKey(secret)
	if err != nil {
		return "", err
	}
	return "v1," + base64.StdEncoding.EncodeToString(mac(k, id, ts.Unix(), body)), nil
}

// Signer signs deliveries with one secret, as Sign does, keeping the
// decoded key and its HMAC state between deliveries. It is not safe for
// concurrent use.
type Signer struct {
	h   hash.Hash
	buf []byte
}

// NewSigner returns a Signer for secret.
func NewSigner(secret string) (*Signer, error) {
	k, err := secretKey(secret)
	if err != nil {
		return nil, err
	}
	return &Signer{h: hmac.New(sha256.New, k)}, nil
}

// Sign returns what the package function Sign returns for the Signer's
// secret.
func (s *Signer) Sign(id string, ts time.Time, body []byte) string {
	s.h.Reset()
	s.buf = append(s.buf[:0], id...)
	s.buf = append(s.buf, '.')
	s.buf = strconv.AppendInt(s.buf, ts.Unix(), 10)
	s.buf = append(s.buf, '.')
	s.h.Write(s.buf)
	s.h.Write(body)
	s.buf = s.h.Sum(s.buf[:0])
	sum := len(s.buf)
	s.buf = append(s.buf, "v1,"...)
	s.buf = base64.StdEncoding.AppendEncode(s.buf, s.buf[:sum])
	return string(s.buf[sum:])
}

func mac(key []byte, id string, ts int64, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write(strconv.AppendInt(nil, ts, 10))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks the Standard Webhooks headers of a delivery: that its
// timestamp is within tolerance of now (0: 5 minutes) and that one of its
// signatures was made with one of secrets (during a rotation the hub signs
// with the old and the new secret, so either verifies). body is the raw
// request body, before inflating.
func Verify(secrets []string, h http.Header, body []byte, tolerance time.Duration, now time.Time) error {
	id, tsText, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsText == "" || sigs == "" {
		return ErrNoSignature
	}
	ts, err := strconv.ParseInt(tsText, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", ErrNoSignature, tsText)
	}
	if tolerance <= 0 {
		tolerance = 5 * time.Minute
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	for _, secret := range secrets {
		k, err := secretKey(secret)
		if err != nil {
			return err
		}
		want := mac(k, id, ts, body)
		for _, s := range strings.Fields(sigs) {
			v, sig, ok := strings.Cut(s, ",")
			if !ok || v != "v1" {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(sig)
			if err == nil && hmac.Equal(got, want) {
				return nil
			}
		}
	}
	return ErrBadSignature
}
