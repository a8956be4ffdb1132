package provision_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
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
)

// e2eVagrant is a fake vagrant for TestVagrantE2E, run in the provider's
// directory (where the Vagrantfile is). Its state is in the directory
// STATE: a machine is running when STATE/running/NAME exists; STATE/hosts
// has "MACHINE ADDRESS" lines, the sshtest machine each Vagrant machine
// is; every call is appended to STATE/log. Machines are those of
// ./Vagrantfile, as for Vagrant. Destroying a running machine wipes its
// sshtest machine (as a destroyed VM loses its disk and processes): the
// script asks the test to by making STATE/wipe/NAME, and waits until the
// test has removed it.
const e2eVagrant = `#!/bin/sh
# Only the system's tools: never the real vagrant.
PATH=/usr/bin:/bin
vagrant() { echo "fake vagrant: ran vagrant $*" >&2; exit 3; }
s=STATE
printf '%s\n' "$*" >>"$s/log"
ts=1795440538
machines() { [ -e Vagrantfile ] && sed -n 's/^ *config\.vm\.define "\([^"]*\)" do.*/\1/p' Vagrantfile; }
known() {
	machines | grep -qxF "$1" && return
	echo "The machine with the name '$1' was not found configured for
this Vagrant environment." >&2
	exit 1
}
case "$1" in
--version)
	echo "Vagrant 2.3.4" ;;
status)
	[ "$2" = --machine-readable ] || { echo "fake vagrant: status without --machine-readable" >&2; exit 2; }
	for m in $(machines); do
		if [ -e "$s/running/$m" ]; then st=running h=running; else st=not_created h="not created"; fi
		printf '%s\n' "$ts,$m,metadata,provider,virtualbox" "$ts,$m,provider-name,virtualbox" \
			"$ts,$m,state,$st" "$ts,$m,state-human-short,$h" \
			"$ts,$m,state-human-long,The VM is $h."
	done
	printf '%s\n' "$ts,,ui,info,Current machine states:\n\nThis environment represents multiple VMs." ;;
up)
	[ "$2" = --provider=virtualbox ] || { echo "fake vagrant: up without --provider=virtualbox" >&2; exit 2; }
	shift 2
	[ $# -gt 0 ] || { echo "fake vagrant: up of every machine" >&2; exit 2; }
	for m; do known "$m"; done
	for m; do
		echo "Bringing machine '$m' up with 'virtualbox' provider..."
		echo "==> $m: Importing base box 'flatcar-stable'..."
		touch "$s/running/$m"
	done ;;
destroy)
	[ "$2" = -f ] || { echo "fake vagrant: destroy without -f" >&2; exit 2; }
	shift 2
	for m; do known "$m"; done
	for m; do
		if [ ! -e "$s/running/$m" ]; then echo "==> $m: VM not created. Moving on..."; continue; fi
		echo "==> $m: Forcing shutdown of VM..."
		touch "$s/wipe/$m"
		i=0
		while [ -e "$s/wipe/$m" ]; do
			i=$((i + 1))
			[ $i -le 600 ] || { echo "fake vagrant: $m not wiped within 30s" >&2; exit 1; }
			sleep 0.05
		done
		echo "==> $m: Destroying VM and associated drives..."
		rm -f "$s/running/$m"
	done ;;
ssh-config)
	known "$2"
	if [ ! -e "$s/running/$2" ]; then
		echo "The provider for this Vagrant-managed machine is reporting that it
is not yet ready for SSH. Depending on your provider this can carry
different meanings. Make sure your machine is created and running and
try again." >&2
		exit 1
	fi
	ip=$(sed -n "s/^$2 //p" "$s/hosts")
	cat <<EOF
Host $2
  HostName $ip
  User root
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile IDENTITY
  IdentitiesOnly yes
  LogLevel FATAL

EOF
	;;
*)
	echo "fake vagrant: unexpected command: $*" >&2; exit 2 ;;
esac
`

// fakeVagrantE2E writes the fake vagrant and VBoxManage, puts them first on
// PATH and returns the fake's state directory.
func fakeVagrantE2E(t *testing.T, identity string, machines []*sshtest.Machine) string {
	t.Helper()
	bin, st := t.TempDir(), t.TempDir()
	for _, d := range []string{"running", "wipe"} {
		if err := os.Mkdir(filepath.Join(st, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var hosts strings.Builder
	for i, m := range machines {
		fmt.Fprintf(&hosts, "core-%02d %s\n", i+1, m.IP)
	}
	if err := os.WriteFile(filepath.Join(st, "hosts"), []byte(hosts.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	script := strings.NewReplacer("s=STATE", "s="+strconv.Quote(st), "IdentityFile IDENTITY", "IdentityFile "+identity).Replace(e2eVagrant)
	files := map[string]string{"vagrant": script, "VBoxManage": "#!/bin/sh\necho 7.0.14r161095\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The fakes first: /usr/bin has the real vagrant.
	t.Setenv("PATH", bin+":/usr/bin:/bin")
	return st
}

// wipeOnDestroy wipes the sshtest machine of each Vagrant machine the fake
// destroys, until the test ends.
func wipeOnDestroy(t *testing.T, st string, machines []*sshtest.Machine) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); wg.Wait() })
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond): // polling: the fake is a shell script
			}
			entries, _ := os.ReadDir(filepath.Join(st, "wipe"))
			for _, e := range entries {
				i := slices.IndexFunc(machines, func(m *sshtest.Machine) bool { return vagrantName(m) == e.Name() })
				if i < 0 {
					t.Errorf("the fake vagrant destroyed %s, no test machine", e.Name())
				} else if err := machines[i].Wipe(); err != nil {
					t.Errorf("wiping %s: %v", e.Name(), err)
				}
				os.Remove(filepath.Join(st, "wipe", e.Name()))
			}
		}
	})
}

