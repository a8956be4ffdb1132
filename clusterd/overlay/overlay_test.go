package overlay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/corral-dev/corral/providers/local"
	"github.com/vishvananda/netlink"
)

// leaseOf returns the subnet leased by a node (matched by its address).
func leaseOf(t *testing.T, c *clustertest.Cluster, node string) netip.Prefix {
	t.Helper()
	leases, _, err := subnet.List(context.Background(), c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	ip := c.Node(node).IP
	for _, l := range leases {
		if l.PublicIP == ip {
			return l.Subnet
		}
	}
	t.Fatalf("%s (%s) holds no lease: %v", node, ip, leases)
	return netip.Prefix{}
}

func nodeNS(c *clustertest.Cluster, node string) string {
	return (&local.Provider{Cluster: c.Name}).Namespace(node)
}

// exchange opens a TCP connection from one namespace to a listener in
// another and sends data both ways.
func exchange(t *testing.T, fromNS string, from netip.Addr, toNS string, to netip.Addr) {
	t.Helper()
	var ln net.Listener
	err := hostnet.Do(toNS, func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(to, 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	echoed := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			echoed <- err
			return
		}
		defer conn.Close()
		_, err = io.Copy(conn, conn)
		echoed <- err
	}()
	var conn net.Conn
	err = hostnet.Do(fromNS, func() (err error) {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from, 0)), Timeout: 10 * time.Second}
		conn, err = d.Dial("tcp4", ln.Addr().String())
		return err
	})
	if err != nil {
		t.Fatalf("%s → %s: %v", from, to, err)
	}
	defer conn.Close()
	msg := make([]byte, 256<<10) // bigger than any MTU: segments cross the overlay
	rand.Read(msg)
	go conn.Write(msg)
	got := make([]byte, len(msg))
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("%s → %s: echo broken: %v", from, to, err)
	}
}

// waitKernel re-checks cond inside a node's namespace on every route and
// neighbour change there, until it holds: no sleeping, no polling.
func waitKernel(t *testing.T, ns, what string, cond func(h *netlink.Handle) bool) {
	t.Helper()
	h, err := hostnet.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	done := make(chan struct{})
	defer close(done)
	routes := make(chan netlink.RouteUpdate, 64)
	neighs := make(chan netlink.NeighUpdate, 64)
	nsh, err := netnsHandle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	if err := netlink.RouteSubscribeAt(nsh, routes, done); err != nil {
		t.Fatal(err)
	}
	if err := netlink.NeighSubscribeAt(nsh, neighs, done); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	for !cond(h) {
		select {
		case <-routes:
		case <-neighs:
		case <-deadline:
			t.Fatalf("%s: %s did not happen", ns, what)
		}
	}
}

func hasRoute(dst netip.Prefix) func(h *netlink.Handle) bool {
	return func(h *netlink.Handle) bool {
		routes, err := h.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return false
		}
		for _, r := range routes {
			if r.Dst != nil && r.Dst.String() == dst.String() {
				return true
			}
		}
		return false
	}
}

func fdbEntries(h *netlink.Handle, dev string) int {
	link, err := h.LinkByName(dev)
	if err != nil {
		return 0
	}
	entries, _ := h.NeighList(link.Attrs().Index, syscall.AF_BRIDGE)
	return len(entries)
}

func readEnv(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		out[k] = v
	}
	return out
}

