package backend

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

const (
	// udpDefaultDevice is the TUN device's name when NewUDP is given none.
	udpDefaultDevice = "corral-udp"
	// udpDefaultPort is flannel's udp backend port, so a mixed cluster (or a
	// firewall rule written for flannel) keeps working.
	udpDefaultPort = 8285
	// udpOverhead is what encapsulation adds to every inner packet: an outer
	// IPv4 header without options (20) and a UDP header (8).
	udpOverhead = 28
	// udpHeadroom is how much larger than the MTU the packet buffers are. A
	// packet that fills its buffer exactly is then known to be oversized
	// (its IPv4 total length disagrees with what was read) instead of being
	// forwarded cut short.
	udpHeadroom = 256
	// udpMinMTU is the smallest MTU IPv4 allows (RFC 791): an underlay too
	// small to carry it after encapsulation can't carry the overlay at all.
	udpMinMTU = 68
)

// udpBackend is flannel's udp backend: the overlay is a TUN device, and a
// process (this one) carries every packet read from it to the peer that owns
// the destination, as a UDP datagram. Every packet crosses into user space
// twice, so it is much slower than vxlan or host-gw; it exists because it
// needs nothing from the kernel but TUN and nothing from the underlay but UDP.
//
// The forwarding goroutines never take mu: the peer table they read is an
// immutable value behind an atomic pointer, replaced whole by Sync.
type udpBackend struct {
	h   *netlink.Handle // nil: Start makes one in its caller's namespace
	dev string

	mu     sync.Mutex // serialises Start, Sync and Close
	state  udpState
	handle *netlink.Handle // the handle in use; owned (closed by Close) if h is nil
	local  Local
	port   int
	tun    *os.File
	conn   *net.UDPConn

	peers atomic.Pointer[udpPeerTable]

	wg      sync.WaitGroup // the two forwarding goroutines; Close waits on it
	running atomic.Int32   // forwarding goroutines alive, for tests
	// exitHook, if set (by tests only), runs in each forwarding goroutine
	// as it exits, before it counts itself out. Atomic because tests set it
	// while the goroutines run.
	exitHook atomic.Pointer[func()]

	// Each direction is written by one goroutine only; the padding keeps
	// the two sets of counters off each other's cache line.
	tx udpCounters // tun → udp
	_  cpu.CacheLinePad
	rx udpCounters // udp → tun
}

type udpState int

const (
	udpNew udpState = iota
	udpRunning
	udpClosed
)

// NewUDP returns the udp backend. h acts in the namespace the backend runs
// in; the TUN device and the UDP socket are opened by Start on the calling
// thread, so they belong to the caller's namespace (tests call Start inside
// hostnet.Do). If h is nil, Start opens a handle in the caller's namespace
// and Close closes it. dev is the TUN device's name, "corral-udp" if empty.
//
// Peers are reached on the same UDP port as this machine listens on
// (Local.Port, default 8285), as in flannel: the udp backend publishes no
// BackendData, so the port is a cluster-wide setting.
//
// The udp backend neither encrypts nor authenticates: anyone who can send
// UDP to a node's port can inject packets into that node's subnet. Use it
// only on an underlay you trust, as with flannel.
func NewUDP(h *netlink.Handle, dev string) Backend {
	if dev == "" {
		dev = udpDefaultDevice
	}
	return &udpBackend{h: h, dev: dev}
}