// vagrantName is the Vagrant machine of an sshtest machine: core-1 is
// core-01.
func vagrantName(m *sshtest.Machine) string {
	n, _ := strconv.Atoi(strings.TrimPrefix(m.Name, "core-"))
	return fmt.Sprintf("core-%02d", n)
}

// vagrantCalls are the fake's up and destroy calls so far.
func vagrantCalls(t *testing.T, st string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(st, "log"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
		if strings.HasPrefix(l, "up ") || strings.HasPrefix(l, "destroy ") {
			out = append(out, l)
		}
	}
	return out
}

// TestVagrantE2E runs the vagrant provider through provision with no VM:
// a fake vagrant whose machines are sshtest machines at .101, .102, .103
// of a private network. Up makes core-01 and core-02 with one vagrant up
// and installs clusterd on them over SSH as ssh-config says; scaling out
// brings up core-03 alone; provision ssh reaches it; scaling in destroys
// it and the registry forgets it; down destroys the rest and leaves
// nothing, here or on the machines.
func TestVagrantE2E(t *testing.T) {
	start := time.Now()
	bin := corralbin.Path(t) // before PATH is the fake's
	tn := sshtest.NewNetIn(t, netip.MustParsePrefix("10.0.0.0/8"))
	machines, identity := tn.MachinesAt(t, 101, 102, 103)
	t.Logf("3 machines on %s with sshd up in %v", tn.Prefix, time.Since(start).Round(time.Millisecond))
	fst := fakeVagrantE2E(t, identity, machines)
	wipeOnDestroy(t, fst, machines)

	dir := t.TempDir()
	name := "vagrant-" + tn.ID
	file := filepath.Join(dir, name+".hcl")
	write := func(capacity int) {
		t.Helper()
		hcl := fmt.Sprintf(`provider "vagrant" {
  box      = "flatcar-stable"
  provider = "virtualbox"
  network  = %q
}
cluster %q {
  etcd_members = 1
  machine_ttl  = "3s"
}
node_group "core" {
  desired_capacity = %d
}
`, tn.Prefix.String(), name, capacity)
		if err := os.WriteFile(file, []byte(hcl), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var out syncbuf.Buffer
	opts := provision.Options{File: file, Out: &out, Err: &out, Binary: bin}
	up := provision.UpOptions{Options: opts, AutoApprove: true, Timeout: 2 * time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	defer func() {
		if t.Failed() {
			t.Logf("provision's output:\n%s", out.String())
			if b, err := os.ReadFile(filepath.Join(fst, "log")); err == nil {
				t.Logf("the fake vagrant's calls:\n%s", b)
			}
		}
	}()
	sdir := state.For(file, name)
	vagrantfile := filepath.Join(sdir.Path, "vagrant", "Vagrantfile")
	ip := func(host int) string {
		a := tn.Prefix.Addr().As4()
		a[3] = byte(host)
		return netip.AddrFrom4(a).String()
	}
	define := func(n int) string {
		return fmt.Sprintf("  config.vm.define \"core-%02d\" do |m|\n    m.vm.hostname = \"core-%02d\"\n    m.vm.network \"private_network\", ip: %q\n  end\n", n, n, ip(100+n))
	}
	checkVagrantfile := func(want ...int) {
		t.Helper()
		b, err := os.ReadFile(vagrantfile)
		if err != nil {
			t.Fatal(err)
		}
		for n := 1; n <= 3; n++ {
			if got := strings.Contains(string(b), define(n)); got != slices.Contains(want, n) {
				t.Errorf("the Vagrantfile has core-%02d at %s: %v, want %v:\n%s", n, ip(100+n), got, !got, b)
			}
		}
		if got := strings.Count(string(b), "config.vm.define"); got != len(want) {
			t.Errorf("the Vagrantfile defines %d machines, want %d:\n%s", got, len(want), b)
		}
	}
	checkCalls := func(want ...string) {
		t.Helper()
		if got := vagrantCalls(t, fst); !slices.Equal(got, want) {
			t.Errorf("vagrant up and destroy calls:\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
		}
	}
	// registered waits (machine_ttl is 3s: a destroyed machine's
	// registration lapses) until the registry has names, and no others.
	registered := func(names ...string) {
		t.Helper()
		cli, err := store.Connect(ctx, sdir.AdminFiles(), []string{store.ClientURL(machines[0].IP.AsSlice(), 0)})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		var got []string
		_, err = registry.WaitFor(wctx, cli, func(ms []registry.Machine) bool {
			got = got[:0]
			for _, m := range ms {
				got = append(got, m.Name)
			}
			slices.Sort(got)
			return slices.Equal(got, names)
		})
		if err != nil {
			t.Fatalf("registry: %v, want %v (%v)", got, names, err)
		}
	}

	// Up: one vagrant up for both machines, clusterd on each over SSH.
	write(2)
	began := time.Now()
	if err := provision.Up(ctx, up); err != nil {
		t.Fatalf("up: %v", err)
	}
	t.Logf("up (2 nodes): %v", time.Since(began).Round(time.Millisecond))
	checkCalls("up --provider=virtualbox core-01 core-02")
	checkVagrantfile(1, 2)
	registered("core-1", "core-2")
	st, err := sdir.Load()
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range st.Nodes {
		if want := netip.MustParseAddr(ip(101 + i)); n.IP != want {
			t.Errorf("node %s has address %v, want %v", n.Name, n.IP, want)
		}
	}
	for _, m := range machines[:2] {
		if _, err := os.Stat(m.Path("/opt/bin/clusterd")); err != nil {
			t.Errorf("%s: clusterd not installed: %v", m.Name, err)
		}
	}

	// Scale out: core-03 alone comes up.
	write(3)
	began = time.Now()
	if err := provision.Up(ctx, up); err != nil {
		t.Fatalf("up to 3 nodes: %v", err)
	}
	t.Logf("up (to 3 nodes): %v", time.Since(began).Round(time.Millisecond))
	checkCalls("up --provider=virtualbox core-01 core-02", "up --provider=virtualbox core-03")
	checkVagrantfile(1, 2, 3)
	registered("core-1", "core-2", "core-3")

	// provision ssh reaches core-3's machine, as ssh-config says.
	from := len(out.String())
	code, err := provision.Shell(ctx, provision.ShellOptions{Options: opts, Node: "core-3", Command: "hostname; exit 4", In: strings.NewReader("")})
	host, _ := os.Hostname()
	if err != nil || code != 4 || !strings.Contains(out.String()[from:], host) {
		t.Errorf("provision ssh core-3: status %d, %v:\n%s", code, err, out.String()[from:])
	}

	// Scale in: core-03 is destroyed, the registry forgets core-3.
	write(2)
	began = time.Now()
	if err := provision.Up(ctx, up); err != nil {
		t.Fatalf("up to 2 nodes: %v", err)
	}
	t.Logf("up (to 2 nodes): %v", time.Since(began).Round(time.Millisecond))
	checkCalls("up --provider=virtualbox core-01 core-02", "up --provider=virtualbox core-03", "destroy -f core-03")
	checkVagrantfile(1, 2)
	registered("core-1", "core-2")
	if st, err := sdir.Load(); err != nil || len(st.Nodes) != 2 || st.Node("core-3") != nil {
		t.Errorf("state after scale-in: %+v, %v", st, err)
	}

	// Down destroys the rest; nothing is left, here or on the machines.
	began = time.Now()
	if err := provision.Down(ctx, opts); err != nil {
		t.Fatalf("down: %v", err)
	}
	t.Logf("down: %v", time.Since(began).Round(time.Millisecond))
	calls := vagrantCalls(t, fst)
	if len(calls) > 3 {
		slices.Sort(calls[3:]) // down destroys them in any order
	}
	if want := []string{"up --provider=virtualbox core-01 core-02", "up --provider=virtualbox core-03", "destroy -f core-03", "destroy -f core-01", "destroy -f core-02"}; !slices.Equal(calls, want) {
		t.Errorf("vagrant up and destroy calls:\n  %s\nwant\n  %s", strings.Join(calls, "\n  "), strings.Join(want, "\n  "))
	}
	if running, _ := os.ReadDir(filepath.Join(fst, "running")); len(running) != 0 {
		t.Errorf("machines left running: %v", running)
	}
	if _, err := os.Stat(sdir.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state directory %s left: %v", sdir.Path, err)
	}
	hosts := map[string]string{}
	for _, m := range machines {
		hosts[m.Name] = m.IP.String()
	}
	p := &ssh.Provider{Hosts: hosts, User: "root", IdentityFiles: []string{identity}, NoAgent: true}
	if inv, err := p.Inventory(ctx); err != nil || len(inv) != 0 {
		t.Errorf("after down, the machines have: %+v, %v", inv, err)
	}
	t.Logf("whole test: %v", time.Since(start).Round(time.Millisecond))
}
