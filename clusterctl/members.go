package clusterctl

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/clusterd/store"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// healthCommand is etcdctl v2's cluster-health: every member asked directly.
func healthCommand(connect connectFunc) *cobra.Command {
	return &cobra.Command{
		Use:   "cluster-health",
		Short: "Check the health of every etcd member",
		Args:  cobra.NoArgs,
		RunE: withClient(connect, 30*time.Second, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, _ []string) error {
			list, err := cli.MemberList(ctx)
			if err != nil {
				return &ExitError{Code: 5, Err: fmt.Errorf("cluster may be unhealthy: failed to list members: %w", err)}
			}
			out := cmd.OutOrStdout()
			healthy := 0
			for _, m := range list.Members {
				if len(m.ClientURLs) == 0 {
					fmt.Fprintf(out, "member %x is unreachable: no client URL (not started yet)\n", m.ID)
					continue
				}
				sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, err := cli.Status(sctx, m.ClientURLs[0])
				cancel()
				if err != nil {
					fmt.Fprintf(out, "member %x is unhealthy: got unhealthy result from %s: %v\n", m.ID, m.ClientURLs[0], err)
					continue
				}
				healthy++
				fmt.Fprintf(out, "member %x is healthy: got healthy result from %s\n", m.ID, m.ClientURLs[0])
			}
			switch {
			case healthy == len(list.Members):
				fmt.Fprintln(out, "cluster is healthy")
			case healthy > len(list.Members)/2:
				fmt.Fprintln(out, "cluster is degraded")
			default:
				fmt.Fprintln(out, "cluster is unavailable")
				return &ExitError{Code: 5, Err: fmt.Errorf("cluster is unavailable: %d of %d members healthy", healthy, len(list.Members))}
			}
			return nil
		}),
	}
}

func memberCommand(connect connectFunc) *cobra.Command {
	member := &cobra.Command{Use: "member", Short: "List or remove etcd members"}
	member.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List etcd members, as etcdctl v2 did",
		Args:  cobra.NoArgs,
		RunE: withClient(connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, _ []string) error {
			list, err := cli.MemberList(ctx)
			if err != nil {
				return err
			}
			var leader uint64
			if len(cli.Endpoints()) > 0 {
				if st, err := cli.Status(ctx, cli.Endpoints()[0]); err == nil {
					leader = st.Leader
				}
			}
			for _, m := range list.Members {
				learner := ""
				if m.IsLearner {
					learner = " isLearner=true"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%x: name=%s peerURLs=%s clientURLs=%s isLeader=%t%s\n",
					m.ID, m.Name, strings.Join(m.PeerURLs, ","), strings.Join(m.ClientURLs, ","), m.ID == leader, learner)
			}
			return nil
		}),
	}, &cobra.Command{
		Use:   "remove ID",
		Short: "Remove an etcd member by its hex id (see member list)",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(connect, 30*time.Second, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, args []string) error {
			id, err := strconv.ParseUint(args[0], 16, 64)
			if err != nil {
				return fmt.Errorf("member id %q: want the hex id that `member list` prints", args[0])
			}
			list, err := cli.MemberList(ctx)
			if err != nil {
				return err
			}
			if err := store.RemoveMember(ctx, cli, id); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Removed member %x from cluster\n", id)
			// Stop talking to the removed member, whose raft has stopped.
			if err := store.Ready(ctx, cli); err != nil {
				return err
			}
			// The machine has left for good: its overlay subnet goes back to
			// the pool. Leases name machines by address, as members do.
			for _, m := range list.Members {
				if m.ID != id {
					continue
				}
				for _, peer := range m.PeerURLs {
					u, err := url.Parse(peer)
					if err != nil {
						continue
					}
					if l, err := releaseByAddress(ctx, cli, u.Hostname()); err != nil {
						return err
					} else if l != nil {
						fmt.Fprintf(cmd.OutOrStdout(), "Released its subnet %s\n", l.Subnet)
					}
				}
			}
			return nil
		}),
	})
	return member
}
