package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/api/apitest"
)

func TestTokenCommands(t *testing.T) {
	_, url := hub(t)
	ctx := context.Background()
	admin := []string{"--server", url, "--token", apitest.AdminToken}

	r := runCLI(t, ctx, noServe, append([]string{"token", "create", "--name", "dash2", "--role", "viewer", "--output", "json"}, admin...)...)
	if r.code != 0 {
		t.Fatalf("create: exit %d: %s", r.code, r.err)
	}
	var tok map[string]any
	if err := json.Unmarshal([]byte(r.out), &tok); err != nil {
		t.Fatalf("output %q: %v", r.out, err)
	}
	secret, _ := tok["token"].(string)
	id, _ := tok["id"].(string)
	if secret == "" || id == "" || tok["role"] != "viewer" {
		t.Fatalf("created %v", tok)
	}
	// The new secret works as a viewer: it may read, not create tokens.
	viewer := []string{"--server", url, "--token", secret}
	if r := runCLI(t, ctx, noServe, append([]string{"types"}, viewer...)...); r.code != 0 || !strings.Contains(r.out, "WeatherStation") {
		t.Errorf("types as viewer: exit %d %q %s", r.code, r.out, r.err)
	}
	if r := runCLI(t, ctx, noServe, append([]string{"token", "create", "--name", "x", "--role", "admin"}, viewer...)...); r.code != ExitUnauthorized {
		t.Errorf("viewer creates token: exit %d, want %d: %s", r.code, ExitUnauthorized, r.err)
	}

	r = runCLI(t, ctx, noServe, append([]string{"token", "list"}, admin...)...)
	if r.code != 0 || !strings.Contains(r.out, "dash2") || strings.Contains(r.out, secret) {
		t.Errorf("list: exit %d\n%s", r.code, r.out)
	}
	r = runCLI(t, ctx, noServe, append([]string{"token", "revoke", id}, admin...)...)
	if r.code != 0 || !strings.Contains(r.out, "revoked") {
		t.Errorf("revoke: exit %d %s %s", r.code, r.out, r.err)
	}
	if r := runCLI(t, ctx, noServe, append([]string{"types"}, viewer...)...); r.code != ExitUnauthorized {
		t.Errorf("revoked token: exit %d", r.code)
	}
	if r := runCLI(t, ctx, noServe, append([]string{"token", "revoke", "nope"}, admin...)...); r.code != ExitNotFound {
		t.Errorf("revoke missing: exit %d", r.code)
	}

	// The audit trail shows those changes, and the refused one.
	r = runCLI(t, ctx, noServe, append([]string{"audit", "--output", "json"}, admin...)...)
	if r.code != 0 {
		t.Fatalf("audit: exit %d %s", r.code, r.err)
	}
	var page struct {
		Entries []struct {
			OperationID string `json:"operation_id"`
			Status      int    `json:"status"`
			TokenName   string `json:"token_name"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(r.out), &page); err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, e := range page.Entries {
		ops = append(ops, e.OperationID+":"+e.TokenName)
	}
	if got := strings.Join(ops, ","); got != "revokeToken:admin,revokeToken:admin,createToken:dash2,createToken:admin" {
		t.Errorf("audit %s", got)
	}
	if r := runCLI(t, ctx, noServe, append([]string{"audit", "--failed"}, admin...)...); r.code != 0 || !strings.Contains(r.out, "403") {
		t.Errorf("audit --failed: %d %s", r.code, r.out)
	}
}

func TestTokenCreateUsage(t *testing.T) {
	_, url := hub(t)
	for _, args := range [][]string{
		{"token", "create", "--name", "x", "--role", "root"},
		{"token", "revoke"},
		{"audit", "--since", "whenever"},
	} {
		r := runCLI(t, context.Background(), noServe, append(args, "--server", url, "--token", apitest.AdminToken)...)
		if r.code != ExitUsage {
			t.Errorf("%v: exit %d, want %d: %s", args, r.code, ExitUsage, r.err)
		}
	}
}

func TestDevicesFiltersAndMessages(t *testing.T) {
	_, url := hub(t)
	ctx := context.Background()
	admin := []string{"--server", url, "--token", apitest.AdminToken}
	for _, id := range []string{"door-1", "lamp-1", "door-2"} {
		if r := runCLI(t, ctx, noServe, append([]string{"provision", id, "--type", "WeatherStation", "--tag", strings.Split(id, "-")[0]}, admin...)...); r.code != 0 {
			t.Fatal(r.err)
		}
	}
	r := runCLI(t, ctx, noServe, append([]string{"devices", "--tag", "door", "--limit", "1", "--all", "-o", "json"}, admin...)...)
	if r.code != 0 || strings.Count(r.out, `"id"`) != 2 || strings.Contains(r.out, "lamp") {
		t.Errorf("devices --tag --all: %d %s %s", r.code, r.out, r.err)
	}
	r = runCLI(t, ctx, noServe, append([]string{"devices", "-q", "LAMP"}, admin...)...)
	if r.code != 0 || !strings.Contains(r.out, "lamp-1") || strings.Contains(r.out, "door") {
		t.Errorf("devices -q: %d %s", r.code, r.out)
	}
	r = runCLI(t, ctx, noServe, append([]string{"devices", "messages", "door-1"}, admin...)...)
	if r.code != 0 || !strings.Contains(r.out, "TOPIC") {
		t.Errorf("devices messages: %d %s %s", r.code, r.out, r.err)
	}
}

func TestCompletion(t *testing.T) {
	_, url := hub(t)
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		r := runCLI(t, context.Background(), noServe, "completion", shell)
		if r.code != 0 || !strings.Contains(r.out, "devicehub") {
			t.Errorf("completion %s: exit %d %.100s %s", shell, r.code, r.out, r.err)
		}
	}
	// Dynamic completion asks the hub.
	r := runCLI(t, context.Background(), noServe, "__complete", "token", "create", "--role", "")
	if !strings.Contains(r.out, "operator") {
		t.Errorf("role completion %q", r.out)
	}
	r = runCLI(t, context.Background(), noServe, "__complete", "token", "revoke", "--server", url, "--token", apitest.AdminToken, "")
	if !strings.Contains(r.out, "t3\tdash (viewer)") {
		t.Errorf("token id completion %q %s", r.out, r.err)
	}
}
