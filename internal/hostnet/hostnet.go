// Package hostnet builds the host-side network of local nodes: a bridge in
// the host namespace, and per node a named network namespace joined to the
// bridge by a veth pair. Processes started in a namespace see only their own
// eth0 and loopback, as a machine would. Cutting a node's veth is a network
// partition; deleting its namespace removes its interfaces with it.
//
// Everything is done through netlink; namespaces are bind-mounted under
// /run/netns like `ip netns add` does, so `ip netns exec` works on them.
package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const nsDir = "/run/netns"

// Check reports why namespaces can't be made here, or nil if they can.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")
	}
	return inNewNamespace(func() error { return nil })
}

// inNewNamespace proves the kernel and our privileges allow a namespace.
func inNewNamespace(fn func() error) error {
	return onThread(func() error {
		ns, err := netns.New()
		if err != nil {
			return fmt.Errorf("creating a network namespace: %w", err)
		}
		return ns.Close()
	}, fn)
}

// onThread runs enter and then fn on one locked OS thread, and returns the
// thread to the namespace it started in. Namespaces belong to threads, not
// to goroutines: without the lock, the runtime could run other goroutines
// in the wrong namespace.
func onThread(enter, fn func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	ferr := enter()
	if ferr == nil {
		ferr = fn()
	}
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it when we return.
		return fmt.Errorf("returning to the host namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// EnsureBridge creates (or finds) the bridge with addr as its address, up.
func EnsureBridge(name string, addr netip.Prefix) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		if !isNotFound(err) {
			return err
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("creating bridge %s: %w", name, err)
		}
		link = br
	}
	if err := netlink.AddrReplace(link, toAddr(addr)); err != nil {
		return fmt.Errorf("addressing bridge %s: %w", name, err)
	}
	return netlink.LinkSetUp(link)
}

// DeleteLink removes a link if it exists.
func DeleteLink(name string) error {
	link, err := netlink.LinkByName(name)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	// It may go with its namespace between the lookup and the delete.
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return err
	}
	return nil
}

// Node describes one namespace: its name, its address on the bridge's
// subnet, and the host-side veth name (at most 15 bytes).
type Node struct {
	Namespace string
	HostVeth  string
	Bridge    string
	Addr      netip.Prefix // e.g. 10.77.0.11/24
	Gateway   netip.Addr   // the bridge's address
}

// EnsureNode creates the node's namespace and veth pair if missing. The
// namespace side is called eth0 and routes by default through the bridge.
//
// A run killed half-way may have left eth0 renamed but not yet addressed,
// up or routed, or the host side detached: an existing eth0 is therefore
// configured again (every step is idempotent) rather than trusted, since
// a clusterd may already run in the namespace and the namespace can't be
// made anew under it.
func EnsureNode(n Node) error {
	if Exists(n.Namespace) {
		if hasLink(n.Namespace, "eth0") {
			return repair(n)
		}
		// Left half-made by an interrupted run: make it again.
		if err := DeleteNamespace(n.Namespace); err != nil {
			return fmt.Errorf("removing half-made namespace %s: %w", n.Namespace, err)
		}
	}
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return err
	}
	// A veth from an earlier half-done attempt would block the name.
	if err := DeleteLink(n.HostVeth); err != nil {
		return fmt.Errorf("removing leftover veth %s: %w", n.HostVeth, err)
	}
	peer := "p" + n.HostVeth[1:]
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: n.HostVeth, MasterIndex: 0}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("creating veth %s: %w", n.HostVeth, err)
	}
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	if err := netlink.LinkSetMaster(veth, br); err != nil {
		return fmt.Errorf("attaching %s to %s: %w", n.HostVeth, n.Bridge, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return fmt.Errorf("%s up: %w", n.HostVeth, err)
	}
	peerLink, err := netlink.LinkByName(peer)
	if err != nil {
		return fmt.Errorf("veth peer %s: %w", peer, err)
	}
	host := func() (*netlink.Handle, error) { return netlink.NewHandle() }
	if err := moveInto(n.Namespace, host, peerLink, n.Addr, n.Gateway); err != nil {
		DeleteLink(n.HostVeth)
		return err
	}
	return nil
}

// Adopt makes a named namespace whose eth0 is link, taken from the
// namespace from (a veth end made there), addressed and routed through gw:
// how a container is attached to a node's bridge.
func Adopt(namespace, from, link string, addr netip.Prefix, gw netip.Addr) error {
	src, err := Handle(from)
	if err != nil {
		return err
	}
	defer src.Close()
	l, err := src.LinkByName(link)
	if err != nil {
		return err
	}
	return moveInto(namespace, func() (*netlink.Handle, error) { return Handle(from) }, l, addr, gw)
}

// moveInto creates the named namespace, moves link into it (using the
// handle of the namespace it is in now) and configures it as eth0 with
// addr, loopback up, and a default route through gw.
func moveInto(namespace string, handleOf func() (*netlink.Handle, error), link netlink.Link, addr netip.Prefix, gw netip.Addr) error {
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return err
	}
	ns, err := newNamed(namespace)
	if err != nil {
		return err
	}
	defer ns.Close()
	src, err := handleOf()
	if err != nil {
		return err
	}
	defer src.Close()
	if err := src.LinkSetNsFd(link, int(ns)); err != nil {
		return fmt.Errorf("moving %s into %s: %w", link.Attrs().Name, namespace, err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	inner, err := h.LinkByName(link.Attrs().Name)
	if err != nil {
		return fmt.Errorf("%s in %s: %w", link.Attrs().Name, namespace, err)
	}
	if err := h.LinkSetName(inner, "eth0"); err != nil {
		return fmt.Errorf("renaming %s to eth0 in %s: %w", link.Attrs().Name, namespace, err)
	}
	return configure(h, addr, gw)
}

// configure addresses eth0, brings it and lo up and routes by default
// through gw; each step replaces rather than adds, so it can be run again
// on a namespace an interrupted run left half-configured.
func configure(h *netlink.Handle, addr netip.Prefix, gw netip.Addr) error {
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return err
	}
	if err := h.AddrReplace(eth0, toAddr(addr)); err != nil {
		return fmt.Errorf("address %s: %w", addr, err)
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	if err := h.RouteReplace(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.IP(gw.AsSlice())}); err != nil {
		return fmt.Errorf("default route via %s: %w", gw, err)
	}
	return nil
}

