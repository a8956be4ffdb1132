package provision_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/corral-dev/corral/providers/local"
	"github.com/corral-dev/corral/provision"
	"github.com/corral-dev/corral/provision/state"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
)

func count(n int) func([]registry.Machine) bool {
	return func(ms []registry.Machine) bool { return len(ms) == n }
}

func members(ms []registry.Machine) int {
	n := 0
	for _, m := range ms {
		if m.Member {
			n++
		}
	}
	return n
}

// pidsOf records every process of the cluster's nodes, by namespace.
func pidsOf(t *testing.T, c *clustertest.Cluster) map[string][]int {
	t.Helper()
	p := local.Provider{Cluster: c.Name}
	out := map[string][]int{}
	for _, n := range c.Nodes() {
		pids, err := hostnet.PIDs(p.Namespace(n.Name))
		if err != nil || len(pids) == 0 {
			t.Fatalf("%s: no process in its namespace (%v)", n.Name, err)
		}
		out[n.Name] = pids
	}
	return out
}

// alive reports whether a process exists and is not a zombie: a node whose
// parent has exited is reaped by PID 1 in its own time.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// assertGone checks that nothing of the cluster is left on the host.
func assertGone(t *testing.T, c *clustertest.Cluster, pids map[string][]int) {
	t.Helper()
	p := local.Provider{Cluster: c.Name}
	if nss, _ := hostnet.Namespaces("corral-" + c.Name + "-"); len(nss) > 0 {
		t.Errorf("namespaces left: %v", nss)
	}
	if out, _ := exec.Command("ip", "-o", "link", "show", p.Bridge()).CombinedOutput(); !strings.Contains(string(out), "does not exist") {
		t.Errorf("bridge %s left: %s", p.Bridge(), out)
	}
	for node := range pids {
		if out, _ := exec.Command("ip", "-o", "link", "show", p.HostVeth(node)).CombinedOutput(); !strings.Contains(string(out), "does not exist") {
			t.Errorf("veth of %s left: %s", node, out)
		}
	}
	for node, list := range pids {
		for _, pid := range list {
			if alive(pid) {
				t.Errorf("%s: process %d still exists", node, pid)
			}
		}
	}
	if _, err := os.Stat(c.Dir().Path); !os.IsNotExist(err) {
		t.Errorf("state dir %s left (%v)", c.Dir().Path, err)
	}
}

func TestUpListsMachinesAndDownLeavesNothing(t *testing.T) {
	// With the overlay on, so down is shown to take its devices too.
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Network: `cidr = "10.215.0.0/16"`})
	ms := c.WaitMachines(30*time.Second, "3 machines", count(3))
	if members(ms) != 3 {
		t.Fatalf("want 3 etcd members, got %d", members(ms))
	}
	for _, n := range c.Nodes() {
		if fi, err := os.Stat(c.Dir().NodeDir(n.Name)); err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("node dir %s: %v %v, want mode 0700", n.Name, fi, err)
		}
	}
	for _, f := range []string{"state.json", "pki/ca.key", "pki/token", "pki/admin.key"} {
		if fi, err := os.Stat(filepath.Join(c.Dir().Path, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, want mode 0600", f, err)
		}
	}
	out, _, code := c.Ctl("list-machines")
	if code != 0 {
		t.Fatalf("list-machines exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "MACHINE") || !strings.Contains(out, c.Node("core-1").IP.String()) {
		t.Fatalf("list-machines:\n%s", out)
	}
	pids := pidsOf(t, c)
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, c, pids)
}

// Scaling out adds clients without touching the running nodes; scaling in
// removes the newest nodes and they leave the list at once.
func TestScaleOutAndIn(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3})
	before := pidsOf(t, c)
	ids := map[string]string{}
	for _, m := range c.WaitMachines(30*time.Second, "3 machines", count(3)) {
		ids[m.Name] = m.ID
	}

	c.Scale(5)
	ms := c.WaitMachines(30*time.Second, "5 machines", count(5))
	if members(ms) != 3 {
		t.Fatalf("after scale-out: %d members, want 3 (new nodes are clients)", members(ms))
	}
	after := pidsOf(t, c)
	for name, pids := range before {
		if !slices.Equal(pids, after[name]) {
			t.Errorf("%s was restarted by scale-out: pids %v -> %v", name, pids, after[name])
		}
	}
	for _, m := range ms {
		if old, ok := ids[m.Name]; ok && old != m.ID {
			t.Errorf("%s changed machine id", m.Name)
		}
	}
	if !regexp.MustCompile(`node core-4 +joined`).MatchString(c.Output()) ||
		!regexp.MustCompile(`node core-5 +joined`).MatchString(c.Output()) {
		t.Errorf("up did not report the new nodes:\n%s", c.Output())
	}

	c.Scale(3)
	// Removed nodes revoke their leases on the way out: no TTL to wait for.
	ms, _, err := registry.List(context.Background(), c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	names := clustertest.MachineNames(ms)
	slices.Sort(names)
	if !slices.Equal(names, []string{"core-1", "core-2", "core-3"}) {
		t.Fatalf("after scale-in, machines = %v", names)
	}
	if nss, _ := hostnet.Namespaces("corral-" + c.Name + "-core-4"); len(nss) > 0 {
		t.Fatalf("core-4's namespace is left: %v", nss)
	}
	list, err := c.Admin.MemberList(context.Background())
	if err != nil || len(list.Members) != 3 {
		t.Fatalf("etcd members after scale-in: %v %v", list, err)
	}
}