// Start creates and addresses the TUN device, opens the UDP socket on
// PublicIP:Port and starts forwarding. The returned MTU is the underlay's
// less the encapsulation overhead.
func (b *udpBackend) Start(local Local) (json.RawMessage, int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case udpRunning:
		return nil, 0, errors.New("udp backend: already started")
	case udpClosed:
		return nil, 0, errors.New("udp backend: closed")
	}
	if err := udpCheckDevName(b.dev); err != nil {
		return nil, 0, err
	}
	local, err := udpCheckLocal(local)
	if err != nil {
		return nil, 0, err
	}
	port := local.Port
	if port == 0 {
		port = udpDefaultPort
	}

	h, owned := b.h, false
	if h == nil {
		// A handle's sockets live in the namespace they were made in, so
		// this one keeps acting where the device is even if Close runs on
		// another thread.
		if h, err = netlink.NewHandle(); err != nil {
			return nil, 0, fmt.Errorf("udp backend: netlink: %w", err)
		}
		owned = true
	}
	ok := false
	var tun *os.File
	var conn *net.UDPConn
	defer func() {
		if ok {
			return
		}
		// Closing the last fd of a non-persistent TUN device removes it.
		if tun != nil {
			tun.Close()
		}
		if conn != nil {
			conn.Close()
		}
		if owned {
			h.Close()
		}
	}()

	under, err := udpUnderlay(h, local)
	if err != nil {
		return nil, 0, err
	}
	mtu := under.Attrs().MTU - udpOverhead
	if mtu < udpMinMTU {
		return nil, 0, fmt.Errorf("udp backend: underlay %s has MTU %d, too small for an overlay", under.Attrs().Name, under.Attrs().MTU)
	}

	if tun, err = udpOpenTun(b.dev); err != nil {
		return nil, 0, err
	}
	link, err := h.LinkByName(b.dev)
	if err != nil {
		// TUNSETIFF made the device in the calling thread's namespace.
		return nil, 0, fmt.Errorf("udp backend: device %s is not in the netlink handle's namespace (call Start from the namespace the handle acts in): %w", b.dev, err)
	}
	if err := h.LinkSetMTU(link, mtu); err != nil {
		return nil, 0, fmt.Errorf("udp backend: setting MTU of %s: %w", b.dev, err)
	}
	// As flannel does: the subnet's network address with the whole
	// overlay's prefix length, so the connected route the kernel adds for
	// it sends every other machine's subnet into the device, while this
	// machine's own, more specific subnet stays on its bridge.
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(local.Subnet.Addr().AsSlice()),
		Mask: net.CIDRMask(local.Network.Bits(), 32),
	}}
	if err := h.AddrReplace(link, addr); err != nil {
		return nil, 0, fmt.Errorf("udp backend: addressing %s: %w", b.dev, err)
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, 0, fmt.Errorf("udp backend: bringing %s up: %w", b.dev, err)
	}

	laddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.PublicIP, uint16(port)))
	if conn, err = net.ListenUDP("udp4", laddr); err != nil {
		return nil, 0, fmt.Errorf("udp backend: %w", err)
	}

	ok = true
	b.state = udpRunning
	b.handle, b.local, b.port, b.tun, b.conn = h, local, port, tun, conn
	b.peers.Store(&udpPeerTable{})
	size := mtu + udpHeadroom
	b.wg.Add(2)
	b.running.Add(2)
	go b.tunToUDP(make([]byte, size))
	go b.udpToTun(make([]byte, size))
	return json.RawMessage("null"), mtu, nil
}

// Sync replaces the peer table with peers. Peers that are invalid or that
// conflict with this machine or an earlier peer are left out and reported
// in the error; all the others are installed, so one bad lease can't keep
// the rest of the cluster unreachable.
func (b *udpBackend) Sync(peers []Peer) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != udpRunning {
		return errors.New("udp backend: Sync before Start or after Close")
	}
	t, err := udpBuildTable(b.local, b.port, peers)
	b.peers.Store(t)
	return err
}

// Close stops forwarding, removes the device and returns once both
// forwarding goroutines have exited. Closing twice is harmless.
func (b *udpBackend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != udpRunning {
		b.state = udpClosed
		return nil
	}
	b.state = udpClosed
	// Closing the fds is what unblocks the goroutines: both are pollable
	// (the TUN fd is non-blocking), so Close wakes their pending reads.
	// Closing the TUN fd also unregisters the device, which is not
	// persistent.
	var errs []error
	if err := b.tun.Close(); err != nil {
		errs = append(errs, fmt.Errorf("udp backend: closing %s: %w", b.dev, err))
	}
	if err := b.conn.Close(); err != nil {
		errs = append(errs, fmt.Errorf("udp backend: closing socket: %w", err))
	}
	b.wg.Wait()
	b.peers.Store(nil)
	// In case something else still holds the device open (an fd leaked
	// into a child before close-on-exec, say), delete it outright.
	if link, err := b.handle.LinkByName(b.dev); err == nil {
		if err := b.handle.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("udp backend: deleting %s: %w", b.dev, err))
		}
	} else if !udpIsNotFound(err) {
		errs = append(errs, fmt.Errorf("udp backend: looking up %s: %w", b.dev, err))
	}
	if b.h == nil {
		b.handle.Close()
	}
	b.handle, b.tun, b.conn = nil, nil, nil
	return errors.Join(errs...)
}

