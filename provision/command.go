package provision

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/corral-dev/corral/provision/config"
	"github.com/spf13/cobra"
)

// Command is `provision`: up, down, status, env and output on one HCL
// file. The node daemon and the CLI are attached by the caller (the
// binary's main), so this package does not depend on them.
func Command() *cobra.Command {
	root := &cobra.Command{
		Use:   "provision",
		Short: "Build, converge and remove Corral clusters described in HCL",
		Long: `provision turns one HCL file into a running cluster and back.

  provision up examples/local.hcl       build or converge the cluster
  provision status examples/local.hcl   nodes, processes, machines, etcd health
  eval "$(provision env examples/local.hcl)"   point clusterctl and etcdctl at it
  provision output examples/local.hcl   the values of the file's output blocks
  provision down examples/local.hcl     remove all of it

To scale, edit desired_capacity in the file and run up again.

Every command that reads the file takes its variables' values from
--var name=value and --var-file FILE (both repeatable; -var and -var-file
work too) and from CORRAL_VAR_name in the environment.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	var vars, varFiles []string
	// withInputs gives a command that reads the file the flags that set
	// its variables. StringArray, not StringSlice: a value such as
	// ["a","b"] has commas of its own.
	withInputs := func(cmd *cobra.Command) *cobra.Command {
		cmd.Flags().StringArrayVar(&vars, "var", nil, "set a variable, `name=value` (repeatable; later wins)")
		cmd.Flags().StringArrayVar(&varFiles, "var-file", nil, "read variables from `FILE`: HCL, or JSON if it ends in .json (repeatable)")
		return cmd
	}
	opts := func(cmd *cobra.Command, args []string) Options {
		return Options{
			File: args[0], Out: cmd.OutOrStdout(), Err: cmd.ErrOrStderr(),
			Inputs: config.Inputs{Vars: vars, VarFiles: varFiles, Env: os.Environ()},
		}
	}
	var timeout time.Duration
	up := &cobra.Command{
		Use:   "up FILE",
		Short: "Create or converge the cluster described in FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return Up(cmd.Context(), UpOptions{Options: opts(cmd, args), Timeout: timeout})
		},
	}
	up.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for the machines to register")
	var format string
	output := &cobra.Command{
		Use:   "output FILE [NAME]",
		Short: "Print the file's outputs, or the one named (a string as it is, else JSON)",
		Args:  cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("--output must be text or json, got %q", format)
			}
			o := OutputOptions{Options: opts(cmd, args), JSON: format == "json"}
			if len(args) == 2 {
				o.Name = args[1]
			}
			return Output(o)
		},
	}
	output.Flags().StringVarP(&format, "output", "o", "text", "text or json")
	root.AddCommand(withInputs(up),
		withInputs(&cobra.Command{
			Use:   "down FILE",
			Short: "Remove every node and resource of the cluster in FILE",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return Down(cmd.Context(), opts(cmd, args))
			},
		}),
		withInputs(&cobra.Command{
			Use:   "status FILE",
			Short: "Show the cluster's nodes, machines and etcd health",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return Status(cmd.Context(), opts(cmd, args))
			},
		}),
		withInputs(&cobra.Command{
			Use:   "env FILE",
			Short: "Print shell exports for clusterctl and etcdctl; use with eval",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return Env(opts(cmd, args))
			},
		}),
		withInputs(output),
	)
	return root
}

// TerraformArgs rewrites Terraform's single-dash -var and -var-file, and
// their -var=… forms, to the --var and --var-file the commands define:
// pflag would read -var as the shorthands -v -a -r. Call it on the argument
// list before the command parses it. Nothing after "--" is touched.
func TerraformArgs(args []string) []string {
	out := slices.Clone(args)
	for i, a := range out {
		if a == "--" {
			break
		}
		for _, f := range []string{"-var", "-var-file"} {
			if a == f || strings.HasPrefix(a, f+"=") {
				out[i] = "-" + a
			}
		}
	}
	return out
}
