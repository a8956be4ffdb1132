package backend

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// hostgwTestNode is a node with its host-gw backend started.
type hostgwTestNode struct {
	*nstestNode
	b    Backend
	peer Peer
}

// hostgwTestStartAll starts host-gw on every node of c and syncs each with
// all the others.
func hostgwTestStartAll(t *testing.T, c *nstestCluster) []*hostgwTestNode {
	t.Helper()
	var nodes []*hostgwTestNode
	for _, n := range c.nodes {
		b := NewHostGW(n.h)
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("%s: Close: %v", n.ns, err)
			}
		})
		data, mtu, err := b.Start(n.local())
		if err != nil {
			t.Fatalf("%s: Start: %v", n.ns, err)
		}
		// The namespaces' veths have the default MTU; host-gw adds nothing.
		if string(data) != "null" || mtu != 1500 {
			t.Fatalf("%s: Start = %s, MTU %d; want null, 1500", n.ns, data, mtu)
		}
		nodes = append(nodes, &hostgwTestNode{nstestNode: n, b: b,
			peer: Peer{Subnet: n.subnet, PublicIP: n.publicIP, BackendType: "host-gw", BackendData: data}})
	}
	for _, n := range nodes {
		hostgwTestMustSync(t, n, hostgwTestPeers(nodes, n)...)
	}
	return nodes
}

func hostgwTestPeers(nodes []*hostgwTestNode, skip ...*hostgwTestNode) []Peer {
	var out []Peer
	for _, n := range nodes {
		if !slices.Contains(skip, n) {
			out = append(out, n.peer)
		}
	}
	return out
}

func hostgwTestMustSync(t *testing.T, n *hostgwTestNode, peers ...Peer) {
	t.Helper()
	if err := n.b.Sync(peers); err != nil {
		t.Fatalf("%s: Sync: %v", n.ns, err)
	}
}

// hostgwTestCheck asserts that n's own routes on eth0 are exactly one per
// peer, via the peer's public address.
func hostgwTestCheck(t *testing.T, n *hostgwTestNode, peers ...*hostgwTestNode) {
	t.Helper()
	want := []string{}
	for _, p := range peers {
		want = append(want, fmt.Sprintf("%s via %s", p.subnet, p.publicIP))
	}
	sort.Strings(want)
	got := append([]string{}, nstestOwnedRoutes(t, n.nstestNode, "eth0")...)
	if !slices.Equal(got, want) {
		t.Fatalf("%s: host-gw routes on eth0:\n got  %q\n want %q", n.ns, got, want)
	}
}

// Packets cross between namespaces routed via the peers' addresses; Sync is
// idempotent; a peer left out loses its route and can't be reached.
func TestHostGWCarriesTrafficAndForgetsDepartedPeer(t *testing.T) {
	c := nstestNewCluster(t, 3)
	nodes := hostgwTestStartAll(t, c)
	a, b, cc := nodes[0], nodes[1], nodes[2]

	hostgwTestCheck(t, a, b, cc)
	if err := nstestExchange(t, a.nstestNode, cc.nstestNode); err != nil {
		t.Fatalf("A -> C over host-gw: %v", err)
	}
	if err := nstestExchange(t, b.nstestNode, a.nstestNode); err != nil {
		t.Fatalf("B -> A over host-gw: %v", err)
	}

	before := nstestRoutes(t, a.nstestNode, "eth0")
	hostgwTestMustSync(t, a, b.peer, cc.peer)
	if after := nstestRoutes(t, a.nstestNode, "eth0"); !slices.Equal(after, before) {
		t.Fatalf("Sync with the same peers changed the routes:\n before %q\n after  %q", before, after)
	}

	hostgwTestMustSync(t, a, b.peer)
	hostgwTestCheck(t, a, b)
	nstestMustNotConnect(t, a.nstestNode, cc.nstestNode)
	if err := nstestExchange(t, a.nstestNode, b.nstestNode); err != nil {
		t.Fatalf("A -> B after C left: %v", err)
	}
}

// A peer that is reached through a gateway is refused with an error that
// names it and says what to do; the other peers are still routed.
func TestHostGWRejectsPeerBehindGateway(t *testing.T) {
	c := nstestNewCluster(t, 3)
	nodes := hostgwTestStartAll(t, c)
	a, b, cc := nodes[0], nodes[1], nodes[2]
	eth0, err := a.h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	// 203.0.113.0/24 (TEST-NET-3) is another L2 segment, behind the host.
	remote := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: routesIPNet(netip.MustParsePrefix("203.0.113.0/24")),
		Gw: routesIP(c.gateway), Protocol: unix.RTPROT_STATIC}
	if err := a.h.RouteAdd(remote); err != nil {
		t.Fatal(err)
	}
	far := Peer{Subnet: netip.MustParsePrefix("10.244.9.0/24"), PublicIP: netip.MustParseAddr("203.0.113.5"),
		BackendType: "host-gw", BackendData: json.RawMessage("null")}

	err = a.b.Sync([]Peer{b.peer, far, cc.peer})
	want := fmt.Sprintf("host-gw: peer 203.0.113.5 is not on this machine's L2 segment (reached via gateway %s); use the vxlan backend", c.gateway)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Sync with a peer behind a gateway: err = %v\nwant it to contain %q", err, want)
	}
	hostgwTestCheck(t, a, b, cc)
	if err := nstestExchange(t, a.nstestNode, b.nstestNode); err != nil {
		t.Fatalf("A -> B beside a refused peer: %v", err)
	}
}

// host-gw removes and replaces only routes it marked as its own: a route
// added by hand survives Sync and Close, and one at a peer's destination is
// reported rather than overwritten.
func TestHostGWTouchesOnlyItsOwnRoutes(t *testing.T) {
	c := nstestNewCluster(t, 3)
	nodes := hostgwTestStartAll(t, c)
	a, b, cc := nodes[0], nodes[1], nodes[2]
	eth0, err := a.h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	// C's route is taken by hand, as an operator might; so is an unrelated
	// destination.
	hostgwTestMustSync(t, a, b.peer)
	manual := []string{"10.244.3.0/24", "10.244.77.0/24"}
	for _, dst := range manual {
		r := &netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: routesIPNet(netip.MustParsePrefix(dst)),
			Gw: routesIP(b.publicIP), Protocol: unix.RTPROT_STATIC}
		if err := a.h.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
	}
	wantManual := func() {
		t.Helper()
		for _, dst := range manual {
			line := fmt.Sprintf("%s via %s proto %d flags 0", dst, b.publicIP, unix.RTPROT_STATIC)
			if routes := nstestRoutes(t, a.nstestNode, "eth0"); !slices.Contains(routes, line) {
				t.Fatalf("the hand-made route %q is gone or changed: %q", line, routes)
			}
		}
	}

	err = a.b.Sync([]Peer{b.peer, cc.peer})
	if err == nil || !strings.Contains(err.Error(), "10.244.3.0/24") || !strings.Contains(err.Error(), "does not own") {
		t.Fatalf("Sync over a hand-made route: err = %v, want it reported", err)
	}
	wantManual()
	hostgwTestCheck(t, a, b)

	if err := a.b.Close(); err != nil {
		t.Fatal(err)
	}
	hostgwTestCheck(t, a)
	wantManual()
	if err := a.b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
