package provision_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/internal/corralbin"
	"github.com/corral-dev/corral/internal/sshtest"
	"github.com/corral-dev/corral/internal/syncbuf"
	"github.com/corral-dev/corral/providers/ssh"
	"github.com/corral-dev/corral/provision"
	"github.com/corral-dev/corral/provision/state"
	xssh "golang.org/x/crypto/ssh"
)

// sshCluster writes a cluster file for the ssh provider on machines.
func sshCluster(t *testing.T, dir, name, identity string, members int, machines []*sshtest.Machine) string {
	t.Helper()
	var hosts []string
	for _, m := range machines {
		hosts = append(hosts, fmt.Sprintf("%q", m.IP.String()))
	}
	hcl := fmt.Sprintf(`provider "ssh" {
  hosts          = [%s]
  user           = "root"
  identity_files = [%q]
}
cluster %q {
  etcd_members = %d
  machine_ttl  = "3s"
}
node_group "core" {
  desired_capacity = %d
  file "/etc/motd" { content = "managed by corral over ssh\n" }
}
`, strings.Join(hosts, ", "), identity, name, members, len(machines))
	file := filepath.Join(dir, name+".hcl")
	if err := os.WriteFile(file, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestSSH brings a cluster up with the ssh provider on three machines
// (sshd in network namespaces, PID 1 not systemd), checks that it formed,
// that the state records the hosts and their keys, that a second up changes
// nothing, that status and down work; then that a changed host key stops
// plan and down, naming the host and both fingerprints.
func TestSSH(t *testing.T) {
	start := time.Now()
	bin := corralbin.Path(t)
	tn := sshtest.NewNet(t)
	machines, identity := tn.Machines(t, 3)
	t.Logf("3 machines with sshd up in %v", time.Since(start).Round(time.Millisecond))
	hostMotd, hostMotdErr := os.ReadFile("/etc/motd")

	dir := t.TempDir()
	name := "ssh-" + tn.ID
	file := sshCluster(t, dir, name, identity, 3, machines)
	var out syncbuf.Buffer
	from := 0
	reset := func() { from = len(out.String()) }
	got := func() string { return out.String()[from:] }
	opts := provision.Options{File: file, Out: &out, Err: &out, Binary: bin}
	up := provision.UpOptions{Options: opts, AutoApprove: true, Timeout: 2 * time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	defer func() {
		if t.Failed() {
			t.Logf("provision's output:\n%s", out.String())
		}
	}()

	began := time.Now()
	if err := provision.Up(ctx, up); err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Logf("up (3 nodes): %v", time.Since(began).Round(time.Millisecond))
	if !strings.Contains(got(), "ssh provider, 3 hosts, user root") {
		t.Errorf("up does not describe the provider:\n%s", got())
	}

	// The state: each node on its host, each host's key.
	sdir := state.For(file, name)
	st, err := sdir.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nodes) != 3 {
		t.Fatalf("state has %d nodes: %+v", len(st.Nodes), st.Nodes)
	}
	for i, m := range machines {
		n := st.Nodes[i]
		if n.Host != m.IP.String() || n.IP != m.IP {
			t.Errorf("node %s: host %q ip %v, want %s", n.Name, n.Host, n.IP, m.IP)
		}
		want := m.Key.Type() + " " + xssh.FingerprintSHA256(m.Key)
		if got := st.HostKeys[m.IP.String()]; got != want {
			t.Errorf("host key of %s recorded as %q, want %q", m.IP, got, want)
		}
		if got, err := m.Read("/etc/motd"); err != nil || got != "managed by corral over ssh\n" {
			t.Errorf("%s: /etc/motd: %q, %v", m.Name, got, err)
		}
	}
	if len(st.HostKeys) != 3 {
		t.Errorf("host keys: %v", st.HostKeys)
	}
	if b, err := os.ReadFile("/etc/motd"); string(b) != string(hostMotd) || (err == nil) != (hostMotdErr == nil) {
		t.Fatalf("the host's /etc/motd changed: the machines' /etc leaks")
	}

	// The cluster, from outside.
	var eps []string
	for _, m := range machines {
		eps = append(eps, store.ClientURL(m.IP.AsSlice(), 0))
	}
	cli, err := store.Connect(ctx, sdir.AdminFiles(), eps)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ms, _, err := registry.List(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ms {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"core-1", "core-2", "core-3"}) || members(ms) != 3 {
		t.Fatalf("registry: %v with %d etcd members, want core-1..3, all members", names, members(ms))
	}
	mlist, err := cli.MemberList(ctx)
	if err != nil || len(mlist.Members) != 3 {
		t.Fatalf("etcd members: %v, %v", mlist, err)
	}

	// A second up changes nothing: no plan, clusterd keeps running.
	pids := map[string]string{}
	for _, m := range machines {
		pids[m.Name], _ = m.Read("/var/lib/corral/clusterd.pid")
	}
	reset()
	began = time.Now()
	if err := provision.Up(ctx, up); err != nil {
		t.Fatalf("second up: %v", err)
	}
	t.Logf("second up: %v", time.Since(began).Round(time.Millisecond))
	for _, w := range []string{"create", "update", "replace", "delete"} {
		if strings.Contains(strings.ToLower(got()), w) {
			t.Errorf("second up planned a change (%s):\n%s", w, got())
		}
	}
	for _, m := range machines {
		if pid, _ := m.Read("/var/lib/corral/clusterd.pid"); pid == "" || pid != pids[m.Name] {
			t.Errorf("%s: clusterd pid %q, was %q: restarted", m.Name, pid, pids[m.Name])
		}
	}
	reset()
	changes, err := provision.Plan(ctx, provision.PlanOptions{Options: opts})
	if err != nil || changes || !strings.Contains(got(), "No changes") {
		t.Errorf("plan after up: changes %v, %v:\n%s", changes, err, got())
	}

	// Status shows each node's process as the provider found it.
	reset()
	if err := provision.Status(ctx, opts); err != nil {
		t.Fatalf("status: %v", err)
	}
	if n := strings.Count(got(), "supervised"); n != 3 || strings.Contains(got(), "missing") {
		t.Errorf("status:\n%s", got())
	}
	t.Logf("status:\n%s", got())

	// provision ssh runs a command on a node's machine over SSH, with the
	// pinned host key, and exits with its status.
	reset()
	code, err := provision.Shell(ctx, provision.ShellOptions{Options: opts, Node: "core-2", Command: "cat /etc/motd; exit 5", In: strings.NewReader("")})
	if err != nil || code != 5 || !strings.Contains(got(), "managed by corral") {
		t.Errorf("provision ssh core-2: status %d, %v:\n%s", code, err, got())
	}
	cli.Close()

	// Down removes everything, on every machine and here.
	reset()
	began = time.Now()
	if err := provision.Down(ctx, opts); err != nil {
		t.Fatalf("down: %v", err)
	}
	t.Logf("down: %v", time.Since(began).Round(time.Millisecond))
	if _, err := os.Stat(sdir.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory %s left: %v", sdir.Path, err)
	}
	hosts := map[string]string{}
	for _, m := range machines {
		hosts[m.Name] = m.IP.String()
		for _, f := range []string{"/etc/motd", "/var/lib/corral/ssh-install", "/opt/bin/clusterd", "/var/lib/clusterd/machine-id"} {
			if _, err := os.Stat(m.Path(f)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s left after down (%v)", m.Name, f, err)
			}
		}
	}
	p := &ssh.Provider{Hosts: hosts, User: "root", IdentityFiles: []string{identity}, NoAgent: true}
	if inv, err := p.Inventory(ctx); err != nil || len(inv) != 0 {
		t.Errorf("after down, the machines have: %+v, %v", inv, err)
	}

	// A changed host key: plan and down refuse, naming the host and both
	// keys; with the key back, down works.
	m1 := machines[0]
	name1 := "ssh1-" + tn.ID
	file1 := sshCluster(t, dir, name1, identity, 1, machines[:1])
	opts1 := provision.Options{File: file1, Out: &out, Err: &out, Binary: bin}
	reset()
	began = time.Now()
	if err := provision.Up(ctx, provision.UpOptions{Options: opts1, AutoApprove: true, Timeout: 2 * time.Minute}); err != nil {
		t.Fatalf("up of one node: %v", err)
	}
	t.Logf("up (1 node): %v", time.Since(began).Round(time.Millisecond))
	oldKey := m1.Key
	newKey := m1.NewHostKey()
	_, err = provision.Plan(ctx, provision.PlanOptions{Options: opts1})
	var hk *ssh.HostKeyError
	if !errors.As(err, &hk) {
		t.Fatalf("plan with a changed host key: %v, want a host key error", err)
	}
	for _, want := range []string{m1.IP.String(), xssh.FingerprintSHA256(oldKey), xssh.FingerprintSHA256(newKey)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not name %s: %v", want, err)
		}
	}
	t.Logf("plan refused: %v", err)
	if err := provision.Down(ctx, opts1); !errors.As(err, &hk) {
		t.Errorf("down with a changed host key: %v, want a host key error", err)
	}
	if !state.For(file1, name1).Exists() {
		t.Error("a refused down removed the state")
	}
	if !strings.Contains(err.Error(), "host_keys in "+filepath.Join(state.For(file1, name1).Path, "state.json")) {
		t.Errorf("the error does not say where the key is recorded: %v", err)
	}
	m1.RestoreHostKey()

	// An installation the state does not know (a run that died before
	// saving its node): plan deletes it, by its host, and down finds it.
	dir1 := state.For(file1, name1)
	st1, err := dir1.Load()
	if err != nil {
		t.Fatal(err)
	}
	st1.Nodes = nil
	if err := dir1.Save(st1); err != nil {
		t.Fatal(err)
	}
	orphan := "host:" + m1.IP.String()
	reset()
	if changes, err := provision.Plan(ctx, provision.PlanOptions{Options: opts1}); err != nil || !changes || !strings.Contains(got(), orphan) {
		t.Errorf("plan with an installation the state lacks: changes %v, %v:\n%s", changes, err, got())
	}
	t.Logf("plan with an orphan installation:\n%s", got())
	reset()
	if err := provision.Down(ctx, opts1); err != nil {
		t.Fatalf("down with the host key back: %v", err)
	}
	if !strings.Contains(got(), orphan+" removed") {
		t.Errorf("down did not remove %s:\n%s", orphan, got())
	}
	if _, err := os.Stat(m1.Path("/var/lib/corral/ssh-install")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: installation left after down: %v", m1.Name, err)
	}
	t.Logf("whole test: %v", time.Since(start).Round(time.Millisecond))
}
