// Package clustertest runs real Corral clusters inside tests: the built
// binary, started by the real provision code as clusterd processes in their
// own network namespaces. It can kill a node (a machine failure), cut its
// veth (a partition), restart it, and wait for a condition by watching etcd.
// Every cluster is removed when the test ends, failed or not.
package clustertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/internal/corralbin"
	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/corral-dev/corral/internal/syncbuf"
	"github.com/corral-dev/corral/providers/local"
	"github.com/corral-dev/corral/provision"
	"github.com/corral-dev/corral/provision/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Binary returns the corral binary under test: $CORRAL_BIN (what `make
// test` builds), or one built once for this test process.
func Binary(t testing.TB) string { return corralbin.Path(t) }

// RequireRoot fails the test (never skips it) when namespaces can't be made:
// CI runs as root, and a suite that silently skips proves nothing.
func RequireRoot(t testing.TB) {
	t.Helper()
	if err := hostnet.Check(); err != nil {
		t.Fatalf("this test needs network namespaces: %v (run the suite as root, as CI does)", err)
	}
}

// Options shape a test cluster.
type Options struct {
	Nodes       int           // desired_capacity of the one node group "core"
	EtcdMembers int           // default 3 (1 when Nodes is 1 or 2)
	TTL         time.Duration // machine_ttl; default 3s, short so tests of expiry are quick
	Metadata    string        // optional HCL map for the group, e.g. `{ role = "web" }`
	// Network is the body of an optional network block, e.g.
	// `cidr = "10.1.0.0/16"  backend = "vxlan"`.
	Network string
}

// Cluster is a running test cluster.
type Cluster struct {
	T      testing.TB
	Name   string
	File   string // its HCL file
	Binary string
	Admin  *clientv3.Client
	opts   Options
	log    syncbuf.Buffer // up may run in a goroutine while the test reads it
	prov   *local.Provider
	state  *state.State
}

// Start brings up a cluster and registers its removal with t.Cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	c := Prepare(t, opts)
	c.Up()
	return c
}

// Prepare writes a cluster's file, and registers its removal with
// t.Cleanup, without bringing it up.
func Prepare(t testing.TB, opts Options) *Cluster {
	t.Helper()
	RequireRoot(t)
	if opts.EtcdMembers == 0 {
		opts.EtcdMembers = 3
		if opts.Nodes < 3 {
			opts.EtcdMembers = 1
		}
	}
	if opts.TTL == 0 {
		opts.TTL = 3 * time.Second
	}
	var raw [3]byte
	rand.Read(raw[:])
	c := &Cluster{T: t, Name: "t" + hex.EncodeToString(raw[:]), Binary: Binary(t), opts: opts}
	cidr := freeSubnet(t)
	dir := t.TempDir()
	c.File = filepath.Join(dir, "cluster.hcl")
	c.writeHCL(cidr)
	t.Cleanup(c.remove)
	return c
}

// freeSubnet picks a /24 that no route on this host uses, so clusters of
// tests running side by side (go test runs packages in parallel) never
// share one; from 198.18.0.0/15, the range set aside for benchmarking,
// which real networks don't use.
func freeSubnet(t testing.TB) string {
	for range 50 {
		var raw [2]byte
		rand.Read(raw[:])
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + raw[0]%2, raw[1], 0}), 24)
		if clash, err := hostnet.RoutesOverlapping(p, ""); err == nil && len(clash) == 0 {
			return p.String()
		}
	}
	t.Fatal("no free /24 in 198.18.0.0/15")
	return ""
}

func (c *Cluster) writeHCL(cidr string) {
	md := ""
	if c.opts.Metadata != "" {
		md = "metadata = " + c.opts.Metadata
	}
	src := fmt.Sprintf(`cluster %q {
  etcd_members = %d
  machine_ttl  = %q
}
provider "local" { cidr = %q }
node_group "core" {
  desired_capacity = %d
  %s
}
`, c.Name, c.opts.EtcdMembers, c.opts.TTL, cidr, c.opts.Nodes, md)
	if c.opts.Network != "" {
		src += "network {\n  " + strings.ReplaceAll(c.opts.Network, "  ", "\n  ") + "\n}\n"
	}
	if err := os.WriteFile(c.File, []byte(src), 0o600); err != nil {
		c.T.Fatal(err)
	}
}

// Scale changes desired_capacity and runs up again.
func (c *Cluster) Scale(n int) {
	c.T.Helper()
	c.Edit(fmt.Sprintf("desired_capacity = %d", c.opts.Nodes), fmt.Sprintf("desired_capacity = %d", n))
	c.opts.Nodes = n
	c.Up()
}

// Edit replaces old with new in the cluster's HCL file, as a user would.
func (c *Cluster) Edit(old, new string) {
	c.T.Helper()
	src, err := os.ReadFile(c.File)
	if err != nil {
		c.T.Fatal(err)
	}
	if !bytes.Contains(src, []byte(old)) {
		c.T.Fatalf("%s has no %q", c.File, old)
	}
	if err := os.WriteFile(c.File, bytes.Replace(src, []byte(old), []byte(new), 1), 0o600); err != nil {
		c.T.Fatal(err)
	}
}

