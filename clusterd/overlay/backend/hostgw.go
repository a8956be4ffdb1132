package backend

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/vishvananda/netlink"
)

// hostgwType is the lease BackendType this backend serves (flannel's name).
const hostgwType = "host-gw"

// hostgwBackend is flannel's host-gw backend: no encapsulation, each peer's
// subnet is routed via the peer's public address on the underlay device.
// That only works when every peer is on this machine's L2 segment, which
// Sync checks for each peer.
type hostgwBackend struct {
	h *netlink.Handle

	mu      sync.Mutex
	started bool
	local   Local
}

// NewHostGW returns a Backend that routes each peer's subnet via the peer's
// public address, acting through h: pass a handle for the namespace the
// overlay lives in. Every machine must share one L2 segment.
func NewHostGW(h *netlink.Handle) Backend {
	return &hostgwBackend{h: h}
}

// Start records this machine's lease. host-gw makes no devices, publishes
// no data (null, as flannel does) and adds no overhead to the MTU.
func (b *hostgwBackend) Start(local Local) (json.RawMessage, int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !local.PublicIP.IsValid() || !local.PublicIP.Unmap().Is4() {
		return nil, 0, fmt.Errorf("host-gw: public address %s is not IPv4", local.PublicIP)
	}
	underlay, err := routesLinkByName(b.h, hostgwType, "underlay device", local.Underlay)
	if err != nil {
		return nil, 0, err
	}
	b.local, b.started = local, true
	return json.RawMessage("null"), underlay.Attrs().MTU, nil
}

// Sync routes each host-gw peer's subnet via its public address, and removes
// this backend's routes to any other subnet. A peer that is not directly
// reachable on the underlay is reported in the error and gets no route; the
// others are still synced.
func (b *hostgwBackend) Sync(peers []Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return errors.New("host-gw: Sync called before Start")
	}
	// Looked up each time: an underlay that was re-created has a new index.
	underlay, err := routesLinkByName(b.h, hostgwType, "underlay device", b.local.Underlay)
	if err != nil {
		return err
	}
	idx := underlay.Attrs().Index

	var errs []error
	want := make(map[netip.Prefix]*netlink.Route, len(peers))
	for _, p := range peers {
		if p.BackendType != hostgwType {
			continue
		}
		if err := routesCheckPeer(hostgwType, p); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := b.checkOnLink(p.PublicIP.Unmap(), underlay); err != nil {
			errs = append(errs, err)
			continue
		}
		want[p.Subnet.Masked()] = &netlink.Route{Gw: routesIP(p.PublicIP)}
	}
	if err := routesSync(b.h, idx, want); err != nil {
		errs = append(errs, fmt.Errorf("host-gw: %w", err))
	}
	return errors.Join(errs...)
}

// checkOnLink asks the kernel how it reaches ip: a route via a gateway means
// ip is on another L2 segment, where routing the overlay via it would send
// packets the gateway drops or routes elsewhere.
func (b *hostgwBackend) checkOnLink(ip netip.Addr, underlay netlink.Link) error {
	routes, err := b.h.RouteGet(routesIP(ip))
	if err != nil {
		return fmt.Errorf("host-gw: peer %s: finding the route to it: %w", ip, err)
	}
	if len(routes) == 0 {
		return fmt.Errorf("host-gw: peer %s: this machine has no route to it", ip)
	}
	r := routes[0]
	if r.Gw != nil {
		return fmt.Errorf("host-gw: peer %s is not on this machine's L2 segment (reached via gateway %s); use the vxlan backend", ip, r.Gw)
	}
	if r.LinkIndex != underlay.Attrs().Index {
		dev := fmt.Sprint(r.LinkIndex)
		if link, err := b.h.LinkByIndex(r.LinkIndex); err == nil {
			dev = link.Attrs().Name
		}
		return fmt.Errorf("host-gw: peer %s is reached through %s, not the underlay device %s; set the underlay to %s or use the vxlan backend",
			ip, dev, underlay.Attrs().Name, dev)
	}
	return nil
}

// Close removes every route this backend made on the underlay device.
func (b *hostgwBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.started {
		return nil
	}
	underlay, err := routesLinkByName(b.h, hostgwType, "underlay device", b.local.Underlay)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		// The kernel removed its routes with it.
	case err != nil:
		return err
	default:
		if err := routesFlush(b.h, underlay.Attrs().Index); err != nil {
			return fmt.Errorf("host-gw: %w", err)
		}
	}
	// Only now: a Close that failed can be retried.
	b.started = false
	return nil
}
