package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
)

// ensureBridge creates the bridge that local workloads attach to, holding
// the subnet's first address, with the overlay's MTU.
func ensureBridge(h *netlink.Handle, name string, addr netip.Prefix, mtu int) error {
	link, err := h.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: mtu}}
		if err := h.LinkAdd(br); err != nil {
			return fmt.Errorf("overlay: creating bridge %s: %w", name, err)
		}
		link = br
	}
	if err := h.LinkSetMTU(link, mtu); err != nil {
		return err
	}
	// Replace rather than add: a restart with the same lease is a no-op, and
	// an address from an old lease must not linger beside the new one.
	addrs, err := h.AddrList(link, netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	want := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(addr.Addr().AsSlice()), Mask: net.CIDRMask(addr.Bits(), 32)}}
	for _, a := range addrs {
		if !a.IPNet.IP.Equal(want.IP) {
			h.AddrDel(link, &a)
		}
	}
	if err := h.AddrReplace(link, want); err != nil {
		return fmt.Errorf("overlay: addressing bridge %s: %w", name, err)
	}
	return h.LinkSetUp(link)
}

func deleteLink(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if err != nil {
		return nil
	}
	return h.LinkDel(link)
}

// masqRule is flannel's rule: traffic from the overlay to anywhere outside
// it leaves with the machine's own address.
func masqRule(network netip.Prefix) []string {
	return []string{"POSTROUTING", "-s", network.String(), "!", "-d", network.String(),
		"-m", "comment", "--comment", "corral overlay", "-j", "MASQUERADE"}
}

// masquerade adds (on) or removes (off) the rule, idempotently.
func masquerade(network netip.Prefix, on bool) error {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		return errors.New("iptables is not installed; install it or set ip_masq = false")
	}
	rule := masqRule(network)
	present := exec.Command(ipt, append([]string{"-t", "nat", "-C"}, rule...)...).Run() == nil
	var op string
	switch {
	case on && !present:
		op = "-A"
	case !on && present:
		op = "-D"
	default:
		return nil
	}
	out, err := exec.Command(ipt, append([]string{"-t", "nat", op}, rule...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", op, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// writeSubnetEnv writes flannel's subnet.env, for tools that read it.
func writeSubnetEnv(path string, st *State, ipmasq bool) error {
	var b strings.Builder
	fmt.Fprintf(&b, "FLANNEL_NETWORK=%s\n", st.Network)
	fmt.Fprintf(&b, "FLANNEL_SUBNET=%s\n", netip.PrefixFrom(st.Bridge, st.Subnet.Bits()))
	fmt.Fprintf(&b, "FLANNEL_MTU=%d\n", st.MTU)
	fmt.Fprintf(&b, "FLANNEL_IPMASQ=%s\n", strconv.FormatBool(ipmasq))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