// Up runs `provision up` (converge: starts what is stopped).
func (c *Cluster) Up() {
	c.T.Helper()
	if err := c.TryUp(); err != nil {
		c.T.Fatalf("provision up: %v\n%s", err, c.log.String())
	}
}

// TryUp runs `provision up` and returns its error.
func (c *Cluster) TryUp() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := provision.Up(ctx, provision.UpOptions{Options: c.options(), Timeout: time.Minute, AutoApprove: true})
	if err != nil {
		return err
	}
	return c.reload()
}

func (c *Cluster) options() provision.Options {
	return provision.Options{File: c.File, Out: &c.log, Err: &c.log, Binary: c.Binary}
}

// Output is what provision printed so far.
func (c *Cluster) Output() string { return c.log.String() }

// reload reads the state and connects the admin client.
func (c *Cluster) reload() error {
	dir := state.For(c.File, c.Name)
	st, err := dir.Load()
	if err != nil {
		return err
	}
	c.state = st
	c.prov = &local.Provider{Cluster: c.Name, Isolation: local.Isolation(st.Isolation), StateDir: dir.Path}
	if c.Admin == nil {
		var eps []string
		for _, m := range st.Members() {
			eps = append(eps, store.ClientURL(m.IP.AsSlice(), 0))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c.Admin, err = store.Connect(ctx, dir.AdminFiles(), eps); err == nil {
			err = store.Ready(ctx, c.Admin)
		}
	}
	return err
}

// Nodes returns the state's nodes.
func (c *Cluster) Nodes() []state.Node { return c.state.Nodes }

// Node returns one node of the state.
func (c *Cluster) Node(name string) state.Node {
	n := c.state.Node(name)
	if n == nil {
		c.T.Fatalf("no node %s in cluster %s", name, c.Name)
	}
	return *n
}

// Dir is the cluster's state directory.
func (c *Cluster) Dir() state.Dir { return state.For(c.File, c.Name) }

// Kill stops a node's clusterd with SIGKILL: a machine failure.
func (c *Cluster) Kill(name string) {
	c.T.Helper()
	if err := c.prov.Kill(name); err != nil {
		c.T.Fatal(err)
	}
}

// Restart starts a killed node again with its data, through `provision up`.
func (c *Cluster) Restart(name string) { c.T.Helper(); c.Up() }

// Partition cuts a node's veth; Heal restores it.
func (c *Cluster) Partition(name string) { c.T.Helper(); c.setLink(name, false) }

// Heal reconnects a partitioned node.
func (c *Cluster) Heal(name string) { c.T.Helper(); c.setLink(name, true) }

func (c *Cluster) setLink(name string, up bool) {
	if err := hostnet.SetLinkUp(c.prov.HostVeth(name), up); err != nil {
		c.T.Fatal(err)
	}
}

// WaitMachines waits, by watching the registry, until cond holds.
func (c *Cluster) WaitMachines(timeout time.Duration, what string, cond func([]registry.Machine) bool) []registry.Machine {
	c.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ms, err := registry.WaitFor(ctx, c.Admin, cond)
	if err != nil {
		c.T.Fatalf("waiting for %s: %v (machines now: %v)", what, err, names(ms))
	}
	return ms
}

// MachineNames lists machine names, for conditions and messages.
func MachineNames(ms []registry.Machine) []string { return names(ms) }

func names(ms []registry.Machine) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

// Ctl runs clusterctl against the cluster, as a user would after `eval
// "$(provision env FILE)"`, and returns stdout, stderr and the exit code.
func (c *Cluster) Ctl(args ...string) (string, string, int) {
	c.T.Helper()
	cmd := exec.Command(c.Binary, append([]string{"ctl"}, args...)...)
	cmd.Env = c.Env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.T.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// Env is this process's environment plus what `provision env` exports:
// what a user's shell has after eval "$(provision env FILE)".
func (c *Cluster) Env() []string {
	c.T.Helper()
	var out bytes.Buffer
	if err := provision.Env(provision.Options{File: c.File, Out: &out}); err != nil {
		c.T.Fatal(err)
	}
	env := os.Environ()
	for _, line := range strings.Split(out.String(), "\n") {
		if kv, ok := strings.CutPrefix(line, "export "); ok {
			env = append(env, kv)
		}
	}
	return env
}

// Down removes the cluster now (it is also removed at cleanup).
func (c *Cluster) Down() error {
	if c.Admin != nil {
		c.Admin.Close()
		c.Admin = nil
	}
	return provision.Down(context.Background(), c.options())
}

// remove runs at cleanup, and on failure shows the nodes' logs.
func (c *Cluster) remove() {
	if c.T.Failed() {
		c.dumpLogs()
	}
	if !c.Dir().Exists() {
		return
	}
	if err := c.Down(); err != nil {
		c.T.Errorf("provision down: %v\n%s", err, c.log.String())
	}
}

func (c *Cluster) dumpLogs() {
	matches, _ := filepath.Glob(filepath.Join(c.Dir().Path, "nodes", "*", "clusterd.log"))
	for _, m := range matches {
		b, _ := os.ReadFile(m)
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		c.T.Logf("%s (last 30 lines):\n%s", m, strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
}
