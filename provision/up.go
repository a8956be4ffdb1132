package provision

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/provision/state"
	"github.com/corral-dev/corral/templates"
	clientv3 "go.etcd.io/etcd/client/v3"
)

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

// spec is how a node is launched: clusterd's command line (the local
// provider runs it), and for providers that install nodes on machines, its
// boot description.
func (c *cluster) spec(t target, n state.Node) (providers.NodeSpec, error) {
	dataDir := c.dir.NodeDir(n.Name)
	args := []string{
		"--name", n.Name,
		"--data-dir", dataDir,
		"--ip", n.IP.String(),
		"--token-file", c.tokenFile(),
		"--machine-ttl", c.cfg.Cluster.MachineTTL.String(),
	}
	if servers := c.servers(n); len(servers) > 0 {
		args = append(args, "--servers", strings.Join(servers, ","))
	}
	switch c.mode(n) {
	case templates.ModeClient:
		args = append(args, "--mode", "client")
	case templates.ModeInit:
		args = append(args, "--mode", "init", "--ca-cert", c.adminFiles().CA, "--ca-key", c.caKeyFile())
	default:
		args = append(args, "--mode", "join")
	}
	extra, err := c.restoreArgs(n)
	if err != nil {
		return providers.NodeSpec{}, err
	}
	args = append(args, extra...)
	if g := c.group(n.Group); g != nil && len(g.Metadata) > 0 {
		args = append(args, "--metadata", c.metadataOf(*g))
	}
	switch {
	case !t.overlay():
		// Nodes share the host's network: there is nothing to overlay.
		args = append(args, "--no-overlay")
	case c.cfg.Network != nil:
		args = append(args, "--subnet-file", filepath.Join(dataDir, "subnet.env"),
			"--bridge", c.cfg.Network.Bridge, "--ip-masq="+strconv.FormatBool(c.cfg.Network.IPMasq))
	default:
		args = append(args, "--subnet-file", filepath.Join(dataDir, "subnet.env"))
	}
	spec := providers.NodeSpec{Name: n.Name, IP: n.IP, DataDir: dataDir, Args: args}
	if c.cfg.Provider.Type != "local" {
		boot, err := c.bootNode(n)
		if err != nil {
			return spec, err
		}
		spec.Boot = &boot
	}
	return spec, nil
}

// servers are the etcd members a node joins through: every member but
// itself.
func (c *cluster) servers(n state.Node) []string {
	var out []string
	for _, m := range c.state.Members() {
		if m.Name != n.Name {
			out = append(out, m.IP.String())
		}
	}
	return out
}

// mode is the part the node's clusterd plays in etcd.
func (c *cluster) mode(n state.Node) templates.Mode {
	switch {
	case n.Role == state.Client:
		return templates.ModeClient
	case c.initNode() == n.Name:
		return templates.ModeInit
	}
	return templates.ModeJoin
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