// repair finishes a node whose namespace already has its eth0: the
// namespace side configured, the host side on the bridge and up.
func repair(n Node) error {
	h, err := Handle(n.Namespace)
	if err != nil {
		return err
	}
	defer h.Close()
	if err := configure(h, n.Addr, n.Gateway); err != nil {
		return fmt.Errorf("configuring %s in %s: %w", "eth0", n.Namespace, err)
	}
	veth, err := netlink.LinkByName(n.HostVeth)
	if err != nil {
		return fmt.Errorf("veth %s: %w", n.HostVeth, err)
	}
	br, err := netlink.LinkByName(n.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", n.Bridge, err)
	}
	if err := netlink.LinkSetMaster(veth, br); err != nil {
		return fmt.Errorf("attaching %s to %s: %w", n.HostVeth, n.Bridge, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return fmt.Errorf("%s up: %w", n.HostVeth, err)
	}
	return nil
}

// newNamed creates a named namespace without leaving the calling thread in it.
func newNamed(name string) (ns netns.NsHandle, err error) {
	err = onThread(func() error {
		ns, err = netns.NewNamed(name)
		return err
	}, func() error { return nil })
	if err != nil {
		return netns.None(), fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return ns, nil
}

func hasLink(namespace, link string) bool {
	ns, err := netns.GetFromName(namespace)
	if err != nil {
		return false
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return false
	}
	defer h.Close()
	_, err = h.LinkByName(link)
	return err == nil
}

// NewNamespace creates an empty named namespace with its loopback up, for
// a test network of its own (a bridge, taps, machines on it).
func NewNamespace(name string) error {
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return err
	}
	ns, err := newNamed(name)
	if err != nil {
		return err
	}
	ns.Close()
	h, err := Handle(name)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	return h.LinkSetUp(lo)
}

// Exists reports whether the named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(nsDir, name))
	return err == nil
}

// DeleteNamespace removes a named namespace. The kernel destroys it, and
// the veth pair with it, asynchronously once nothing holds it: delete the
// host side too to be sure it is gone now.
//
// A run killed between creating the namespace's file and binding the
// namespace onto it leaves a plain file, which is not a mount point
// (EINVAL): it is simply removed.
func DeleteNamespace(name string) error {
	path := filepath.Join(nsDir, name)
	if !Exists(name) {
		return nil
	}
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("unmounting %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Namespaces lists the named namespaces whose names start with prefix.
func Namespaces(prefix string) ([]string, error) {
	entries, err := os.ReadDir(nsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Start starts cmd with its network namespace set to the named one. The
// child inherits the namespace of the thread that forks it.
func Start(namespace string, cmd *exec.Cmd) error {
	return Do(namespace, cmd.Start)
}

// PIDs lists the processes whose network namespace is the named one: the way
// to find a node's processes even when nothing recorded their PIDs.
func PIDs(namespace string) ([]int, error) {
	var want unix.Stat_t
	if err := unix.Stat(filepath.Join(nsDir, namespace), &want); err != nil {
		return nil, err
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []int
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(filepath.Join("/proc", p.Name(), "ns", "net"), &st) != nil {
			continue // gone, or not ours to see
		}
		if st.Ino == want.Ino && st.Dev == want.Dev {
			out = append(out, pid)
		}
	}
	return out, nil
}

// SetLinkUp brings a host-side link up or down: down cuts the node off.
func SetLinkUp(name string, up bool) error {
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if up {
		return netlink.LinkSetUp(link)
	}
	return netlink.LinkSetDown(link)
}

// RoutesOverlapping returns host routes (outside our bridge) that overlap p,
// so a CIDR that collides with the host's own networks is caught early.
func RoutesOverlapping(p netip.Prefix, ignoreLink string) ([]string, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			continue
		}
		ones, _ := r.Dst.Mask.Size()
		addr, _ := netip.AddrFromSlice(r.Dst.IP.To4())
		rp := netip.PrefixFrom(addr, ones)
		if !rp.Overlaps(p) {
			continue
		}
		if link, err := netlink.LinkByIndex(r.LinkIndex); err == nil && link.Attrs().Name == ignoreLink {
			continue
		}
		out = append(out, rp.String())
	}
	return out, nil
}

func toAddr(p netip.Prefix) *netlink.Addr {
	return &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

// Do runs fn on a thread inside the named namespace. Sockets and devices fn
// opens belong to that namespace for good, so goroutines may use them after
// Do returns; code fn starts on other goroutines runs in the host namespace.
func Do(namespace string, fn func() error) error {
	ns, err := netns.GetFromName(namespace)
	if err != nil {
		return fmt.Errorf("namespace %s: %w", namespace, err)
	}
	defer ns.Close()
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("entering %s: %w", namespace, err)
		}
		return nil
	}, fn)
}

// Handle returns a netlink handle that acts inside the named namespace.
func Handle(namespace string) (*netlink.Handle, error) {
	ns, err := netns.GetFromName(namespace)
	if err != nil {
		return nil, fmt.Errorf("namespace %s: %w", namespace, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}
