package provisioning

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
)

// Credentials are sealed for the device between approval and delivery, so
// that the store (and a backup of it) never holds them in plaintext: the
// operation's secret, which only the device knows, determines an X25519
// key pair whose public half is stored; approval encrypts to it with an
// ephemeral key (HKDF-SHA256, AES-256-GCM), and only a poll with the
// secret can open them. Any node of a cluster can deliver them.

const sealInfo = "devicehub provisioning credentials v1"

var errSealed = errors.New("sealed credentials do not open")

// operationKey derives the operation's private key from its secret.
func operationKey(secret string) (*ecdh.PrivateKey, error) {
	seed := sha256.Sum256([]byte("devicehub operation key\x00" + secret))
	return ecdh.X25519().NewPrivateKey(seed[:])
}

// publicKeyFor returns the public key stored with an operation.
func publicKeyFor(secret string) ([]byte, error) {
	k, err := operationKey(secret)
	if err != nil {
		return nil, err
	}
	return k.PublicKey().Bytes(), nil
}

func sealKey(shared, ephPub, pub []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, shared, append(append([]byte{}, ephPub...), pub...), sealInfo, 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// seal encrypts plaintext to the public key pub.
func seal(pub, plaintext []byte) ([]byte, error) {
	pk, err := ecdh.X25519().NewPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	shared, err := eph.ECDH(pk)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	ephPub := eph.PublicKey().Bytes()
	aead, err := sealKey(shared, ephPub, pub)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	// The key is used once (the ephemeral key is new), so a zero nonce
	// is safe.
	nonce := make([]byte, aead.NonceSize())
	return aead.Seal(ephPub, nonce, plaintext, nil), nil
}

// open decrypts what seal encrypted to the key of secret.
func open(secret string, sealed []byte) ([]byte, error) {
	if len(sealed) < 32 {
		return nil, errSealed
	}
	k, err := operationKey(secret)
	if err != nil {
		return nil, err
	}
	ephPub := sealed[:32]
	epk, err := ecdh.X25519().NewPublicKey(ephPub)
	if err != nil {
		return nil, errSealed
	}
	shared, err := k.ECDH(epk)
	if err != nil {
		return nil, errSealed
	}
	aead, err := sealKey(shared, ephPub, k.PublicKey().Bytes())
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	out, err := aead.Open(nil, nonce, sealed[32:], nil)
	if err != nil {
		return nil, errSealed
	}
	return out, nil
}
