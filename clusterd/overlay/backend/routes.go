package backend

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routesProto marks the routes the vxlan and host-gw backends install
// (rtm_protocol, shown as "proto 67" by ip-route). Reconciliation lists and
// removes only routes carrying it, so routes made by the kernel, by DHCP, by
// a routing daemon or by hand are never touched. 67 is not assigned in
// iproute2's rt_protos, and nothing else in Corral uses it.
const routesProto netlink.RouteProtocol = 0x43

// routesSync makes the IPv4 routes in the main table that are marked with
// routesProto and leave through linkIndex exactly equal to want, which is
// keyed by destination and gives each route's gateway and flags (routesSync
// fills in the link, destination, table and protocol). Routes already right
// are left alone, so a Sync that changes nothing causes no netlink churn. A
// destination already routed by someone else is reported, not overwritten:
// the error names it. All destinations are attempted; the errors are joined.
func routesSync(h *netlink.Handle, linkIndex int, want map[netip.Prefix]*netlink.Route) error {
	have, err := routesOwned(h, linkIndex)
	if err != nil {
		return err
	}
	var errs []error
	current := make(map[netip.Prefix]netlink.Route, len(have))
	for _, r := range have {
		dst, ok := routesDst(r)
		// Only the routes routesSync itself would make count as current;
		// anything else carrying our mark (a route with a metric from an
		// older release, say) is stale.
		if ok && want[dst] != nil && r.Priority == 0 && r.Tos == 0 {
			current[dst] = r
			continue
		}
		if err := routesDel(h, &r); err != nil {
			errs = append(errs, err)
		}
	}
	// A stable order keeps errors and netlink traffic reproducible.
	dsts := make([]netip.Prefix, 0, len(want))
	for dst := range want {
		dsts = append(dsts, dst)
	}
	slices.SortFunc(dsts, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	for _, dst := range dsts {
		r := new(netlink.Route)
		*r = *want[dst]
		r.LinkIndex = linkIndex
		r.Dst = routesIPNet(dst)
		r.Protocol = routesProto
		r.Table = unix.RT_TABLE_MAIN
		old, ok := current[dst]
		switch {
		case ok && routesEqual(&old, r):
			continue
		case ok:
			// Ours already: replace it in place so the destination is
			// never left unrouted.
			err = h.RouteReplace(r)
		default:
			// NLM_F_EXCL: a route to dst that is not ours (same metric,
			// same table) makes this fail instead of being clobbered.
			err = h.RouteAdd(r)
			if errors.Is(err, unix.EEXIST) {
				err = routesConflict(h, dst)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("route to %s via %s: %w", dst, r.Gw, err))
		}
	}
	return errors.Join(errs...)
}

// routesConflict describes the route to dst that blocks ours.
func routesConflict(h *netlink.Handle, dst netip.Prefix) error {
	filter := &netlink.Route{Dst: routesIPNet(dst), Table: unix.RT_TABLE_MAIN}
	found, _ := h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if len(found) == 0 {
		// Gone since, or in a form the dump doesn't show; say what we know.
		return fmt.Errorf("the main table already has a route to %s that this backend does not own", dst)
	}
	r := found[0]
	dev := fmt.Sprint(r.LinkIndex)
	if link, err := h.LinkByIndex(r.LinkIndex); err == nil {
		dev = link.Attrs().Name
	}
	return fmt.Errorf("the main table already has a route to %s (dev %s, proto %s) that this backend does not own; "+
		"remove it or choose another overlay network", dst, dev, r.Protocol)
}

// routesOwned lists the IPv4 routes in the main table marked with
// routesProto that leave through linkIndex.
func routesOwned(h *netlink.Handle, linkIndex int) ([]netlink.Route, error) {
	filter := &netlink.Route{LinkIndex: linkIndex, Protocol: routesProto, Table: unix.RT_TABLE_MAIN}
	mask := netlink.RT_FILTER_OIF | netlink.RT_FILTER_PROTOCOL | netlink.RT_FILTER_TABLE
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, filter, mask)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	return routes, nil
}

// routesFlush removes every route routesOwned lists.
func routesFlush(h *netlink.Handle, linkIndex int) error {
	have, err := routesOwned(h, linkIndex)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range have {
		if err := routesDel(h, &r); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// routesDel deletes r; a route that is already gone is not an error.
func routesDel(h *netlink.Handle, r *netlink.Route) error {
	if err := h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("removing route to %s: %w", r.Dst, err)
	}
	return nil
}

// routesEqual compares the attributes routesSync sets.
func routesEqual(a, b *netlink.Route) bool {
	const onlink = int(unix.RTNH_F_ONLINK)
	return a.LinkIndex == b.LinkIndex && a.Gw.Equal(b.Gw) && a.Flags&onlink == b.Flags&onlink
}

// routesDst returns r's destination, or false for a default or multipath
// route, which routesSync never makes.
func routesDst(r netlink.Route) (netip.Prefix, bool) {
	if r.Dst == nil {
		return netip.Prefix{}, false
	}
	addr, ok := netip.AddrFromSlice(r.Dst.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, bits := r.Dst.Mask.Size()
	addr = addr.Unmap()
	if bits != addr.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(addr, ones), true
}

// routesIPNet converts p (taken as its network) for netlink.
func routesIPNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: routesIP(p.Addr()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// routesIP converts a for netlink, as a 4-byte slice for IPv4 so that
// netlink picks the IPv4 family.
func routesIP(a netip.Addr) net.IP {
	return net.IP(a.Unmap().AsSlice())
}

// routesCheckPeer rejects a lease the IPv4-only backends can't route, with
// an error that names it.
func routesCheckPeer(kind string, p Peer) error {
	if !p.Subnet.IsValid() || !p.Subnet.Addr().Unmap().Is4() {
		return fmt.Errorf("%s: peer %s has no IPv4 subnet (%s)", kind, p.PublicIP, p.Subnet)
	}
	if !p.PublicIP.IsValid() || !p.PublicIP.Unmap().Is4() {
		return fmt.Errorf("%s: peer with subnet %s has no IPv4 public address (%s)", kind, p.Subnet, p.PublicIP)
	}
	return nil
}

// routesLinkByName is h.LinkByName, with an error that says what the link
// was for.
func routesLinkByName(h *netlink.Handle, kind, role, name string) (netlink.Link, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %s %q: %w", kind, role, name, err)
	}
	return link, nil
}