// Three machines per backend: a container on the first reaches one on the
// third over TCP; subnet.env says what flannel's would; net check passes.
func TestBackendsCarryTCP(t *testing.T) {
	for _, tc := range []struct {
		backend string
		mtu     int
	}{{"vxlan", 1450}, {"host-gw", 1500}, {"udp", 1472}} {
		t.Run(tc.backend, func(t *testing.T) {
			c := clustertest.Start(t, clustertest.Options{Nodes: 3,
				Network: fmt.Sprintf(`cidr = "10.%d.0.0/16"  backend = %q`, 200+len(tc.backend), tc.backend)})
			a, cc := leaseOf(t, c, "core-1"), leaseOf(t, c, "core-3")
			if a == cc || a.Bits() != 24 {
				t.Fatalf("leases %s and %s", a, cc)
			}
			// subnet.env is the overlay's last step, as flannel's was: wait
			// for every machine's, so net check below finds all of them up.
			for _, n := range c.Nodes() {
				waitFile(t, filepath.Join(c.Dir().NodeDir(n.Name), "subnet.env"))
			}
			env := readEnv(t, filepath.Join(c.Dir().NodeDir("core-1"), "subnet.env"))
			if env["FLANNEL_SUBNET"] != netip.PrefixFrom(a.Addr().Next(), 24).String() || env["FLANNEL_MTU"] != fmt.Sprint(tc.mtu) ||
				env["FLANNEL_IPMASQ"] != "true" || !strings.HasSuffix(env["FLANNEL_NETWORK"], ".0.0/16") {
				t.Fatalf("subnet.env of core-1: %v", env)
			}
			// The overlay is up once the bridge holds the subnet's first address.
			for node, sub := range map[string]netip.Prefix{"core-1": a, "core-3": cc} {
				waitKernel(t, nodeNS(c, node), "the bridge route", hasRoute(sub))
			}
			if tc.backend != "udp" { // udp routes the whole network into its TUN device
				waitKernel(t, nodeNS(c, "core-1"), "a route to core-3's subnet", hasRoute(cc))
				waitKernel(t, nodeNS(c, "core-3"), "a route to core-1's subnet", hasRoute(a))
			}
			ctrA, ipA := c.Container("core-1", "corral0", a, 1)
			ctrC, ipC := c.Container("core-3", "corral0", cc, 1)
			exchange(t, ctrA, ipA, ctrC, ipC)

			out, errOut, code := c.Ctl("net", "check")
			if code != 0 || !strings.Contains(out, "all 3 machines reach each other") {
				t.Fatalf("net check (exit %d):\n%s%s", code, out, errOut)
			}
		})
	}
}

// A machine that joins is reached by the others; one that leaves for good
// takes its routes and FDB entries with it.
func TestMembershipChangesConverge(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Network: `cidr = "10.210.0.0/16"`})
	ns1 := nodeNS(c, "core-1")
	h, err := hostnet.Handle(ns1)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	waitKernel(t, ns1, "FDB entries for the two peers", func(h *netlink.Handle) bool { return fdbEntries(h, "corral.1") == 2 })

	c.Scale(4)
	d := leaseOf(t, c, "core-4")
	waitKernel(t, ns1, "a route to the new machine", hasRoute(d))
	waitKernel(t, ns1, "an FDB entry for the new machine", func(h *netlink.Handle) bool { return fdbEntries(h, "corral.1") == 3 })
	a := leaseOf(t, c, "core-1")
	ctrA, ipA := c.Container("core-1", "corral0", a, 1)
	ctrD, ipD := c.Container("core-4", "corral0", d, 1)
	exchange(t, ctrA, ipA, ctrD, ipD)

	c.Scale(3)
	waitKernel(t, ns1, "the departed machine's route to go", func(h *netlink.Handle) bool { return !hasRoute(d)(h) })
	waitKernel(t, ns1, "the departed machine's FDB entry to go", func(h *netlink.Handle) bool { return fdbEntries(h, "corral.1") == 2 })
	leases, _, err := subnet.List(context.Background(), c.Admin)
	if err != nil || len(leases) != 3 {
		t.Fatalf("leases after scale-in: %v %v", leases, err)
	}
}

// A machine away for longer than any TTL comes back to the same subnet.
func TestSameSubnetAfterRestart(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, TTL: 2 * time.Second, Network: `cidr = "10.211.0.0/16"`})
	before := leaseOf(t, c, "core-2")
	c.Kill("core-2")
	c.WaitMachines(30*time.Second, "core-2 to leave", func(ms []machine) bool { return !hasMachine(ms, "core-2") })
	c.Restart("core-2")
	if after := leaseOf(t, c, "core-2"); after != before {
		t.Fatalf("core-2 had %s, came back with %s", before, after)
	}
}

