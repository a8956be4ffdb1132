package clusterctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/corral-dev/corral/clusterd/daemon"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// unitCommands are fleetctl's verbs.
func unitCommands(conn *connection) []*cobra.Command {
	var noBlock bool
	var timeout time.Duration
	verb := func(use, short, desired string) *cobra.Command {
		cmd := &cobra.Command{
			Use:   use + " UNIT...",
			Short: short,
			Args:  cobra.MinimumNArgs(1),
			RunE: withClient(conn.connect, 0, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, args []string) error {
				names, err := submitAll(ctx, cli, args, desired != "")
				if err != nil {
					return err
				}
				if desired == "" {
					return nil
				}
				for _, name := range names {
					if err := unitstore.SetDesired(ctx, cli, name, desired); err != nil {
						return err
					}
				}
				if noBlock {
					return nil
				}
				wctx, cancel := context.WithTimeout(ctx, timeout)
				defer cancel()
				return waitDesired(wctx, cli, names, desired, cmd.OutOrStdout())
			}),
		}
		if desired != "" {
			cmd.Flags().BoolVar(&noBlock, "no-block", false, "don't wait for the units to reach the state")
			cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for the units to reach the state")
		}
		return cmd
	}
	return []*cobra.Command{
		verb("submit", "Submit unit files (templates are found beside the instance name)", ""),
		verb("load", "Schedule units to machines without starting them", unitstore.Loaded),
		verb("start", "Schedule and start units", unitstore.Launched),
		verb("stop", "Stop units, keeping them scheduled", unitstore.Loaded),
		verb("unload", "Stop units and take them off their machines", unitstore.Inactive),
		{
			Use:   "destroy UNIT...",
			Short: "Stop units and forget them",
			Args:  cobra.MinimumNArgs(1),
			RunE: withClient(conn.connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, args []string) error {
				for _, arg := range args {
					name, err := unitName(arg)
					if err != nil {
						return err
					}
					if _, err := unitstore.Destroy(ctx, cli, name); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "Destroyed %s\n", name)
				}
				return nil
			}),
		},
		listUnitsCommand(conn), listUnitFilesCommand(conn), statusCommand(conn), journalCommand(conn),
	}
}

// unitName turns a path or a bare name into a unit name (.service implied).
func unitName(arg string) (string, error) {
	n, err := unit.ParseName(filepath.Base(arg))
	if err != nil {
		return "", err
	}
	return n.String(), nil
}

// submitAll submits every argument that names a file (or an instance of a
// template file beside it). With bareOK, an argument that is just a name
// may instead name a unit submitted already.
func submitAll(ctx context.Context, cli *clientv3.Client, args []string, bareOK bool) ([]string, error) {
	var names []string
	for _, arg := range args {
		name, err := unitName(arg)
		if err != nil {
			return nil, err
		}
		names = append(names, name)
		path, src, err := findFile(arg)
		if err != nil {
			if bareOK && !strings.Contains(arg, "/") {
				continue // a name: the unit must be submitted already
			}
			return nil, err
		}
		n, _ := unit.ParseName(name)
		f, err := unit.Parse(path, src)
		if err != nil {
			return nil, err
		}
		if err := unit.Validate(path, f, n); err != nil {
			return nil, err
		}
		if _, err := unitstore.Submit(ctx, cli, unitstore.UnitFile{Name: name, Hash: f.Hash(), Content: string(f.Bytes())}); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// findFile reads the unit file for arg: the file itself, or for an
// instance (dir/hello@1.service) its template (dir/hello@.service).
func findFile(arg string) (string, []byte, error) {
	name, err := unitName(arg)
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Dir(arg)
	path := filepath.Join(dir, name)
	if src, err := os.ReadFile(path); err == nil {
		return path, src, nil
	}
	n, _ := unit.ParseName(name)
	if n.IsInstance() {
		tpl := filepath.Join(dir, n.Template().String())
		if src, err := os.ReadFile(tpl); err == nil {
			return tpl, src, nil
		}
		return "", nil, fmt.Errorf("unit %s: neither %s nor its template %s exists", name, path, tpl)
	}
	return "", nil, fmt.Errorf("unit %s: no file %s", name, path)
}

// waitDesired waits until each unit reaches its desired state, printing
// fleet's line for each as it does.
func waitDesired(ctx context.Context, cli *clientv3.Client, names []string, desired string, out io.Writer) error {
	var ms map[string]registry.Machine
	return unitstore.Wait(ctx, cli, names, desired, func(_ *unitstore.Snapshot, name, machine string) {
		if machine == "" {
			fmt.Fprintf(out, "Unit %s %s\n", name, desired)
			return
		}
		if _, ok := ms[machine]; !ok {
			// Read again only for a machine not seen yet: the line then
			// shows the address of a machine that just joined.
			ms, _ = machineIndex(ctx, cli)
		}
		fmt.Fprintf(out, "Unit %s %s on %s\n", name, desired, target(machine, ms))
	})
}

// readUnits reads the units and the machines they refer to.
func readUnits(ctx context.Context, cli *clientv3.Client) (*unitstore.Snapshot, map[string]registry.Machine, error) {
	snap, err := unitstore.Read(ctx, cli)
	if err != nil {
		return nil, nil, err
	}
	ms, err := machineIndex(ctx, cli)
	return snap, ms, err
}

func machineIndex(ctx context.Context, cli *clientv3.Client) (map[string]registry.Machine, error) {
	ms, _, err := registry.List(ctx, cli)
	if err != nil {
		return nil, err
	}
	out := map[string]registry.Machine{}
	for _, m := range ms {
		out[m.ID] = m
	}
	return out, nil
}

// target prints a machine as fleet did: "3f2a91c0.../10.77.0.11".
func target(id string, ms map[string]registry.Machine) string {
	short := id[:min(8, len(id))] + "..."
	if m, ok := ms[id]; ok {
		return short + "/" + m.IP
	}
	return short
}

func listUnitsCommand(conn *connection) *cobra.Command {
	return &cobra.Command{
		Use:   "list-units",
		Short: "List the units' states on their machines",
		Args:  cobra.NoArgs,
		RunE: withClient(conn.connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, _ []string) error {
			snap, ms, err := readUnits(ctx, cli)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "UNIT\tMACHINE\tACTIVE\tSUB")
			for _, name := range slices.Sorted(maps.Keys(snap.Units)) {
				for _, st := range snap.Units[name].States {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, target(st.Machine, ms), st.Active, st.Sub)
				}
			}
			return tw.Flush()
		}),
	}
}

