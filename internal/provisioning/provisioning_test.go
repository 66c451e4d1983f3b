package provisioning_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/devicehub/devicehub/events"
	"github.com/devicehub/devicehub/internal/commit"
	"github.com/devicehub/devicehub/internal/devicetype"
	"github.com/devicehub/devicehub/internal/provisioning"
	"github.com/devicehub/devicehub/internal/registry"
	"github.com/devicehub/devicehub/internal/store/sqlite"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type recorder struct {
	mu  sync.Mutex
	evs []events.Event
}

func (r *recorder) Publish(evs []events.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, evs...)
	r.mu.Unlock()
}

func (r *recorder) ofType(t events.Type) []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Event
	for _, e := range r.evs {
		if e.Type == t {
			out = append(out, e)
		}
	}
	return out
}

type env struct {
	st   *sqlite.Store
	reg  *registry.Service
	prov *provisioning.Service
	rec  *recorder
	now  atomic.Pointer[time.Time]
}

func (e *env) advance(d time.Duration) {
	t := e.now.Load().Add(d)
	e.now.Store(&t)
}

func newEnv(t *testing.T, opts provisioning.Options) *env {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, sqlite.Options{Path: filepath.Join(t.TempDir(), "hub.db"), Synchronous: "normal"})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, rec: &recorder{}}
	start := time.Now().UTC()
	e.now.Store(&start)
	c := commit.New(st, e.rec, commit.Options{}, slog.New(slog.DiscardHandler), nil)
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(cctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
	types := devicetype.NewRegistry()
	if err := types.Register(devicetype.Type{Name: "sensor"}); err != nil {
		t.Fatal(err)
	}
	e.reg = registry.NewService(st, c, types, nil, slog.New(slog.DiscardHandler))
	if err := e.reg.Load(ctx); err != nil {
		t.Fatal(err)
	}
	opts.Now = func() time.Time { return *e.now.Load() }
	e.prov = provisioning.New(st, e.reg, types, opts, slog.New(slog.DiscardHandler))
	return e
}

func wantErr(t *testing.T, what string, got, want error) {
	t.Helper()
	if !errors.Is(got, want) {
		t.Fatalf("%s: err = %v, want %v", what, got, want)
	}
}

