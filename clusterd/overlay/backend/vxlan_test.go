package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// vxlanTestNode is a node with its backend started.
type vxlanTestNode struct {
	*nstestNode
	b    Backend
	peer Peer // this node's lease, as others see it
	mac  net.HardwareAddr
}

// vxlanTestStart starts a vxlan backend on n, through dev, and closes it
// when the test ends.
func vxlanTestStart(t *testing.T, n *nstestNode, dev string, local Local) *vxlanTestNode {
	t.Helper()
	b := NewVXLAN(n.h, dev)
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("%s: Close: %v", n.ns, err)
		}
	})
	data, _, err := b.Start(local)
	if err != nil {
		t.Fatalf("%s: Start: %v", n.ns, err)
	}
	return &vxlanTestNode{nstestNode: n, b: b, mac: vxlanTestMAC(t, data),
		peer: Peer{Subnet: local.Subnet, PublicIP: local.PublicIP, BackendType: "vxlan", BackendData: data}}
}

func vxlanTestMAC(t *testing.T, data json.RawMessage) net.HardwareAddr {
	t.Helper()
	var d struct{ VtepMAC string }
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("BackendData %s: %v", data, err)
	}
	mac, err := net.ParseMAC(d.VtepMAC)
	if err != nil {
		t.Fatalf("BackendData %s: %v", data, err)
	}
	return mac
}

// vxlanTestStartAll starts a backend on every node of c, with the default
// device name, and syncs each with all the others.
func vxlanTestStartAll(t *testing.T, c *nstestCluster) []*vxlanTestNode {
	t.Helper()
	var nodes []*vxlanTestNode
	for _, n := range c.nodes {
		nodes = append(nodes, vxlanTestStart(t, n, "", n.local()))
	}
	for _, n := range nodes {
		vxlanTestMustSync(t, n, vxlanTestPeers(nodes, n)...)
	}
	return nodes
}

// vxlanTestPeers returns the leases of nodes, except the ones in skip.
func vxlanTestPeers(nodes []*vxlanTestNode, skip ...*vxlanTestNode) []Peer {
	var out []Peer
	for _, n := range nodes {
		if !slices.Contains(skip, n) {
			out = append(out, n.peer)
		}
	}
	return out
}

func vxlanTestMustSync(t *testing.T, n *vxlanTestNode, peers ...Peer) {
	t.Helper()
	if err := n.b.Sync(peers); err != nil {
		t.Fatalf("%s: Sync: %v", n.ns, err)
	}
}

// vxlanTestState is what the kernel holds for the vxlan device, each list
// sorted: FDB entries, IPv4 neighbours, and main-table routes.
type vxlanTestState struct {
	FDB, Neigh, Routes []string
}

