package provision

import (
	"cmp"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/providers/local"
	"github.com/corral-dev/corral/provision/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// UpOptions tune `provision up`.
type UpOptions struct {
	Options
	Timeout time.Duration // how long to wait for the machines to register
}

// Up converges the cluster to the file: it creates what is missing, starts
// what has stopped, and removes the nodes the file no longer asks for (the
// newest first, leaving etcd before they go). Re-running it after a failure
// picks up where it stopped.
func Up(ctx context.Context, opts UpOptions) error {
	start := time.Now()
	c, err := open(opts.Options)
	if err != nil {
		return err
	}
	lock, err := c.dir.Lock("up")
	if err != nil {
		return err
	}
	defer lock.Unlock()
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	p, err := c.provider()
	if err != nil {
		return err
	}
	out := c.opts.Out
	fmt.Fprintf(out, "cluster %q: local provider, %s isolation, %s\n", c.cfg.Cluster.Name, p.Isolation, p.Prefix())
	if _, err := c.ensurePKI(); err != nil {
		return err
	}
	c.state.Cluster, c.state.Provider, c.state.Isolation = c.cfg.Cluster.Name, "local", string(p.Isolation)
	if err := c.dir.Save(c.state); err != nil {
		return err
	}
	if err := p.Setup(ctx); err != nil {
		return err
	}
	if err := c.scaleIn(ctx); err != nil {
		return err
	}
	if err := c.addNodes(); err != nil {
		return err
	}
	specs := make([]providers.NodeSpec, 0, len(c.state.Nodes))
	for _, n := range c.state.Nodes {
		specs = append(specs, c.spec(n))
	}
	exits := p.Exits()
	for _, s := range specs {
		if err := p.Launch(ctx, s); err != nil {
			return err
		}
	}
	ms, err := c.waitRegistered(ctx, opts.Timeout, exits, start)
	if err != nil {
		return err
	}
	if err := c.ensureNetwork(ctx, opts.Timeout); err != nil {
		return err
	}
	// Services last: units need the machines, and the overlay if any.
	if err := c.ensureServices(ctx, opts.Timeout); err != nil {
		return err
	}
	members := 0
	for _, m := range ms {
		if m.Member {
			members++
		}
	}
	fmt.Fprintf(out, "cluster %q is up: %d machines, %d etcd members (%.1fs)\n\n", c.cfg.Cluster.Name, len(ms), members, time.Since(start).Seconds())
	self, ctl := invokedAs()
	fmt.Fprintf(out, "Use it:\n  eval \"$(%s env %s)\"\n  %s list-machines\n  %s set /foo/bar hello --ttl 30\nRemove it:\n  %s down %s\n",
		self, fileArgs(c.opts), ctl, ctl, self, fileArgs(c.opts))
	return nil
}

// fileArgs is the file and the -var and -var-file options this run was
// given, for hints to paste: down and env need the same values. The
// environment's CORRAL_VAR_ values are still set in the user's shell.
func fileArgs(opts Options) string {
	args := []string{shellQuote(opts.File)}
	for _, f := range opts.Inputs.VarFiles {
		args = append(args, "-var-file", shellQuote(f))
	}
	for _, v := range opts.Inputs.Vars {
		args = append(args, "-var", shellQuote(v))
	}
	return strings.Join(args, " ")
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./=:,@%+-]+$`)

// shellQuote quotes s for a POSIX shell, unless it needs none.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// invokedAs returns how the user ran provision and how to run clusterctl
// beside it, for hints they can paste.
func invokedAs() (self, ctl string) {
	self, ctl = "provision", "clusterctl"
	if len(os.Args) == 0 || !strings.Contains(os.Args[0], "/") {
		return self, ctl
	}
	self = os.Args[0]
	if link := filepath.Join(filepath.Dir(self), "clusterctl"); fileExists(link) {
		return self, link
	}
	return self, self + " ctl"
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// addNodes records the nodes the file asks for and the state lacks, with
// their addresses and roles, before anything is launched: a run that dies
// mid-way leaves them in the state, and the next run finishes the job.
func (c *cluster) addNodes() error {
	p := c.local
	var used []netip.Addr
	for _, n := range c.state.Nodes {
		used = append(used, n.IP)
	}
	members := len(c.state.Members())
	for _, want := range c.cfg.Nodes() {
		if c.state.Node(want.Name) != nil {
			continue
		}
		ip, err := local.Allocate(p.Prefix(), used)
		if err != nil {
			return err
		}
		used = append(used, ip)
		role := state.Client
		if members < c.cfg.Cluster.EtcdMembers {
			role, members = state.Member, members+1
		}
		c.state.Nodes = append(c.state.Nodes, state.Node{
			Name: want.Name, Group: want.Group, Index: want.Index, IP: ip, Role: role, Created: time.Now().UTC(),
		})
		fmt.Fprintf(c.opts.Out, "  + %-12s %-15s %s\n", want.Name, ip, role)
	}
	return c.dir.Save(c.state)
}

// spec renders a node's clusterd command line.
func (c *cluster) spec(n state.Node) providers.NodeSpec {
	dataDir := c.dir.NodeDir(n.Name)
	args := []string{
		"--name", n.Name,
		"--data-dir", dataDir,
		"--ip", n.IP.String(),
		"--token-file", c.tokenFile(),
		"--machine-ttl", c.cfg.Cluster.MachineTTL.String(),
	}
	var servers []string
	for _, m := range c.state.Members() {
		if m.Name != n.Name {
			servers = append(servers, m.IP.String())
		}
	}
	if len(servers) > 0 {
		args = append(args, "--servers", strings.Join(servers, ","))
	}
	switch {
	case n.Role == state.Client:
		args = append(args, "--mode", "client")
	case c.initNode() == n.Name:
		args = append(args, "--mode", "init", "--ca-cert", c.adminFiles().CA, "--ca-key", c.caKeyFile())
	default:
		args = append(args, "--mode", "join")
	}
	if md := c.metadata(n); md != "" {
		args = append(args, "--metadata", md)
	}
	switch {
	case c.local.Isolation != local.Netns:
		// Nodes share the host's network: there is nothing to overlay.
		args = append(args, "--no-overlay")
	case c.cfg.Network != nil:
		args = append(args, "--subnet-file", filepath.Join(dataDir, "subnet.env"),
			"--bridge", c.cfg.Network.Bridge, "--ip-masq="+strconv.FormatBool(c.cfg.Network.IPMasq))
	default:
		args = append(args, "--subnet-file", filepath.Join(dataDir, "subnet.env"))
	}
	return providers.NodeSpec{Name: n.Name, IP: n.IP, DataDir: dataDir, Args: args}
}

// initNode names the member that bootstraps etcd: the first one, unless
// another member already holds data (then the cluster exists and a member
// that lost its data must join it, never start a second cluster).
func (c *cluster) initNode() string {
	ms := c.state.Members()
	if len(ms) == 0 {
		return ""
	}
	for _, m := range ms[1:] {
		if store.HasData(c.dir.NodeDir(m.Name)) {
			if store.HasData(c.dir.NodeDir(ms[0].Name)) {
				return ms[0].Name // a restart: its data decides anyway
			}
			return ""
		}
	}
	return ms[0].Name
}

func (c *cluster) metadata(n state.Node) string {
	for _, g := range c.cfg.NodeGroups {
		if g.Name != n.Group {
			continue
		}
		var pairs []string
		for k, v := range g.Metadata {
			pairs = append(pairs, k+"="+v)
		}
		slices.Sort(pairs)
		return strings.Join(pairs, ",")
	}
	return ""
}

// scaleIn removes the nodes the file no longer asks for, newest first. A
// member leaves etcd before its process stops, so the quorum never counts a
// machine that is gone.
func (c *cluster) scaleIn(ctx context.Context) error {
	want := map[string]bool{}
	for _, n := range c.cfg.Nodes() {
		want[n.Name] = true
	}
	var gone []state.Node
	for _, n := range c.state.Nodes {
		if !want[n.Name] {
			gone = append(gone, n)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	slices.SortFunc(gone, func(a, b state.Node) int {
		return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(b.Index, a.Index))
	})
	cli, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	for _, n := range gone {
		if n.Role == state.Member {
			if err := removeMember(ctx, cli, n); err != nil {
				return err
			}
		}
		id, idErr := registry.ReadMachineID(c.dir.NodeDir(n.Name))
		if err := c.local.Terminate(ctx, n.Name); err != nil {
			return err
		}
		// It has left for good: its subnet goes back to the pool.
		if idErr == nil {
			if _, err := subnet.Release(ctx, cli, id); err != nil {
				return fmt.Errorf("releasing the subnet of %s: %w", n.Name, err)
			}
		}
		c.state.Remove(n.Name)
		if err := c.dir.Save(c.state); err != nil {
			return err
		}
		fmt.Fprintf(c.opts.Out, "  - %-12s %-15s removed\n", n.Name, n.IP)
	}
	return nil
}

// removeMember takes the node's etcd member out of the cluster, if present.
func removeMember(ctx context.Context, cli *clientv3.Client, n state.Node) error {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("listing etcd members to remove %s: %w", n.Name, err)
	}
	peer := "https://" + netip.AddrPortFrom(n.IP, store.DefaultPeerPort).String()
	for _, m := range list.Members {
		if m.Name == n.Name || slices.Contains(m.PeerURLs, peer) {
			if err := store.RemoveMember(ctx, cli, m.ID); err != nil {
				return fmt.Errorf("removing %s from etcd: %w", n.Name, err)
			}
		}
	}
	return nil
}

// waitRegistered waits until every node in the state has registered its
// machine, printing each as it arrives, and fails fast with the node's log
// if one of the processes dies first.
func (c *cluster) waitRegistered(ctx context.Context, timeout time.Duration, exits <-chan local.Exit, start time.Time) ([]registry.Machine, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	names := map[string]bool{}
	for _, n := range c.state.Nodes {
		names[n.Name] = true
	}
	failed := make(chan error, 1)
	go func() {
		select {
		case e := <-exits:
			failed <- fmt.Errorf("node %s stopped: %v\n%s", e.Node, e.Err, tail(c.local.LogFile(e.Node), 15))
			cancel()
		case <-ctx.Done():
		}
	}()
	cli, err := c.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	fmt.Fprintf(c.opts.Out, "waiting for %d machines to register\n", len(names))
	seen := map[string]bool{}
	ms, err := registry.WaitFor(ctx, cli, func(ms []registry.Machine) bool {
		n := 0
		for _, m := range ms {
			if !names[m.Name] {
				continue
			}
			n++
			if !seen[m.Name] {
				seen[m.Name] = true
				role := "client"
				if m.Member {
					role = "etcd member"
				}
				fmt.Fprintf(c.opts.Out, "  ✓ %-12s %-15s machine %s…  %s  (%.1fs)\n", m.Name, m.IP, m.ID[:8], role, time.Since(start).Seconds())
			}
		}
		return n == len(names)
	})
	select {
	case ferr := <-failed:
		return nil, ferr
	default:
	}
	if err != nil {
		var missing []string
		for name := range names {
			if !seen[name] {
				missing = append(missing, name)
			}
		}
		slices.Sort(missing)
		return nil, fmt.Errorf("%s did not register within %s (%w); logs in %s; re-run `provision up` to retry",
			strings.Join(missing, ", "), timeout, err, c.dir.NodeDir("<node>")+"/clusterd.log")
	}
	return ms, nil
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	lines = lines[max(0, len(lines)-n):]
	return "last lines of " + path + ":\n  " + strings.Join(lines, "\n  ")
}
