package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/devicehub/devicehub/client"
)

// jsonObjectArg reads a JSON object given inline, as @FILE or as @- (stdin).
func jsonObjectArg(cmd *cobra.Command, flag, v string) (map[string]any, error) {
	b := []byte(v)
	if rest, ok := strings.CutPrefix(v, "@"); ok {
		var err error
		if rest == "-" {
			b, err = io.ReadAll(cmd.InOrStdin())
		} else {
			b, err = os.ReadFile(rest)
		}
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", flag, err)
		}
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, usage(cmd, fmt.Errorf("--%s must be a JSON object (inline, @FILE or @-): %s", flag, strings.TrimSpace(string(b))))
	}
	return m, nil
}

// keyValues parses NAME=VALUE flags into a map.
func keyValues(cmd *cobra.Command, flag string, kvs []string) (map[string]string, error) {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, usage(cmd, fmt.Errorf("--%s %q: want NAME=VALUE", flag, kv))
		}
		m[k] = v
	}
	return m, nil
}

func sortedPairs(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, " ")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printJob(w io.Writer, j *client.ConfigJob) {
	if j == nil {
		return
	}
	fmt.Fprintf(w, "Re-render job %s: %d device(s) affected, %d done, %d changed, %d failed (%s).\n", j.ID, j.Affected, j.Done, j.Changed, j.Failed, j.Status)
}

func newTemplatesCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "templates",
		Aliases: []string{"template"},
		Short:   "Configuration templates: JSON documents with {{ variables }} that devices and groups use",
		Long: "A template is a named JSON document whose strings and keys may use {{ variable }}, with default\n" +
			"values for its variables. A default template is given to every new device of a matching type; a\n" +
			"required one cannot be removed from a device. See `devicehub config` for devices and groups.",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newTemplatesListCmd(g), newTemplatesGetCmd(g), newTemplatesCreateCmd(g), newTemplatesEditCmd(g), newTemplatesDeleteCmd(g))
	return cmd
}

func newTemplatesListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List templates",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			ts, err := c.Templates(cmd.Context())
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, ts)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tDEFAULT\tREQUIRED\tTYPES\tVERSION\tUPDATED")
			for _, t := range ts {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%v\t%s\t%d\t%s\n", t.ID, t.Name, t.Default, t.Required, orDash(strings.Join(t.Types, ",")),
					t.Version, t.UpdatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
}

func printTemplate(g *globals, cmd *cobra.Command, t *client.Template, j *client.ConfigJob) error {
	w := cmd.OutOrStdout()
	if g.json() {
		return writeJSON(w, client.TemplateResult{Template: *t, Job: j})
	}
	fmt.Fprintf(w, "Template %s (%s), version %d\n", t.ID, t.Name, t.Version)
	fmt.Fprintf(w, "  default: %v  required: %v  types: %s\n", t.Default, t.Required, orDash(strings.Join(t.Types, ",")))
	fmt.Fprintf(w, "  variable defaults: %s\n", orDash(sortedPairs(t.Defaults)))
	b, err := json.MarshalIndent(t.Config, "  ", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "  config: %s\n", b)
	printJob(w, j)
	return nil
}

func newTemplatesGetCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "get TEMPLATE_ID",
		Short: "Show a template",
		Args:  exactArgs(1, "TEMPLATE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			t, err := c.Template(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printTemplate(g, cmd, t, nil)
		},
	}
}

// templateFlags are the flags of templates create and edit.
type templateFlags struct {
	name, config       string
	defaults, types    []string
	isDefault, require bool
}

func (f *templateFlags) add(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.name, "name", "", "display name (default: the id)")
	fl.StringVar(&f.config, "config", "", `the JSON document: inline ('{"ntp": {"server": "{{ ntp_server }}"}}'), @FILE or @-`)
	fl.StringArrayVar(&f.defaults, "default-var", nil, "a variable's default value, NAME=VALUE (repeatable; replaces all)")
	fl.StringArrayVar(&f.types, "type", nil, "a device type it applies to (repeatable; none: all types)")
	fl.BoolVar(&f.isDefault, "default", false, "give it to every new device of a matching type")
	fl.BoolVar(&f.require, "required", false, "it cannot be removed from a device that has it")
}

