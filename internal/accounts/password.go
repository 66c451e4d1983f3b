package accounts

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id's cost parameters. DefaultParams follow OWASP's
// first recommendation (19 MiB, 2 passes, 1 lane): a sign-in costs tens of
// milliseconds and 19 MiB, which login throttling keeps rare.
type Params struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
	KeyLen  uint32
	SaltLen uint32
}

// DefaultParams are the parameters new hashes use.
var DefaultParams = Params{Memory: 19 * 1024, Time: 2, Threads: 1, KeyLen: 32, SaltLen: 16}

// errHash: a stored hash that cannot be parsed.
var errHash = errors.New("malformed password hash")

// HashPassword returns password's argon2id hash in PHC string form:
// $argon2id$v=19$m=19456,t=2,p=1$<salt>$<key> (unpadded base64).
func HashPassword(password string, p Params) (string, error) {
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password salt: %w", err)
	}
	key := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// maxMemory bounds the memory a stored hash may ask for (1 GiB), so that a
// tampered row cannot exhaust the process.
const maxMemory = 1 << 20

// ParseHash reads a PHC argon2id string into its parameters, salt and key.
func ParseHash(s string) (p Params, salt, key []byte, err error) {
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, fmt.Errorf("%w: not an argon2id PHC string", errHash)
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, fmt.Errorf("%w: version %q", errHash, parts[2])
	}
	seen := 0
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, nil, nil, fmt.Errorf("%w: parameter %q", errHash, kv)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			return p, nil, nil, fmt.Errorf("%w: parameter %q", errHash, kv)
		}
		switch k {
		case "m":
			if n > maxMemory {
				return p, nil, nil, fmt.Errorf("%w: memory %d KiB too large", errHash, n)
			}
			p.Memory = uint32(n)
		case "t":
			if n > 100 {
				return p, nil, nil, fmt.Errorf("%w: time %d too large", errHash, n)
			}
			p.Time = uint32(n)
		case "p":
			if n > 255 {
				return p, nil, nil, fmt.Errorf("%w: threads %d", errHash, n)
			}
			p.Threads = uint8(n)
		default:
			return p, nil, nil, fmt.Errorf("%w: unknown parameter %q", errHash, k)
		}
		seen++
	}
	if seen != 3 || p.Memory == 0 || p.Time == 0 || p.Threads == 0 {
		return p, nil, nil, fmt.Errorf("%w: want m, t and p", errHash)
	}
	b64 := base64.RawStdEncoding
	if salt, err = b64.DecodeString(parts[4]); err != nil || len(salt) < 8 {
		return p, nil, nil, fmt.Errorf("%w: salt", errHash)
	}
	if key, err = b64.DecodeString(parts[5]); err != nil || len(key) < 16 || len(key) > 128 {
		return p, nil, nil, fmt.Errorf("%w: key", errHash)
	}
	p.SaltLen, p.KeyLen = uint32(len(salt)), uint32(len(key))
	return p, salt, key, nil
}

// CheckPassword reports whether password matches the PHC hash; a malformed
// hash is an error.
func CheckPassword(hash, password string) (bool, error) {
	p, salt, key, err := ParseHash(hash)
	if err != nil {
		return false, err
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}