func vxlanTestRead(t *testing.T, n *nstestNode, dev string) vxlanTestState {
	t.Helper()
	link, err := n.h.LinkByName(dev)
	if err != nil {
		t.Fatalf("%s: %s: %v", n.ns, dev, err)
	}
	var s vxlanTestState
	fdb, err := n.h.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range fdb {
		s.FDB = append(s.FDB, fmt.Sprintf("%s dst %s state %#x", e.HardwareAddr, e.IP, e.State))
	}
	neigh, err := n.h.NeighList(link.Attrs().Index, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range neigh {
		if e.State&netlink.NUD_NOARP == 0 {
			s.Neigh = append(s.Neigh, fmt.Sprintf("%s lladdr %s state %#x", e.IP, e.HardwareAddr, e.State))
		}
	}
	s.Routes = nstestRoutes(t, n, dev)
	sort.Strings(s.FDB)
	sort.Strings(s.Neigh)
	return s
}

// vxlanTestWant is the state a node synced with peers must have, exactly.
func vxlanTestWant(peers ...*vxlanTestNode) vxlanTestState {
	s := vxlanTestState{FDB: []string{}, Neigh: []string{}, Routes: []string{}}
	for _, p := range peers {
		vtep := p.subnet.Addr()
		s.FDB = append(s.FDB, fmt.Sprintf("%s dst %s state %#x", p.mac, p.publicIP, netlink.NUD_PERMANENT))
		s.Neigh = append(s.Neigh, fmt.Sprintf("%s lladdr %s state %#x", vtep, p.mac, netlink.NUD_PERMANENT))
		s.Routes = append(s.Routes, fmt.Sprintf("%s via %s proto %d flags %d", p.subnet, vtep, routesProto, unix.RTNH_F_ONLINK))
	}
	sort.Strings(s.FDB)
	sort.Strings(s.Neigh)
	sort.Strings(s.Routes)
	return s
}

func vxlanTestCheck(t *testing.T, n *vxlanTestNode, want vxlanTestState) {
	t.Helper()
	got := vxlanTestRead(t, n.nstestNode, vxlanDefaultDev)
	// nil and empty lists are the same state.
	norm := func(s []string) []string { return append([]string{}, s...) }
	got = vxlanTestState{norm(got.FDB), norm(got.Neigh), norm(got.Routes)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s: kernel state of %s:\n got  %+v\n want %+v", n.ns, vxlanDefaultDev, got, want)
	}
}

// Start makes the device flannel would: given VNI and port, learning off,
// local address and underlay set, MTU 50 below the underlay's, the subnet's
// network address as a /32, up; BackendData carries VNI and MAC.
func TestVXLANStartConfiguresDevice(t *testing.T) {
	c := nstestNewCluster(t, 2)
	a, b := c.nodes[0], c.nodes[1]
	eth0, err := a.h.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	// An underlay MTU that is not the default shows the MTU is derived.
	if err := a.h.LinkSetMTU(eth0, 1400); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		node           *nstestNode
		dev, wantDev   string
		vni, port      int
		wantVNI, wantP int
		wantMTU        int
	}{
		{node: a, dev: "ovl.test", wantDev: "ovl.test", vni: 42, port: 4789, wantVNI: 42, wantP: 4789, wantMTU: 1350},
		{node: b, dev: "", wantDev: "corral.1", wantVNI: 1, wantP: 8472, wantMTU: 1450},
	}
	for _, tc := range cases {
		local := tc.node.local()
		local.VNI, local.Port = tc.vni, tc.port
		bk := NewVXLAN(tc.node.h, tc.dev)
		t.Cleanup(func() { bk.Close() })
		data, mtu, err := bk.Start(local)
		if err != nil {
			t.Fatalf("%s: Start: %v", tc.node.ns, err)
		}
		if mtu != tc.wantMTU {
			t.Errorf("%s: MTU = %d, want %d", tc.node.ns, mtu, tc.wantMTU)
		}
		link, err := tc.node.h.LinkByName(tc.wantDev)
		if err != nil {
			t.Fatalf("%s: device %s: %v", tc.node.ns, tc.wantDev, err)
		}
		vx, ok := link.(*netlink.Vxlan)
		if !ok {
			t.Fatalf("%s: %s is a %s", tc.node.ns, tc.wantDev, link.Type())
		}
		underlay, err := tc.node.h.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if vx.VxlanId != tc.wantVNI || vx.Port != tc.wantP || vx.Learning ||
			nstestAddr(vx.SrcAddr) != tc.node.publicIP || vx.VtepDevIndex != underlay.Attrs().Index ||
			vx.MTU != tc.wantMTU || vx.Flags&net.FlagUp == 0 {
			t.Errorf("%s: device = VNI %d port %d learning %v local %s link %d mtu %d flags %v; "+
				"want VNI %d port %d learning false local %s link %d mtu %d up",
				tc.node.ns, vx.VxlanId, vx.Port, vx.Learning, vx.SrcAddr, vx.VtepDevIndex, vx.MTU, vx.Flags,
				tc.wantVNI, tc.wantP, tc.node.publicIP, underlay.Attrs().Index, tc.wantMTU)
		}
		addrs, err := tc.node.h.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			t.Fatal(err)
		}
		if want := tc.node.subnet.Addr().String() + "/32"; len(addrs) != 1 || addrs[0].IPNet.String() != want {
			t.Errorf("%s: addresses %v, want only %s", tc.node.ns, addrs, want)
		}
		wantData := fmt.Sprintf(`{"VNI":%d,"VtepMAC":"%s"}`, tc.wantVNI, vx.HardwareAddr)
		if string(data) != wantData {
			t.Errorf("%s: BackendData = %s, want %s", tc.node.ns, data, wantData)
		}
	}
}

