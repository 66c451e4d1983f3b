package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Create, list and revoke operator tokens (admin)",
		Long: "Operator tokens authenticate the API and this CLI. Each has a role: viewer (reads),\n" +
			"operator (also provisions devices) or admin (also manages tokens and reads the audit trail).",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTokenCreateCmd(g), newTokenListCmd(g), newTokenRevokeCmd(g))
	return cmd
}

func newTokenCreateCmd(g *globals) *cobra.Command {
	var name, role string
	cmd := &cobra.Command{
		Use:   "create [--name N] [--role viewer|operator|admin]",
		Short: "Create a token and print its secret (shown only once)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch role {
			case "viewer", "operator", "admin":
			default:
				return usage(cmd, fmt.Errorf("--role must be viewer, operator or admin, got %q", role))
			}
			if strings.TrimSpace(name) == "" {
				name = defaultTokenName(role, time.Now())
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			tok, err := c.CreateToken(cmd.Context(), name, role)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, tok)
			}
			fmt.Fprintf(w, "Token %s (%s, role %s) created. Save the secret now: it is shown only once.\n\n  %s\n", tok.ID, tok.Name, tok.Role, tok.Secret)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "what the token is for, shown in lists and the audit trail (default: the role and the time, e.g. viewer-20260102-150405)")
	cmd.Flags().StringVar(&role, "role", "viewer", "viewer, operator or admin")
	_ = cmd.RegisterFlagCompletionFunc("role", cobra.FixedCompletions([]string{"viewer", "operator", "admin"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// defaultTokenName names a token created without --name.
func defaultTokenName(role string, now time.Time) string {
	return role + "-" + now.UTC().Format("20060102-150405")
}

func newTokenListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List tokens (never their secrets)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			toks, err := c.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, toks)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tCREATED\tREVOKED")
			for _, t := range toks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, t.CreatedAt.Format(time.RFC3339), timeOrDash(t.RevokedAt))
			}
			return tw.Flush()
		},
	}
}

func newTokenRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke TOKEN_ID",
		Short: "Revoke a token: it stops working at once",
		Args:  exactArgs(1, "TOKEN_ID"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			c, err := g.client(cmd)
			if err != nil {
				return nil, cobra.ShellCompDirectiveError
			}
			toks, err := c.ListTokens(cmd.Context())
			if err != nil {
				return nil, cobra.ShellCompDirectiveError
			}
			var ids []string
			for _, t := range toks {
				if t.RevokedAt == nil {
					ids = append(ids, t.ID+"\t"+t.Name+" ("+t.Role+")")
				}
			}
			return ids, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			tok, err := c.RevokeToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), tok)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Token %s (%s) revoked.\n", tok.ID, tok.Name)
			return nil
		},
	}
}