// clusterd --cleanup removes every device, route, rule and file the overlay
// made when it stops.
func TestCleanupOnStop(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, EtcdMembers: 1, Network: `cidr = "10.212.0.0/16"  backend = "vxlan"`})
	ns := nodeNS(c, "core-2")
	// The namespace may hold a short-lived child of clusterd's too (an
	// iptables run), so pick clusterd by its command line.
	pids, err := hostnet.PIDs(ns)
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, pid := range pids {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if a := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"); err == nil && slices.Contains(a, "--data-dir") {
			args = a
		}
	}
	if args == nil {
		t.Fatalf("no clusterd among core-2's processes %v", pids)
	}
	c.Kill("core-2")

	cmd := exec.Command(c.Binary, append(args[1:], "--cleanup")...)
	cmd.Args[0] = "clusterd"
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := hostnet.Start(ns, cmd); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	up := false
	for sc := bufio.NewScanner(stderr); sc.Scan(); {
		if strings.Contains(sc.Text(), "overlay up") {
			up = true
			go io.Copy(io.Discard, stderr)
			break
		}
	}
	if !up {
		t.Fatal("clusterd exited before its overlay came up")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("clusterd --cleanup did not stop cleanly: %v", err)
	}
	h, err := hostnet.Handle(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, dev := range []string{"corral.1", "corral0"} {
		if _, err := h.LinkByName(dev); err == nil {
			t.Errorf("%s is left after --cleanup", dev)
		}
	}
	routes, _ := h.RouteList(nil, netlink.FAMILY_V4)
	for _, r := range routes {
		if r.Dst != nil && strings.HasPrefix(r.Dst.String(), "10.212.") {
			t.Errorf("route left after --cleanup: %v", r)
		}
	}
	var rules strings.Builder
	ipt := exec.Command("iptables", "-t", "nat", "-S", "POSTROUTING")
	ipt.Stdout = &rules
	if err := hostnet.Start(ns, ipt); err != nil {
		t.Fatal(err)
	}
	if err := ipt.Wait(); err != nil || strings.Contains(rules.String(), "corral") {
		t.Errorf("masquerade rule left after --cleanup (%v):\n%s", err, rules.String())
	}
	if _, err := os.Stat(filepath.Join(c.Dir().NodeDir("core-2"), "subnet.env")); !os.IsNotExist(err) {
		t.Errorf("subnet.env left after --cleanup")
	}
}

// A network config that conflicts with the leases in use is refused with a
// clear error, and the running network keeps its config.
func TestIncompatibleConfigIsRefused(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1, Network: `cidr = "10.213.0.0/16"`})
	before, _, err := subnet.GetConfig(context.Background(), c.Admin)
	if err != nil {
		t.Fatal(err)
	}
	c.Edit(`cidr = "10.213.0.0/16"`, `cidr = "10.214.0.0/16"`)
	err = c.TryUp()
	if err == nil || !strings.Contains(err.Error(), "lie outside 10.214.0.0/16") {
		t.Fatalf("up with a conflicting network: %v", err)
	}
	after, _, err := subnet.GetConfig(context.Background(), c.Admin)
	if err != nil || after.Network != before.Network {
		t.Fatalf("the running config changed: %v -> %v (%v)", before.Network, after.Network, err)
	}
}

// net check fails, and says where, when a machine is cut off; a member
// removed for good gives its subnet back.
func TestNetCheckFailureAndMemberRemoval(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Network: `cidr = "10.216.0.0/16"`})
	c.Partition("core-3")
	out, _, code := c.Ctl("net", "check")
	if code == 0 || !strings.Contains(out, "problems:") || !strings.Contains(out, "core-3") {
		t.Fatalf("net check with core-3 cut off (exit %d):\n%s", code, out)
	}
	c.Heal("core-3")

	members, err := c.Admin.MemberList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, m := range members.Members {
		if m.Name == "core-3" {
			id = fmt.Sprintf("%x", m.ID)
		}
	}
	gone := leaseOf(t, c, "core-3")
	out, errOut, code := c.Ctl("member", "remove", id)
	if code != 0 || !strings.Contains(out, "Released its subnet "+gone.String()) {
		t.Fatalf("member remove (exit %d): %s%s", code, out, errOut)
	}
	leases, _, err := subnet.List(context.Background(), c.Admin)
	if err != nil || len(leases) != 2 {
		t.Fatalf("leases after member remove: %v %v", leases, err)
	}
}
