package clustertest

import (
	"fmt"
	"net/netip"

	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/vishvananda/netlink"
)

// Container makes a network namespace attached to a node's overlay bridge,
// as a container runtime would: a veth from the bridge, an address from the
// node's subnet, a default route through the bridge. It is named like the
// node's own namespace with a suffix, so `provision down` removes it too.
// It returns the namespace and its address.
func (c *Cluster) Container(node, bridge string, subnet netip.Prefix, n int) (string, netip.Addr) {
	c.T.Helper()
	ns := c.prov.Namespace(node) + "-c" + fmt.Sprint(n)
	addr := subnet.Addr()
	for range n + 1 {
		addr = addr.Next() // .1 is the bridge; containers from .2
	}
	gw := subnet.Addr().Next()
	host := fmt.Sprintf("vc%d%s", n, c.prov.HostVeth(node)[1:9])
	err := hostnet.Do(c.prov.Namespace(node), func() error {
		br, err := netlink.LinkByName(bridge)
		if err != nil {
			return err
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MasterIndex: br.Attrs().Index, MTU: br.Attrs().MTU}, PeerName: "p" + host[1:]}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		return netlink.LinkSetUp(veth)
	})
	if err != nil {
		c.T.Fatalf("container on %s: %v", node, err)
	}
	err = hostnet.Adopt(ns, c.prov.Namespace(node), "p"+host[1:], netip.PrefixFrom(addr, subnet.Bits()), gw)
	if err != nil {
		c.T.Fatalf("container on %s: %v", node, err)
	}
	return ns, addr
}