// apply sets the flags that were given on spec.
func (f *templateFlags) apply(cmd *cobra.Command, spec *client.TemplateSpec) error {
	fl := cmd.Flags()
	if fl.Changed("name") {
		spec.Name = f.name
	}
	if fl.Changed("config") {
		m, err := jsonObjectArg(cmd, "config", f.config)
		if err != nil {
			return err
		}
		spec.Config = m
	}
	if fl.Changed("default-var") {
		m, err := keyValues(cmd, "default-var", f.defaults)
		if err != nil {
			return err
		}
		spec.Defaults = m
	}
	if fl.Changed("type") {
		spec.Types = f.types
	}
	if fl.Changed("default") {
		spec.Default = f.isDefault
	}
	if fl.Changed("required") {
		spec.Required = f.require
	}
	return nil
}

func newTemplatesCreateCmd(g *globals) *cobra.Command {
	var f templateFlags
	cmd := &cobra.Command{
		Use:   "create TEMPLATE_ID --config JSON|@FILE [--default-var NAME=VALUE...] [--default] [--required] [--type T...]",
		Short: "Create a template",
		Args:  exactArgs(1, "TEMPLATE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("config") {
				return usage(cmd, errors.New("--config is required"))
			}
			spec := client.TemplateSpec{ID: args[0]}
			if err := f.apply(cmd, &spec); err != nil {
				return err
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			t, err := c.CreateTemplate(cmd.Context(), spec)
			if err != nil {
				return err
			}
			return printTemplate(g, cmd, t, nil)
		},
	}
	f.add(cmd)
	return cmd
}

func newTemplatesEditCmd(g *globals) *cobra.Command {
	var f templateFlags
	cmd := &cobra.Command{
		Use:   "edit TEMPLATE_ID [--config JSON|@FILE] [--default-var NAME=VALUE...] [--name N] [--default=BOOL] [--required=BOOL] [--type T...]",
		Short: "Change a template; the devices using it are re-rendered in the background",
		Long: "Change the fields given (the others stay). An edit that would break the rendering of a device\n" +
			"that uses the template is refused, naming the devices and their missing variables. Otherwise a\n" +
			"background job re-renders the devices (see `devicehub config job`); each device whose checksum\n" +
			"changes is told at once.",
		Args: exactArgs(1, "TEMPLATE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			cur, err := c.Template(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			spec := client.TemplateSpec{Name: cur.Name, Config: cur.Config, Defaults: cur.Defaults, Default: cur.Default, Required: cur.Required, Types: cur.Types}
			if err := f.apply(cmd, &spec); err != nil {
				return err
			}
			r, err := c.UpdateTemplate(cmd.Context(), args[0], spec)
			if err != nil {
				return err
			}
			return printTemplate(g, cmd, &r.Template, r.Job)
		},
	}
	f.add(cmd)
	return cmd
}

func newTemplatesDeleteCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "delete TEMPLATE_ID",
		Short: "Delete a template that no group or device uses",
		Args:  exactArgs(1, "TEMPLATE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			if err := c.DeleteTemplate(cmd.Context(), args[0]); err != nil {
				return err
			}
			if g.json() {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"deleted": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Template %s deleted.\n", args[0])
			return nil
		},
	}
}

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Devices' and groups' configurations: templates, variables, status, history",
		Long: "A device's configuration is its group's templates, then its own, merged in order, then its\n" +
			"overrides, rendered with variables (device over group over template defaults, plus device_id,\n" +
			"name, type, group, management_ip) in its backend's format (json, yaml, env or a text/template).\n" +
			"Devices learn of a change on devices/{id}/config (MQTT, retained) or by polling\n" +
			"/api/v1/device/config/checksum, and report applied or error.",
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newConfigGetCmd(g), newConfigSetCmd(g, false), newConfigSetCmd(g, true), newConfigListCmd(g),
		newConfigActivationCmd(g, true), newConfigActivationCmd(g, false), newConfigHistoryCmd(g), newConfigRestoreCmd(g),
		newConfigGroupCmd(g), newConfigJobCmd(g))
	return cmd
}