// Packets cross the overlay between namespaces through real kernel vxlan; a
// peer left out of Sync loses its FDB entry, neighbour and route, and can no
// longer be reached, while the others still can; putting it back restores
// it.
func TestVXLANCarriesTrafficAndForgetsDepartedPeer(t *testing.T) {
	c := nstestNewCluster(t, 3)
	nodes := vxlanTestStartAll(t, c)
	a, b, cc := nodes[0], nodes[1], nodes[2]

	vxlanTestCheck(t, a, vxlanTestWant(b, cc))
	if err := nstestExchange(t, a.nstestNode, cc.nstestNode); err != nil {
		t.Fatalf("A -> C over vxlan: %v", err)
	}
	if err := nstestExchange(t, b.nstestNode, a.nstestNode); err != nil {
		t.Fatalf("B -> A over vxlan: %v", err)
	}

	vxlanTestMustSync(t, a, b.peer)
	vxlanTestCheck(t, a, vxlanTestWant(b))
	nstestMustNotConnect(t, a.nstestNode, cc.nstestNode)
	if err := nstestExchange(t, a.nstestNode, b.nstestNode); err != nil {
		t.Fatalf("A -> B after C left: %v", err)
	}

	vxlanTestMustSync(t, a, b.peer, cc.peer)
	vxlanTestCheck(t, a, vxlanTestWant(b, cc))
	if err := nstestExchange(t, a.nstestNode, cc.nstestNode); err != nil {
		t.Fatalf("A -> C after C came back: %v", err)
	}
}

// Sync is a reconciliation: run again with the same peers, it leaves the
// kernel's entries exactly as they were.
func TestVXLANSyncIsIdempotent(t *testing.T) {
	c := nstestNewCluster(t, 3)
	nodes := vxlanTestStartAll(t, c)
	a := nodes[0]
	before := vxlanTestRead(t, a.nstestNode, vxlanDefaultDev)
	for range 2 {
		vxlanTestMustSync(t, a, vxlanTestPeers(nodes, a)...)
		if after := vxlanTestRead(t, a.nstestNode, vxlanDefaultDev); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("Sync with the same peers changed the kernel's state:\n before %+v\n after  %+v", before, after)
		}
	}
	vxlanTestCheck(t, a, vxlanTestWant(nodes[1], nodes[2]))
}

// A restarted clusterd adopts the device it left behind (same index, same
// MAC, so peers need not change anything) and its first Sync removes
// entries for peers that left while it was down. A device with another VNI
// is replaced; a device of another kind with the name is refused and left
// alone.
func TestVXLANStartAdoptsExistingDevice(t *testing.T) {
	c := nstestNewCluster(t, 3)
	nodes := vxlanTestStartAll(t, c)
	a, b := nodes[0], nodes[1]
	before, err := a.h.LinkByName(vxlanDefaultDev)
	if err != nil {
		t.Fatal(err)
	}

	again := NewVXLAN(a.h, "")
	data, mtu, err := again.Start(a.local())
	if err != nil {
		t.Fatalf("Start on an existing device: %v", err)
	}
	after, err := a.h.LinkByName(vxlanDefaultDev)
	if err != nil {
		t.Fatal(err)
	}
	if after.Attrs().Index != before.Attrs().Index || string(data) != string(a.peer.BackendData) || mtu != 1450 {
		t.Fatalf("Start made a new device: index %d -> %d, data %s -> %s, MTU %d",
			before.Attrs().Index, after.Attrs().Index, a.peer.BackendData, data, mtu)
	}
	// The adopted device still carries the previous run's entries.
	vxlanTestCheck(t, a, vxlanTestWant(b, nodes[2]))
	if err := again.Sync([]Peer{b.peer}); err != nil {
		t.Fatal(err)
	}
	vxlanTestCheck(t, a, vxlanTestWant(b))
	if err := nstestExchange(t, a.nstestNode, b.nstestNode); err != nil {
		t.Fatalf("A -> B through the adopted device: %v", err)
	}

	// A new lease on restart: the old VTEP address goes, the new one comes.
	moved := a.local()
	moved.Subnet = netip.MustParsePrefix("10.244.99.0/24")
	if _, _, err := NewVXLAN(a.h, "").Start(moved); err != nil {
		t.Fatal(err)
	}
	addrs, err := a.h.AddrList(after, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].IPNet.String() != "10.244.99.0/32" {
		t.Fatalf("addresses after a subnet change: %v, want only 10.244.99.0/32", addrs)
	}

	other := a.local()
	other.VNI = 9
	data, _, err = NewVXLAN(a.h, "").Start(other)
	if err != nil {
		t.Fatalf("Start with another VNI: %v", err)
	}
	link, err := a.h.LinkByName(vxlanDefaultDev)
	if err != nil {
		t.Fatal(err)
	}
	if vx, ok := link.(*netlink.Vxlan); !ok || vx.VxlanId != 9 || !strings.Contains(string(data), `"VNI":9`) {
		t.Fatalf("device after Start with VNI 9: %#v, data %s", link, data)
	}

	squatter := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "notvx0"}}
	if err := a.h.LinkAdd(squatter); err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewVXLAN(a.h, "notvx0").Start(a.local()); err == nil || !strings.Contains(err.Error(), "not vxlan") {
		t.Fatalf("Start over a bridge: err = %v, want it refused", err)
	}
	if l, err := a.h.LinkByName("notvx0"); err != nil || l.Type() != "bridge" || l.Attrs().Index != squatter.Index {
		t.Fatalf("the bridge was touched: %v, %v", l, err)
	}
}