// tunToUDP carries packets the kernel routed into the device to the peers
// that own their destinations. buf is its only buffer: nothing is allocated
// per packet.
func (b *udpBackend) tunToUDP(buf []byte) {
	defer b.exited()
	own := b.local.Subnet
	for {
		n, err := b.tun.Read(buf)
		if err != nil {
			if udpFDGone(err) {
				return
			}
			b.tx.readErrors.Add(1)
			continue
		}
		pkt := buf[:n]
		to, drop := udpRoute(pkt, own, b.peers.Load())
		if drop != udpDropNone {
			b.tx.drops[drop].Add(1)
			continue
		}
		if _, err := b.conn.WriteToUDPAddrPort(pkt, to); err != nil {
			if udpFDGone(err) {
				return
			}
			// A peer's underlay may be briefly unreachable, or the socket
			// buffer full: drop this packet, as a router would.
			b.tx.drops[udpDropIOError].Add(1)
			continue
		}
		b.tx.packets.Add(1)
		b.tx.bytes.Add(uint64(n))
	}
}

// udpToTun hands packets received from peers to the kernel through the
// device, after checking that they are IPv4 and addressed to this machine's
// subnet (so the port can't be used to inject packets for elsewhere).
func (b *udpBackend) udpToTun(buf []byte) {
	defer b.exited()
	own := b.local.Subnet
	for {
		n, _, err := b.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if udpFDGone(err) {
				return
			}
			b.rx.readErrors.Add(1)
			continue
		}
		pkt := buf[:n]
		if drop := udpCheckInbound(pkt, own); drop != udpDropNone {
			b.rx.drops[drop].Add(1)
			continue
		}
		if _, err := b.tun.Write(pkt); err != nil {
			if udpFDGone(err) {
				return
			}
			// E.g. EIO while someone has set the device down.
			b.rx.drops[udpDropIOError].Add(1)
			continue
		}
		b.rx.packets.Add(1)
		b.rx.bytes.Add(uint64(n))
	}
}

// exited counts a forwarding goroutine out.
func (b *udpBackend) exited() {
	if hook := b.exitHook.Load(); hook != nil {
		(*hook)()
	}
	b.running.Add(-1)
	b.wg.Done()
}

// udpFDGone reports whether err means the fd or the device behind it is
// gone for good: the loops must stop rather than spin. EBADFD is what a TUN
// fd returns once its device was deleted from under it (ip link del).
func udpFDGone(err error) bool {
	return errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) || errors.Is(err, unix.EBADFD)
}

// udpDrop is why a packet was not forwarded.
type udpDrop int

const (
	udpDropNone      udpDrop = iota
	udpDropNotIPv4           // not IPv4 (the kernel sends IPv6 ND/MLD on any link that is up)
	udpDropMalformed         // IPv4 header or length inconsistent with what was read
	udpDropLocal             // from the device, but for this machine's own subnet
	udpDropNoPeer            // from the device, and no peer owns the destination
	udpDropForeign           // from a peer, but not for this machine's subnet
	udpDropIOError           // sending to the peer or writing to the device failed
	udpNumDrops
)

func (d udpDrop) String() string {
	switch d {
	case udpDropNone:
		return "none"
	case udpDropNotIPv4:
		return "not-ipv4"
	case udpDropMalformed:
		return "malformed"
	case udpDropLocal:
		return "local"
	case udpDropNoPeer:
		return "no-peer"
	case udpDropForeign:
		return "foreign"
	case udpDropIOError:
		return "io-error"
	}
	return fmt.Sprintf("udpDrop(%d)", int(d))
}

// udpCounters counts one direction's traffic.
type udpCounters struct {
	packets    atomic.Uint64 // forwarded
	bytes      atomic.Uint64 // forwarded, inner packet bytes
	readErrors atomic.Uint64
	drops      [udpNumDrops]atomic.Uint64
}

// udpDirStats is a snapshot of udpCounters.
type udpDirStats struct {
	Packets, Bytes, ReadErrors uint64
	Drops                      [udpNumDrops]uint64
}

// udpStats is a snapshot of both directions' counters.
type udpStats struct {
	Tx udpDirStats // device → peers
	Rx udpDirStats // peers → device
}

