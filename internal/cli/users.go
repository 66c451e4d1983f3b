package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

func newUsersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "users",
		Short: "Add, list and remove dashboard users (admin)",
		Long: "Dashboard users sign in to the web dashboard with a name and a password. Each has a role,\n" +
			"the same as tokens': viewer (reads), operator (also changes devices) or admin (also manages\n" +
			"tokens, users and reads the audit trail). Tokens stay for machines.",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newUsersAddCmd(g), newUsersListCmd(g), newUsersRemoveCmd(g))
	return cmd
}

func newUsersAddCmd(g *globals) *cobra.Command {
	var role string
	var fromStdin bool
	cmd := &cobra.Command{
		Use:   "add NAME --role viewer|operator|admin",
		Short: "Add a user; prompts for the password (or reads it from stdin with --password-stdin)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch role {
			case "viewer", "operator", "admin":
			default:
				return usage(cmd, fmt.Errorf("--role must be viewer, operator or admin, got %q", role))
			}
			password, err := readPassword(cmd, fromStdin)
			if err != nil {
				return err
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			u, err := c.CreateUser(cmd.Context(), args[0], role, password)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), u)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "User %s (role %s) added: sign in at the hub's address.\n", u.Name, u.Role)
			return nil
		},
	}
	cmd.Flags().StringVar(&role, "role", "viewer", "viewer, operator or admin")
	cmd.Flags().BoolVar(&fromStdin, "password-stdin", false, "read the password from the first line of stdin (for scripts)")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"viewer", "operator", "admin"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// readPassword reads a new password: from stdin's first line with
// --password-stdin, else twice from the terminal without echo.
func readPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	in := cmd.InOrStdin()
	if fromStdin {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password from stdin: %w", err)
		}
		pw := strings.TrimRight(line, "\r\n")
		if pw == "" {
			return "", usage(cmd, errors.New("--password-stdin: stdin holds no password"))
		}
		return pw, nil
	}
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", usage(cmd, errors.New("no terminal to prompt for the password: use --password-stdin"))
	}
	errw := cmd.ErrOrStderr()
	fmt.Fprint(errw, "Password: ")
	a, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(errw)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	fmt.Fprint(errw, "Again: ")
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(errw)
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if string(a) != string(b) {
		return "", errors.New("the passwords differ")
	}
	return string(a), nil
}

func newUsersListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List dashboard users",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			us, err := c.ListUsers(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, us)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED")
			for _, u := range us {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, u.Role, u.CreatedAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
}

func newUsersRemoveCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a user and sign out its sessions",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteUser(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "User %s removed.\n", args[0])
			return nil
		},
	}
}
