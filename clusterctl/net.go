package clusterctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/corral-dev/corral/clusterd/daemon"
	"github.com/corral-dev/corral/clusterd/overlay"
	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func netCommand(conn *connection) *cobra.Command {
	cmd := &cobra.Command{Use: "net", Short: "The overlay network: leases, release, self-test"}
	cmd.AddCommand(&cobra.Command{
		Use:   "list",
		Short: "List the subnet leases",
		Args:  cobra.NoArgs,
		RunE: withClient(conn.connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, _ []string) error {
			leases, _, err := subnet.List(ctx, cli)
			if err != nil {
				return err
			}
			names, err := machineNames(ctx, cli)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "SUBNET\tMACHINE\tPUBLIC IP\tBACKEND")
			for _, l := range leases {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Subnet, nameOr(names, l.MachineID), l.PublicIP, l.BackendType)
			}
			return tw.Flush()
		}),
	}, &cobra.Command{
		Use:   "release MACHINE",
		Short: "Give a machine's subnet back to the pool (by machine id, id prefix, or name)",
		Long: `release gives a machine's subnet back to the pool. Do it only for a machine
that has left for good: a machine keeps its subnet while it is away, and one
that comes back after its subnet was released gets a new one.`,
		Args: cobra.ExactArgs(1),
		RunE: withClient(conn.connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, args []string) error {
			leases, _, err := subnet.List(ctx, cli)
			if err != nil {
				return err
			}
			names, err := machineNames(ctx, cli)
			if err != nil {
				return err
			}
			var match []subnet.Lease
			for _, l := range leases {
				if strings.HasPrefix(l.MachineID, args[0]) || names[l.MachineID] == args[0] {
					match = append(match, l)
				}
			}
			switch len(match) {
			case 0:
				return fmt.Errorf("no lease belongs to a machine %q (see clusterctl net list)", args[0])
			case 1:
			default:
				return fmt.Errorf("%q matches %d machines; give more of the machine id", args[0], len(match))
			}
			if _, err := subnet.Release(ctx, cli, match[0].MachineID); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Released %s (machine %s)\n", match[0].Subnet, nameOr(names, match[0].MachineID))
			return nil
		}),
	}, &cobra.Command{
		Use:   "check",
		Short: "From every machine to every other: reachable over the overlay? full-size packets with DF?",
		Args:  cobra.NoArgs,
		RunE: withClient(conn.connect, time.Minute, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, _ []string) error {
			return netCheck(ctx, cli, conn, cmd.OutOrStdout())
		}),
	})
	return cmd
}

// releaseByAddress releases the lease of the machine at addr, if any.
func releaseByAddress(ctx context.Context, cli *clientv3.Client, addr string) (*subnet.Lease, error) {
	leases, _, err := subnet.List(ctx, cli)
	if err != nil {
		return nil, err
	}
	for _, l := range leases {
		if l.PublicIP.String() == addr {
			return subnet.Release(ctx, cli, l.MachineID)
		}
	}
	return nil, nil
}

func machineNames(ctx context.Context, cli *clientv3.Client) (map[string]string, error) {
	ms, _, err := registry.List(ctx, cli)
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, m := range ms {
		names[m.ID] = m.Name
	}
	return names, nil
}

func nameOr(names map[string]string, id string) string {
	if n, ok := names[id]; ok {
		return n
	}
	return id[:min(8, len(id))] + "..."
}

// netCheck asks every machine's clusterd to probe all the others, and
// prints the results as a matrix: row = from, column = to.
func netCheck(ctx context.Context, cli *clientv3.Client, conn *connection, out io.Writer) error {
	ms, _, err := registry.List(ctx, cli)
	if err != nil {
		return err
	}
	slices.SortFunc(ms, func(a, b registry.Machine) int { return strings.Compare(a.Name, b.Name) })
	hc, err := conn.httpClient()
	if err != nil {
		return err
	}
	names := map[string]string{}
	for _, m := range ms {
		names[m.ID] = m.Name
	}
	// Every machine probes at once: a machine that is cut off costs one
	// timeout, not one per machine.
	fetched := make([][]overlay.Result, len(ms))
	errs := make([]error, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			url := "https://" + net.JoinHostPort(m.IP, strconv.Itoa(daemon.DefaultAPIPort)) + "/v1/net/check"
			// A machine that is cut off costs this much, once.
			fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			fetched[i], errs[i] = fetchCheck(fctx, hc, url)
		})
	}
	wg.Wait()
	results := make(map[string]map[string]overlay.Result, len(ms))
	var problems []string
	for i, m := range ms {
		if errs[i] != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", m.Name, errs[i]))
			continue
		}
		results[m.ID] = map[string]overlay.Result{}
		for _, r := range fetched[i] {
			results[m.ID][r.MachineID] = r
			if !r.OK() {
				problems = append(problems, fmt.Sprintf("%s → %s (%s): %s", m.Name, nameOr(names, r.MachineID), r.Target, r.Error))
			}
		}
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprint(tw, "FROM \\ TO")
	for _, m := range ms {
		fmt.Fprintf(tw, "\t%s", m.Name)
	}
	fmt.Fprintln(tw)
	for _, from := range ms {
		fmt.Fprint(tw, from.Name)
		for _, to := range ms {
			cell := "-"
			switch r, ok := results[from.ID][to.ID]; {
			case from.ID == to.ID:
			case results[from.ID] == nil:
				cell = "?"
			case !ok:
				cell = "no lease"
			case !r.Reachable:
				cell = "UNREACHABLE"
			case !r.MTUOK:
				cell = "MTU " + strconv.Itoa(r.MTU) + " FAILS"
			default:
				cell = fmt.Sprintf("ok %.1fms", float64(r.RTT.Microseconds())/1000)
			}
			fmt.Fprintf(tw, "\t%s", cell)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	if len(problems) > 0 {
		fmt.Fprintln(out, "\nproblems:")
		for _, p := range problems {
			fmt.Fprintln(out, "  "+p)
		}
		return &ExitError{Code: 1, Err: fmt.Errorf("net check: %d problems", len(problems))}
	}
	fmt.Fprintf(out, "\nall %d machines reach each other with full-size packets\n", len(ms))
	return nil
}

func fetchCheck(ctx context.Context, hc *http.Client, url string) ([]overlay.Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, errors.New(e.Error)
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var rs []overlay.Result
	return rs, json.Unmarshal(body, &rs)
}
