// Package cli holds devicehub's subcommands: `serve` runs the hub (through
// a ServeFunc the composition root provides); the others talk to a running
// hub through the REST API client.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
	"github.com/devicehub/devicehub/internal/config"
)

// ServeFunc runs the hub until ctx is done: load the configuration at
// configPath ("" for none) with the flag overrides, build, serve.
type ServeFunc func(ctx context.Context, configPath string, o config.Overrides) error

// Exit codes.
const (
	ExitOK           = 0
	ExitError        = 1
	ExitUsage        = 2
	ExitNotFound     = 3
	ExitUnauthorized = 4 // unauthorized or forbidden
)

// errNoToken is returned when no token was given and none was found.
var errNoToken = errors.New("no API token")

// usageError is a command line the command cannot run.
type usageError struct {
	err  error
	hint string
}

func (e *usageError) Error() string {
	if e.hint == "" {
		return e.err.Error()
	}
	return e.err.Error() + "\n" + e.hint
}

func (e *usageError) Unwrap() error { return e.err }

func usage(cmd *cobra.Command, err error) error {
	return &usageError{err: err, hint: fmt.Sprintf("Run '%s --help' for usage.", cmd.CommandPath())}
}

// unknownCommand is the usage error of a mistyped subcommand, with cobra's
// suggestions ("did you mean").
func unknownCommand(cmd *cobra.Command, name string) error {
	hint := fmt.Sprintf("Run '%s --help' for usage.", cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // what cobra uses for the root
	}
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		hint = "Did you mean this?\n\t" + strings.Join(s, "\n\t") + "\n" + hint
	}
	return &usageError{err: fmt.Errorf("unknown command %q for %q", name, cmd.CommandPath()), hint: hint}
}

// hintError is an error with advice on what to do about it; its exit code
// is the wrapped error's.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + "\n" + e.hint }
func (e *hintError) Unwrap() error { return e.err }

// PrintError writes err as the CLI shows it: "Error: " and, for an answer
// of the API, the API's own message (which already names what was asked,
// so the client's wrapping is not repeated), then any hint.
func PrintError(w io.Writer, err error) {
	if err == nil {
		return
	}
	fmt.Fprintln(w, "Error: "+errorText(err))
}

func errorText(err error) string {
	var ue *usageError
	var he *hintError
	switch {
	case errors.As(err, &ue):
		if ue.hint == "" {
			return errorText(ue.err)
		}
		return errorText(ue.err) + "\n" + ue.hint
	case errors.As(err, &he):
		return errorText(he.err) + "\n" + he.hint
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Error()
	}
	var ne *net.OpError
	if errors.As(err, &ne) && ne.Op == "dial" {
		return err.Error() + "\nIs the hub running? Its API address is --server (env DEVICEHUB_SERVER; default http://127.0.0.1:8080)."
	}
	return err.Error()
}

// ExitCode returns the process exit code for an error of a command: 0 ok,
// 1 error, 2 usage, 3 not found, 4 unauthorized or forbidden.
func ExitCode(err error) int {
	var ue *usageError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ue):
		return ExitUsage
	case errors.Is(err, errNoToken):
		return ExitUnauthorized
	}
	switch client.StatusOf(err) {
	case 404:
		return ExitNotFound
	case 401, 403:
		return ExitUnauthorized
	}
	return ExitError
}

// globals are the flags every command shares.
type globals struct {
	server  string
	token   string
	output  string
	dataDir string
}

