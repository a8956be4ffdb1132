package clusterctl

import (
	"context"
	"fmt"
	"time"

	"github.com/corral-dev/corral/clusterd/membership"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// machineCommand is `clusterctl machine`: machines that are gone for good.
func machineCommand(connect connectFunc) *cobra.Command {
	machine := &cobra.Command{Use: "machine", Short: "Remove a machine that is gone for good"}
	var force bool
	var timeout time.Duration
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Take a dead machine out of the cluster: etcd membership, subnet, registration, units",
		Long: `remove declares a machine gone for good and takes it out of the cluster, in order:
its etcd membership if it was a voter (refused if that would cost the quorum),
a client machine promoted to voter in its place when the voters fall below the
cluster's etcd_members, its overlay subnet released, and its registration
dropped so its units move at once. ID is a machine id or its first characters,
as list-machines shows it, or the node name.

A machine whose registration lease is still alive is refused unless --force:
its clusterd then stops. Terminate the machine itself afterwards.`,
		Args: cobra.ExactArgs(1),
		RunE: withClient(connect, 0, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			out := cmd.OutOrStdout()
			m, err := membership.Find(ctx, cli, args[0])
			if err != nil {
				return err
			}
			alive, err := membership.Alive(ctx, cli, m.ID)
			if err != nil {
				return err
			}
			if alive && !force {
				return fmt.Errorf("machine %s... (%s, %s) is alive: its registration lease is held, so its clusterd is running; "+
					"`machine remove` is for a machine gone for good: stop it first, or give --force to remove it anyway (its clusterd then stops)",
					m.Short(), m.Name, m.IP)
			}
			fmt.Fprintf(out, "Removing machine %s... (%s, %s)\n", m.Short(), m.Name, m.IP)
			_, err = membership.Remove(ctx, cli, m, membership.RemoveOptions{
				PromotionTimeout: timeout / 2,
				Report:           func(step string) { fmt.Fprintln(out, "  "+step) },
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "Removed machine %s... (%s); terminate the machine itself if it still exists\n", m.Short(), m.Name)
			return nil
		}),
	}
	remove.Flags().BoolVar(&force, "force", false, "remove the machine even though its lease is alive")
	remove.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "how long the whole removal may take, waiting for a promotion included")
	machine.AddCommand(remove)
	return machine
}
