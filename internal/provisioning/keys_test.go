package provisioning_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/registry"
)

// Finding 13 of issue 9: the store keeps hardware keys only as an HMAC
// keyed with the hub's secret, so that a copied database alone cannot be
// used to test guesses; a database from before is rekeyed at start, and
// its devices still find their key.
func TestKeysAtRest(t *testing.T) {
	ctx := context.Background()
	secret := []byte("0123456789abcdef0123456789abcdef")
	e := newEnv(t, provisioning.Options{SharedSecret: "s3cret", RegistrationType: "sensor", KeySecret: secret})
	// A device registered by a hub before the keyed scheme.
	if _, err := e.reg.Provision(ctx, registry.ProvisionRequest{ID: "old-dev", Type: "sensor", Via: events.ViaRegistration,
		Also: func(ch *commit.Change, _ events.Credentials) error {
			ch.Ops = append(ch.Ops, provisioning.LegacyBinding("hw-old"))
			return nil
		}}); err != nil {
		t.Fatal(err)
	}
	if scheme, err := e.st.RegistrationKeyScheme(ctx); err != nil || scheme != provisioning.SchemeSHA256 {
		t.Fatalf("scheme before = %q, %v", scheme, err)
	}
	if err := e.prov.PrepareKeys(ctx, true); err != nil {
		t.Fatal(err)
	}
	if scheme, err := e.st.RegistrationKeyScheme(ctx); err != nil || scheme != provisioning.SchemeHMAC {
		t.Fatalf("scheme after = %q, %v", scheme, err)
	}
	keyed := func(key string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(provisioning.KeyDigest(key))
		return m.Sum(nil)
	}
	for _, tt := range []struct {
		name string
		hash []byte
		want string
	}{
		{"old key, keyed", keyed("hw-old"), "old-dev"},
		{"old key, plain digest", provisioning.KeyDigest("hw-old"), ""},
	} {
		if got, err := e.st.RegisteredDevice(ctx, tt.hash); err != nil || got != tt.want {
			t.Errorf("%s: device %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
	// The old device registers again and is found; a second PrepareKeys
	// changes nothing.
	if err := e.prov.PrepareKeys(ctx, false); err != nil {
		t.Fatal(err)
	}
	again, err := e.prov.Register(ctx, provisioning.RegisterRequest{SharedSecret: "s3cret", Key: "hw-old"})
	if err != nil || again.IsNew || again.DeviceID != "old-dev" {
		t.Fatalf("old device registering again: %+v, %v", again, err)
	}
	// A new key is stored keyed, and the default id does not give its
	// plain digest away.
	fresh, err := e.prov.Register(ctx, provisioning.RegisterRequest{SharedSecret: "s3cret", Key: "hw-new"})
	if err != nil || !fresh.IsNew {
		t.Fatalf("new key: %+v, %v", fresh, err)
	}
	if fresh.DeviceID == "dev-"+hex.EncodeToString(provisioning.KeyDigest("hw-new")[:8]) {
		t.Errorf("default id %s is the plain digest's", fresh.DeviceID)
	}
	if got, _ := e.st.RegisteredDevice(ctx, provisioning.KeyDigest("hw-new")); got != "" {
		t.Errorf("the plain digest of a new key is stored")
	}
	if got, _ := e.st.RegisteredDevice(ctx, keyed("hw-new")); got != fresh.DeviceID {
		t.Errorf("keyed hash of the new key finds %q, want %q", got, fresh.DeviceID)
	}
}

func TestLoadKeySecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), provisioning.KeySecretFile)
	s1, created, err := provisioning.LoadKeySecret(path)
	if err != nil || !created || len(s1) != 32 {
		t.Fatalf("first load: %d bytes, created %v, %v", len(s1), created, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	s2, created, err := provisioning.LoadKeySecret(path)
	if err != nil || created || string(s2) != string(s1) {
		t.Fatalf("second load: created %v, same %v, %v", created, string(s2) == string(s1), err)
	}
	if err := os.WriteFile(path, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := provisioning.LoadKeySecret(path); err == nil {
		t.Fatal("a broken secret file was accepted")
	}
}