func listUnitFilesCommand(conn *connection) *cobra.Command {
	return &cobra.Command{
		Use:   "list-unit-files",
		Short: "List submitted units: hash, desired and current state, target",
		Args:  cobra.NoArgs,
		RunE: withClient(conn.connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, _ []string) error {
			snap, ms, err := readUnits(ctx, cli)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "UNIT\tHASH\tDSTATE\tSTATE\tTARGET")
			for _, name := range slices.Sorted(maps.Keys(snap.Units)) {
				u := snap.Units[name]
				if u.File.Hash == "" {
					continue
				}
				fs, tgt := snap.FileState(name), "-"
				switch {
				case fs.Machine != "":
					tgt = target(fs.Machine, ms)
				case fs.Unscheduled != "":
					tgt = "unscheduled: " + fs.Unscheduled
				}
				fmt.Fprintf(tw, "%s\t%.7s\t%s\t%s\t%s\n", name, u.File.Hash, cmpOr(u.Desired, unitstore.Inactive), fs.State, tgt)
			}
			return tw.Flush()
		}),
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func statusCommand(conn *connection) *cobra.Command {
	return &cobra.Command{
		Use:   "status UNIT",
		Short: "Show a unit's state and its last journal lines",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(conn.connect, requestTimeout, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, args []string) error {
			name, err := unitName(args[0])
			if err != nil {
				return err
			}
			snap, ms, err := readUnits(ctx, cli)
			if err != nil {
				return err
			}
			u := snap.Units[name]
			if u == nil || u.File.Hash == "" {
				return &ExitError{Code: 1, Err: fmt.Errorf("unit %s does not exist", name)}
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "● %s\n   Loaded: submitted (desired %s, hash %.7s)\n", name, cmpOr(u.Desired, unitstore.Inactive), u.File.Hash)
			if u.Placement != nil && u.Placement.Reason != "" {
				fmt.Fprintf(out, "   Unscheduled: %s\n", u.Placement.Reason)
			}
			for _, st := range u.States {
				fmt.Fprintf(out, "   Active: %s (%s) on %s\n", st.Active, st.Sub, target(st.Machine, ms))
				fmt.Fprintln(out)
				if err := journal(ctx, conn, ms[st.Machine], name, 10, false, out); err != nil {
					fmt.Fprintf(out, "   (journal unavailable: %v)\n", err)
				}
			}
			return nil
		}),
	}
}

func journalCommand(conn *connection) *cobra.Command {
	var lines int
	var follow bool
	cmd := &cobra.Command{
		Use:   "journal UNIT",
		Short: "Print a unit's output, from whichever machine runs it",
		Args:  cobra.ExactArgs(1),
		RunE: withClient(conn.connect, 0, func(ctx context.Context, cli *clientv3.Client, cmd *cobra.Command, args []string) error {
			name, err := unitName(args[0])
			if err != nil {
				return err
			}
			snap, ms, err := readUnits(ctx, cli)
			if err != nil {
				return err
			}
			for m, units := range snap.Assigned {
				if _, ok := units[name]; ok {
					return journal(ctx, conn, ms[m], name, lines, follow, cmd.OutOrStdout())
				}
			}
			return fmt.Errorf("unit %s is not on any machine", name)
		}),
	}
	cmd.Flags().IntVar(&lines, "lines", 10, "how many of the last lines to print")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new lines")
	return cmd
}

// journal streams a unit's journal from its machine's clusterd.
func journal(ctx context.Context, conn *connection, m registry.Machine, name string, lines int, follow bool, out io.Writer) error {
	if m.IP == "" {
		return errors.New("its machine is not in the cluster")
	}
	hc, err := conn.httpClient()
	if err != nil {
		return err
	}
	q := url.Values{"unit": {name}, "lines": {strconv.Itoa(lines)}, "follow": {strconv.FormatBool(follow)}}
	u := "https://" + net.JoinHostPort(m.IP, strconv.Itoa(daemon.DefaultAPIPort)) + "/v1/units/journal?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	_, err = io.Copy(out, resp.Body)
	if ctx.Err() != nil {
		return nil
	}
	return err
}
