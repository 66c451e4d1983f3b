package storetest

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/registry"
)

// testRegistry checks the registry part of the commit path (fields,
// credentials, groups, imports, operations) and the group and
// provisioning stores.
func testRegistry(t *testing.T, b Backend) {
	ctx := context.Background()
	creds := func(id string) registry.Credentials {
		t.Helper()
		all, err := b.AllCredentials(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range all {
			if c.DeviceID == id {
				return c
			}
		}
		t.Fatalf("no credentials of %s", id)
		return registry.Credentials{}
	}
	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"fields", func(t *testing.T) {
			provision(t, b, "r-fields")
			ch := &commit.Change{DeviceID: "r-fields", Ops: []commit.Op{&registry.Update{
				Fields: &registry.DeviceFields{Name: ptr("n2"), Group: ptr("g2"), Tags: &[]string{"x"}, Location: []byte(`{"lat":1,"lon":2}`),
					Metadata: []byte("null"), FirmwareVersion: ptr("fw"), HardwareVersion: ptr("hw"), ManagementIP: ptr("10.0.0.9"), Disabled: ptr(true)},
				Groups: []registry.NewGroup{{ID: "g2", Name: "Group 2"}},
			}}, Events: []commit.Event{mustEvent(t, events.Event{Type: events.DeviceNameChanged, Time: at(1), DeviceID: "r-fields",
				Args: &events.NameChanged{Name: "n2", OldName: "name of r-fields"}})}}
			mustCommit(t, b, ch)
			if ch.Err != nil {
				t.Fatal(ch.Err)
			}
			checkSeqs(t, ch, true)
			d := getDevice(t, b, "r-fields")
			want := registry.Device{ID: "r-fields", Type: "sensor", Name: "n2", Group: "g2", Tags: []string{"x"},
				Location: &registry.Location{Lat: 1, Lon: 2}, FirmwareVersion: "fw", HardwareVersion: "hw", ManagementIP: "10.0.0.9",
				Status: "offline", Disabled: true, CreatedAt: at(0), UpdatedAt: d.UpdatedAt}
			equalJSON(t, "device", *d, want)
			g, err := b.GetGroup(ctx, "g2")
			if err != nil || g.Name != "Group 2" || g.Devices != 1 {
				t.Fatalf("group = %+v, %v", g, err)
			}
			if !creds("r-fields").Disabled {
				t.Error("credentials do not show the device disabled")
			}
		}},
		{"missing device fails alone", func(t *testing.T) {
			bad := &commit.Change{DeviceID: "r-missing", Ops: []commit.Op{&registry.Update{Fields: &registry.DeviceFields{Name: ptr("x")}}},
				Events: []commit.Event{mustEvent(t, events.Event{Type: events.DeviceNameChanged, Time: at(1), DeviceID: "r-missing", Args: &events.NameChanged{}})}}
			good := newDevice(t, "r-ok", "sensor", false)
			mustCommit(t, b, bad, good)
			wantErr(t, "missing device", bad.Err, commit.ErrDeviceNotFound)
			checkSeqs(t, bad, false)
			if good.Err != nil {
				t.Fatal(good.Err)
			}
		}},
		{"rotation, retirement, revocation, re-provisioning", func(t *testing.T) {
			provision(t, b, "r-rot")
			until := at(3600)
			mustCommit(t, b, &commit.Change{DeviceID: "r-rot", Ops: []commit.Op{&registry.Update{Credentials: &registry.CredentialChange{
				MQTTUsername: "r-rot", PasswordHash: hash("pw2"), APIKeyHash: hash("key2"), OldUntil: until}}}})
			c := creds("r-rot")
			if !bytes.Equal(c.PasswordHash, hash("pw2")) || !bytes.Equal(c.PrevPasswordHash, hash("pw-r-rot")) ||
				!bytes.Equal(c.PrevAPIKeyHash, hash("key-r-rot")) || c.PrevUntil == nil || !c.PrevUntil.Equal(until) {
				t.Fatalf("after rotation: %+v", c)
			}
			mustCommit(t, b, &commit.Change{DeviceID: "r-rot", Ops: []commit.Op{&registry.Update{RetireOld: true}}})
			if c := creds("r-rot"); c.PrevPasswordHash != nil || c.PrevUntil != nil {
				t.Fatalf("after retirement: %+v", c)
			}
			mustCommit(t, b, &commit.Change{DeviceID: "r-rot", Ops: []commit.Op{&registry.Update{Credentials: &registry.CredentialChange{Revoke: true}}}})
			if c := creds("r-rot"); !c.Revoked || len(c.PasswordHash) != 0 {
				t.Fatalf("after revocation: %+v", c)
			}
			mustCommit(t, b, newDevice(t, "r-rot", "sensor", true))
			if c := creds("r-rot"); c.Revoked || !bytes.Equal(c.PasswordHash, hash("pw-r-rot")) {
				t.Fatalf("after re-provisioning: %+v", c)
			}
		}},
		{"certificate pin", func(t *testing.T) {
			provision(t, b, "r-cert")
			fp := hash("fingerprint")
			mustCommit(t, b, &commit.Change{DeviceID: "r-cert", Ops: []commit.Op{&registry.Update{Cert: &registry.CertPin{Fingerprint: fp}}}})
			if c := creds("r-cert"); !bytes.Equal(c.CertFingerprint, fp) {
				t.Fatalf("pinned: %x", c.CertFingerprint)
			}
			mustCommit(t, b, &commit.Change{DeviceID: "r-cert", Ops: []commit.Op{&registry.Update{Cert: &registry.CertPin{}}}})
			if c := creds("r-cert"); c.CertFingerprint != nil {
				t.Fatalf("unpinned: %x", c.CertFingerprint)
			}
		}},
		{"import is all or nothing", func(t *testing.T) {
			provision(t, b, "r-imp-taken")
			imp := func(ids ...string) *commit.Change {
				ch := &commit.Change{Ops: []commit.Op{&registry.Update{Groups: []registry.NewGroup{{ID: "imp", Name: "Imported"}}}}}
				for _, id := range ids {
					update(ch).Import = append(update(ch).Import, registry.ImportedDevice{ID: id, NewDevice: registry.NewDevice{
						Type: "sensor", Group: "imp", MQTTUsername: id, PasswordHash: hash(id), APIKeyHash: hash("k" + id), CreatedAt: at(0)},
						Fields: &registry.DeviceFields{ManagementIP: ptr("10.1.1.1")}})
					ch.Events = append(ch.Events, mustEvent(t, events.Event{Type: events.DeviceProvisioned, Time: at(0), DeviceID: id, Args: &events.Provisioned{}}))
				}
				return ch
			}
			bad := imp("r-imp-1", "r-imp-taken")
			mustCommit(t, b, bad)
			wantErr(t, "import with a taken id", bad.Err, commit.ErrDeviceExists)
			checkSeqs(t, bad, false)
			if _, err := b.GetDevice(ctx, "r-imp-1"); !errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("half an import was written: %v", err)
			}
			good := imp("r-imp-1", "r-imp-2")
			mustCommit(t, b, good)
			if good.Err != nil {
				t.Fatal(good.Err)
			}
			checkSeqs(t, good, true)
			if d := getDevice(t, b, "r-imp-2"); d.ManagementIP != "10.1.1.1" || d.Group != "imp" {
				t.Fatalf("imported device = %+v", d)
			}
			if g, err := b.GetGroup(ctx, "imp"); err != nil || g.Devices != 2 || g.Name != "Imported" {
				t.Fatalf("group = %+v, %v", g, err)
			}
		}},
		{"groups", func(t *testing.T) {
			now := at(0)
			if err := b.CreateGroup(ctx, registry.Group{ID: "rg", Name: "RG", CreatedAt: now, UpdatedAt: now}); err != nil {
				t.Fatal(err)
			}
			wantErr(t, "create twice", b.CreateGroup(ctx, registry.Group{ID: "rg", Name: "x", CreatedAt: now, UpdatedAt: now}), registry.ErrGroupExists)
			if err := b.RenameGroup(ctx, "rg", "RG 2", at(5)); err != nil {
				t.Fatal(err)
			}
			wantErr(t, "rename missing", b.RenameGroup(ctx, "nope", "x", now), registry.ErrGroupNotFound)
			g, err := b.GetGroup(ctx, "rg")
			if err != nil || g.Name != "RG 2" || !g.CreatedAt.Equal(now) || !g.UpdatedAt.Equal(at(5)) {
				t.Fatalf("group = %+v, %v", g, err)
			}
			_, err = b.GetGroup(ctx, "nope")
			wantErr(t, "get missing", err, registry.ErrGroupNotFound)
			gs, err := b.ListGroups(ctx)
			if err != nil || len(gs) == 0 {
				t.Fatalf("ListGroups = %v, %v", gs, err)
			}
		}},
		{"registration key", func(t *testing.T) {
			ps := b
			ch := newDevice(t, "r-reg", "sensor", false)
			ch.Ops = append(ch.Ops, &provisioning.Approval{RegistrationKey: hash("hw-key")})
			mustCommit(t, b, ch)
			id, err := ps.RegisteredDevice(ctx, hash("hw-key"))
			if err != nil || id != "r-reg" {
				t.Fatalf("RegisteredDevice = %q, %v", id, err)
			}
			if id, err := ps.RegisteredDevice(ctx, hash("other")); err != nil || id != "" {
				t.Fatalf("unknown key = %q, %v", id, err)
			}
		}},
		{"rekey registration keys", func(t *testing.T) {
			ch := newDevice(t, "r-rekey", "sensor", false)
			ch.Ops = append(ch.Ops, &provisioning.Approval{RegistrationKey: hash("hw-rekey")})
			mustCommit(t, b, ch)
			if s, err := b.RegistrationKeyScheme(ctx); err != nil || s != provisioning.SchemeSHA256 {
				t.Fatalf("scheme of a new store = %q, %v", s, err)
			}
			rekey := func(old []byte) []byte { return append([]byte("k:"), old...) }
			if err := b.RekeyRegistrationKeys(ctx, provisioning.SchemeHMAC, rekey); err != nil {
				t.Fatal(err)
			}
			if s, err := b.RegistrationKeyScheme(ctx); err != nil || s != provisioning.SchemeHMAC {
				t.Fatalf("scheme after = %q, %v", s, err)
			}
			for _, tt := range []struct {
				name string
				hash []byte
				want string
			}{
				{"old hash", hash("hw-rekey"), ""},
				{"new hash", rekey(hash("hw-rekey")), "r-rekey"},
			} {
				if id, err := b.RegisteredDevice(ctx, tt.hash); err != nil || id != tt.want {
					t.Errorf("%s: %q, %v; want %q", tt.name, id, err, tt.want)
				}
			}
			// At the scheme already: nothing changes.
			if err := b.RekeyRegistrationKeys(ctx, provisioning.SchemeHMAC, rekey); err != nil {
				t.Fatal(err)
			}
			if id, _ := b.RegisteredDevice(ctx, rekey(hash("hw-rekey"))); id != "r-rekey" {
				t.Errorf("a second rekey at the scheme changed the keys: %q", id)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

// testProvisioningStore checks tokens and operations.
func testProvisioningStore(t *testing.T, b Backend) {
	ps := b
	ctx := context.Background()
	now := at(0)
	tok := provisioning.Token{ID: "pt_1", Name: "batch 1", DeviceType: "sensor", Group: "g", Tags: []string{"a"},
		ExpiresAt: at(3600), MaxUses: 2, AutoApprove: true, CreatedAt: now}
	if err := ps.CreateProvisioningToken(ctx, tok, hash("tok")); err != nil {
		t.Fatal(err)
	}
	newOp := func(id string) *provisioning.Operation {
		return &provisioning.Operation{ID: id, VerificationCode: "ABCD2345", RequestedDeviceID: "want", Status: provisioning.StatusPending,
			CreatedAt: now, ExpiresAt: at(600), SecretHash: hash("secret-" + id), PublicKey: hash("pub")}
	}
	op := newOp("op_1")
	got, err := ps.CreateProvisioningOperation(ctx, hash("tok"), op, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Uses != 1 || op.TokenID != "pt_1" || op.DeviceType != "sensor" || op.Group != "g" || len(op.Tags) != 1 {
		t.Fatalf("token %+v, operation %+v", got, op)
	}
	if _, err := ps.CreateProvisioningOperation(ctx, hash("tok"), newOp("op_2"), now); err != nil {
		t.Fatal(err)
	}
	_, err = ps.CreateProvisioningOperation(ctx, hash("tok"), newOp("op_3"), now)
	wantErr(t, "over quota", err, provisioning.ErrTokenExhausted)
	_, err = ps.CreateProvisioningOperation(ctx, hash("nope"), newOp("op_4"), now)
	wantErr(t, "unknown token", err, provisioning.ErrTokenNotFound)

	if err := ps.CreateProvisioningToken(ctx, provisioning.Token{ID: "pt_2", DeviceType: "sensor", ExpiresAt: at(10), CreatedAt: now}, hash("tok2")); err != nil {
		t.Fatal(err)
	}
	_, err = ps.CreateProvisioningOperation(ctx, hash("tok2"), newOp("op_5"), at(20))
	wantErr(t, "expired token", err, provisioning.ErrTokenExpired)
	if err := ps.RevokeProvisioningToken(ctx, "pt_2", now); err != nil {
		t.Fatal(err)
	}
	_, err = ps.CreateProvisioningOperation(ctx, hash("tok2"), newOp("op_6"), now)
	wantErr(t, "revoked token", err, provisioning.ErrTokenRevoked)
	wantErr(t, "revoke unknown", ps.RevokeProvisioningToken(ctx, "pt_x", now), provisioning.ErrTokenNotFound)
	toks, err := ps.ListProvisioningTokens(ctx)
	if err != nil || len(toks) != 2 {
		t.Fatalf("tokens = %+v, %v", toks, err)
	}
	equalJSON(t, "token", toks[0], provisioning.Token{ID: "pt_1", Name: "batch 1", DeviceType: "sensor", Group: "g", Tags: []string{"a"},
		ExpiresAt: at(3600), MaxUses: 2, Uses: 2, AutoApprove: true, CreatedAt: now})

	// Claim, release, claim again, approve through the commit path, deliver once.
	stale := now.Add(-time.Minute)
	if ok, err := ps.ClaimProvisioningOperation(ctx, "op_1", now, stale); err != nil || !ok {
		t.Fatalf("claim = %v, %v", ok, err)
	}
	if ok, _ := ps.ClaimProvisioningOperation(ctx, "op_1", now, stale); ok {
		t.Fatal("claimed twice")
	}
	if ok, _ := ps.RejectProvisioningOperation(ctx, "op_1", "no", now, stale); ok {
		t.Fatal("rejected while claimed")
	}
	if err := ps.ReleaseProvisioningOperation(ctx, "op_1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := ps.ClaimProvisioningOperation(ctx, "op_1", now, stale); err != nil || !ok {
		t.Fatalf("claim after release = %v, %v", ok, err)
	}
	ch := newDevice(t, "r-op", "sensor", false)
	ch.Ops = append(ch.Ops, &provisioning.Approval{Operation: &provisioning.OperationApproval{ID: "op_1", DeviceID: "r-op", Sealed: []byte("sealed"), DeliverBy: at(900), At: at(1)}})
	mustCommit(t, b, ch)
	if ch.Err != nil {
		t.Fatal(ch.Err)
	}
	o, err := ps.GetProvisioningOperation(ctx, "op_1")
	if err != nil || o.Status != provisioning.StatusApproved || o.DeviceID != "r-op" || !o.ExpiresAt.Equal(at(900)) ||
		string(o.Sealed) != "sealed" || o.DecidedAt == nil {
		t.Fatalf("approved operation = %+v, %v", o, err)
	}
	if sealed, err := ps.DeliverProvisioningOperation(ctx, "op_1", at(950)); err != nil || sealed != nil {
		t.Fatalf("delivery after expiry = %q, %v", sealed, err)
	}
	if sealed, err := ps.DeliverProvisioningOperation(ctx, "op_1", at(2)); err != nil || string(sealed) != "sealed" {
		t.Fatalf("delivery = %q, %v", sealed, err)
	}
	if sealed, err := ps.DeliverProvisioningOperation(ctx, "op_1", at(2)); err != nil || sealed != nil {
		t.Fatalf("second delivery = %q, %v", sealed, err)
	}
	if o, _ := ps.GetProvisioningOperation(ctx, "op_1"); o.Status != provisioning.StatusDelivered || o.Sealed != nil {
		t.Fatalf("delivered operation = %+v", o)
	}

	if ok, err := ps.RejectProvisioningOperation(ctx, "op_2", "unknown device", now, stale); err != nil || !ok {
		t.Fatalf("reject = %v, %v", ok, err)
	}
	if ok, _ := ps.ClaimProvisioningOperation(ctx, "op_2", now, stale); ok {
		t.Fatal("claimed a rejected operation")
	}
	pending, err := ps.ListProvisioningOperations(ctx, provisioning.StatusPending, 10)
	if err != nil || len(pending) != 0 {
		t.Fatalf("pending = %+v, %v", pending, err)
	}
	all, err := ps.ListProvisioningOperations(ctx, "", 10)
	if err != nil || len(all) != 2 {
		t.Fatalf("all = %+v, %v", all, err)
	}
	rejected, err := ps.ListProvisioningOperations(ctx, provisioning.StatusRejected, 10)
	if err != nil || len(rejected) != 1 || rejected[0].Reason != "unknown device" {
		t.Fatalf("rejected = %+v, %v", rejected, err)
	}
	_, err = ps.GetProvisioningOperation(ctx, "op_x")
	wantErr(t, "get missing", err, provisioning.ErrOperationNotFound)
}