// NewRoot returns the devicehub command with every subcommand.
func NewRoot(serve ServeFunc) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "devicehub",
		Short: "devicehub: an IoT device hub",
		Long: "devicehub lets devices in over MQTT and HTTP, stores their readings, knows which are online,\n" +
			"and tells the rest of the world what happened. `devicehub serve` runs it; the other\n" +
			"commands talk to a running hub.",
		SilenceUsage:  true,
		SilenceErrors: true, // PrintError prints them, without repeating the API's context
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(cmd, args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.output != "table" && g.output != "json" {
				return usage(cmd, fmt.Errorf("--output must be table or json, got %q", g.output))
			}
			return nil
		},
	}
	root.SuggestionsMinimumDistance = 2
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usage(cmd, err) })
	pf := root.PersistentFlags()
	pf.StringVar(&g.server, "server", "http://127.0.0.1:8080", "URL of the hub's API (env DEVICEHUB_SERVER)")
	pf.StringVar(&g.token, "token", "", "API token (env DEVICEHUB_TOKEN; default: the admin token in <data-dir>/admin.token)")
	pf.StringVarP(&g.output, "output", "o", "table", "output format: table or json")
	pf.StringVar(&g.dataDir, "data-dir", "", "data directory (env DEVICEHUB_DATA_DIR; default ./devicehub-data)")
	_ = root.RegisterFlagCompletionFunc("output", cobra.FixedCompletions([]string{"table", "json"}, cobra.ShellCompDirectiveNoFileComp))

	root.AddCommand(
		newServeCmd(g, serve),
		newProvisionCmd(g),
		newDevicesCmd(g),
		newReadingsCmd(g),
		newLatestCmd(g), newAggregateCmd(g), // latest.go
		newEventsCmd(g),
		newTypesCmd(g),
		newTokenCmd(g),
		newAuditCmd(g),
		newGroupsCmd(g),
		newProvisioningCmd(g),
		newBenchCmd(serve),
		newSimulateCmd(g),
		newCommandCmd(g), newTwinCmd(g), newSendCmd(g), // devicecmd.go
		newMonitorsCmd(g),                   // monitors.go
		newTemplatesCmd(g), newConfigCmd(g), // config.go
		newAlertsCmd(g), // alerts.go
		newUsersCmd(g),
		newFirmwareCmd(g), newRolloutCmd(g), // firmware.go
	)
	setExamples(root)
	return root
}

// Run executes the command line args and returns the exit code, printing
// errors to stderr: a main function in one call.
func Run(ctx context.Context, serve ServeFunc, args []string, stdout, stderr io.Writer) int {
	root := NewRoot(serve)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	PrintError(stderr, err)
	return ExitCode(err)
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			if n == 0 && cmd.HasAvailableSubCommands() {
				return unknownCommand(cmd, args[0])
			}
			if n == 0 {
				return usage(cmd, fmt.Errorf("unexpected argument %q", args[0]))
			}
			return usage(cmd, fmt.Errorf("want %s, got %d arguments", names, len(args)))
		}
		return nil
	}
}

func lookupEnv(name string) string {
	v, _ := os.LookupEnv(name)
	return v
}

// client returns an API client from the flags, the environment and the
// admin token file, in that order.
func (g *globals) client(cmd *cobra.Command) (*client.Client, error) {
	server := g.server
	if !cmd.Flags().Changed("server") {
		if v := lookupEnv("DEVICEHUB_SERVER"); v != "" {
			server = v
		}
	}
	token := g.token
	if !cmd.Flags().Changed("token") {
		token = lookupEnv("DEVICEHUB_TOKEN")
	}
	if token == "" {
		path := filepath.Join(g.resolveDataDir(cmd), "admin.token")
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w: pass --token, set DEVICEHUB_TOKEN, or run on the hub's machine where %s exists (%v)", errNoToken, path, err)
		}
		token = strings.TrimSpace(string(b))
	}
	return client.New(server, token, nil), nil
}

func (g *globals) resolveDataDir(cmd *cobra.Command) string {
	if cmd.Flags().Changed("data-dir") {
		return g.dataDir
	}
	if v := lookupEnv("DEVICEHUB_DATA_DIR"); v != "" {
		return v
	}
	return config.Default().DataDir
}

func (g *globals) json() bool { return g.output == "json" }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// codeOf returns the API error code in err's chain, "" if none.
func codeOf(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return ""
}
