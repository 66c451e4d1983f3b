package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
)

func newAuditCmd(g *globals) *cobra.Command {
	var q client.AuditQuery
	var since string
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Show the audit trail: what operators asked of the API, newest first (admin)",
		Long: "Show the audit trail: who (token) asked what of the API (method, path, operation, target), when,\n" +
			"and the answer's status, allowed or refused, newest first. --since takes an RFC 3339 time,\n" +
			"Unix milliseconds, or a duration meaning that long ago (\"24h\").\n" +
			"What a device sent (accepted or rejected) is its message log: devicehub devices messages DEVICE_ID.",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if q.Since, err = parseWhen(since, time.Now()); err != nil {
				return usage(cmd, fmt.Errorf("--since: %w", err))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			page, err := c.Audit(cmd.Context(), q)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, page)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tTOKEN\tROLE\tMETHOD\tPATH\tOPERATION\tTARGET\tSTATUS")
			for _, e := range page.Entries {
				who := dash(e.TokenName)
				if e.TokenID != "" {
					who += " (" + e.TokenID + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", e.Time.Format(time.RFC3339), who, dash(e.Role),
					e.Method, e.Path, dash(e.OperationID), dash(e.Target), e.Status)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --cursor %s\n", page.Next)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&q.TokenID, "token-id", "", "only changes asked with this token")
	f.StringVar(&q.Target, "target", "", "only changes of this target (device id, token id)")
	f.BoolVar(&q.Failed, "failed", false, "only refused or failed changes")
	f.StringVar(&since, "since", "", "only changes since this time")
	f.StringVar(&q.Cursor, "cursor", "", "the next page's cursor")
	f.IntVar(&q.Limit, "limit", 0, "page size (default 100, at most 1000)")
	return cmd
}
