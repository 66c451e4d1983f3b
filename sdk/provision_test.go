package sdk_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/devicehub/devicehub/sdk"
)

// fakeProvisioningEndpoint is a FAKE of the hub's provisioning HTTP
// endpoints, implementing the contract the SDK is written against, for the
// edge cases the real hub does not easily produce (a lost answer, a token
// refused at once); e2e_test.go runs the flow against the real hub:
//
//	POST /api/v1/provisioning/operations {token, device_id}
//	  → 201 {id, verification_code, expires_at, secret}
//	GET  /api/v1/provisioning/operations/{id} (Bearer secret)
//	  → {status, device_id, credentials (once, when approved)}
type fakeProvisioningEndpoint struct {
	token string
	ttl   time.Duration

	mu      sync.Mutex
	status  string // what the next poll answers: pending, approved, rejected, expired
	created int
	polls   int
	fetched bool
	device  string
}

func (f *fakeProvisioningEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	auth := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/v1/provisioning/operations":
		var body struct {
			Token    string `json:"token"`
			DeviceID string `json:"device_id"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		if body.Token != f.token {
			http.Error(w, `{"error": {"code": "unauthorized", "message": "bad token"}}`, http.StatusUnauthorized)
			return
		}
		f.device = body.DeviceID
		f.created++
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{
			"id": "op1", "verification_code": "ABCD-1234", "expires_at": time.Now().Add(f.ttl), "secret": "s3cret",
		})
	case r.Method == http.MethodGet && r.URL.Path == "/api/v1/provisioning/operations/op1":
		if auth != "s3cret" {
			http.Error(w, `{"error": "bad secret"}`, http.StatusUnauthorized)
			return
		}
		f.polls++
		out := map[string]any{"id": "op1", "status": f.status}
		if f.status == "approved" {
			if f.fetched {
				http.Error(w, `{"error": "gone"}`, http.StatusNotFound)
				return
			}
			f.fetched = true
			out["device_id"] = "approved-id"
			out["credentials"] = map[string]string{"mqtt_username": "approved-id", "mqtt_password": "pw", "api_key": "k"}
		}
		json.NewEncoder(w).Encode(out)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeProvisioningEndpoint) operations() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.created
}

func (f *fakeProvisioningEndpoint) pollCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.polls
}

func (f *fakeProvisioningEndpoint) set(status string) {
	f.mu.Lock()
	f.status = status
	f.mu.Unlock()
}

// TestProvisioningFakeEndpoint covers the HTTP contract's edge cases
// against a fake endpoint; TestE2EProvisioning runs the flow against the
// real hub.
func TestProvisioningFakeEndpoint(t *testing.T) {
	tests := []struct {
		name     string
		token    string
		decision string
		kind     sdk.Kind // -1: approved
	}{
		{"approved", "tok", "approved", -1},
		{"rejected", "tok", "rejected", sdk.KindProvisioningRejected},
		{"expired", "tok", "expired", sdk.KindProvisioningExpired},
		{"bad token", "wrong", "", sdk.KindProvisioningFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeProvisioningEndpoint{token: "tok", ttl: time.Hour, status: "pending"}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			db := filepath.Join(t.TempDir(), "device.db")
			shown := make(chan sdk.ProvisioningOperation, 4)
			opts := sdk.Options{
				DeviceID: "wanted-id", ProvisioningToken: tt.token, DB: db, Server: srv.URL,
				MQTTServer: "mqtt://127.0.0.1:1", // no hub: the client starts offline
				Logger:     testLogger(), ProvisioningPoll: 10 * time.Millisecond,
				OnProvisioning: func(op sdk.ProvisioningOperation) {
					shown <- op
					fake.set(tt.decision) // the operator decides once the code is shown
				},
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := sdk.Start(ctx, opts)
			if tt.kind >= 0 {
				if sdk.KindOf(err) != tt.kind {
					t.Fatalf("Start: %v, want kind %s", err, tt.kind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			op := <-shown
			fake.mu.Lock()
			asked := fake.device
			fake.mu.Unlock()
			if op.VerificationCode != "ABCD-1234" || asked != "wanted-id" {
				t.Errorf("operation %+v, device asked %q", op, asked)
			}
			if c.DeviceID() != "approved-id" {
				t.Errorf("device id %q, want the operator's approved-id", c.DeviceID())
			}
			// Offline, enqueue works.
			if _, err := c.StreamSender("").Enqueue([]byte(`{"seq": 1}`)); err != nil {
				t.Fatal(err)
			}
			c.Close()
			// A restart uses the stored credentials: no new operation.
			c, err = sdk.Start(ctx, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.PendingMessages() != 1 || fake.operations() != 1 {
				t.Errorf("after restart: pending %d, operations created %d", c.PendingMessages(), fake.operations())
			}
		})
	}
}

// TestProvisioningResumesFakeEndpoint: a device restarted while it waits for approval
// polls the same operation instead of creating another.
func TestProvisioningResumesFakeEndpoint(t *testing.T) {
	fake := &fakeProvisioningEndpoint{token: "tok", ttl: time.Hour, status: "pending"}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	opts := sdk.Options{
		ProvisioningToken: "tok", DB: filepath.Join(t.TempDir(), "device.db"), Server: srv.URL,
		MQTTServer: "mqtt://127.0.0.1:1", Logger: testLogger(), ProvisioningPoll: 10 * time.Millisecond,
	}
	// Stop the first Start once it is polling: the operation is stored.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	go func() {
		defer cancel()
		for fake.pollCount() == 0 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond) // polling interval, not synchronisation
		}
	}()
	_, err := sdk.Start(ctx, opts)
	cancel()
	if err == nil {
		t.Fatal("Start returned without approval")
	}
	fake.set("approved")
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if n := fake.operations(); n != 1 {
		t.Fatalf("%d operations created, want 1", n)
	}
}
