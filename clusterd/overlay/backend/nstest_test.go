package backend

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nstestOverlay is the overlay network the tests use. It exists only inside
// the namespaces they make; in each, a route marks it unreachable, so a
// packet to a subnet without a peer route fails on the spot instead of
// leaving through the node's default route for the host and beyond.
var nstestOverlay = netip.MustParsePrefix("10.244.0.0/16")

// nstestIOTimeout bounds each network operation, so a broken overlay fails
// the test instead of hanging it. It is a limit, not a wait.
const nstestIOTimeout = 10 * time.Second

// nstestCluster is a set of node namespaces on one host bridge, made for one
// test and removed when it ends.
type nstestCluster struct {
	bridge  string
	gateway netip.Addr // the host bridge's address
	nodes   []*nstestNode
}

// nstestAddr converts a netlink address for comparison.
func nstestAddr(ip net.IP) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}

// nstestNode is one machine: a namespace with eth0 on the host bridge and a
// bridge corral0 holding the first address of its overlay subnet, as the
// overlay manager would make it.
type nstestNode struct {
	ns       string
	h        *netlink.Handle
	publicIP netip.Addr
	subnet   netip.Prefix // 10.244.<n>.0/24, n counting from 1
	addr     netip.Addr   // 10.244.<n>.1, on corral0
}

// local is what the overlay manager would pass to Start on this node.
func (n *nstestNode) local() Local {
	return Local{Network: nstestOverlay, Subnet: n.subnet, PublicIP: n.publicIP, Underlay: "eth0"}
}

// nstestNewCluster makes count nodes on a new bridge, with names unique to
// this run, all removed by t.Cleanup whether or not the test passes.
func nstestNewCluster(t *testing.T, count int) *nstestCluster {
	t.Helper()
	if err := hostnet.Check(); err != nil {
		t.Fatalf("needs network namespaces: %v (run as root, as CI does)", err)
	}
	var raw [3]byte
	if _, err := rand.Read(raw[:]); err != nil {
		t.Fatal(err)
	}
	id := hex.EncodeToString(raw[:])
	underlay := nstestUnderlay(t)
	c := &nstestCluster{bridge: "brbk" + id, gateway: underlay.Addr().Next()}
	t.Cleanup(func() {
		if err := hostnet.DeleteLink(c.bridge); err != nil {
			t.Errorf("removing bridge %s: %v", c.bridge, err)
		}
	})
	if err := hostnet.EnsureBridge(c.bridge, netip.PrefixFrom(c.gateway, underlay.Bits())); err != nil {
		t.Fatal(err)
	}
	publicIP := c.gateway
	for i := 1; i <= count; i++ {
		publicIP = publicIP.Next()
		hn := hostnet.Node{
			Namespace: fmt.Sprintf("corral-bktest-%s-%d", id, i),
			HostVeth:  fmt.Sprintf("vbk%s%d", id, i),
			Bridge:    c.bridge,
			Addr:      netip.PrefixFrom(publicIP, underlay.Bits()),
			Gateway:   c.gateway,
		}
		// Cleanups run last-in first-out: the handle closes before the
		// namespace goes, so nothing of ours holds the namespace alive.
		t.Cleanup(func() {
			if err := hostnet.DeleteNamespace(hn.Namespace); err != nil {
				t.Errorf("removing namespace %s: %v", hn.Namespace, err)
			}
			if err := hostnet.DeleteLink(hn.HostVeth); err != nil {
				t.Errorf("removing veth %s: %v", hn.HostVeth, err)
			}
		})
		if err := hostnet.EnsureNode(hn); err != nil {
			t.Fatal(err)
		}
		h, err := hostnet.Handle(hn.Namespace)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Close)
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24)
		n := &nstestNode{ns: hn.Namespace, h: h, publicIP: publicIP, subnet: subnet, addr: subnet.Addr().Next()}
		nstestMustSetUpNode(t, n)
		c.nodes = append(c.nodes, n)
	}
	return c
}

// nstestUnderlay picks a random /24 from 198.18.0.0/15 (RFC 2544's
// benchmarking range) that no host route overlaps.
func nstestUnderlay(t *testing.T) netip.Prefix {
	t.Helper()
	for range 32 {
		var raw [2]byte
		if _, err := rand.Read(raw[:]); err != nil {
			t.Fatal(err)
		}
		r := binary.BigEndian.Uint16(raw[:]) % 512
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(r>>8), byte(r), 0}), 24)
		if used, err := hostnet.RoutesOverlapping(p, ""); err == nil && len(used) == 0 {
			return p
		}
	}
	t.Fatal("no free /24 in 198.18.0.0/15 for the test's underlay")
	return netip.Prefix{}
}