func printDeviceConfig(g *globals, cmd *cobra.Command, r *client.DeviceConfigResult, rendered bool) error {
	w := cmd.OutOrStdout()
	if g.json() {
		return writeJSON(w, r)
	}
	c := r.Config
	fmt.Fprintf(w, "Device %s: %s since %s", c.DeviceID, c.Status, c.StatusSince.Local().Format(time.DateTime))
	if c.Error != "" {
		fmt.Fprintf(w, " (%s)", c.Error)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  checksum:  %s\n", c.Checksum)
	if r.OldChecksum != "" && r.OldChecksum != c.Checksum {
		fmt.Fprintf(w, "  was:       %s\n", r.OldChecksum)
	}
	if c.AppliedChecksum != "" && c.AppliedChecksum != c.Checksum {
		fmt.Fprintf(w, "  applied:   %s\n", c.AppliedChecksum)
	}
	fmt.Fprintf(w, "  backend:   %s\n  templates: %s\n  vars:      %s\n", c.Backend, orDash(strings.Join(c.Templates, ", ")), orDash(sortedPairs(c.Vars)))
	if len(c.Overrides) > 0 {
		b, _ := json.Marshal(c.Overrides)
		fmt.Fprintf(w, "  overrides: %s\n", b)
	}
	if c.IsWorking != nil {
		fmt.Fprintf(w, "  management channel working: %v %s\n", *c.IsWorking, c.FailureReason)
	}
	if rendered && c.Rendered != nil {
		fmt.Fprintf(w, "--- rendered ---\n%s\n", strings.TrimRight(*c.Rendered, "\n"))
	}
	return nil
}

func newConfigGetCmd(g *globals) *cobra.Command {
	var rendered bool
	cmd := &cobra.Command{
		Use:   "get DEVICE_ID [--rendered]",
		Short: "Show a device's configuration, status and checksum",
		Args:  exactArgs(1, "DEVICE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			dc, err := c.DeviceConfig(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printDeviceConfig(g, cmd, &client.DeviceConfigResult{Config: *dc}, rendered)
		},
	}
	cmd.Flags().BoolVar(&rendered, "rendered", false, "print the rendered bytes too")
	return cmd
}

func newConfigSetCmd(g *globals, preview bool) *cobra.Command {
	var (
		backend, overrides  string
		templates, vars     []string
		noTemplates, noVars bool
	)
	use, short := "set", "Set a device's templates (in order), variables, overrides or backend"
	if preview {
		use, short = "preview", "Render a device's configuration as these changes would make it, saving nothing"
	}
	cmd := &cobra.Command{
		Use:   use + " DEVICE_ID [--template T...] [--var NAME=VALUE...] [--overrides JSON|@FILE] [--backend json|yaml|env|NAME]",
		Short: short,
		Long: "Flags not given leave that part as it is. --template gives the whole ordered list (later templates\n" +
			"win); --var gives all the device's variables. A variable missing for the rendering is refused,\n" +
			"naming it.",
		Args: exactArgs(1, "DEVICE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var u client.DeviceConfigUpdate
			fl := cmd.Flags()
			if fl.Changed("backend") {
				u.Backend = &backend
			}
			if fl.Changed("template") || noTemplates {
				l := append([]string{}, templates...)
				u.Templates = &l
			}
			if fl.Changed("var") || noVars {
				m, err := keyValues(cmd, "var", vars)
				if err != nil {
					return err
				}
				u.Vars = &m
			}
			if fl.Changed("overrides") {
				m, err := jsonObjectArg(cmd, "overrides", overrides)
				if err != nil {
					return err
				}
				u.Overrides = &m
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			if preview {
				dc, err := c.PreviewDeviceConfig(cmd.Context(), args[0], u)
				if err != nil {
					return err
				}
				return printDeviceConfig(g, cmd, &client.DeviceConfigResult{Config: *dc}, true)
			}
			r, err := c.SetDeviceConfig(cmd.Context(), args[0], u)
			if err != nil {
				return err
			}
			if err := printDeviceConfig(g, cmd, r, false); err != nil || g.json() {
				return err
			}
			if r.Changed != nil && !*r.Changed {
				fmt.Fprintln(cmd.OutOrStdout(), "The rendered configuration did not change.")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&templates, "template", nil, "a template, in order (repeatable; the whole list)")
	f.BoolVar(&noTemplates, "no-templates", false, "remove every template the device has (required ones stay refused)")
	f.StringArrayVar(&vars, "var", nil, "a device variable, NAME=VALUE (repeatable; all of them)")
	f.BoolVar(&noVars, "no-vars", false, "remove every device variable")
	f.StringVar(&overrides, "overrides", "", "the device's own overrides, a JSON object merged last (inline, @FILE or @-)")
	f.StringVar(&backend, "backend", "", "the format the device consumes: json, yaml, env or a text/template backend")
	return cmd
}

func newConfigListCmd(g *globals) *cobra.Command {
	var (
		status     string
		notApplied bool
		all        bool
		limit      int
	)
	cmd := &cobra.Command{
		Use:   "list [--not-applied | --status S] [--all]",
		Short: "List devices' configuration status (which are not applied, and since when)",
		Args:  exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			o := client.ConfigListOptions{Status: status, NotApplied: notApplied, Limit: limit}
			var rows []client.ConfigStatusRow
			for {
				page, err := c.DeviceConfigs(cmd.Context(), o)
				if err != nil {
					return err
				}
				rows = append(rows, page.Configs...)
				if !all || page.Next == "" {
					break
				}
				o.After = page.Next
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, rows)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DEVICE\tTYPE\tGROUP\tSTATUS\tSINCE\tCHECKSUM\tERROR")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.DeviceID, r.DeviceType, orDash(r.Group), r.Status,
					r.StatusSince.Local().Format(time.DateTime), short12(r.Checksum), r.Error)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.StringVar(&status, "status", "", "only this status: modified, applied, error, deactivating, deactivated")
	f.BoolVar(&notApplied, "not-applied", false, "only the devices whose configuration is not applied")
	f.BoolVar(&all, "all", false, "every page, not only the first")
	f.IntVar(&limit, "limit", 0, "rows per page (default 100, at most 1000)")
	return cmd
}

func short12(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

func newConfigActivationCmd(g *globals, deactivate bool) *cobra.Command {
	use, short := "reactivate", "Reactivate a device's configuration"
	if deactivate {
		use, short = "deactivate", "Deactivate a device's configuration (it is served an empty one, then its endpoints answer 404)"
	}
	return &cobra.Command{
		Use:   use + " DEVICE_ID",
		Short: short,
		Args:  exactArgs(1, "DEVICE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			call := c.ReactivateDeviceConfig
			if deactivate {
				call = c.DeactivateDeviceConfig
			}
			r, err := call(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return printDeviceConfig(g, cmd, r, false)
		},
	}
}

func newConfigHistoryCmd(g *globals) *cobra.Command {
	var rendered bool
	cmd := &cobra.Command{
		Use:   "history DEVICE_ID [--rendered]",
		Short: "List a device's previous rendered configurations, newest first",
		Args:  exactArgs(1, "DEVICE_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			hs, err := c.DeviceConfigHistory(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, hs)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ENTRY\tCREATED\tCHECKSUM\tBACKEND\tTEMPLATES")
			for _, h := range hs {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", h.ID, h.CreatedAt.Local().Format(time.DateTime), h.Checksum, h.Backend, orDash(strings.Join(h.Templates, ",")))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if rendered {
				for _, h := range hs {
					fmt.Fprintf(w, "--- entry %d ---\n%s\n", h.ID, strings.TrimRight(h.Rendered, "\n"))
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&rendered, "rendered", false, "print each entry's rendered bytes too")
	return cmd
}

func newConfigRestoreCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "restore DEVICE_ID ENTRY",
		Short: "Set a device's configuration back to a history entry",
		Args:  exactArgs(2, "DEVICE_ID ENTRY"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var entry int64
			if _, err := fmt.Sscanf(args[1], "%d", &entry); err != nil || entry <= 0 {
				return usage(cmd, fmt.Errorf("ENTRY must be a history entry number, got %q", args[1]))
			}
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			r, err := c.RestoreDeviceConfig(cmd.Context(), args[0], entry)
			if err != nil {
				return err
			}
			return printDeviceConfig(g, cmd, r, false)
		},
	}
}

func newConfigGroupCmd(g *globals) *cobra.Command {
	var (
		templates, vars     []string
		noTemplates, noVars bool
	)
	cmd := &cobra.Command{
		Use:   "group GROUP_ID [--template T...] [--var NAME=VALUE...]",
		Short: "Show a group's ordered templates and variables, or set them",
		Long: "Without flags, shows the group's configuration. --template gives the whole ordered list (a change\n" +
			"fires group_templates_changed), --var all the group's variables; the group's devices are\n" +
			"re-rendered by a background job.",
		Args: exactArgs(1, "GROUP_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			var u client.GroupConfigUpdate
			fl := cmd.Flags()
			if fl.Changed("template") || noTemplates {
				l := append([]string{}, templates...)
				u.Templates = &l
			}
			if fl.Changed("var") || noVars {
				m, err := keyValues(cmd, "var", vars)
				if err != nil {
					return err
				}
				u.Vars = &m
			}
			var r client.GroupConfigResult
			if u.Templates == nil && u.Vars == nil {
				gc, err := c.GroupConfig(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				r.Group = *gc
			} else {
				res, err := c.SetGroupConfig(cmd.Context(), args[0], u)
				if err != nil {
					return err
				}
				r = *res
			}
			w := cmd.OutOrStdout()
			if g.json() {
				return writeJSON(w, r)
			}
			fmt.Fprintf(w, "Group %s\n  templates: %s\n  vars:      %s\n", r.Group.GroupID, orDash(strings.Join(r.Group.Templates, ", ")), orDash(sortedPairs(r.Group.Vars)))
			printJob(w, r.Job)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&templates, "template", nil, "a template, in order (repeatable; the whole list)")
	f.BoolVar(&noTemplates, "no-templates", false, "remove every template of the group")
	f.StringArrayVar(&vars, "var", nil, "a group variable, NAME=VALUE (repeatable; all of them)")
	f.BoolVar(&noVars, "no-vars", false, "remove every group variable")
	return cmd
}

func newConfigJobCmd(g *globals) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "job JOB_ID [--wait]",
		Short: "Show a re-render job's progress (a template or group change starts one)",
		Args:  exactArgs(1, "JOB_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd)
			if err != nil {
				return err
			}
			for {
				j, err := c.ConfigJob(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if !wait || j.Status == "done" || j.Status == "failed" {
					if g.json() {
						return writeJSON(cmd.OutOrStdout(), j)
					}
					printJob(cmd.OutOrStdout(), j)
					if j.Error != "" {
						fmt.Fprintf(cmd.OutOrStdout(), "  %s\n", j.Error)
					}
					return nil
				}
				t := time.NewTimer(250 * time.Millisecond)
				select {
				case <-t.C:
				case <-cmd.Context().Done():
					t.Stop()
					return cmd.Context().Err()
				}
			}
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the job is done")
	return cmd
}
