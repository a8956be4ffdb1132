package backend

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	// vxlanType is the lease BackendType this backend serves; other leases
	// are left to the backend that understands them.
	vxlanType = "vxlan"
	// vxlanDefaultDev is the device name when NewVXLAN is given none
	// (flannel calls it flannel.<VNI>).
	vxlanDefaultDev = "corral.1"
	vxlanDefaultVNI = 1
	// vxlanDefaultPort is the Linux kernel's and flannel's port, not IANA's
	// 4789, so Corral nodes interoperate with flannel nodes.
	vxlanDefaultPort = 8472
	// vxlanOverhead is what encapsulation adds to each packet: outer IPv4
	// (20), UDP (8), VXLAN (8) and inner Ethernet (14) headers.
	vxlanOverhead = 50
)

// vxlanLeaseData is what a vxlan lease carries in BackendData. The field
// names are flannel's, so flannel and Corral can read each other's leases.
type vxlanLeaseData struct {
	VNI     int
	VtepMAC string
}

// vxlanBackend is flannel's vxlan backend with DirectRouting off: every
// packet to another machine's subnet is encapsulated. Each peer gets three
// kernel entries, all static, so the kernel never has to learn or ask:
// a route to its subnet via its VTEP address, a neighbour entry from that
// address to its VTEP MAC, and an FDB entry from the MAC to its public IP.
type vxlanBackend struct {
	h   *netlink.Handle
	dev string

	mu      sync.Mutex
	started bool
	vni     int
}

// NewVXLAN returns a Backend that carries the overlay in VXLAN, through a
// device called dev ("corral.1" if dev is empty), acting through h: pass a
// handle for the namespace the overlay lives in.
func NewVXLAN(h *netlink.Handle, dev string) Backend {
	if dev == "" {
		dev = vxlanDefaultDev
	}
	return &vxlanBackend{h: h, dev: dev}
}

// Start creates the VXLAN device, or adopts it when it is left from a
// previous run with the same settings (a restarted clusterd keeps its VTEP
// MAC, so peers' entries for it stay valid). A device with other settings is
// replaced.
func (b *vxlanBackend) Start(local Local) (json.RawMessage, int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !local.Subnet.IsValid() || !local.Subnet.Addr().Unmap().Is4() {
		return nil, 0, fmt.Errorf("vxlan: local subnet %s is not IPv4", local.Subnet)
	}
	if !local.PublicIP.IsValid() || !local.PublicIP.Unmap().Is4() {
		return nil, 0, fmt.Errorf("vxlan: public address %s is not IPv4", local.PublicIP)
	}
	vni := local.VNI
	if vni == 0 {
		vni = vxlanDefaultVNI
	}
	if vni < 0 || vni >= 1<<24 {
		return nil, 0, fmt.Errorf("vxlan: VNI %d is outside 1..16777215", vni)
	}
	port := local.Port
	if port == 0 {
		port = vxlanDefaultPort
	}
	if port < 0 || port > 65535 {
		return nil, 0, fmt.Errorf("vxlan: port %d is outside 1..65535", port)
	}
	underlay, err := routesLinkByName(b.h, vxlanType, "underlay device", local.Underlay)
	if err != nil {
		return nil, 0, err
	}
	mtu := underlay.Attrs().MTU - vxlanOverhead
	want := &netlink.Vxlan{
		LinkAttrs:    netlink.LinkAttrs{Name: b.dev, MTU: mtu},
		VxlanId:      vni,
		VtepDevIndex: underlay.Attrs().Index,
		SrcAddr:      routesIP(local.PublicIP),
		Port:         port,
		// Peers' MACs come only from their leases, as FDB entries; a
		// learning device would also believe the source of any packet.
		Learning: false,
	}
	link, created, err := b.ensureDevice(want)
	if err != nil {
		return nil, 0, err
	}
	if err := b.configure(link, mtu, local.Subnet); err != nil {
		if created {
			// Leave nothing half-made behind; an adopted device stays, as
			// it carries the previous run's traffic.
			b.h.LinkDel(link)
		}
		return nil, 0, err
	}
	data, err := json.Marshal(vxlanLeaseData{VNI: vni, VtepMAC: link.Attrs().HardwareAddr.String()})
	if err != nil {
		return nil, 0, err
	}
	b.started, b.vni = true, vni
	return data, mtu, nil
}

