package cli

import (
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newTypesCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "types",
		Aliases: []string{"device-types"},
		Short:   "List the declared device types",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			types, err := c.DeviceTypes(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, types)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tHEARTBEAT\tTIMEOUT\tFIELDS\tCOMMANDS")
			for _, t := range types {
				fields := make([]string, 0, len(t.Fields))
				for name, f := range t.Fields {
					s := name + ":" + f.Type
					if f.Unit != "" {
						s += "[" + f.Unit + "]"
					}
					fields = append(fields, s)
				}
				sort.Strings(fields)
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.Name, dash(t.HeartbeatInterval), dash(t.HeartbeatTimeout),
					dash(strings.Join(fields, " ")), dash(strings.Join(t.Commands, ",")))
			}
			return tw.Flush()
		},
	}
}