func (e *env) token(t *testing.T, req provisioning.CreateTokenRequest) string {
	t.Helper()
	if req.DeviceType == "" {
		req.DeviceType = "sensor"
	}
	res, err := e.prov.CreateToken(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return res.Secret
}

func (e *env) operation(t *testing.T, token, deviceID string) *provisioning.CreateOperationResponse {
	t.Helper()
	op, err := e.prov.CreateOperation(context.Background(), provisioning.CreateOperationRequest{Token: token, DeviceID: deviceID}, "192.0.2.1:5000")
	if err != nil {
		t.Fatalf("CreateOperation: %v", err)
	}
	return op
}

// checkCredentials checks that the device authenticates with creds and
// that device_provisioned carried them in process.
func (e *env) checkCredentials(t *testing.T, id string, creds *events.Credentials, via string) {
	t.Helper()
	if creds == nil {
		t.Fatal("no credentials")
	}
	if _, err := e.reg.Authenticate(id, creds.MQTTUsername, []byte(creds.MQTTPassword)); err != nil {
		t.Fatalf("device %s cannot authenticate: %v", id, err)
	}
	for _, ev := range e.rec.ofType(events.DeviceProvisioned) {
		p := ev.Args.(*events.Provisioned)
		if ev.DeviceID == id && p.Via == via && p.Credentials != nil && p.Credentials.APIKey == creds.APIKey {
			return
		}
	}
	t.Fatalf("no device_provisioned for %s via %s with its credentials", id, via)
}

func TestTokenFlow(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"approve with the requested id", func(t *testing.T, e *env) {
			tok := e.token(t, provisioning.CreateTokenRequest{Group: "field", Tags: []string{"t1"}})
			op := e.operation(t, tok, "wanted-1")
			if len(op.VerificationCode) != 8 || op.Secret == "" || op.ID == "" {
				t.Fatalf("operation = %+v", op)
			}
			st, err := e.prov.PollOperation(ctx, op.ID, op.Secret)
			if err != nil || st.Status != provisioning.StatusPending || st.Credentials != nil {
				t.Fatalf("poll before approval = %+v, %v", st, err)
			}
			pending, err := e.prov.ListPending(ctx)
			if err != nil || len(pending) != 1 || pending[0].VerificationCode != op.VerificationCode {
				t.Fatalf("ListPending = %+v, %v", pending, err)
			}
			if _, err := e.prov.ApproveOperation(ctx, op.ID, provisioning.ApproveRequest{}); err != nil {
				t.Fatal(err)
			}
			st, err = e.prov.PollOperation(ctx, op.ID, op.Secret)
			if err != nil || st.Status != provisioning.StatusApproved || st.DeviceID != "wanted-1" {
				t.Fatalf("poll after approval = %+v, %v", st, err)
			}
			e.checkCredentials(t, "wanted-1", st.Credentials, events.ViaToken)
			d, err := e.reg.Get(ctx, "wanted-1")
			if err != nil || d.Group != "field" || len(d.Tags) != 1 {
				t.Fatalf("device = %+v, %v", d, err)
			}
			// Exactly once.
			st, err = e.prov.PollOperation(ctx, op.ID, op.Secret)
			wantErr(t, "second poll", err, provisioning.ErrAlreadyDelivered)
			if st.Credentials != nil || st.Status != provisioning.StatusDelivered {
				t.Fatalf("second poll = %+v", st)
			}
		}},
		{"approve with an overridden id", func(t *testing.T, e *env) {
			op := e.operation(t, e.token(t, provisioning.CreateTokenRequest{}), "wanted-2")
			if _, err := e.prov.ApproveOperation(ctx, op.ID, provisioning.ApproveRequest{DeviceID: "chosen-2"}); err != nil {
				t.Fatal(err)
			}
			st, err := e.prov.PollOperation(ctx, op.ID, op.Secret)
			if err != nil || st.DeviceID != "chosen-2" {
				t.Fatalf("poll = %+v, %v", st, err)
			}
			e.checkCredentials(t, "chosen-2", st.Credentials, events.ViaToken)
			if _, ok := e.reg.DeviceType("wanted-2"); ok {
				t.Fatal("the requested id was created too")
			}
		}},
		{"approval of a taken id fails and leaves it pending", func(t *testing.T, e *env) {
			if _, err := e.reg.Provision(ctx, registry.ProvisionRequest{ID: "taken", Type: "sensor"}); err != nil {
				t.Fatal(err)
			}
			op := e.operation(t, e.token(t, provisioning.CreateTokenRequest{}), "taken")
			_, err := e.prov.ApproveOperation(ctx, op.ID, provisioning.ApproveRequest{})
			wantErr(t, "approve taken id", err, registry.ErrExists)
			if _, err := e.prov.ApproveOperation(ctx, op.ID, provisioning.ApproveRequest{DeviceID: "free"}); err != nil {
				t.Fatalf("second approval: %v", err)
			}
		}},
		{"rejection", func(t *testing.T, e *env) {
			op := e.operation(t, e.token(t, provisioning.CreateTokenRequest{}), "")
			if _, err := e.prov.RejectOperation(ctx, op.ID, provisioning.RejectRequest{Reason: "unknown code"}); err != nil {
				t.Fatal(err)
			}
			st, err := e.prov.PollOperation(ctx, op.ID, op.Secret)
			wantErr(t, "poll rejected", err, provisioning.ErrOperationRejected)
			if st.Reason != "unknown code" {
				t.Fatalf("status = %+v", st)
			}
			_, err = e.prov.ApproveOperation(ctx, op.ID, provisioning.ApproveRequest{})
			wantErr(t, "approve rejected", err, provisioning.ErrOperationRejected)
		}},
		{"auto-approve", func(t *testing.T, e *env) {
			op := e.operation(t, e.token(t, provisioning.CreateTokenRequest{AutoApprove: true}), "")
			st, err := e.prov.PollOperation(ctx, op.ID, op.Secret)
			if err != nil || st.Status != provisioning.StatusApproved || st.DeviceID == "" {
				t.Fatalf("poll = %+v, %v", st, err)
			}
			e.checkCredentials(t, st.DeviceID, st.Credentials, events.ViaToken)
		}},
		{"wrong secret", func(t *testing.T, e *env) {
			op := e.operation(t, e.token(t, provisioning.CreateTokenRequest{AutoApprove: true}), "")
			_, err := e.prov.PollOperation(ctx, op.ID, "dho_wrong")
			wantErr(t, "poll", err, provisioning.ErrBadSecret)
			_, err = e.prov.PollOperation(ctx, "op_missing", op.Secret)
			wantErr(t, "poll missing", err, provisioning.ErrOperationNotFound)
		}},
		{"operation expires", func(t *testing.T, e *env) {
			op := e.operation(t, e.token(t, provisioning.CreateTokenRequest{}), "")
			e.advance(2 * time.Hour)
			_, err := e.prov.PollOperation(ctx, op.ID, op.Secret)
			wantErr(t, "poll", err, provisioning.ErrOperationExpired)
			_, err = e.prov.ApproveOperation(ctx, op.ID, provisioning.ApproveRequest{})
			wantErr(t, "approve", err, provisioning.ErrOperationExpired)
			pending, _ := e.prov.ListPending(ctx)
			if len(pending) != 0 {
				t.Fatalf("expired operation still pending: %+v", pending)
			}
		}},
		{"approved but not fetched in time", func(t *testing.T, e *env) {
			op := e.operation(t, e.token(t, provisioning.CreateTokenRequest{AutoApprove: true}), "")
			e.advance(2 * time.Hour)
			_, err := e.prov.PollOperation(ctx, op.ID, op.Secret)
			wantErr(t, "poll", err, provisioning.ErrOperationExpired)
		}},
		{"token expired", func(t *testing.T, e *env) {
			tok := e.token(t, provisioning.CreateTokenRequest{ExpiresAt: time.Now().Add(time.Minute)})
			e.advance(time.Hour)
			_, err := e.prov.CreateOperation(ctx, provisioning.CreateOperationRequest{Token: tok}, "")
			wantErr(t, "create", err, provisioning.ErrTokenExpired)
		}},
		{"single-use token reused", func(t *testing.T, e *env) {
			tok := e.token(t, provisioning.CreateTokenRequest{MaxUses: 1})
			e.operation(t, tok, "")
			_, err := e.prov.CreateOperation(ctx, provisioning.CreateOperationRequest{Token: tok}, "")
			wantErr(t, "reuse", err, provisioning.ErrTokenExhausted)
		}},
		{"quota counted atomically", func(t *testing.T, e *env) {
			tok := e.token(t, provisioning.CreateTokenRequest{MaxUses: 5})
			var ok, exhausted atomic.Int32
			var wg sync.WaitGroup
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, err := e.prov.CreateOperation(ctx, provisioning.CreateOperationRequest{Token: tok}, "")
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, provisioning.ErrTokenExhausted):
						exhausted.Add(1)
					default:
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			if ok.Load() != 5 || exhausted.Load() != 15 {
				t.Fatalf("ok %d, exhausted %d", ok.Load(), exhausted.Load())
			}
			toks, err := e.prov.ListTokens(ctx)
			if err != nil || len(toks) != 1 || toks[0].Uses != 5 {
				t.Fatalf("tokens = %+v, %v", toks, err)
			}
		}},
		{"revoked and unknown tokens", func(t *testing.T, e *env) {
			res, err := e.prov.CreateToken(ctx, provisioning.CreateTokenRequest{DeviceType: "sensor"})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.prov.RevokeToken(ctx, res.ID); err != nil {
				t.Fatal(err)
			}
			_, err = e.prov.CreateOperation(ctx, provisioning.CreateOperationRequest{Token: res.Secret}, "")
			wantErr(t, "revoked", err, provisioning.ErrTokenRevoked)
			_, err = e.prov.CreateOperation(ctx, provisioning.CreateOperationRequest{Token: "dhp_nope"}, "")
			wantErr(t, "unknown", err, provisioning.ErrTokenNotFound)
			wantErr(t, "revoke unknown", e.prov.RevokeToken(ctx, "pt_nope"), provisioning.ErrTokenNotFound)
		}},
		{"bad token requests", func(t *testing.T, e *env) {
			for _, req := range []provisioning.CreateTokenRequest{
				{DeviceType: "nosuch"},
				{DeviceType: "sensor", ExpiresAt: time.Now().Add(-time.Hour)},
				{DeviceType: "sensor", MaxUses: -1},
				{DeviceType: "sensor", Group: "a b"},
			} {
				_, err := e.prov.CreateToken(ctx, req)
				wantErr(t, "CreateToken", err, provisioning.ErrInvalid)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run(t, newEnv(t, provisioning.Options{}))
		})
	}
}

