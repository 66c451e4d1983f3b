package cli

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
)

func newProvisioningCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "provisioning",
		Short: "Provisioning tokens and operations: list, approve or reject devices asking to join",
		Long: "Devices join with a provisioning token: each creates an operation and shows its verification code;\n" +
			"an operator compares the code and approves (or rejects) the operation. `provisioning list` shows\n" +
			"the operations waiting; `provisioning tokens` manages the tokens (admin).",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newProvTokensCmd(g), newProvListCmd(g), newProvGetCmd(g), newProvApproveCmd(g), newProvRejectCmd(g))
	return cmd
}

func newProvTokensCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Create, list and revoke provisioning tokens (admin)",
		Args:  exactArgs(0, ""),
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	var req client.ProvisioningTokenRequest
	var expires string
	create := &cobra.Command{
		Use:   "create --type T [--group G] [--tag T]... [--expires D|TIME] [--max-uses N] [--auto-approve]",
		Short: "Create a provisioning token and print its secret (shown only once)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.DeviceType == "" {
				return usage(cmd, errors.New("--type is required"))
			}
			if req.MaxUses < 0 {
				return usage(cmd, errors.New("--max-uses must not be negative"))
			}
			if expires != "" {
				t, err := parseFuture(expires, time.Now())
				if err != nil {
					return usage(cmd, fmt.Errorf("--expires: %w", err))
				}
				req.ExpiresAt = &t
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			tok, err := c.CreateProvisioningToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, tok)
			}
			uses := "unlimited uses"
			if tok.MaxUses > 0 {
				uses = fmt.Sprintf("%d uses", tok.MaxUses)
			}
			fmt.Fprintf(w, "Provisioning token %s created (type %s, %s, expires %s, auto approve %v).\n",
				tok.ID, tok.DeviceType, uses, tok.ExpiresAt.Format(time.RFC3339), tok.AutoApprove)
			fmt.Fprintf(w, "Save the secret now: it is shown only once.\n\n  %s\n", tok.Secret)
			return nil
		},
	}
	f := create.Flags()
	f.StringVar(&req.DeviceType, "type", "", "device type of the devices it provisions (required)")
	f.StringVar(&req.Name, "name", "", "what the token is for")
	f.StringVar(&req.Group, "group", "", "group of the devices it provisions")
	f.StringSliceVar(&req.Tags, "tag", nil, "tag of the devices it provisions (repeatable)")
	f.StringVar(&expires, "expires", "", "when it expires: a duration from now (24h) or an RFC 3339 time (default 7 days)")
	f.IntVar(&req.MaxUses, "max-uses", 0, "how many devices it may provision (default unlimited)")
	f.BoolVar(&req.AutoApprove, "auto-approve", false, "approve its operations as they are created")

	list := &cobra.Command{
		Use: "list", Short: "List provisioning tokens (never their secrets)", Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			toks, err := c.ListProvisioningTokens(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, toks)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tTYPE\tGROUP\tUSES\tAUTO\tEXPIRES\tREVOKED")
			for _, t := range toks {
				uses := fmt.Sprintf("%d/%d", t.Uses, t.MaxUses)
				if t.MaxUses == 0 {
					uses = fmt.Sprintf("%d/-", t.Uses)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%s\t%s\n", t.ID, dash(t.Name), t.DeviceType, dash(t.Group), uses, t.AutoApprove,
					t.ExpiresAt.Format(time.RFC3339), timeOrDash(t.RevokedAt))
			}
			return tw.Flush()
		},
	}
	revoke := &cobra.Command{
		Use: "revoke TOKEN_ID", Short: "Revoke a provisioning token: it admits no more devices", Args: exactArgs(1, "TOKEN_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			tok, err := c.RevokeProvisioningToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), tok)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Provisioning token %s revoked.\n", tok.ID)
			return nil
		},
	}
	cmd.AddCommand(create, list, revoke)
	return cmd
}

// parseFuture reads a time from now on: a duration ahead, an RFC 3339
// time or Unix milliseconds.
func parseFuture(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d).UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("want a duration (24h) or an RFC 3339 time, got %q", s)
}

func newProvListCmd(g *globals) *cobra.Command {
	var status string
	var all bool
	cmd := &cobra.Command{
		Use:   "list [--status S | --all]",
		Short: "List provisioning operations waiting for approval, with their verification codes",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			if all {
				status = ""
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			ops, err := c.ListOperations(cmd.Context(), status)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, ops)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tCODE\tSTATUS\tASKED ID\tDEVICE\tTYPE\tFROM\tCREATED\tEXPIRES")
			for _, o := range ops {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.ID, o.VerificationCode, o.Status, dash(o.RequestedDeviceID),
					dash(o.DeviceID), o.DeviceType, dash(o.RemoteAddr), timeOrDash(o.CreatedAt), o.ExpiresAt.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&status, "status", "pending", "only operations with this status: pending, approved, delivered, rejected")
	cmd.Flags().BoolVar(&all, "all", false, "every operation, whatever its status")
	return cmd
}

func (g *globals) printOperation(cmd *cobra.Command, o *client.Operation) error {
	w := cmd.OutOrStdout()
	if g.json() {
		return writeJSON(w, o)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range [][2]string{
		{"id", o.ID}, {"status", o.Status}, {"verification code", dash(o.VerificationCode)},
		{"asked device id", dash(o.RequestedDeviceID)}, {"device id", dash(o.DeviceID)}, {"type", dash(o.DeviceType)},
		{"group", dash(o.Group)}, {"token", dash(o.TokenID)}, {"from", dash(o.RemoteAddr)}, {"reason", dash(o.Reason)},
		{"created", timeOrDash(o.CreatedAt)}, {"expires", o.ExpiresAt.Format(time.RFC3339)}, {"decided", timeOrDash(o.DecidedAt)},
	} {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

func newProvGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use: "get OPERATION_ID", Short: "Show a provisioning operation", Args: exactArgs(1, "OPERATION_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			o, err := c.GetOperation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return g.printOperation(cmd, o)
		},
	}
}

func newProvApproveCmd(g *globals) *cobra.Command {
	var deviceID string
	cmd := &cobra.Command{
		Use:   "approve OPERATION_ID [--device-id ID]",
		Short: "Approve a provisioning operation: the device gets its credentials at its next poll",
		Args:  exactArgs(1, "OPERATION_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			o, err := c.ApproveOperation(cmd.Context(), args[0], deviceID)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), o)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Operation %s approved: device %s (type %s) provisioned.\n", o.ID, o.DeviceID, o.DeviceType)
			return nil
		},
	}
	cmd.Flags().StringVar(&deviceID, "device-id", "", "provision under this id instead of the one the device asked for")
	return cmd
}

func newProvRejectCmd(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "reject OPERATION_ID [--reason R]",
		Short: "Reject a provisioning operation",
		Args:  exactArgs(1, "OPERATION_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			o, err := c.RejectOperation(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), o)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Operation %s rejected.\n", o.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why; the device reads it")
	return cmd
}