// A peer that restarts with a new device (new MAC) is followed: its entries
// are replaced in place, and traffic flows again.
func TestVXLANFollowsRestartedPeer(t *testing.T) {
	c := nstestNewCluster(t, 3)
	nodes := vxlanTestStartAll(t, c)
	a, b, cc := nodes[0], nodes[1], nodes[2]
	if err := cc.b.Close(); err != nil {
		t.Fatal(err)
	}
	restarted := vxlanTestStart(t, cc.nstestNode, "", cc.local())
	if restarted.mac.String() == cc.mac.String() {
		t.Fatalf("the new device kept MAC %s; this test needs a new one", cc.mac)
	}
	vxlanTestMustSync(t, restarted, a.peer, b.peer)
	vxlanTestMustSync(t, a, b.peer, restarted.peer)
	vxlanTestCheck(t, a, vxlanTestWant(b, restarted))
	if err := nstestExchange(t, a.nstestNode, restarted.nstestNode); err != nil {
		t.Fatalf("A -> restarted C: %v", err)
	}
}

// Unusable leases are reported, each by name, and skipped; leases of other
// backends are ignored; good peers are synced regardless.
func TestVXLANReportsUnusablePeers(t *testing.T) {
	c := nstestNewCluster(t, 2)
	nodes := vxlanTestStartAll(t, c)
	a, b := nodes[0], nodes[1]
	bad := func(ip, subnet, data string) Peer {
		return Peer{Subnet: netip.MustParsePrefix(subnet), PublicIP: netip.MustParseAddr(ip),
			BackendType: "vxlan", BackendData: json.RawMessage(data)}
	}
	peers := []Peer{
		b.peer,
		bad("198.51.100.1", "10.244.51.0/24", `not json`),
		bad("198.51.100.2", "10.244.52.0/24", `{"VNI":1,"VtepMAC":"zz:zz"}`),
		bad("198.51.100.3", "10.244.53.0/24", `{"VNI":2,"VtepMAC":"02:00:00:00:00:03"}`),
		bad("198.51.100.4", "10.244.54.0/24", fmt.Sprintf(`{"VNI":1,"VtepMAC":"%s"}`, b.mac)),
		{Subnet: netip.MustParsePrefix("10.244.55.0/24"), PublicIP: netip.MustParseAddr("198.51.100.5"),
			BackendType: "host-gw", BackendData: json.RawMessage("null")},
	}
	err := a.b.Sync(peers)
	if err == nil {
		t.Fatal("Sync with unusable leases returned no error")
	}
	for _, ip := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"} {
		if !strings.Contains(err.Error(), ip) {
			t.Errorf("the error does not name peer %s: %v", ip, err)
		}
	}
	if strings.Contains(err.Error(), "198.51.100.5") {
		t.Errorf("a host-gw lease was not ignored: %v", err)
	}
	vxlanTestCheck(t, a, vxlanTestWant(b))
	if err := nstestExchange(t, a.nstestNode, b.nstestNode); err != nil {
		t.Fatalf("A -> B beside unusable leases: %v", err)
	}
}

// Close removes the device, and every route with it; closing again is
// harmless, and Sync after Close is refused.
func TestVXLANCloseRemovesDevice(t *testing.T) {
	c := nstestNewCluster(t, 2)
	nodes := vxlanTestStartAll(t, c)
	a := nodes[0]
	if err := a.b.Close(); err != nil {
		t.Fatal(err)
	}
	var notFound netlink.LinkNotFoundError
	if _, err := a.h.LinkByName(vxlanDefaultDev); !errors.As(err, &notFound) {
		t.Fatalf("device after Close: %v, want it gone", err)
	}
	left, err := a.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routesProto}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("routes left after Close: %v", left)
	}
	if err := a.b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := a.b.Sync(vxlanTestPeers(nodes, a)); err == nil {
		t.Fatal("Sync after Close succeeded")
	}
	nstestMustNotConnect(t, a.nstestNode, nodes[1].nstestNode)
}