func TestRegister(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, provisioning.Options{SharedSecret: "s3cret", RegistrationType: "sensor"})
	first, err := e.prov.Register(ctx, provisioning.RegisterRequest{SharedSecret: "s3cret", Key: "hw-123", Name: "boiler"})
	if err != nil {
		t.Fatal(err)
	}
	if !first.IsNew || first.DeviceID == "" || first.DeviceType != "sensor" {
		t.Fatalf("first registration = %+v", first)
	}
	e.checkCredentials(t, first.DeviceID, &first.Credentials, events.ViaRegistration)
	if _, err := e.reg.Update(ctx, first.DeviceID, registry.UpdateRequest{Group: ptr("plant")}); err != nil {
		t.Fatal(err)
	}

	// A factory reset: the same key registers again.
	again, err := e.prov.Register(ctx, provisioning.RegisterRequest{SharedSecret: "s3cret", Key: "hw-123"})
	if err != nil {
		t.Fatal(err)
	}
	if again.IsNew || again.DeviceID != first.DeviceID || again.MQTTPassword == first.MQTTPassword {
		t.Fatalf("second registration = %+v", again)
	}
	e.checkCredentials(t, again.DeviceID, &again.Credentials, events.ViaRegistration)
	_, err = e.reg.Authenticate(first.DeviceID, first.MQTTUsername, []byte(first.MQTTPassword))
	wantErr(t, "old credentials", err, registry.ErrUnauthorized)
	d, err := e.reg.Get(ctx, first.DeviceID)
	if err != nil || d.Name != "boiler" || d.Group != "plant" {
		t.Fatalf("device after re-registration = %+v, %v", d, err)
	}
	var isNew []bool
	for _, ev := range e.rec.ofType(events.DeviceRegistered) {
		isNew = append(isNew, ev.Args.(*events.Registered).IsNew)
	}
	if len(isNew) != 2 || !isNew[0] || isNew[1] {
		t.Fatalf("device_registered is_new = %v", isNew)
	}

	tests := []struct {
		name string
		req  provisioning.RegisterRequest
		err  error
	}{
		{"bad shared secret", provisioning.RegisterRequest{SharedSecret: "nope", Key: "k"}, provisioning.ErrBadSharedSecret},
		{"no key", provisioning.RegisterRequest{SharedSecret: "s3cret"}, provisioning.ErrInvalid},
		{"bad id", provisioning.RegisterRequest{SharedSecret: "s3cret", Key: "k", DeviceID: "a b"}, provisioning.ErrInvalid},
		{"id of another device", provisioning.RegisterRequest{SharedSecret: "s3cret", Key: "k2", DeviceID: first.DeviceID}, provisioning.ErrKeyBoundElsewhere},
		{"unknown type", provisioning.RegisterRequest{SharedSecret: "s3cret", Key: "k3", Type: "nosuch"}, devicetype.ErrUnknownType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.prov.Register(ctx, tt.req)
			wantErr(t, "Register", err, tt.err)
		})
	}

	off := newEnv(t, provisioning.Options{})
	_, err = off.prov.Register(ctx, provisioning.RegisterRequest{SharedSecret: "", Key: "k"})
	wantErr(t, "registration disabled", err, provisioning.ErrRegistrationOff)
}