// Five nodes launched at the same moment (three joining members, two
// clients) all join, every time.
func TestFiveNodesJoinAtOnce(t *testing.T) {
	runs := 20
	if testing.Short() {
		runs = 3
	}
	for i := range runs {
		c := clustertest.Start(t, clustertest.Options{Nodes: 5})
		ms := c.WaitMachines(time.Minute, "5 machines", count(5))
		if members(ms) != 3 {
			t.Fatalf("run %d: %d members, want 3", i, members(ms))
		}
		list, err := c.Admin.MemberList(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range list.Members {
			if m.IsLearner {
				t.Fatalf("run %d: member %s left a learner", i, m.Name)
			}
		}
		if err := c.Down(); err != nil {
			t.Fatalf("run %d: down: %v", i, err)
		}
	}
}

// A second run on a cluster that is being worked on is refused clearly.
func TestConcurrentUpIsRefused(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.hcl")
	src := "cluster \"lk\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 1 }\n"
	if err := os.WriteFile(file, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	lock, err := state.For(file, "lk").Lock("test")
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Unlock()
	var out bytes.Buffer
	err = provision.Up(context.Background(), provision.UpOptions{Options: provision.Options{File: file, Out: &out}})
	if !errors.Is(err, state.ErrLocked) || !strings.Contains(err.Error(), "another provision") {
		t.Fatalf("want a lock error, got %v", err)
	}
}

// Bad HCL: one clear diagnostic, exit 1, nothing created.
func TestBadConfigCreatesNothing(t *testing.T) {
	bin := clustertest.Binary(t)
	const valid = "cluster \"x\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 1 }\n"
	cases := []struct {
		name, src, want string
		args            []string // after up bad.hcl
	}{
		{"unknown block", "cluster \"x\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 1 }\nfrobnicate {}\n",
			"bad.hcl:4,1", nil},
		{"wrong type", "cluster \"x\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = \"three\" }\n",
			"bad.hcl:3,", nil},
		{"negative capacity", "cluster \"x\" {}\nprovider \"local\" {}\nnode_group \"core\" {\n  desired_capacity = -1\n}\n",
			"desired_capacity must be 0 or more, got -1", nil},
		{"missing provider", "cluster \"x\" {}\nnode_group \"core\" { desired_capacity = 1 }\n",
			"Missing provider block", nil},
		{"cycle between locals", "locals {\n  a = local.b\n  b = local.a\n}\n" + valid,
			"bad.hcl:2,3: Error: Cycle between local values", nil},
		{"bad CIDR", "locals { s = cidrsubnet(\"10.0.0.0/24\", 10, 1) }\n" + valid,
			"bad.hcl:1,14: Error: Error in function call", nil},
		{"required variable", "variable \"n\" { type = number }\n" + valid,
			"bad.hcl:1,1: Error: No value for required variable", nil},
		{"service file missing", valid + "service \"web.service\" { source = \"units/nope.service\" }\n",
			"bad.hcl:4,34: Error: Unit file not found", nil},
		{"undeclared -var", valid,
			"<value for var.nope>:1,1: Error: Value for undeclared variable", []string{"-var", "nope=1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "bad.hcl"), []byte(tc.src), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, append([]string{"up", "bad.hcl"}, tc.args...)...)
			cmd.Dir = dir
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("want exit 1, got %v\n%s", err, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("stderr lacks %q:\n%s", tc.want, stderr.String())
			}
			if n := strings.Count(stderr.String(), "Error: "); n != 1 {
				t.Fatalf("want one diagnostic, got %d:\n%s", n, stderr.String())
			}
			if _, err := os.Stat(filepath.Join(dir, ".corral")); !os.IsNotExist(err) {
				t.Fatalf(".corral was created for a bad file")
			}
		})
	}
}

// The env command prints what a user's own etcdctl needs.
func TestEnvNamesCertificates(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1})
	var out bytes.Buffer
	if err := provision.Env(provision.Options{File: c.File, Out: &out}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"export ETCDCTL_ENDPOINTS=https://" + c.Node("core-1").IP.String() + ":2379",
		"export ETCDCTL_CACERT=" + c.Dir().AdminFiles().CA,
		"export ETCDCTL_CERT=", "export ETCDCTL_KEY=",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("env lacks %q:\n%s", want, out.String())
		}
	}
	var st bytes.Buffer
	if err := provision.Status(context.Background(), provision.Options{File: c.File, Out: &st}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(st.String(), "healthy (leader)") || !strings.Contains(st.String(), "core-1") {
		t.Fatalf("status:\n%s", st.String())
	}
}

