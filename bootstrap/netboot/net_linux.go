package netboot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
)

// lease is the network configuration DHCP gave.
type lease struct {
	iface   string
	addr    netip.Prefix
	router  net.IP
	dns     []net.IP
	domain  string
	renewal time.Duration
	ack     *dhcpv4.DHCPv4
	nc      *nclient4.Lease
}

// firstEthernet waits for the first non-loopback Ethernet device, as
// drivers probe their devices asynchronously.
func firstEthernet(ctx context.Context, logf Logf) (netlink.Link, error) {
	start := time.Now()
	warned := false
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		var best netlink.Link
		for _, l := range links {
			a := l.Attrs()
			if a.Flags&net.FlagLoopback != 0 || l.Type() != "device" || a.EncapType != "ether" || len(a.HardwareAddr) != 6 {
				continue
			}
			if best == nil || a.Index < best.Attrs().Index {
				best = l
			}
		}
		if best != nil {
			return best, nil
		}
		if !warned && time.Since(start) > 10*time.Second {
			logf("no Ethernet device yet (is its driver in the image's module list?); waiting")
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// bringUpNetwork brings up lo and the first Ethernet device, and
// configures it by DHCP, retrying with backoff until it has a lease.
func bringUpNetwork(ctx context.Context, logf Logf) (*lease, error) {
	if lo, err := netlink.LinkByName("lo"); err == nil {
		if err := netlink.LinkSetUp(lo); err != nil {
			logf("bringing up lo: %v", err)
		}
	}
	link, err := firstEthernet(ctx, logf)
	if err != nil {
		return nil, err
	}
	name := link.Attrs().Name
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("bringing up %s: %w", name, err)
	}
	logf("%s (%s) is up; asking for a DHCP lease", name, link.Attrs().HardwareAddr)
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		l, err := dhcp(ctx, name)
		if err == nil {
			if err := configure(link, l); err != nil {
				return nil, err
			}
			logf("DHCP: %s has %s, router %v, DNS %v (lease from %v)", name, l.addr, l.router, l.dns, l.ack.ServerIdentifier())
			return l, nil
		}
		logf("DHCP on %s, attempt %d: %v; retrying in %s", name, attempt, err, backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

func dhcp(ctx context.Context, iface string) (*lease, error) {
	c, err := nclient4.New(iface, nclient4.WithTimeout(4*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	nl, err := c.Request(ctx)
	if err != nil {
		return nil, err
	}
	ack := nl.ACK
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !ip.IsValid() || ip.IsUnspecified() {
		return nil, errors.New("the DHCP server gave no address")
	}
	bits := 24
	if m := ack.SubnetMask(); m != nil {
		bits, _ = m.Size()
	}
	l := &lease{iface: iface, addr: netip.PrefixFrom(ip, bits), dns: ack.DNS(), domain: ack.DomainName(), ack: ack, nc: nl}
	if r := ack.Router(); len(r) > 0 {
		l.router = r[0]
	}
	l.renewal = ack.IPAddressLeaseTime(time.Hour) / 2
	return l, nil
}

func configure(link netlink.Link, l *lease) error {
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: l.addr.Addr().AsSlice(), Mask: net.CIDRMask(l.addr.Bits(), 32)}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("setting %s on %s: %w", l.addr, l.iface, err)
	}
	if l.router != nil {
		route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: l.router, Dst: nil}
		if err := netlink.RouteReplace(route); err != nil {
			return fmt.Errorf("default route via %s: %w", l.router, err)
		}
	}
	return os.WriteFile("/etc/resolv.conf", []byte(ResolvConf(l.dns, l.domain)), 0o644)
}

// ResolvConf is /etc/resolv.conf for the given servers and search domain.
func ResolvConf(servers []net.IP, domain string) string {
	var b strings.Builder
	b.WriteString("# Written by Corral's init from DHCP.\n")
	if domain != "" {
		b.WriteString("search " + domain + "\n")
	}
	for _, s := range servers {
		b.WriteString("nameserver " + s.String() + "\n")
	}
	return b.String()
}

// renew keeps the lease, renewing it at half its time.
func renew(ctx context.Context, l *lease, logf Logf) {
	for {
		wait := max(l.renewal, time.Minute)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		c, err := nclient4.New(l.iface, nclient4.WithTimeout(4*time.Second))
		if err != nil {
			logf("DHCP renewal: %v", err)
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		nl, err := c.Renew(rctx, l.nc)
		cancel()
		c.Close()
		if err != nil {
			logf("DHCP renewal: %v", err)
			continue
		}
		l.nc = nl
		l.renewal = nl.ACK.IPAddressLeaseTime(time.Hour) / 2
	}
}

// sourceFor is the source address of the route towards target, as `ip
// route get` tells the detection script; "" when there is none.
func sourceFor(target string) string {
	ip := net.ParseIP(target)
	if ip == nil {
		return ""
	}
	routes, err := netlink.RouteGet(ip)
	if err != nil || len(routes) == 0 || routes[0].Src == nil {
		return ""
	}
	return routes[0].Src.String()
}