func ptr[T any](v T) *T { return &v }

func FuzzDecodeCreateOperationRequest(f *testing.F) {
	f.Add([]byte(`{"token":"dhp_x","device_id":"d1"}`))
	f.Add([]byte(`{"token":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = provisioning.DecodeCreateOperationRequest(b)
	})
}

func FuzzDecodeRegisterRequest(f *testing.F) {
	f.Add([]byte(`{"shared_secret":"s","key":"k","device_id":"d","type":"t"}`))
	f.Add([]byte(`{} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = provisioning.DecodeRegisterRequest(b)
	})
}

func FuzzDecodeCreateTokenRequest(f *testing.F) {
	f.Add([]byte(`{"device_type":"t","group":"g","tags":["a"],"expires_at":"2030-01-01T00:00:00Z","max_uses":3,"auto_approve":true}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = provisioning.DecodeCreateTokenRequest(b)
		_, _ = provisioning.DecodeApproveRequest(b)
		_, _ = provisioning.DecodeRejectRequest(b)
	})
}

// Finding 3: registering again with the shared secret and the same key
// does not undo a revocation; the refusal is an event. An operator's
// re-provisioning lifts it, and the key then registers as before.
func TestRegisterAfterRevoke(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, provisioning.Options{SharedSecret: "s3cret", RegistrationType: "sensor"})
	first, err := e.prov.Register(ctx, provisioning.RegisterRequest{SharedSecret: "s3cret", Key: "hw-rev"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Revoke(ctx, first.DeviceID, "stolen"); err != nil {
		t.Fatal(err)
	}
	_, err = e.prov.Register(ctx, provisioning.RegisterRequest{SharedSecret: "s3cret", Key: "hw-rev"})
	wantErr(t, "registration of a revoked device", err, provisioning.ErrDeviceRevoked)
	if _, err := e.reg.Authenticate(first.DeviceID, first.DeviceID, []byte(first.MQTTPassword)); !errors.Is(err, registry.ErrUnauthorized) {
		t.Fatalf("revoked device authenticates after a refused registration: %v", err)
	}
	if got := e.rec.ofType(events.DeviceRegistrationRefused); len(got) != 1 || got[0].DeviceID != first.DeviceID {
		t.Fatalf("device_registration_refused events = %+v", got)
	}

	// The operator says otherwise.
	if _, err := e.reg.Provision(ctx, registry.ProvisionRequest{ID: first.DeviceID, Type: "sensor", Replace: true}); err != nil {
		t.Fatal(err)
	}
	again, err := e.prov.Register(ctx, provisioning.RegisterRequest{SharedSecret: "s3cret", Key: "hw-rev"})
	if err != nil {
		t.Fatalf("registration after the operator re-provisioned: %v", err)
	}
	if again.DeviceID != first.DeviceID || again.IsNew {
		t.Fatalf("registration = %+v", again)
	}
}
