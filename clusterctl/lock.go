package clusterctl

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/clusterd/rebootlock"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// lockCommand is locksmithctl's verbs on the cluster-wide reboot
// semaphore that rolling replacements take, one slot per machine down.
func lockCommand(connect connectFunc) *cobra.Command {
	lock := &cobra.Command{
		Use:   "lock",
		Short: "The cluster-wide reboot semaphore (locksmith's etcd-lock): status, set-max, take, give back",
		Long: `The reboot semaphore bounds how many machines may be down at once for a
reboot or a rolling replacement (provision up takes a slot for each node it
replaces). It is CoreOS locksmith's, at the same key:
  ` + rebootlock.Key + `
With no subcommand, lock prints its status.`,
		Args: cobra.NoArgs,
		RunE: withClient(connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, _ []string) error {
			s, err := rebootlock.Get(ctx, cli)
			if err != nil {
				return err
			}
			printSemaphore(cmd, s)
			return nil
		}),
	}
	setMax := &cobra.Command{
		Use:   "set-max N",
		Short: "Allow N machines down at once (default 1)",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil {
				return fmt.Errorf("set-max: %q is not a number", args[0])
			}
			s, err := rebootlock.SetMax(ctx, cli, n)
			if err != nil {
				return err
			}
			printSemaphore(cmd, s)
			return nil
		}),
	}
	take := &cobra.Command{
		Use:   "take HOLDER",
		Short: "Take a slot for HOLDER (a machine id, or any name), failing if none is free",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, args []string) error {
			if err := rebootlock.Lock(ctx, cli, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Slot taken by %s\n", args[0])
			return nil
		}),
	}
	give := &cobra.Command{
		Use:   "unlock HOLDER",
		Short: "Give HOLDER's slot back (also frees the slot of a machine that died holding it)",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, args []string) error {
			if err := rebootlock.Unlock(ctx, cli, args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Slot of %s given back\n", args[0])
			return nil
		}),
	}
	lock.AddCommand(setMax, take, give)
	return lock
}

func printSemaphore(cmd *cobra.Command, s rebootlock.Semaphore) {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "Available: %d\nMax: %d\n", s.Semaphore, s.Max)
	if len(s.Holders) > 0 {
		fmt.Fprintf(out, "\nMachines holding locks:\n  %s\n", strings.Join(s.Holders, "\n  "))
	}
}