// Without the privileges for namespaces, nodes run on loopback addresses
// and say so; down still removes everything.
func TestLoopbackFallbackWithoutRoot(t *testing.T) {
	bin := clustertest.Binary(t)
	dir := t.TempDir()
	const nobody = 65534
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parent is 0700: let nobody through to its own directory.
	if err := os.Chmod(filepath.Dir(dir), 0o711); err != nil {
		t.Fatal(err)
	}
	hcl := "cluster \"lo\" {\n  machine_ttl = \"3s\"\n}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 3 }\n"
	file := filepath.Join(dir, "lo.hcl")
	if err := os.WriteFile(file, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	// A copy inside the test's directory: the checkout may sit where nobody
	// can't reach (under /root, say).
	src, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "provision")
	if err := os.WriteFile(bin, src, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func(args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() { asNobody("down", "lo.hcl") })
	out, err := asNobody("up", "lo.hcl")
	if err != nil {
		t.Fatalf("up as nobody: %v\n%s", err, out)
	}
	for _, want := range []string{"nodes will run on loopback addresses", "loopback isolation", "127.77.0.13", "3 machines, 3 etcd members"} {
		if !strings.Contains(out, want) {
			t.Errorf("up output lacks %q:\n%s", want, out)
		}
	}
	st, err := state.For(file, "lo").Load()
	if err != nil || len(st.Nodes) != 3 {
		t.Fatalf("state: %v %v", st, err)
	}
	var pids []int
	for _, n := range st.Nodes {
		b, err := os.ReadFile(filepath.Join(dir, ".corral", "lo", "nodes", n.Name, "pid"))
		if err != nil {
			t.Fatal(err)
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		pids = append(pids, pid)
	}
	if out, err := asNobody("down", "lo.hcl"); err != nil {
		t.Fatalf("down as nobody: %v\n%s", err, out)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d left after down", pid)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ".corral")); !os.IsNotExist(err) {
		t.Errorf(".corral left after down")
	}
}

// Scaling in past the clients takes members out of etcd first, so the
// cluster keeps its quorum; scaling out again brings new members in.
func TestScaleInRemovesMembers(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3})
	// 3 voters to 2 keeps a quorum of the 3 (2 → 1 would not, and is
	// refused: see the membership tests).
	c.Scale(2)
	list, err := c.Admin.MemberList(context.Background())
	if err != nil || len(list.Members) != 2 || slices.ContainsFunc(list.Members, func(m *etcdserverpb.Member) bool { return m.Name == "core-3" }) {
		t.Fatalf("members after scale-in to 2: %v %v", list, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Admin.Put(ctx, "/still", "writable"); err != nil {
		t.Fatalf("write after scale-in: %v", err)
	}
	c.Scale(3)
	ms := c.WaitMachines(30*time.Second, "3 machines", count(3))
	if members(ms) != 3 {
		t.Fatalf("after scaling out again: %d members, want 3", members(ms))
	}
}

// A node that fails as it boots is reported at once, with the last lines
// of its log, instead of up waiting out its timeout.
func TestBootFailureIsReported(t *testing.T) {
	c := clustertest.Prepare(t, clustertest.Options{Nodes: 1})
	bad := filepath.Join(t.TempDir(), "clusterd")
	script := "#!/bin/sh\necho 'clusterd: cannot open /dev/kvm: refusing to start' >&2\nexit 3\n"
	if err := os.WriteFile(bad, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := provision.Up(context.Background(), provision.UpOptions{
		Options: provision.Options{File: c.File, Out: &out, Err: &out, Binary: bad},
		Timeout: 10 * time.Minute, // never reached: the report ends the wait
	})
	if err == nil || !strings.Contains(err.Error(), "node core-1") || !strings.Contains(err.Error(), "refusing to start") {
		t.Fatalf("up with a node that cannot boot: %v\n%s", err, out.String())
	}
	if !regexp.MustCompile(`node core-1 +failed`).MatchString(out.String()) {
		t.Errorf("the progress display does not show the failure:\n%s", out.String())
	}
}
