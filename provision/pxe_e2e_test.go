package provision_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/corral-dev/corral/internal/syncbuf"
	"github.com/corral-dev/corral/provision"
	"github.com/vishvananda/netlink"
)

// pxeLab is a network of its own for network-booted machines: a namespace
// with a bridge, dnsmasq giving DHCP on it, and QEMU machines on taps.
// provision and clusterctl run inside it too, as they would on the
// machines' network.
type pxeLab struct {
	t        *testing.T
	ns       string
	dir      string
	bin      string
	net      string // "10.251.N"
	file     string
	kernel   string
	initrd   string
	consoles map[string]*syncbuf.Buffer

	dnsmasqCmd  *exec.Cmd
	dnsmasqDone chan struct{}
}

func newPXELab(t *testing.T) *pxeLab {
	t.Helper()
	clustertest.RequireRoot(t)
	for _, tool := range []string{"qemu-system-x86_64", "dnsmasq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (apt-get install qemu-system-x86 ipxe-qemu dnsmasq): %v", tool, err)
		}
	}
	kernels, _ := filepath.Glob("/boot/vmlinuz-*")
	if len(kernels) == 0 {
		t.Fatal("no kernel in /boot to network-boot (apt-get install linux-image-amd64)")
	}
	slices.Sort(kernels)
	var raw [3]byte
	rand.Read(raw[:])
	l := &pxeLab{t: t, ns: "crl-pxe-" + hex.EncodeToString(raw[:]), dir: t.TempDir(), bin: clustertest.Binary(t),
		net: fmt.Sprintf("10.251.%d", raw[0]), kernel: kernels[len(kernels)-1], consoles: map[string]*syncbuf.Buffer{}}
	release := strings.TrimPrefix(filepath.Base(l.kernel), "vmlinuz-")
	l.initrd = filepath.Join(l.dir, "initramfs.img")
	if err := provision.BuildInitramfs(provision.BuildInitramfsOptions{Output: l.initrd, Binary: l.bin, KernelRelease: release}); err != nil {
		t.Fatal(err)
	}
	if err := hostnet.NewNamespace(l.ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.remove)
	h, err := hostnet.Handle(l.ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(l.net + ".1/24")
	if err := h.AddrAdd(br, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	return l
}

// remove stops everything in the namespace and deletes it.
func (l *pxeLab) remove() {
	if l.t.Failed() {
		for name, c := range l.consoles {
			lines := strings.Split(c.String(), "\n")
			l.t.Logf("console of %s (last 40 lines):\n%s", name, strings.Join(lines[max(0, len(lines)-40):], "\n"))
		}
	}
	pids, _ := hostnet.PIDs(l.ns)
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	for _, pid := range pids {
		for i := 0; i < 100 && alive(pid); i++ {
			time.Sleep(20 * time.Millisecond) // a killed process is gone in a moment; nothing to wait on across namespaces
		}
	}
	hostnet.DeleteNamespace(l.ns)
}

// run runs the corral binary in the lab with args, and returns its output.
func (l *pxeLab) run(ctx context.Context, args ...string) (string, error) {
	var out syncbuf.Buffer
	cmd := exec.CommandContext(ctx, l.bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := hostnet.Start(l.ns, cmd); err != nil {
		return "", err
	}
	err := cmd.Wait()
	return out.String(), err
}

// ctl runs clusterctl in the lab against the cluster.
func (l *pxeLab) ctl(ctx context.Context, args ...string) (string, error) {
	env, err := l.run(ctx, "env", l.file)
	if err != nil {
		return env, err
	}
	script := env + "\nexec " + l.bin + " ctl " + strings.Join(args, " ")
	var out syncbuf.Buffer
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := hostnet.Start(l.ns, cmd); err != nil {
		return "", err
	}
	err = cmd.Wait()
	return out.String(), err
}

// machine powers on a QEMU machine with one NIC on the lab's bridge,
// booting from the network (iPXE is its NIC's option ROM).
func (l *pxeLab) machine(name, mac string) {
	l.t.Helper()
	tap := "tap-" + name
	err := hostnet.Do(l.ns, func() error {
		link := &netlink.Tuntap{LinkAttrs: netlink.LinkAttrs{Name: tap}, Mode: netlink.TUNTAP_MODE_TAP, Flags: netlink.TUNTAP_NO_PI}
		if err := netlink.LinkAdd(link); err != nil {
			return err
		}
		br, err := netlink.LinkByName("br0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetMaster(link, br); err != nil {
			return err
		}
		return netlink.LinkSetUp(link)
	})
	if err != nil {
		l.t.Fatalf("tap for %s: %v", name, err)
	}
	console := &syncbuf.Buffer{}
	l.consoles[name] = console
	cmd := exec.Command("qemu-system-x86_64", "-nodefaults", "-nographic", "-no-reboot", "-m", "1024",
		"-netdev", "tap,id=n0,ifname="+tap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=n0,mac="+mac,
		// Without a random source getrandom blocks the guest for minutes.
		"-device", "virtio-rng-pci",
		"-boot", "n", "-serial", "stdio")
	cmd.Stdout, cmd.Stderr = console, console
	if err := hostnet.Start(l.ns, cmd); err != nil {
		l.t.Fatalf("starting %s: %v", name, err)
	}
	go cmd.Wait()
}

// writeFile writes the cluster file with the given machines (name → MAC)
// in one group, and an optional second group.
func (l *pxeLab) writeFile(name string, machines [][2]string, extra string) {
	l.t.Helper()
	var ms []string
	for _, m := range machines {
		ms = append(ms, fmt.Sprintf("  machine %q { mac = %q }", m[0], m[1]))
	}
	src := fmt.Sprintf(`cluster %q {
  etcd_members = 3
  machine_ttl  = "10s"
}
provider "pxe" {
  listen    = "%s.1:8080"
  network   = "%s.0/24"
  interface = "br0"
}
node_group "metal" {
  desired_capacity = %d
%s
  boot {
    kernel = %q
    initrd = [%q]
    args   = ["console=ttyS0"]
  }
}
%s`, name, l.net, l.net, len(machines), strings.Join(ms, "\n"), l.kernel, l.initrd, extra)
	l.file = filepath.Join(l.dir, "pxe.hcl")
	if err := os.WriteFile(l.file, []byte(src), 0o600); err != nil {
		l.t.Fatal(err)
	}
}

// dnsmasq (re)starts dnsmasq in the lab with the configuration that
// `provision render --format dnsmasq` prints for the cluster file, as a
// user would after adding machines to it, and returns its log.
func (l *pxeLab) dnsmasq() *syncbuf.Buffer {
	l.t.Helper()
	pidFile := filepath.Join(l.dir, "dnsmasq.pid")
	if l.dnsmasqCmd != nil {
		l.dnsmasqCmd.Process.Kill()
		<-l.dnsmasqDone
	}
	conf, err := render(l.t, l.file, "", "dnsmasq")
	if err != nil {
		l.t.Fatalf("render --format dnsmasq: %v", err)
	}
	confFile := filepath.Join(l.dir, "dnsmasq.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		l.t.Fatal(err)
	}
	cmd := exec.Command("dnsmasq", "--conf-file="+confFile, "--no-daemon", "--dhcp-leasefile="+filepath.Join(l.dir, "leases"), "--pid-file="+pidFile)
	log := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := hostnet.Start(l.ns, cmd); err != nil {
		l.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	l.dnsmasqCmd, l.dnsmasqDone = cmd, done
	return log
}

// up runs provision up in the lab, powering on the machines once the boot
// server listens.
func (l *pxeLab) up(ctx context.Context, power map[string]string) (string, error) {
	var out syncbuf.Buffer
	cmd := exec.CommandContext(ctx, l.bin, "up", l.file, "--auto-approve", "--timeout", "10m")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := hostnet.Start(l.ns, cmd); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Power on when the boot server answers: before, a machine's iPXE
	// would find nothing to boot.
	up := false
	for !up {
		select {
		case err := <-done:
			return out.String(), err
		case <-time.After(100 * time.Millisecond):
		}
		hostnet.Do(l.ns, func() error {
			c, err := net.DialTimeout("tcp", l.net+".1:8080", time.Second)
			if err == nil {
				c.Close()
				up = true
			}
			return nil
		})
	}
	for name, mac := range power {
		l.machine(name, mac)
	}
	err := <-done
	return out.String(), err
}

// Three QEMU machines network-boot through dnsmasq and iPXE into Debian's
// kernel and Corral's initramfs, and form a 3-member cluster; up returns
// when they joined. A fourth MAC added to the file joins as a client. A
// machine whose config is broken makes up fail with its own error.
func TestPXECluster(t *testing.T) {
	l := newPXELab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	machines := [][2]string{{"node1", "52:54:00:a1:00:01"}, {"node2", "52:54:00:a1:00:02"}, {"node3", "52:54:00:a1:00:03"}}
	var raw [3]byte
	rand.Read(raw[:])
	cluster := "pxe" + hex.EncodeToString(raw[:])
	l.writeFile(cluster, machines, "")

	dlog := l.dnsmasq()

	start := time.Now()
	power := map[string]string{}
	for _, m := range machines {
		power[m[0]] = m[1]
	}
	out, err := l.up(ctx, power)
	if err != nil {
		t.Fatalf("up: %v\n%s\ndnsmasq:\n%s", err, out, dlog.String())
	}
	t.Logf("3 machines booted and joined in %.0fs (software emulation)", time.Since(start).Seconds())
	list, err := l.ctl(ctx, "list-machines")
	if err != nil || strings.Count(list, "\n") != 4 {
		t.Fatalf("list-machines: %v\n%s", err, list)
	}
	for i := 1; i <= 3; i++ {
		if !strings.Contains(list, fmt.Sprintf("%s.%d", l.net, 10+i)) {
			t.Errorf("list-machines has no %s.%d:\n%s", l.net, 10+i, list)
		}
	}

	// A fourth MAC joins as a client.
	machines = append(machines, [2]string{"node4", "52:54:00:a1:00:04"})
	l.writeFile(cluster, machines, "")
	l.dnsmasq() // with node4's address reserved
	start = time.Now()
	out, err = l.up(ctx, map[string]string{"node4": "52:54:00:a1:00:04"})
	if err != nil {
		t.Fatalf("up with node4: %v\n%s", err, out)
	}
	t.Logf("node4 booted and joined in %.0fs", time.Since(start).Seconds())
	status, err := l.run(ctx, "status", l.file)
	if err != nil || !regexp.MustCompile(`(?m)^node4\s+\S+\s+client`).MatchString(status) {
		t.Errorf("status after node4: %v\n%s", err, status)
	}

	// A machine whose config can't be applied reports its error, and up
	// fails with it instead of waiting out its timeout.
	broken := `node_group "broken" {
  desired_capacity = 1
  machine "node5" { mac = "52:54:00:a1:00:05" }
  file "/etc/broken.conf" {
    content = "x"
    owner   = "nosuchuser"
  }
  boot {
    kernel = "` + l.kernel + `"
    initrd = ["` + l.initrd + `"]
    args   = ["console=ttyS0"]
  }
}
`
	l.writeFile(cluster, machines, broken)
	l.dnsmasq()
	out, err = l.up(ctx, map[string]string{"node5": "52:54:00:a1:00:05"})
	if err == nil || !strings.Contains(out, "node5") || !strings.Contains(out, "nosuchuser") {
		t.Fatalf("up with a broken machine: %v\n%s", err, out)
	}
	if strings.Contains(out, "did not join within") {
		t.Errorf("up waited out its timeout instead of taking node5's report:\n%s", out)
	}
}
