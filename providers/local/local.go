// Package local runs a cluster on this machine: every node is a clusterd
// process in its own network namespace (corral-<cluster>-<node>), joined by a
// veth pair to a bridge in the host namespace that holds the subnet's first
// address. Nodes outlive the provision run that started them.
//
// Without the privileges for namespaces, nodes run in the host namespace on
// loopback addresses (127.77.0.N) instead; the cluster works the same, only
// partitions can't be simulated.
package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/corral-dev/corral/providers"
)

// Isolation is how nodes are kept apart.
type Isolation string

// The two isolation modes.
const (
	Netns    Isolation = "netns"
	Loopback Isolation = "loopback"
)

// LoopbackPrefix is where nodes live when namespaces are not available.
var LoopbackPrefix = netip.MustParsePrefix("127.77.0.0/24")

// Provider is the local provider for one cluster.
type Provider struct {
	Cluster   string
	CIDR      netip.Prefix // the bridge's subnet (netns mode)
	Isolation Isolation
	Binary    string // the corral binary, run as clusterd
	StateDir  string // holds nodes/<name>/ with pid files and logs
	// Grace is how long Terminate lets a node shut down cleanly (leave etcd
	// leadership, revoke its registration) before killing it; default 10 s.
	// Negative means kill at once.
	Grace time.Duration

	mu    sync.Mutex
	exits chan providers.Report
}

var _ providers.Provider = (*Provider)(nil)

// Detect picks the isolation this process can use, with the reason when it
// has to fall back to loopback.
func Detect() (Isolation, error) {
	if err := hostnet.Check(); err != nil {
		return Loopback, err
	}
	return Netns, nil
}

// Namespace is the network namespace of a node.
func (p *Provider) Namespace(node string) string { return "corral-" + p.Cluster + "-" + node }

// Bridge is the cluster's bridge name (at most 15 bytes, unique per cluster).
func (p *Provider) Bridge() string { return "crl" + shortHash(p.Cluster, 8) }

// HostVeth is the host side of a node's veth pair: cutting it partitions the node.
func (p *Provider) HostVeth(node string) string { return "v" + shortHash(p.Cluster+"/"+node, 10) }

func shortHash(s string, n int) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:n]
}

// Gateway is the bridge's address, the subnet's first.
func (p *Provider) Gateway() netip.Addr { return p.CIDR.Masked().Addr().Next() }

// Prefix is the subnet nodes are addressed from in the chosen isolation.
func (p *Provider) Prefix() netip.Prefix {
	if p.Isolation == Loopback {
		return LoopbackPrefix
	}
	return p.CIDR.Masked()
}

