package provisioning

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Hardware keys at rest.
//
// A hardware key (a hash of a MAC address and a serial number, say) may
// have little entropy, so its plain hash in a copied database could be
// found by trying keys. The store keeps HMAC-SHA256(secret, SHA-256(key))
// instead, with a secret of the hub (Options.KeySecret, a file in the
// data directory that LoadKeySecret creates): the database alone does not
// let anyone test a guess. A database from before that (SchemeSHA256)
// holds the plain digests; PrepareKeys rekeys them once, at start.

// The schemes of stored key hashes.
const (
	SchemeSHA256 = "sha256" // the plain digest (databases before the scheme table)
	SchemeHMAC   = "hmac"   // keyed with Options.KeySecret
)

// keyDigest is the SHA-256 of a hardware key, the input of the keyed
// hash (and what databases of SchemeSHA256 hold).
func keyDigest(key string) []byte {
	d := sha256.Sum256([]byte("devicehub registration key\x00" + key))
	return d[:]
}

// keyHash is what the store keeps of a hardware key. The default id of a
// new device is derived from it too, so ids do not give the plain digest
// away either.
func (s *Service) keyHash(key string) []byte { return s.keyed(keyDigest(key)) }

// keyed is the HMAC of a key's digest.
func (s *Service) keyed(digest []byte) []byte {
	m := hmac.New(sha256.New, s.opts.KeySecret)
	m.Write(digest)
	return m.Sum(nil)
}

// PrepareKeys rekeys a store whose key hashes are plain digests
// (SchemeSHA256) with the hub's secret, once; the hub calls it before it
// serves. newSecret says that the secret was just created: a store keyed
// already was keyed with another one, which is logged (its devices that
// register again get new devices). It fails without a KeySecret.
func (s *Service) PrepareKeys(ctx context.Context, newSecret bool) error {
	if len(s.opts.KeySecret) == 0 {
		return errors.New("provisioning: no registration key secret")
	}
	scheme, err := s.keys.RegistrationKeyScheme(ctx)
	if err != nil {
		return err
	}
	switch scheme {
	case SchemeHMAC:
		if newSecret {
			s.log.Error("the stored registration keys were keyed with a secret this data directory does not hold (" + KeySecretFile +
				" lost or another data directory): devices that register again are registered as new devices")
		}
		return nil
	case SchemeSHA256:
		s.log.Info("registration keys are rekeyed with the hub's secret")
		return s.keys.RekeyRegistrationKeys(ctx, SchemeHMAC, s.keyed)
	default:
		return fmt.Errorf("provisioning: unknown registration key scheme %q", scheme)
	}
}

// KeySecretFile is the name of the registration key secret in the data
// directory.
const KeySecretFile = "registration.secret"

// LoadKeySecret reads the registration key secret at path (hex), or, if
// there is none, creates one (32 random bytes) with mode 0600, written to
// a temporary file and renamed so that a crash leaves no half secret.
// created says which. A secret file that others may read is an error the
// caller fixes (the hub tightens its data directory first).
func LoadKeySecret(path string) (secret []byte, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(secret) < 16 {
			return nil, false, fmt.Errorf("%s: not a registration key secret (hex, at least 16 bytes)", path)
		}
		return secret, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, err
	}
	secret = make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, false, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".registration-secret-*")
	if err != nil {
		return nil, false, err
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, false, err
	}
	if _, err := tmp.WriteString(hex.EncodeToString(secret) + "\n"); err != nil {
		tmp.Close()
		return nil, false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, false, err
	}
	if err := tmp.Close(); err != nil {
		return nil, false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, false, err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return secret, true, nil
}
