// Package backend moves overlay packets between machines. Each backend
// (vxlan, host-gw, udp, aws-vpc) sets up its local devices once and
// then keeps the kernel's routes (and FDB/ARP entries) equal to the set of
// peer leases it is given: Sync is a full reconciliation, not a delta, so a
// missed event or a restart can never leave a stale route behind.
package backend

import (
	"encoding/json"
	"net/netip"
)

// Local is what a backend needs to know about this machine.
type Local struct {
	Network  netip.Prefix // the whole overlay, e.g. 10.1.0.0/16
	Subnet   netip.Prefix // this machine's lease, e.g. 10.1.42.0/24
	PublicIP netip.Addr   // this machine's underlay address
	// Underlay is the interface that carries PublicIP (eth0 on a local node).
	Underlay string
	VNI      int // vxlan: VXLAN network identifier; 0 means the default (1)
	Port     int // vxlan/udp: UDP port; 0 means the backend's default
}

// Peer is another machine's lease, as published in etcd.
type Peer struct {
	Subnet      netip.Prefix
	PublicIP    netip.Addr
	BackendType string
	BackendData json.RawMessage // what that machine's Start returned
}

// Backend carries the overlay between machines.
type Backend interface {
	// Start creates the backend's devices on this machine. It returns the
	// data peers need to reach it (published in its lease) and the MTU the
	// overlay has on this path.
	Start(local Local) (data json.RawMessage, mtu int, err error)
	// Sync makes the routes and neighbour entries match peers exactly:
	// added, changed and removed peers alike. Leases of this machine are
	// never passed in.
	Sync(peers []Peer) error
	// Close removes every device, route and entry the backend created.
	Close() error
}
