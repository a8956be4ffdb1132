package provision

import (
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
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

  provision plan examples/local.hcl     show what up would change
  provision up examples/local.hcl       build or converge the cluster
  provision render examples/local.hcl --node core-1   a node's boot config
  provision status examples/local.hcl   nodes, processes, machines, etcd health
  eval "$(provision env examples/local.hcl)"   point clusterctl and etcdctl at it
  provision output examples/local.hcl   the values of the file's output blocks
  provision down examples/local.hcl     remove all of it

To scale, edit desired_capacity in the file and run up again. A plan that
deletes or replaces nodes is confirmed first (--auto-approve skips that).

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
	var profile string
	// withProfile gives a command that talks to AWS the --profile flag.
	withProfile := func(cmd *cobra.Command) *cobra.Command {
		cmd.Flags().StringVar(&profile, "profile", "", "the AWS shared-config `NAME` to use (overrides the aws provider's profile)")
		return cmd
	}
	opts := func(cmd *cobra.Command, args []string) Options {
		return Options{
			File: args[0], Out: cmd.OutOrStdout(), Err: cmd.ErrOrStderr(),
			Inputs:  config.Inputs{Vars: vars, VarFiles: varFiles, Env: os.Environ()},
			Profile: profile,
		}
	}
	var timeout time.Duration
	var autoApprove, noWait, forceDeleteData, verbose bool
	var format string
	up := &cobra.Command{
		Use:   "up FILE",
		Short: "Create or converge the cluster described in FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return Up(cmd.Context(), UpOptions{Options: opts(cmd, args), Timeout: timeout, AutoApprove: autoApprove, In: cmd.InOrStdin(), NoWait: noWait})
		},
	}
	up.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long to wait for each step: nodes to join, the network, services")
	up.Flags().BoolVar(&autoApprove, "auto-approve", false, "apply a plan that deletes or replaces nodes without asking")
	up.Flags().BoolVar(&noWait, "no-wait", false, "return once the infrastructure has converged and nodes have machines, without waiting for them to join (skips membership, network, logs, backups, services)")
	var detailed bool
	planCmd := &cobra.Command{
		Use:   "plan FILE",
		Short: "Show what up would change, and change nothing",
		Long: `plan compares FILE with the cluster's state and with what the provider has
live, and prints each change up would make: + create, ~ update in place,
-/+ replace (with the fields that force it), - delete, and what has drifted.

With --detailed-exitcode the exit status is 0 when there is nothing to
change, 2 when there are changes, and 1 on error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "text" && format != "json" {
				return fmt.Errorf("--output must be text or json, got %q", format)
			}
			changes, err := Plan(cmd.Context(), PlanOptions{Options: opts(cmd, args), JSON: format == "json", Verbose: verbose})
			if err == nil && changes && detailed {
				return ExitCode(2)
			}
			return err
		},
	}
	planCmd.Flags().BoolVar(&detailed, "detailed-exitcode", false, "exit 0 with no changes, 2 with changes, 1 on error")
	planCmd.Flags().StringVarP(&format, "output", "o", "text", "text or json")
	planCmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "list the provider's unchanged resources too (aws)")
	var node, renderFormat string
	render := &cobra.Command{
		Use:   "render FILE [--node NAME] [--format FORMAT]",
		Short: "Print a node's boot config (Ignition, cloud-config), or the provider's file (Vagrantfile)",
		Long: `render prints the config a node boots with, rendered from FILE and the
cluster's state exactly as up gives it to the provider: an Ignition config
(spec 3.4.0) or a cloud-config. The node is one the state has, or one the
plan would create. The output holds the cluster's join token: keep it
private. With provider "vagrant", --format vagrantfile prints the
Vagrantfile up would write, and runs nothing. With provider "pxe",
--format dnsmasq prints a dnsmasq configuration for the machines' network
(proxy-DHCP, or full DHCP with the named machines' addresses reserved by
MAC), to run as it is: dnsmasq --conf-file=FILE --no-daemon.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return RenderNode(cmd.Context(), RenderOptions{Options: opts(cmd, args), Node: node, Format: renderFormat})
		},
	}
	render.Flags().StringVar(&node, "node", "", "the node to render, e.g. core-1 (for ignition and cloud-config)")
	render.Flags().StringVar(&renderFormat, "format", "", "ignition or cloud-config (default: the node group's userdata); vagrantfile (provider vagrant); dnsmasq (provider pxe)")
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
	shell := &cobra.Command{
		Use:   "ssh FILE NODE [-- COMMAND...]",
		Short: "Open a shell on a node, or run COMMAND there",
		Long: `ssh opens a shell on a node of the cluster in FILE, or runs COMMAND there,
and exits with its status. It goes the provider's way: over SSH with the
keys and pinned host keys up used (ssh, vagrant), or into the node's network
namespace on this host (local), where clusterctl talks to that node.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			code, err := Shell(cmd.Context(), ShellOptions{Options: opts(cmd, args), Node: args[1],
				Command: strings.Join(args[2:], " "), In: cmd.InOrStdin()})
			if err == nil && code != 0 {
				return ExitCode(code)
			}
			return err
		},
	}
	serve := &cobra.Command{
		Use:   "serve FILE",
		Short: "Keep a pxe cluster's boot server up, so its machines can boot again",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return Serve(ctx, opts(cmd, args))
		},
	}
	reprovision := &cobra.Command{
		Use:   "reprovision FILE NODE",
		Short: "Make a bare-metal node that installed to disk install again at its next network boot",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return Reprovision(opts(cmd, args), args[1])
		},
	}
	var bi BuildInitramfsOptions
	build := &cobra.Command{Use: "build", Short: "Build what machines boot"}
	buildInitramfs := &cobra.Command{
		Use:   "initramfs",
		Short: "Build Corral's initramfs: this binary as /init and clusterd, and the kernel's modules machines need",
		Long: `initramfs writes a gzip'd cpio archive that boots any stock kernel (such as
Debian's linux-image) straight into clusterd: the init brings the network up
with DHCP, fetches the node's Ignition config named on the kernel command line
(corral.config=URL, as the pxe provider's boot server gives it), writes its
files, and runs clusterd, reporting to corral.report=URL.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			bi.Out = cmd.OutOrStdout()
			return BuildInitramfs(bi)
		},
	}
	buildInitramfs.Flags().StringVarP(&bi.Output, "output", "o", "initramfs.img", "where to write the image")
	buildInitramfs.Flags().StringVar(&bi.KernelRelease, "kernel-release", "", "the kernel's release, as uname -r says (default: the newest in /lib/modules)")
	buildInitramfs.Flags().StringSliceVar(&bi.Modules, "modules", nil, "kernel modules to include, with their dependencies (default: common NICs, af_packet, vxlan, bridge, veth)")
	buildInitramfs.Flags().StringVar(&bi.Binary, "binary", "", "the corral binary to put in (default: this one)")
	build.AddCommand(buildInitramfs)
	root.AddCommand(withInputs(serve), withInputs(reprovision), build)
	root.AddCommand(withInputs(backupCommand(opts)), withInputs(restoreCommand(opts)))
	down := &cobra.Command{
		Use:   "down FILE",
		Short: "Remove every node and resource of the cluster in FILE",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return DownWith(cmd.Context(), DownOptions{Options: opts(cmd, args), ForceDeleteData: forceDeleteData})
		},
	}
	down.Flags().BoolVar(&forceDeleteData, "force-delete-data", false, "also delete the cluster's data: the aws bucket with its etcd snapshots")
	root.AddCommand(withProfile(withInputs(up)), withProfile(withInputs(planCmd)), withInputs(render), withInputs(shell),
		withProfile(withInputs(down)),
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
		withInputs(output), withInputs(deployCommand(opts)),
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

// ExitCode is an error that only sets the exit status: what it means has
// been printed already (plan --detailed-exitcode's 2).
type ExitCode int

func (e ExitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