// Allocate returns the lowest free node address: .11 upward (the first
// node is .11, as in fleet's examples), skipping those in use.
func Allocate(prefix netip.Prefix, used []netip.Addr) (netip.Addr, error) {
	a := prefix.Masked().Addr()
	for range 11 {
		a = a.Next()
	}
	for ; prefix.Contains(a); a = a.Next() {
		if !slices.Contains(used, a) && prefix.Contains(a.Next()) { // never the broadcast address
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no free address left in %s", prefix)
}

// Setup makes the cluster-wide pieces: the bridge, in netns mode.
func (p *Provider) Setup(ctx context.Context) error {
	if p.Isolation != Netns {
		return nil
	}
	if clash, err := hostnet.RoutesOverlapping(p.CIDR.Masked(), p.Bridge()); err != nil {
		return err
	} else if len(clash) > 0 {
		return fmt.Errorf("local provider: cidr %s overlaps this host's routes %s; choose another cidr in the provider \"local\" block",
			p.CIDR, strings.Join(clash, ", "))
	}
	return hostnet.EnsureBridge(p.Bridge(), netip.PrefixFrom(p.Gateway(), p.CIDR.Bits()))
}

func (p *Provider) nodeDir(node string) string { return filepath.Join(p.StateDir, "nodes", node) }
func (p *Provider) pidFile(node string) string { return filepath.Join(p.nodeDir(node), "pid") }

// LogFile is where a node's clusterd writes its log.
func (p *Provider) LogFile(node string) string { return filepath.Join(p.nodeDir(node), "clusterd.log") }

// Reports delivers the nodes whose processes ended after this provider
// started them, with the last lines of their logs: a node that fails to
// boot is reported at once, not after a timeout.
func (p *Provider) Reports() <-chan providers.Report { return p.exitChan() }

var _ providers.Reporter = (*Provider)(nil)

// Tail returns the last n lines of a log file, for error messages.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	lines = lines[max(0, len(lines)-n):]
	return "last lines of " + path + ":\n  " + strings.Join(lines, "\n  ")
}

func (p *Provider) exitChan() chan providers.Report {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exits == nil {
		p.exits = make(chan providers.Report, 64)
	}
	return p.exits
}

// Launch starts the node's clusterd unless it is running already.
func (p *Provider) Launch(ctx context.Context, spec providers.NodeSpec) error {
	if p.clusterd(spec.Name) != 0 {
		return nil
	}
	if err := os.MkdirAll(p.nodeDir(spec.Name), 0o700); err != nil {
		return err
	}
	log, err := os.OpenFile(p.LogFile(spec.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := &exec.Cmd{
		Path:   p.Binary,
		Args:   append([]string{"clusterd"}, spec.Args...),
		Stdout: log,
		Stderr: log,
		// Its own session: the node outlives this run and ignores its ^C.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if p.Isolation == Netns {
		gw := p.Gateway()
		err = hostnet.EnsureNode(hostnet.Node{
			Namespace: p.Namespace(spec.Name), HostVeth: p.HostVeth(spec.Name), Bridge: p.Bridge(),
			Addr: netip.PrefixFrom(spec.IP, p.CIDR.Bits()), Gateway: gw,
		})
		if err != nil {
			return fmt.Errorf("%s: network: %w", spec.Name, err)
		}
		err = hostnet.Start(p.Namespace(spec.Name), cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return fmt.Errorf("%s: starting clusterd: %w", spec.Name, err)
	}
	if err := os.WriteFile(p.pidFile(spec.Name), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		return err
	}
	exits := p.exitChan()
	go func() {
		err := cmd.Wait()
		if err == nil {
			err = errors.New("exited")
		}
		select {
		case exits <- providers.Report{Node: spec.Name, Err: fmt.Errorf("clusterd stopped: %w\n%s", err, Tail(p.LogFile(spec.Name), 15))}:
		default:
		}
	}()
	return nil
}

// pids finds a node's processes: everything in its namespace (clusterd
// and the units it runs), or in loopback mode clusterd alone.
func (p *Provider) pids(node string) []int {
	if p.Isolation == Netns {
		if !hostnet.Exists(p.Namespace(node)) {
			return nil
		}
		pids, _ := hostnet.PIDs(p.Namespace(node))
		return pids
	}
	if pid := p.clusterd(node); pid != 0 {
		return []int{pid}
	}
	return nil
}

// clusterd returns the pid of the node's clusterd, or 0 if it isn't
// running. Units outlive clusterd (the exec driver re-adopts them), so a
// node with processes is not necessarily a node with clusterd.
//
// The pid file is written after the process starts, so a run killed in
// between leaves a clusterd without one: when the file names no live
// clusterd of the node, the node's processes are searched for it, and the
// file is written again. Starting a second clusterd on the same data
// would block on the first one's locks.
func (p *Provider) clusterd(node string) int {
	if b, err := os.ReadFile(p.pidFile(node)); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && p.isClusterd(node, pid) {
			return pid
		}
	}
	var candidates []int
	if p.Isolation == Netns {
		if !hostnet.Exists(p.Namespace(node)) {
			return 0
		}
		candidates, _ = hostnet.PIDs(p.Namespace(node))
	} else {
		dirs, _ := os.ReadDir("/proc")
		for _, d := range dirs {
			if pid, err := strconv.Atoi(d.Name()); err == nil {
				candidates = append(candidates, pid)
			}
		}
	}
	for _, pid := range candidates {
		if p.isClusterd(node, pid) {
			os.WriteFile(p.pidFile(node), []byte(strconv.Itoa(pid)+"\n"), 0o600)
			return pid
		}
	}
	return 0
}

// isClusterd reports whether pid is the node's clusterd: run as clusterd,
// with the node's data directory. A recycled pid, or a unit's process,
// is not.
func (p *Provider) isClusterd(node string, pid int) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(string(cmdline), "\x00")
	return args[0] == "clusterd" && slices.Contains(args, p.nodeDir(node))
}

// Inventory lists the nodes that exist: by namespace, and by node directory.
func (p *Provider) Inventory(ctx context.Context) ([]providers.Instance, error) {
	names := map[string]bool{}
	prefix := "corral-" + p.Cluster + "-"
	nss, err := hostnet.Namespaces(prefix)
	if err != nil {
		return nil, err
	}
	for _, ns := range nss {
		names[strings.TrimPrefix(ns, prefix)] = true
	}
	dirs, _ := os.ReadDir(filepath.Join(p.StateDir, "nodes"))
	for _, d := range dirs {
		names[d.Name()] = true
	}
	var out []providers.Instance
	for name := range names {
		pid := p.clusterd(name)
		detail := "stopped"
		if pid != 0 {
			detail = "pid " + strconv.Itoa(pid)
		}
		if p.Isolation == Netns {
			detail += " in netns " + p.Namespace(name)
		}
		out = append(out, providers.Instance{Name: name, Running: pid != 0, Detail: detail})
	}
	slices.SortFunc(out, func(a, b providers.Instance) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Terminate stops the node's processes (SIGTERM, then SIGKILL after the
// grace period) and removes its namespace and directory.
func (p *Provider) Terminate(ctx context.Context, name string) error {
	grace := p.Grace
	if grace == 0 {
		grace = 10 * time.Second
	}
	if err := Stop(p.pids(name), max(grace, 0)); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if p.Isolation == Netns {
		if err := hostnet.DeleteNamespace(p.Namespace(name)); err != nil {
			return fmt.Errorf("%s: deleting namespace: %w", name, err)
		}
		// The veth normally goes with the namespace; make sure.
		if err := hostnet.DeleteLink(p.HostVeth(name)); err != nil {
			return err
		}
	}
	return os.RemoveAll(p.nodeDir(name))
}

// Kill stops a node's processes abruptly, as a machine failure would, and
// leaves everything else in place so it can be started again.
func (p *Provider) Kill(name string) error { return kill(p.pids(name)) }

func kill(pids []int) error {
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
	}
	return waitGone(pids, 10*time.Second)
}

// Teardown removes the bridge once the nodes are gone.
func (p *Provider) Teardown(ctx context.Context) error {
	if p.Isolation != Netns {
		return nil
	}
	return hostnet.DeleteLink(p.Bridge())
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs what is left.
func Stop(pids []int, grace time.Duration) error {
	if grace <= 0 {
		return kill(pids)
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGTERM)
	}
	if waitGone(pids, grace) == nil {
		return nil
	}
	return kill(pids)
}

// waitGone waits for processes to exit. They may not be our children (a
// node outlives the run that started it), so there is nothing to wait(2) on;
// pidfd_open gives a descriptor that polls readable when the process ends.
func waitGone(pids []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, pid := range pids {
		if err := waitPid(pid, time.Until(deadline)); err != nil {
			return err
		}
	}
	return nil
}

// Check reports why this process can't use network namespaces, or nil.
func Check() error { return hostnet.Check() }

var _ providers.Sheller = (*Provider)(nil)

// Shell runs command (a login shell when it is "") with sh in the node's
// network namespace, in its directory, with CLUSTERD_DATA_DIR set so that
// clusterctl there talks to the node as it would on a machine of its own.
func (p *Provider) Shell(ctx context.Context, node, command string, in io.Reader, out, errOut io.Writer) (int, error) {
	if _, err := os.Stat(p.nodeDir(node)); err != nil {
		return 0, fmt.Errorf("no node %s in this cluster (%w)", node, err)
	}
	args := []string{"-i"}
	if command != "" {
		args = []string{"-c", command}
	}
	// clusterctl is the corral binary under that name, as on a machine.
	bin := filepath.Join(p.nodeDir(node), "bin")
	os.MkdirAll(bin, 0o700)
	if _, err := os.Lstat(filepath.Join(bin, "clusterctl")); err != nil {
		if err := os.Symlink(p.Binary, filepath.Join(bin, "clusterctl")); err != nil {
			return 0, err
		}
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", args...)
	cmd.Dir = p.nodeDir(node)
	cmd.Env = append(os.Environ(), "CLUSTERD_DATA_DIR="+p.nodeDir(node), "PS1="+node+"# ",
		"PATH="+bin+":"+os.Getenv("PATH"))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = in, out, errOut
	var err error
	if p.Isolation == Netns {
		err = hostnet.Start(p.Namespace(node), cmd)
	} else {
		err = cmd.Start()
	}
	if err != nil {
		return 0, err
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), nil
	}
	return 0, err
}