func (c *udpCounters) snapshot() udpDirStats {
	s := udpDirStats{Packets: c.packets.Load(), Bytes: c.bytes.Load(), ReadErrors: c.readErrors.Load()}
	for i := range c.drops {
		s.Drops[i] = c.drops[i].Load()
	}
	return s
}

// stats returns the counters, for benchmarks and self-tests.
func (b *udpBackend) stats() udpStats {
	return udpStats{Tx: b.tx.snapshot(), Rx: b.rx.snapshot()}
}

// udpIPv4Dst returns the destination of an IPv4 packet whose header and
// total length agree with the bytes read. Requiring total length == len(pkt)
// also catches a datagram truncated by a buffer it didn't fit in.
func udpIPv4Dst(pkt []byte) (netip.Addr, udpDrop) {
	if len(pkt) == 0 || pkt[0]>>4 != 4 {
		return netip.Addr{}, udpDropNotIPv4
	}
	if len(pkt) < 20 {
		return netip.Addr{}, udpDropMalformed
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:4]))
	if ihl < 20 || total < ihl || total != len(pkt) {
		return netip.Addr{}, udpDropMalformed
	}
	return netip.AddrFrom4([4]byte(pkt[16:20])), udpDropNone
}

// udpRoute decides where a packet read from the device goes.
func udpRoute(pkt []byte, own netip.Prefix, t *udpPeerTable) (netip.AddrPort, udpDrop) {
	dst, drop := udpIPv4Dst(pkt)
	if drop != udpDropNone {
		return netip.AddrPort{}, drop
	}
	// The bridge's more specific route should have kept these off the
	// device; sending them to a peer would only bounce them back.
	if own.Contains(dst) {
		return netip.AddrPort{}, udpDropLocal
	}
	to, ok := t.lookup(dst)
	if !ok {
		return netip.AddrPort{}, udpDropNoPeer
	}
	return to, udpDropNone
}

// udpCheckInbound decides whether a packet received from a peer may be
// written to the device.
func udpCheckInbound(pkt []byte, own netip.Prefix) udpDrop {
	dst, drop := udpIPv4Dst(pkt)
	if drop != udpDropNone {
		return drop
	}
	if !own.Contains(dst) {
		return udpDropForeign
	}
	return udpDropNone
}

// udpPeerTable maps overlay subnets to the underlay endpoints of the peers
// that hold them. It is never modified once published.
type udpPeerTable struct {
	bits []int // the distinct prefix lengths in byNet, longest first
	// byNet is keyed by masked prefix, so a lookup is one map access per
	// distinct prefix length: one, in a cluster whose leases are all /24.
	byNet map[netip.Prefix]netip.AddrPort
}

// lookup returns the endpoint of the peer whose subnet holds dst, preferring
// the longest prefix, as a routing table would. It doesn't allocate.
func (t *udpPeerTable) lookup(dst netip.Addr) (netip.AddrPort, bool) {
	if t == nil {
		return netip.AddrPort{}, false
	}
	for _, bits := range t.bits {
		p, err := dst.Prefix(bits)
		if err != nil {
			continue
		}
		if to, ok := t.byNet[p]; ok {
			return to, true
		}
	}
	return netip.AddrPort{}, false
}

// udpBuildTable makes the table for peers, leaving out (and reporting)
// any peer that can't be routed to safely.
func udpBuildTable(local Local, port int, peers []Peer) (*udpPeerTable, error) {
	t := &udpPeerTable{byNet: make(map[netip.Prefix]netip.AddrPort, len(peers))}
	var errs []error
	for _, p := range peers {
		subnet := p.Subnet.Masked()
		ip := p.PublicIP.Unmap()
		bad := func(why string) {
			errs = append(errs, fmt.Errorf("udp backend: peer %s at %s left out: %s", p.Subnet, p.PublicIP, why))
		}
		switch {
		case !subnet.IsValid() || !subnet.Addr().Is4():
			bad("subnet is not an IPv4 prefix")
		case !local.Network.Contains(subnet.Addr()) || subnet.Bits() < local.Network.Bits():
			bad(fmt.Sprintf("subnet is outside the overlay %s", local.Network))
		case subnet.Overlaps(local.Subnet):
			bad(fmt.Sprintf("subnet overlaps this machine's %s", local.Subnet))
		case !ip.IsValid() || !ip.Is4() || ip.IsUnspecified():
			bad("public IP is not a usable IPv4 address")
		case ip == local.PublicIP:
			// Our own socket would receive the packets and drop them.
			bad("public IP is this machine's")
		case p.BackendType != "" && p.BackendType != "udp":
			bad(fmt.Sprintf("backend type %q, not udp", p.BackendType))
		default:
			to := netip.AddrPortFrom(ip, uint16(port))
			if prev, dup := t.byNet[subnet]; dup {
				if prev != to {
					bad(fmt.Sprintf("subnet already held by %s", prev.Addr()))
				}
				continue
			}
			t.byNet[subnet] = to
			if !slices.Contains(t.bits, subnet.Bits()) {
				t.bits = append(t.bits, subnet.Bits())
			}
		}
	}
	slices.SortFunc(t.bits, func(a, b int) int { return b - a })
	return t, errors.Join(errs...)
}

