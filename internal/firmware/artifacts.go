package firmware

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Files keeps artifact files in a directory, one file per artifact named
// after its id, and the hub's signing key.
//
// Why files and not the database: an artifact is tens of megabytes that
// devices read with Range requests; a file streams from the page cache
// with http.ServeContent (no copy through the database, no memory held per
// download) and backups of the database stay small. A cluster points
// firmware.dir of every node at one shared directory (NFS, a CSI volume);
// PostgreSQL large objects would work too but put the download traffic on
// the database.
type Files struct {
	dir     string
	keyFile string

	mu  sync.Mutex
	key ed25519.PrivateKey
}

// NewFiles returns the artifact store of dir (created if missing) with the
// signing key in keyFile (created on first use, mode 0600).
func NewFiles(dir, keyFile string) (*Files, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("firmware dir: %w", err)
	}
	return &Files{dir: dir, keyFile: keyFile}, nil
}

// SigningKey returns the hub's signing key, creating it on first use.
func (f *Files) SigningKey() (ed25519.PrivateKey, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.key != nil {
		return f.key, nil
	}
	b, err := os.ReadFile(f.keyFile)
	switch {
	case err == nil:
		k, err := parseKey(b)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", f.keyFile, err)
		}
		f.key = k
		return k, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("signing key: %w", err)
	}
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode signing key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(f.keyFile), 0o750); err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	// O_EXCL: two hubs sharing a data directory never overwrite each
	// other's key; the loser reads the winner's.
	fh, err := os.OpenFile(f.keyFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		f.mu.Unlock()
		defer f.mu.Lock()
		return f.SigningKey()
	}
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if err := pem.Encode(fh, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		fh.Close()
		return nil, fmt.Errorf("write signing key: %w", err)
	}
	if err := fh.Sync(); err != nil {
		fh.Close()
		return nil, fmt.Errorf("write signing key: %w", err)
	}
	if err := fh.Close(); err != nil {
		return nil, fmt.Errorf("write signing key: %w", err)
	}
	f.key = k
	return k, nil
}

func parseKey(b []byte) (ed25519.PrivateKey, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("not a PEM file")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an ed25519 key", k)
	}
	return ek, nil
}

// PublicKey returns the hub's public signing key, base64 (standard
// encoding of the 32 raw bytes), what devices are built with.
func (f *Files) PublicKey() (string, error) {
	k, err := f.SigningKey()
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey)), nil
}

func (f *Files) path(id string) string { return filepath.Join(f.dir, id+".bin") }

// Open opens an artifact's file for reading.
func (f *Files) Open(id string) (*os.File, error) {
	fh, err := os.Open(f.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("artifact file %s: %w", id, ErrNotFound)
	}
	return fh, err
}

// Remove deletes an artifact's file.
func (f *Files) Remove(id string) error {
	err := os.Remove(f.path(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Upload is an artifact to store: its metadata, and a vendor signature
// (with the vendor's public key) or none, to be signed by the hub.
type Upload struct {
	Version, Type, Hardware, Filename string
	// Signature and PublicKey, base64, are the vendor's: the signature is
	// verified at upload and kept. Both empty: the hub signs.
	Signature, PublicKey string
}

// maxLabel bounds versions, types and hardware versions.
const maxLabel = 64

func checkLabel(name, v string, required bool) error {
	if v == "" {
		if required {
			return fmt.Errorf("%w: %s is required", ErrInvalid, name)
		}
		return nil
	}
	if len(v) > maxLabel || strings.ContainsAny(v, "\x00\n\r\t") {
		return fmt.Errorf("%w: %s must be 1 to %d printable bytes", ErrInvalid, name, maxLabel)
	}
	return nil
}

// Store writes r to a new artifact file (at most max bytes), computing its
// size and SHA-256, and signs or verifies it. The file is named id; the
// caller commits the returned artifact and removes the file if that fails.
func (f *Files) Store(id string, r io.Reader, max int64, u Upload) (*Artifact, error) {
	if err := checkLabel("version", u.Version, true); err != nil {
		return nil, err
	}
	if err := checkLabel("type", u.Type, true); err != nil {
		return nil, err
	}
	if err := checkLabel("hardware", u.Hardware, false); err != nil {
		return nil, err
	}
	if (u.Signature == "") != (u.PublicKey == "") {
		return nil, fmt.Errorf("%w: a vendor signature needs its public key, and the other way round", ErrInvalid)
	}
	tmp, err := os.CreateTemp(f.dir, ".upload-*")
	if err != nil {
		return nil, fmt.Errorf("store artifact: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("store artifact: %w", err)
	}
	if n > max {
		return nil, fmt.Errorf("%w: the file is larger than %d bytes", ErrInvalid, max)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: the file is empty", ErrInvalid)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("store artifact: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("store artifact: %w", err)
	}
	sum := h.Sum(nil)
	a := &Artifact{ID: id, Version: u.Version, Type: u.Type, Hardware: u.Hardware, Size: n,
		SHA256: hex.EncodeToString(sum), Filename: u.Filename}
	if u.Signature != "" {
		pub, err := base64.StdEncoding.DecodeString(u.PublicKey)
		if err != nil || len(pub) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: public_key must be a base64 ed25519 public key (32 bytes)", ErrInvalid)
		}
		sig, err := base64.StdEncoding.DecodeString(u.Signature)
		if err != nil || len(sig) != ed25519.SignatureSize {
			return nil, fmt.Errorf("%w: signature must be a base64 ed25519 signature (64 bytes)", ErrInvalid)
		}
		if !ed25519.Verify(ed25519.PublicKey(pub), sum, sig) {
			return nil, fmt.Errorf("vendor signature of the file's SHA-256 %s: %w", a.SHA256, ErrBadSignature)
		}
		a.Signature, a.PublicKey, a.SignedBy = u.Signature, u.PublicKey, "vendor"
	} else {
		k, err := f.SigningKey()
		if err != nil {
			return nil, err
		}
		a.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(k, sum))
		a.PublicKey = base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
		a.SignedBy = "hub"
	}
	if err := os.Rename(tmp.Name(), f.path(id)); err != nil {
		return nil, fmt.Errorf("store artifact: %w", err)
	}
	done = true
	return a, nil
}

// VerifySignature checks an ed25519 signature (base64) of a SHA-256 digest
// (hex) with a public key (base64): the check devices make.
func VerifySignature(publicKey, sha256Hex, signature string) error {
	pub, err := base64.StdEncoding.DecodeString(publicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: bad public key", ErrBadSignature)
	}
	sum, err := hex.DecodeString(sha256Hex)
	if err != nil || len(sum) != sha256.Size {
		return fmt.Errorf("%w: bad sha256", ErrBadSignature)
	}
	sig, err := base64.StdEncoding.DecodeString(signature)
	if err != nil || !ed25519.Verify(ed25519.PublicKey(pub), sum, sig) {
		return ErrBadSignature
	}
	return nil
}

func newID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}
