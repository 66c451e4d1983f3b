package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newGroupsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "groups",
		Short: "List device groups (create, rename, devices)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.listGroups(cmd)
		},
	}
	cmd.AddCommand(
		&cobra.Command{
			Use: "list", Short: "List groups with their device counts", Args: exactArgs(0, ""),
			RunE: func(cmd *cobra.Command, args []string) error { return g.listGroups(cmd) },
		},
		newGroupCreateCmd(g),
		&cobra.Command{
			Use: "rename GROUP_ID NAME", Short: "Change a group's name (its id, and so its devices, stay)", Args: exactArgs(2, "GROUP_ID and NAME"),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, err := g.client(cmd)
				if err != nil {
					return err
				}
				grp, err := c.RenameGroup(cmd.Context(), args[0], args[1])
				if err != nil {
					return err
				}
				if g.json() {
					return writeJSON(cmd.OutOrStdout(), grp)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "Group %s renamed to %q.\n", grp.ID, grp.Name)
				return nil
			},
		},
		newGroupDevicesCmd(g),
	)
	return cmd
}

func (g *globals) listGroups(cmd *cobra.Command) error {
	c, err := g.client(cmd)
	if err != nil {
		return err
	}
	gs, err := c.ListGroups(cmd.Context())
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if g.json() {
		return writeJSON(w, gs)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tDEVICES\tCREATED")
	for _, grp := range gs {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", grp.ID, grp.Name, grp.Devices, grp.CreatedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

func newGroupCreateCmd(g *globals) *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use: "create GROUP_ID [--name N]", Short: "Create a group", Args: exactArgs(1, "GROUP_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			grp, err := c.CreateGroup(cmd.Context(), args[0], name)
			if err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), grp)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Group %s (%s) created.\n", grp.ID, grp.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "display name (default: the id)")
	return cmd
}

func newGroupDevicesCmd(g *globals) *cobra.Command {
	var after string
	var limit int
	cmd := &cobra.Command{
		Use: "devices GROUP_ID", Short: "List a group's devices", Args: exactArgs(1, "GROUP_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			list, err := c.GroupDevices(cmd.Context(), args[0], after, limit)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, list)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTYPE\tNAME\tSTATUS\tCONNECTED\tDISABLED")
			for _, d := range list.Devices {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%v\n", d.ID, d.Type, dash(d.Name), dash(d.Status), d.Connected, d.Disabled)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if list.Next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "more: --after %s\n", list.Next)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&after, "after", "", "list devices after this id (the previous page's last)")
	cmd.Flags().IntVar(&limit, "limit", 0, "page size (default 100, at most 1000)")
	return cmd
}
