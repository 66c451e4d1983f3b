package hub_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/hub"
)

// runUntilReady builds and runs a hub from yaml (data_dir is dir) and
// returns it once it serves, or the error that stopped it first. A hub
// that serves is stopped when the test ends.
func runUntilReady(t *testing.T, dir, yaml string) (*hub.Hub, error) {
	t.Helper()
	cfg := loadTestConfig(t, dir, fmt.Sprintf("data_dir: %s\n%s", dir, yaml))
	ctx, cancel := context.WithCancel(context.Background())
	h, err := hub.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		return nil, err
	}
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx) }()
	select {
	case <-h.Ready():
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("hub run: %v", err)
			}
		})
		return h, nil
	case err := <-done:
		cancel()
		if err == nil {
			err = errors.New("hub stopped before it was ready")
		}
		return nil, err
	case <-time.After(30 * time.Second):
		cancel()
		<-done
		t.Fatal("hub not ready after 30s")
		return nil, nil
	}
}

// TestPortInUseCreatesNoAdminToken starts a hub whose MQTT port is taken
// (as Mosquitto takes 1883): the start fails with an error naming the flag
// and the environment variable, and creates no admin token; the next start
// on a free port creates the token and says so.
func TestPortInUseCreatesNoAdminToken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	_, err = runUntilReady(t, dir, fmt.Sprintf("mqtt: {addr: %q}\nhttp: {addr: \"127.0.0.1:0\"}\n", taken.Addr().String()))
	if err == nil {
		t.Fatal("the hub started on a port in use")
	}
	for _, want := range []string{"MQTT address " + taken.Addr().String() + " is in use", "--mqtt-addr", "DEVICEHUB_MQTT_ADDR", "mqtt.addr", "address already in use"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "admin.token")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed start left admin.token (stat: %v)", err)
	}

	h, err := runUntilReady(t, dir, "mqtt: {addr: \"127.0.0.1:0\"}\nhttp: {addr: \"127.0.0.1:0\"}\n")
	if err != nil {
		t.Fatal(err)
	}
	if h.Admin().Secret == "" {
		t.Fatal("the first start that serves created no admin token")
	}
	b, err := os.ReadFile(filepath.Join(dir, "admin.token"))
	if err != nil || strings.TrimSpace(string(b)) != h.Admin().Secret {
		t.Fatalf("admin.token %q, %v; want the secret the start shows", b, err)
	}
	if _, err := client.New("http://"+h.HTTPAddr(), h.Admin().Secret, nil).ListTokens(context.Background()); err != nil {
		t.Fatalf("the admin token does not work: %v", err)
	}
}

// TestHTTPPortInUse: the HTTP address names its own flag and variable.
func TestHTTPPortInUse(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	_, err = runUntilReady(t, t.TempDir(), fmt.Sprintf("mqtt: {addr: \"127.0.0.1:0\"}\nhttp: {addr: %q}\n", taken.Addr().String()))
	if err == nil || !strings.Contains(err.Error(), "--http-addr") || !strings.Contains(err.Error(), "DEVICEHUB_HTTP_ADDR") {
		t.Fatalf("error %v, want one naming --http-addr and DEVICEHUB_HTTP_ADDR", err)
	}
}

// TestTwoHubsOneDatabaseAgreeOnAdminToken starts two hubs from different
// data directories on one PostgreSQL schema: the second creates no second
// admin token and names the first's.
func TestTwoHubsOneDatabaseAgreeOnAdminToken(t *testing.T) {
	storage := postgresStorage(t)
	ports := "mqtt: {addr: \"127.0.0.1:0\"}\nhttp: {addr: \"127.0.0.1:0\"}\n"
	dirA, dirB := t.TempDir(), t.TempDir()
	a, err := runUntilReady(t, dirA, ports+storage)
	if err != nil {
		t.Fatal(err)
	}
	if a.Admin().Secret == "" {
		t.Fatal("the first hub created no admin token")
	}
	b, err := runUntilReady(t, dirB, ports+storage)
	if err != nil {
		t.Fatal(err)
	}
	if b.Admin().Secret != "" {
		t.Fatal("the second hub created a second admin token")
	}
	if _, err := os.Stat(filepath.Join(dirB, "admin.token")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the second hub wrote admin.token (stat: %v)", err)
	}
	// The first hub's token works on the second hub, and is the one the
	// second names.
	toks, err := client.New("http://"+b.HTTPAddr(), a.Admin().Secret, nil).ListTokens(context.Background())
	if err != nil {
		t.Fatalf("the first hub's admin token on the second hub: %v", err)
	}
	var admins []string
	for _, tk := range toks {
		if tk.Role == "admin" && tk.RevokedAt == nil {
			admins = append(admins, tk.ID)
		}
	}
	if len(admins) != 1 || b.Admin().Existing == nil || b.Admin().Existing.ID != admins[0] {
		t.Fatalf("live admin tokens %v, the second hub names %+v", admins, b.Admin().Existing)
	}
	// Copying the file, as the second hub's message says, makes the CLI
	// work there: the next start finds it and says nothing.
	tok, _ := os.ReadFile(filepath.Join(dirA, "admin.token"))
	if err := os.WriteFile(filepath.Join(dirB, "admin.token"), tok, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := runUntilReady(t, dirB, ports+storage)
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin().Secret != "" || c.Admin().Existing != nil {
		t.Errorf("a hub whose file holds the admin token: %+v", c.Admin())
	}
}
