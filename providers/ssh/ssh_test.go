package ssh

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/internal/corralbin"
	"github.com/corral-dev/corral/internal/sshtest"
	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/templates"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

func sha512File(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha512.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestCluster installs clusterd over SSH on three machines running
// Debian's OpenSSH server, whose PID 1 is not systemd, and checks that
// they form a cluster; that launching again changes nothing; that a changed
// host key is refused, naming the host and both fingerprints; and that
// Terminate removes clusterd and everything installed.
func TestCluster(t *testing.T) {
	start := time.Now()
	bin := corralbin.Path(t)
	sum := sha512File(t, bin)
	tn := sshtest.NewNet(t)
	tn.Logs = []string{logPath}
	sshtest.MakeMountpoints(t)
	dir := t.TempDir()
	clientKey := sshtest.NewKey(t, filepath.Join(dir, "id_ed25519"))
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, ssh.MarshalAuthorizedKey(clientKey), 0o600); err != nil {
		t.Fatal(err)
	}
	shadow := sshtest.UnlockedShadow(t, dir)
	var machines []*sshtest.Machine
	for i := range 3 {
		machines = append(machines, tn.Machine(t, i, authorized, shadow))
	}
	t.Logf("3 machines with sshd up in %v", time.Since(start).Round(time.Millisecond))

	// The cluster's PKI, as provision makes it.
	cluster := "ssh" + tn.ID
	ca, err := pki.NewCA(cluster)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := pki.NewToken(ca)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	admin := pki.Files{CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "admin.crt"), Key: filepath.Join(dir, "admin.key")}
	cert, key, err := ca.Issue(pki.CertRequest{CommonName: "corral-admin"}, pki.DefaultValidity)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.Write(ca.CertPEM(), cert, key); err != nil {
		t.Fatal(err)
	}

	// Boot descriptions: core-1 starts etcd, the others join through it.
	specs := make([]providers.NodeSpec, 3)
	for i, m := range machines {
		n := &templates.Node{
			Hostname: m.Name, Cluster: cluster,
			Clusterd: templates.Clusterd{
				Mode: templates.ModeJoin, Token: tok.String(), CACert: ca.CertPEM(), IP: m.IP,
				Servers: []string{machines[0].IP.String()}, MachineTTL: 5 * time.Second,
				Driver: "exec", Network: templates.Network{Disabled: true},
			},
			// The URL is what user data would fetch; over SSH the binary is
			// uploaded, and must have this SHA-512.
			Binary: templates.Binary{URL: "https://assets.corral.invalid/provision-linux-amd64", SHA512: sum},
		}
		if i == 0 {
			n.Clusterd.Mode, n.Clusterd.CAKey, n.Clusterd.Servers = templates.ModeInit, caKey, nil
		}
		specs[i] = providers.NodeSpec{Name: m.Name, IP: m.IP, Boot: n}
	}

	var mu sync.Mutex
	recorded := map[string]string{}
	hosts := map[string]string{}
	for _, m := range machines {
		hosts[m.Name] = m.IP.String()
	}
	p := &Provider{
		Hosts: hosts, User: "root", IdentityFiles: []string{filepath.Join(dir, "id_ed25519")}, NoAgent: true,
		Binary: bin, JoinTimeout: 90 * time.Second, Grace: 5 * time.Second,
		OnNewHostKey: func(host, fp string) error {
			mu.Lock()
			defer mu.Unlock()
			recorded[host] = fp
			return nil
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Launch, one after the other: each waits until its node is in the
	// registry, and a joining node needs the members before it.
	for i, spec := range specs {
		began := time.Now()
		if err := p.Launch(ctx, spec); err != nil {
			t.Fatalf("Launch %s: %v", spec.Name, err)
		}
		t.Logf("Launch %s (upload, install, start, join): %v", spec.Name, time.Since(began).Round(time.Millisecond))
		m := machines[i]
		if got, want := recorded[m.IP.String()], fingerprint(m.Key); got != want {
			t.Errorf("%s: recorded host key %q, the machine's is %q", m.Name, got, want)
		}
	}
	if len(recorded) != 3 || len(p.HostKeys) != 3 {
		t.Errorf("host keys recorded: %v, provider holds %v", recorded, p.HostKeys)
	}

	// The cluster, from outside: three machines in the registry.
	var eps []string
	for _, m := range machines {
		eps = append(eps, store.ClientURL(m.IP.AsSlice(), 0))
	}
	cli, err := store.Connect(ctx, admin, eps)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	ms, err := registry.WaitFor(wctx, cli, func(ms []registry.Machine) bool { return len(ms) == 3 })
	wcancel()
	if err != nil {
		t.Fatalf("waiting for 3 machines: %v (have %v)", err, ms)
	}
	var names []string
	members := 0
	for _, m := range ms {
		names = append(names, m.Name)
		if m.Member {
			members++
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"core-1", "core-2", "core-3"}) || members != 3 {
		t.Fatalf("registry: %v with %d etcd members, want core-1..3 all members", names, members)
	}
	t.Logf("cluster of 3 formed after %v", time.Since(start).Round(time.Millisecond))

	inv, err := p.Inventory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(inv) != 3 {
		t.Fatalf("Inventory: %+v", inv)
	}
	for _, in := range inv {
		if !in.Running || !strings.Contains(in.Detail, "supervised") {
			t.Errorf("Inventory: %+v, want running, supervised", in)
		}
	}

	// What was installed, per machine, with the supervisor's fallback.
	for i, m := range machines {
		inst, err := specs[i].Boot.Install()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range inst.Files {
			got, err := m.Read(f.Path)
			if err != nil || got != string(f.Content) {
				t.Errorf("%s: %s: %v, content %q, want %q", m.Name, f.Path, err, got, f.Content)
			}
			if st, err := os.Stat(m.Path(f.Path)); err != nil || st.Mode().Perm() != f.Mode {
				t.Errorf("%s: %s: mode %v, want %v (%v)", m.Name, f.Path, st.Mode().Perm(), f.Mode, err)
			}
		}
		if got, err := m.Read(inst.UnitDir + "/clusterd.service"); err != nil || got != inst.Units[0].Content {
			t.Errorf("%s: clusterd.service as installed: %v %q", m.Name, err, got)
		}
		if got := sha512File(t, m.Path(inst.BinaryPath)); got != sum {
			t.Errorf("%s: %s has SHA-512 %s, want %s", m.Name, inst.BinaryPath, got, sum)
		}
		// The machines share the host's root file system but for the
		// private directories: nothing reached the host.
		if _, err := os.Stat("/etc/corral/token"); err == nil {
			t.Fatal("/etc/corral/token exists on the host: the machines' mount namespaces leak")
		}
	}

	// Launching again changes nothing: no file is written (mtimes,
	// inodes), clusterd keeps its pid.
	type snap struct {
		pid   string
		files map[string]string
	}
	snapshot := func(m *sshtest.Machine) snap {
		pid, err := m.Read(clusterdPID)
		if err != nil {
			t.Fatalf("%s: %v", m.Name, err)
		}
		s := snap{pid: strings.TrimSpace(pid), files: map[string]string{}}
		man, err := m.Read(manifestPath)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range append(parseManifest(man).files, manifestPath) {
			st, err := os.Stat(m.Path(f))
			if err != nil {
				t.Fatalf("%s: %v", m.Name, err)
			}
			s.files[f] = fmt.Sprint(st.ModTime().UnixNano(), st.Sys().(*syscall.Stat_t).Ino)
		}
		return s
	}
	for i, m := range machines {
		before := snapshot(m)
		began := time.Now()
		if err := p.Launch(ctx, specs[i]); err != nil {
			t.Fatalf("Launch %s again: %v", m.Name, err)
		}
		t.Logf("Launch %s again (a no-op): %v", m.Name, time.Since(began).Round(time.Millisecond))
		after := snapshot(m)
		if after.pid != before.pid {
			t.Errorf("%s: clusterd restarted (pid %s, now %s)", m.Name, before.pid, after.pid)
		}
		for f, v := range before.files {
			if after.files[f] != v {
				t.Errorf("%s: %s was written again", m.Name, f)
			}
		}
	}

	// A changed host key is refused, before anything is sent.
	m3 := machines[2]
	oldKey := m3.Key
	changed := m3.NewHostKey()
	err = p.Launch(ctx, specs[2])
	var hk *HostKeyError
	if !errors.As(err, &hk) {
		t.Fatalf("Launch with a changed host key: %v, want a *HostKeyError", err)
	}
	for _, want := range []string{m3.IP.String(), ssh.FingerprintSHA256(oldKey), ssh.FingerprintSHA256(changed), m3.Name} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the host key error does not name %s: %v", want, err)
		}
	}
	if hk.Recorded != fingerprint(oldKey) || hk.Offered != fingerprint(changed) {
		t.Errorf("HostKeyError recorded %q offered %q, want %q and %q", hk.Recorded, hk.Offered, fingerprint(oldKey), fingerprint(changed))
	}
	t.Logf("refused: %v", err)
	if _, err := p.Inventory(ctx); !errors.As(err, &hk) {
		t.Errorf("Inventory with a changed host key: %v, want a *HostKeyError", err)
	}
	if err := p.Terminate(ctx, m3.Name); !errors.As(err, &hk) {
		t.Errorf("Terminate with a changed host key: %v, want a *HostKeyError", err)
	}
	if recorded[m3.IP.String()] != fingerprint(oldKey) {
		t.Errorf("the recorded key changed to %q", recorded[m3.IP.String()])
	}

	// The same refusal from a known_hosts file.
	kh := filepath.Join(dir, "known_hosts")
	var lines []string
	for _, m := range machines[:2] {
		lines = append(lines, knownhosts.Line([]string{m.Addr()}, m.Key))
	}
	lines = append(lines, knownhosts.Line([]string{m3.Addr()}, oldKey))
	if err := os.WriteFile(kh, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	strict := &Provider{Hosts: hosts, User: "root", IdentityFiles: p.IdentityFiles, NoAgent: true, KnownHosts: []string{kh}, Binary: bin}
	if inv, err := strict.Inventory(ctx); !errors.As(err, &hk) || !strings.Contains(err.Error(), kh+":3") ||
		!strings.Contains(err.Error(), ssh.FingerprintSHA256(changed)) || !strings.Contains(err.Error(), ssh.FingerprintSHA256(oldKey)) {
		t.Errorf("known_hosts with core-3's old key: Inventory %v, %v", inv, err)
	}

	// Once the operator accepts the new key (drops the old record), the
	// machine is as it was: Launch records the key and changes nothing.
	p.mu.Lock()
	delete(p.HostKeys, m3.IP.String())
	p.mu.Unlock()
	if err := p.Launch(ctx, specs[2]); err != nil {
		t.Fatalf("Launch after accepting the new key: %v", err)
	}
	if recorded[m3.IP.String()] != fingerprint(changed) {
		t.Errorf("recorded %q, want the new key %q", recorded[m3.IP.String()], fingerprint(changed))
	}

	// A command that fails names the host, the command and its stderr.
	c, err := p.dial(ctx, "core-1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.run(ctx, argv("sh", "-c", "echo no such thing >&2; exit 3"), nil)
	c.Close()
	var re *RemoteError
	if !errors.As(err, &re) || re.Node != "core-1" || re.Host != machines[0].Addr() || re.Stderr != "no such thing\n" ||
		!strings.Contains(err.Error(), `sh -c 'echo no such thing >&2; exit 3'`) || !strings.Contains(err.Error(), "exited with status 3") {
		t.Errorf("a failing command: %v", err)
	}
	t.Logf("a failing command: %v", err)

	// A unit's process on core-1 (the exec driver gives units
	// CLUSTERD_DATA_DIR), and one on core-2 with the same data directory,
	// which is another machine's and must survive core-1's removal.
	unit1 := machines[0].Start([]string{"CLUSTERD_DATA_DIR=/var/lib/clusterd"}, "sleep", "1000")
	unit2 := machines[1].Start([]string{"CLUSTERD_DATA_DIR=/var/lib/clusterd"}, "sleep", "1000")

	// Terminate removes clusterd and what was installed.
	for i := len(machines) - 1; i >= 0; i-- {
		m := machines[i]
		man, err := m.Read(manifestPath)
		if err != nil {
			t.Fatal(err)
		}
		installed := parseManifest(man).files
		pid, _ := m.Read(clusterdPID)
		began := time.Now()
		if err := p.Terminate(ctx, m.Name); err != nil {
			t.Fatalf("Terminate %s: %v", m.Name, err)
		}
		t.Logf("Terminate %s: %v", m.Name, time.Since(began).Round(time.Millisecond))
		for _, f := range append(installed, manifestPath, supervisorPath, clusterdPID, supervisorPID, logPath, "/var/lib/clusterd/machine-id") {
			if _, err := os.Stat(m.Path(f)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s still there after Terminate (%v)", m.Name, f, err)
			}
		}
		// These are the machine's mount points here, so they stay, empty.
		for _, d := range []string{"/etc/corral", "/var/lib/corral", "/var/lib/clusterd", "/opt/bin"} {
			if ents, err := os.ReadDir(m.Path(d)); len(ents) > 0 || err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s not emptied: %v %v", m.Name, d, ents, err)
			}
		}
		if alive(strings.TrimSpace(pid)) {
			t.Errorf("%s: clusterd (pid %s) still runs", m.Name, pid)
		}
		if err := p.Terminate(ctx, m.Name); err != nil {
			t.Errorf("Terminate %s again: %v", m.Name, err)
		}
		if i == 1 && (alive(fmt.Sprint(unit2.Process.Pid)) || !alive(fmt.Sprint(unit1.Process.Pid))) {
			t.Errorf("after core-2's Terminate: its unit process alive %v, core-1's %v (want false, true)",
				alive(fmt.Sprint(unit2.Process.Pid)), alive(fmt.Sprint(unit1.Process.Pid)))
		}
	}
	if alive(fmt.Sprint(unit1.Process.Pid)) {
		t.Error("core-1's unit process survived Terminate")
	}
	inv, err = p.Inventory(ctx)
	if err != nil || len(inv) != 0 {
		t.Errorf("Inventory after Terminate: %+v, %v", inv, err)
	}
	t.Logf("whole test: %v", time.Since(start).Round(time.Millisecond))
}

// alive reports whether pid is a live process (not a zombie).
func alive(pid string) bool {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil || pid == "" {
		return false
	}
	s := string(b)
	i := strings.LastIndex(s, ") ")
	return i >= 0 && len(s) > i+2 && s[i+2] != 'Z'
}
