package clusterctl

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func machinesCommand(connect connectFunc) *cobra.Command {
	var full bool
	var output string
	cmd := &cobra.Command{
		Use:   "list-machines",
		Short: "List the live machines, as fleetctl did",
		Args:  cobra.NoArgs,
		PreRunE: func(*cobra.Command, []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("--output %q: want table or json", output)
			}
			return nil
		},
		RunE: withClient(connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, _ []string) error {
			ms, _, err := registry.List(ctx, cli)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(ms)
			}
			return writeMachines(cmd, ms, full)
		}),
	}
	cmd.Flags().BoolVar(&full, "full", false, "show whole machine ids")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func writeMachines(cmd *cobra.Command, ms []registry.Machine, full bool) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "MACHINE\tIP\tMETADATA")
	for _, m := range ms {
		id := m.ID
		if !full {
			id = id[:8] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", id, m.IP, FormatMetadata(m.Metadata))
	}
	return tw.Flush()
}

// FormatMetadata prints metadata as fleetctl did: k=v pairs, sorted, or "-".
func FormatMetadata(md map[string]string) string {
	if len(md) == 0 {
		return "-"
	}
	var pairs []string
	for _, k := range slices.Sorted(maps.Keys(md)) {
		pairs = append(pairs, k+"="+md[k])
	}
	return strings.Join(pairs, ",")
}
