// Command provision is Corral's one binary. It is provision, clusterd and
// clusterctl at once, chosen by the name it is run under (as busybox and k3s
// do) or by its first argument, so provision can ship itself to nodes:
//
//	provision up cluster.hcl      provision clusterd …    provision ctl …
//	clusterd …                    clusterctl …
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/corral-dev/corral/bootstrap/netboot"
	"github.com/corral-dev/corral/clusterctl"
	"github.com/corral-dev/corral/clusterd/daemon"
	"github.com/corral-dev/corral/internal/awsboot/guest"
	"github.com/corral-dev/corral/provision"
	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(filepath.Base(os.Args[0]), os.Args[1:]))
}

func run(name string, args []string) int {
	ctx := context.Background()
	switch name {
	case "clusterd":
		return execute(ctx, daemon.Command(version), args)
	case "clusterctl":
		return clusterctl.Main(ctx, args)
	case "init":
		return netboot.Main()
	case guest.Arg0: // an emulated EC2 instance's boot program (internal/awsboot)
		return guest.Main(args)
	}
	root := provision.Command()
	root.Version = version
	root.AddCommand(
		passThrough("clusterd", "Run the node daemon (the same as running this binary as clusterd)", func(args []string) int {
			return execute(ctx, daemon.Command(version), args)
		}),
		passThrough("ctl", "Run clusterctl (the same as running this binary as clusterctl)", func(args []string) int {
			return clusterctl.Main(ctx, args)
		}),
	)
	// Terraform's users type -var and -var-file with one dash.
	return execute(ctx, root, provision.TerraformArgs(args))
}

// passThrough hands every argument after the subcommand to another CLI.
func passThrough(use, short string, fn func([]string) int) *cobra.Command {
	return &cobra.Command{
		Use:                use,
		Short:              short,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := fn(args); code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
}

type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func execute(ctx context.Context, cmd *cobra.Command, args []string) int {
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	var code exitCode
	var status provision.ExitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &code):
		return int(code) // the inner command has reported already
	case errors.As(err, &status):
		return int(status)
	case errors.Is(err, provision.ErrInvalidConfig):
		return 1 // the diagnostics are printed
	}
	fmt.Fprintf(os.Stderr, "%s: %v\n", cmd.Name(), err)
	return 1
}
