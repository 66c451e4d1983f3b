package cli

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/devicehub/devicehub/internal/api/apitest"
)

// TestErrorsSayItOnce: an error of the API is printed with its own message
// (which names what was asked) once, not wrapped again by the client, and
// with a hint where one helps.
func TestErrorsSayItOnce(t *testing.T) {
	_, url := hub(t)
	ctx := context.Background()
	admin := []string{"--server", url, "--token", apitest.AdminToken}
	if r := runCLI(t, ctx, noServe, append([]string{"provision", "ws-1", "--type", "WeatherStation"}, admin...)...); r.code != 0 {
		t.Fatalf("provision: exit %d: %s", r.code, r.err)
	}
	tests := []struct {
		name  string
		args  []string
		code  int
		once  string // said exactly once
		wants []string
	}{
		{"unknown device", []string{"devices", "get", "nosuch"}, ExitNotFound, "nosuch", []string{"not found", "not_found"}},
		{"provision twice", []string{"provision", "ws-1", "--type", "WeatherStation"}, ExitError, "ws-1", []string{"already exists", "--replace"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runCLI(t, ctx, noServe, append(tt.args, admin...)...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d: %s", r.code, tt.code, r.err)
			}
			if n := strings.Count(r.err, tt.once); n != 1 {
				t.Errorf("%q said %d times in %q", tt.once, n, r.err)
			}
			if strings.Count(r.err, "Error:") != 1 {
				t.Errorf("stderr %q: want one Error:", r.err)
			}
			for _, w := range tt.wants {
				if !strings.Contains(r.err, w) {
					t.Errorf("stderr %q does not say %q", r.err, w)
				}
			}
		})
	}
}

// TestDidYouMean: a mistyped command gets cobra's suggestions, at the top
// level and under a command group.
func TestDidYouMean(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"devics"}, "\tdevices"},
		{[]string{"provison", "dev1"}, "\tprovision"},
		{[]string{"devices", "gt", "dev1"}, "\tget"},
		{[]string{"provisioning", "aprove", "x"}, "\tapprove"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := runCLI(t, context.Background(), noServe, tt.args...)
			if r.code != ExitUsage {
				t.Errorf("exit %d, want %d", r.code, ExitUsage)
			}
			if !strings.Contains(r.err, "Did you mean this?") || !strings.Contains(r.err, tt.want) {
				t.Errorf("stderr %q, want a suggestion of %q", r.err, tt.want)
			}
		})
	}
}

// TestTokenCreateDefaultName: --name may be left out, as the README does.
func TestTokenCreateDefaultName(t *testing.T) {
	_, url := hub(t)
	r := runCLI(t, context.Background(), noServe, "token", "create", "--role", "viewer", "--output", "json", "--server", url, "--token", apitest.AdminToken)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.err)
	}
	var tok struct{ Name, Role string }
	if err := json.Unmarshal([]byte(r.out), &tok); err != nil {
		t.Fatal(err)
	}
	if tok.Role != "viewer" || !regexp.MustCompile(`^viewer-\d{8}-\d{6}$`).MatchString(tok.Name) {
		t.Errorf("token %+v", tok)
	}
}