// ensureDevice returns the device named in want, adopting an existing one
// if it is compatible, and reports whether it made it.
func (b *vxlanBackend) ensureDevice(want *netlink.Vxlan) (netlink.Link, bool, error) {
	link, err := b.h.LinkByName(want.Name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		// None yet: made below.
	case err != nil:
		return nil, false, fmt.Errorf("vxlan: looking up %s: %w", want.Name, err)
	default:
		have, ok := link.(*netlink.Vxlan)
		if !ok {
			// Not ours to remove: someone else uses the name.
			return nil, false, fmt.Errorf("vxlan: %s exists and is a %s device, not vxlan; remove it or choose another device name",
				want.Name, link.Type())
		}
		if vxlanCompatible(have, want) {
			return have, false, nil
		}
		// Left by a run with another VNI, port or address: those can't be
		// changed on a live device, so make it again, as flannel does.
		if err := b.h.LinkDel(have); err != nil {
			return nil, false, fmt.Errorf("vxlan: removing %s, which has other settings: %w", want.Name, err)
		}
	}
	if err := b.h.LinkAdd(want); err != nil {
		return nil, false, fmt.Errorf("vxlan: creating %s (VNI %d, port %d): %w", want.Name, want.VxlanId, want.Port, err)
	}
	// Read it back for the index and the MAC address the kernel chose.
	link, err = b.h.LinkByName(want.Name)
	if err != nil {
		return nil, false, fmt.Errorf("vxlan: reading back %s: %w", want.Name, err)
	}
	return link, true, nil
}

// vxlanCompatible reports whether an existing device can carry the overlay
// as want describes. MTU and addresses are not compared: configure sets
// them on a live device.
func vxlanCompatible(have, want *netlink.Vxlan) bool {
	return have.VxlanId == want.VxlanId && have.Port == want.Port &&
		have.VtepDevIndex == want.VtepDevIndex && have.SrcAddr.Equal(want.SrcAddr) &&
		have.Group == nil && !have.Learning && !have.FlowBased
}

// configure gives the device its MTU, its only IPv4 address (the subnet's
// network address as a /32, the VTEP address peers route to) and brings it
// up.
func (b *vxlanBackend) configure(link netlink.Link, mtu int, subnet netip.Prefix) error {
	name := link.Attrs().Name
	if link.Attrs().MTU != mtu {
		if err := b.h.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("vxlan: setting MTU %d on %s: %w", mtu, name, err)
		}
	}
	addr := netip.PrefixFrom(subnet.Masked().Addr().Unmap(), 32)
	addrs, err := b.h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("vxlan: listing addresses of %s: %w", name, err)
	}
	found := false
	for _, a := range addrs {
		if p, ok := routesDst(netlink.Route{Dst: a.IPNet}); ok && p == addr {
			found = true
			continue
		}
		// The previous run's subnet: this machine has another lease now.
		if err := b.h.AddrDel(link, &a); err != nil {
			return fmt.Errorf("vxlan: removing old address %s from %s: %w", a.IPNet, name, err)
		}
	}
	if !found {
		if err := b.h.AddrAdd(link, &netlink.Addr{IPNet: routesIPNet(addr)}); err != nil {
			return fmt.Errorf("vxlan: adding %s to %s: %w", addr, name, err)
		}
	}
	if err := b.h.LinkSetUp(link); err != nil {
		return fmt.Errorf("vxlan: bringing %s up: %w", name, err)
	}
	return nil
}

