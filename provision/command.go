package provision

import (
	"time"

	"github.com/spf13/cobra"
)

// Command is `provision`: up, down, status and env on one HCL file. The
// node daemon and the CLI are attached by the caller (the binary's main), so
// this package does not depend on them.
func Command() *cobra.Command {
	root := &cobra.Command{
		Use:   "provision",
		Short: "Build, converge and remove Corral clusters described in HCL",
		Long: `provision turns one HCL file into a running cluster and back.

  provision up examples/local.hcl       build or converge the cluster
  provision status examples/local.hcl   nodes, processes, machines, etcd health
  eval "$(provision env examples/local.hcl)"   point clusterctl and etcdctl at it
  provision down examples/local.hcl     remove all of it

To scale, edit desired_capacity in the file and run up again.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	opts := func(cmd *cobra.Command, args []string) Options {
		return Options{File: args[0], Out: cmd.OutOrStdout(), Err: cmd.ErrOrStderr()}
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
	root.AddCommand(up,
		&cobra.Command{
			Use:   "down FILE",
			Short: "Remove every node and resource of the cluster in FILE",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return Down(cmd.Context(), opts(cmd, args))
			},
		},
		&cobra.Command{
			Use:   "status FILE",
			Short: "Show the cluster's nodes, machines and etcd health",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return Status(cmd.Context(), opts(cmd, args))
			},
		},
		&cobra.Command{
			Use:   "env FILE",
			Short: "Print shell exports for clusterctl and etcdctl; use with eval",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return Env(opts(cmd, args))
			},
		},
	)
	return root
}