// udpCheckLocal validates local and returns it with its prefixes masked.
func udpCheckLocal(local Local) (Local, error) {
	if !local.Network.IsValid() || !local.Network.Addr().Is4() {
		return local, fmt.Errorf("udp backend: network %s is not an IPv4 prefix", local.Network)
	}
	if !local.Subnet.IsValid() || !local.Subnet.Addr().Is4() {
		return local, fmt.Errorf("udp backend: subnet %s is not an IPv4 prefix", local.Subnet)
	}
	local.Network, local.Subnet = local.Network.Masked(), local.Subnet.Masked()
	if !local.Network.Contains(local.Subnet.Addr()) || local.Subnet.Bits() < local.Network.Bits() {
		return local, fmt.Errorf("udp backend: subnet %s is not inside network %s", local.Subnet, local.Network)
	}
	if local.Subnet == local.Network {
		// The device's route would then be no less specific than the
		// bridge's, and nothing would ever be sent to a peer.
		return local, fmt.Errorf("udp backend: subnet %s is the whole network", local.Subnet)
	}
	local.PublicIP = local.PublicIP.Unmap()
	if !local.PublicIP.IsValid() || !local.PublicIP.Is4() {
		return local, fmt.Errorf("udp backend: public IP %s is not an IPv4 address", local.PublicIP)
	}
	if local.Port < 0 || local.Port > 65535 {
		return local, fmt.Errorf("udp backend: port %d out of range", local.Port)
	}
	return local, nil
}

// udpCheckDevName rejects names the kernel would refuse or, worse, rewrite:
// a "%d" in a TUNSETIFF name is a template the kernel fills in, and the
// device would then not be found under the name we asked for.
func udpCheckDevName(dev string) error {
	if len(dev) > unix.IFNAMSIZ-1 || dev == "." || dev == ".." ||
		strings.ContainsAny(dev, "/%:") || strings.IndexFunc(dev, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0 {
		return fmt.Errorf("udp backend: %q is not a usable device name (at most %d bytes, no '/', '%%', ':' or spaces)", dev, unix.IFNAMSIZ-1)
	}
	return nil
}

// udpUnderlay finds the link that carries the underlay: Local.Underlay by
// name, or else the link that holds PublicIP.
func udpUnderlay(h *netlink.Handle, local Local) (netlink.Link, error) {
	if local.Underlay != "" {
		link, err := h.LinkByName(local.Underlay)
		if err != nil {
			return nil, fmt.Errorf("udp backend: underlay %s: %w", local.Underlay, err)
		}
		return link, nil
	}
	addrs, err := h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("udp backend: listing addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == local.PublicIP {
			link, err := h.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("udp backend: link holding %s: %w", local.PublicIP, err)
			}
			return link, nil
		}
	}
	return nil, fmt.Errorf("udp backend: no link holds the public IP %s, and no underlay was named", local.PublicIP)
}

// udpOpenTun creates the TUN device dev and returns its fd as a pollable
// file. IFF_NO_PI: packets are bare IP, with no 4-byte protocol header. The
// fd is non-blocking so the runtime's poller waits on it, which is what lets
// Close interrupt a pending Read; a blocking read on a raw fd would hold its
// thread until the next packet.
func udpOpenTun(dev string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("udp backend: opening /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(dev)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udp backend: device name %q: %w", dev, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udp backend: creating TUN device %s: %w", dev, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun ("+dev+")"), nil
}

func udpIsNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}