// vxlanPeer is one peer's entries, as Sync wants them.
type vxlanPeer struct {
	subnet   netip.Prefix
	vtep     netip.Addr // the subnet's network address, on the peer's device
	mac      net.HardwareAddr
	publicIP netip.Addr
}

// Sync makes the device's FDB, neighbour table and (our) routes hold exactly
// one set of entries per vxlan peer. A peer whose lease can't be used is
// reported in the error and left out; the others are still synced.
func (b *vxlanBackend) Sync(peers []Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return errors.New("vxlan: Sync called before Start")
	}
	link, err := routesLinkByName(b.h, vxlanType, "device", b.dev)
	if err != nil {
		return fmt.Errorf("%w (removed behind clusterd's back? restart it)", err)
	}
	idx := link.Attrs().Index

	var errs []error
	want := make([]vxlanPeer, 0, len(peers))
	byMAC := make(map[string]vxlanPeer)
	for _, p := range peers {
		// A lease without data is a peer between leasing its subnet and
		// publishing its VTEP: not ready yet, and not an error.
		if p.BackendType != vxlanType || len(p.BackendData) == 0 || string(p.BackendData) == "null" {
			continue
		}
		vp, err := b.parsePeer(p)
		if err == nil {
			if other, dup := byMAC[vp.mac.String()]; dup {
				err = fmt.Errorf("vxlan: peers %s and %s both claim VTEP MAC %s; ignoring %s",
					other.publicIP, vp.publicIP, vp.mac, vp.publicIP)
			}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		byMAC[vp.mac.String()] = vp
		want = append(want, vp)
	}

	// The FDB and neighbour entries come before the routes that use them,
	// so a new route never sends into an unresolved neighbour.
	errs = append(errs, b.syncFDB(idx, want), b.syncNeigh(idx, want))
	routes := make(map[netip.Prefix]*netlink.Route, len(want))
	for _, p := range want {
		routes[p.subnet] = &netlink.Route{Gw: routesIP(p.vtep), Flags: int(unix.RTNH_F_ONLINK)}
	}
	if err := routesSync(b.h, idx, routes); err != nil {
		errs = append(errs, fmt.Errorf("vxlan: %w", err))
	}
	return errors.Join(errs...)
}

// parsePeer checks a vxlan lease and reads its BackendData.
func (b *vxlanBackend) parsePeer(p Peer) (vxlanPeer, error) {
	if err := routesCheckPeer(vxlanType, p); err != nil {
		return vxlanPeer{}, err
	}
	var data vxlanLeaseData
	if err := json.Unmarshal(p.BackendData, &data); err != nil {
		return vxlanPeer{}, fmt.Errorf("vxlan: peer %s (%s): reading its lease data %q: %w", p.PublicIP, p.Subnet, p.BackendData, err)
	}
	mac, err := net.ParseMAC(data.VtepMAC)
	if err != nil || len(mac) != 6 {
		return vxlanPeer{}, fmt.Errorf("vxlan: peer %s (%s): VtepMAC %q is not an Ethernet address", p.PublicIP, p.Subnet, data.VtepMAC)
	}
	// A VNI of 0 means an older lease that predates the field; flannel
	// treats it as matching too.
	if data.VNI != 0 && data.VNI != b.vni {
		return vxlanPeer{}, fmt.Errorf("vxlan: peer %s (%s) uses VNI %d and this machine VNI %d; they can't exchange packets",
			p.PublicIP, p.Subnet, data.VNI, b.vni)
	}
	subnet := p.Subnet.Masked()
	return vxlanPeer{subnet: subnet, vtep: subnet.Addr().Unmap(), mac: mac, publicIP: p.PublicIP.Unmap()}, nil
}