// nstestMustSetUpNode gives a node its corral0 bridge and its unreachable
// route for the rest of the overlay.
func nstestMustSetUpNode(t *testing.T, n *nstestNode) {
	t.Helper()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "corral0"}}
	if err := n.h.LinkAdd(br); err != nil {
		t.Fatalf("%s: creating corral0: %v", n.ns, err)
	}
	if err := n.h.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: routesIP(n.addr), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatalf("%s: addressing corral0: %v", n.ns, err)
	}
	if err := n.h.LinkSetUp(br); err != nil {
		t.Fatalf("%s: corral0 up: %v", n.ns, err)
	}
	// A high metric, so the udp backend's connected route for the whole
	// overlay (on its TUN device) wins over this one.
	unreachable := &netlink.Route{Dst: routesIPNet(nstestOverlay), Type: unix.RTN_UNREACHABLE, Priority: 4000}
	if err := n.h.RouteAdd(unreachable); err != nil {
		t.Fatalf("%s: unreachable route for %s: %v", n.ns, nstestOverlay, err)
	}
}

// nstestExchange opens a TCP connection from one node's overlay address to a
// listener on another's and checks that data goes both ways. It returns the
// dial error, so a test can also show that a connection is impossible.
func nstestExchange(t *testing.T, from, to *nstestNode) error {
	t.Helper()
	var ln *net.TCPListener
	err := hostnet.Do(to.ns, func() error {
		l, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(to.addr, 0)))
		ln = l
		return err
	})
	if err != nil {
		t.Fatalf("listening on %s in %s: %v", to.addr, to.ns, err)
	}
	defer ln.Close()

	var conn net.Conn
	err = hostnet.Do(from.ns, func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(from.addr, 0)), Timeout: nstestIOTimeout}
		c, err := d.Dial("tcp", ln.Addr().String())
		conn = c
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()

	// The handshake is complete, so the connection waits in the backlog:
	// Accept returns it without another goroutine.
	deadline := time.Now().Add(nstestIOTimeout)
	if err := ln.SetDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatalf("accepting on %s: %v", ln.Addr(), err)
	}
	defer server.Close()
	if got := server.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != from.addr {
		t.Fatalf("connection came from %s, want %s (not across the overlay?)", got, from.addr)
	}
	conn.SetDeadline(deadline)
	server.SetDeadline(deadline)

	ping, pong := []byte("ping from "+from.addr.String()), []byte("pong from "+to.addr.String())
	if _, err := conn.Write(ping); err != nil {
		t.Fatalf("%s -> %s: writing: %v", from.addr, to.addr, err)
	}
	got := make([]byte, len(ping))
	if _, err := io.ReadFull(server, got); err != nil || string(got) != string(ping) {
		t.Fatalf("%s -> %s: server read %q, %v; want %q", from.addr, to.addr, got, err, ping)
	}
	if _, err := server.Write(pong); err != nil {
		t.Fatalf("%s -> %s: replying: %v", to.addr, from.addr, err)
	}
	got = make([]byte, len(pong))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != string(pong) {
		t.Fatalf("%s -> %s: client read %q, %v; want %q", to.addr, from.addr, got, err, pong)
	}
	return nil
}

// nstestMustNotConnect checks that from can't open a connection to to, and
// that the kernel refused it for want of a route, not for some other reason
// such as a listener that was missing.
func nstestMustNotConnect(t *testing.T, from, to *nstestNode) {
	t.Helper()
	err := nstestExchange(t, from, to)
	if err == nil {
		t.Fatalf("%s reached %s", from.addr, to.addr)
	}
	if !nstestIsUnreachable(err) {
		t.Fatalf("%s -> %s failed, but not for want of a route: %v", from.addr, to.addr, err)
	}
}

func nstestIsUnreachable(err error) bool {
	return errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ENETUNREACH)
}

// nstestRoutes lists, in a stable form, the routes on dev in the main table
// of n's namespace, with their protocol.
func nstestRoutes(t *testing.T, n *nstestNode, dev string) []string {
	t.Helper()
	link, err := n.h.LinkByName(dev)
	if err != nil {
		t.Fatalf("%s: %s: %v", n.ns, dev, err)
	}
	routes, err := n.h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range routes {
		out = append(out, fmt.Sprintf("%s via %s proto %d flags %d", r.Dst, r.Gw, r.Protocol, r.Flags))
	}
	sort.Strings(out)
	return out
}

// nstestOwnedRoutes is nstestRoutes for the routes marked as ours only.
func nstestOwnedRoutes(t *testing.T, n *nstestNode, dev string) []string {
	t.Helper()
	link, err := n.h.LinkByName(dev)
	if err != nil {
		t.Fatalf("%s: %s: %v", n.ns, dev, err)
	}
	routes, err := routesOwned(n.h, link.Attrs().Index)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range routes {
		out = append(out, fmt.Sprintf("%s via %s", r.Dst, r.Gw))
	}
	sort.Strings(out)
	return out
}