// syncFDB makes the device's forwarding database map each peer's VTEP MAC
// to its public IP, and nothing else.
func (b *vxlanBackend) syncFDB(idx int, want []vxlanPeer) error {
	have, err := b.h.NeighList(idx, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("vxlan: listing the FDB of %s: %w", b.dev, err)
	}
	wantDst := make(map[string]netip.Addr, len(want))
	for _, p := range want {
		wantDst[p.mac.String()] = p.publicIP
	}
	var errs []error
	// Each MAC can have several remotes (bridge fdb append); a MAC is
	// right only if its one remote is the peer's address.
	remotes := make(map[string][]netip.Addr)
	for _, n := range have {
		dst, _ := netip.AddrFromSlice(n.IP)
		dst = dst.Unmap()
		mac := n.HardwareAddr.String()
		if d, ok := wantDst[mac]; ok && d == dst && n.State&netlink.NUD_PERMANENT != 0 {
			remotes[mac] = append(remotes[mac], dst)
			continue
		}
		del := n
		if err := b.h.NeighDel(&del); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("vxlan: removing FDB entry %s dst %s: %w", n.HardwareAddr, dst, err))
		}
	}
	for _, p := range want {
		if r := remotes[p.mac.String()]; len(r) == 1 {
			continue
		}
		err := b.h.NeighSet(&netlink.Neigh{
			LinkIndex:    idx,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			State:        netlink.NUD_PERMANENT,
			IP:           routesIP(p.publicIP),
			HardwareAddr: p.mac,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("vxlan: FDB entry %s dst %s for peer %s: %w", p.mac, p.publicIP, p.subnet, err))
		}
	}
	return errors.Join(errs...)
}

// syncNeigh makes the device's IPv4 neighbour table map each peer's VTEP
// address to its VTEP MAC, permanently, so the kernel never sends ARP
// requests into the overlay (learning is off; nobody would answer).
func (b *vxlanBackend) syncNeigh(idx int, want []vxlanPeer) error {
	have, err := b.h.NeighList(idx, unix.AF_INET)
	if err != nil {
		return fmt.Errorf("vxlan: listing neighbours on %s: %w", b.dev, err)
	}
	wantMAC := make(map[netip.Addr]net.HardwareAddr, len(want))
	for _, p := range want {
		wantMAC[p.vtep] = p.mac
	}
	var errs []error
	current := make(map[netip.Addr]bool)
	for _, n := range have {
		ip, _ := netip.AddrFromSlice(n.IP)
		ip = ip.Unmap()
		if mac, ok := wantMAC[ip]; ok {
			// NeighSet below replaces it in place if it is wrong; deleting
			// first would leave the peer unreachable in between.
			current[ip] = bytes.Equal(n.HardwareAddr, mac) && n.State == netlink.NUD_PERMANENT
			continue
		}
		if n.State&netlink.NUD_NOARP != 0 {
			// Multicast and broadcast entries are the kernel's own.
			continue
		}
		del := n
		if err := b.h.NeighDel(&del); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("vxlan: removing neighbour %s on %s: %w", ip, b.dev, err))
		}
	}
	for _, p := range want {
		if current[p.vtep] {
			continue
		}
		err := b.h.NeighSet(&netlink.Neigh{
			LinkIndex:    idx,
			Family:       unix.AF_INET,
			State:        netlink.NUD_PERMANENT,
			Type:         unix.RTN_UNICAST,
			IP:           routesIP(p.vtep),
			HardwareAddr: p.mac,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("vxlan: neighbour %s lladdr %s for peer %s: %w", p.vtep, p.mac, p.publicIP, err))
		}
	}
	return errors.Join(errs...)
}

// Close deletes the device; the kernel drops its routes, neighbour and FDB
// entries with it. Closing twice, or without Start, is not an error.
func (b *vxlanBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.started = false
	link, err := b.h.LinkByName(b.dev)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("vxlan: looking up %s: %w", b.dev, err)
	}
	if _, ok := link.(*netlink.Vxlan); !ok {
		return nil // not a device this backend made
	}
	if err := b.h.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("vxlan: deleting %s: %w", b.dev, err)
	}
	return nil
}
