package backend

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// udpTestNetwork is the overlay the kernel tests use; it exists only inside
// the namespaces they create.
var udpTestNetwork = netip.MustParsePrefix("10.245.0.0/16")

// udpPacket builds an IPv4 header (no payload beyond pad bytes) from src to
// dst whose total length is the packet's length.
func udpPacket(src, dst string, pad int) []byte {
	pkt := make([]byte, 20+pad)
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:4], uint16(len(pkt)))
	pkt[8] = 64
	pkt[9] = 17
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(pkt[12:16], s[:])
	copy(pkt[16:20], d[:])
	return pkt
}

func udpTestLocal() Local {
	return Local{
		Network:  udpTestNetwork,
		Subnet:   netip.MustParsePrefix("10.245.1.0/24"),
		PublicIP: netip.MustParseAddr("198.18.0.11"),
	}
}

// Sync's table is a full replacement: what it is given is exactly what is
// routed, and bad peers are reported and left out without hiding the rest.
func TestUDPPeerTable(t *testing.T) {
	local := udpTestLocal()
	peer := func(subnet, ip string) Peer {
		return Peer{Subnet: netip.MustParsePrefix(subnet), PublicIP: netip.MustParseAddr(ip), BackendType: "udp"}
	}
	tbl, err := udpBuildTable(local, 8285, []Peer{
		// The /20 first, so a table that tried prefix lengths in the order
		// it met them would find it before the more specific /24.
		peer("10.245.16.0/20", "198.18.0.14"),
		peer("10.245.2.0/24", "198.18.0.12"),
		peer("10.245.3.0/24", "198.18.0.13"),
		peer("10.245.3.0/24", "198.18.0.13"),  // the same lease twice is not a conflict
		peer("10.245.16.0/24", "198.18.0.15"), // more specific than the /20: wins for its addresses
	})
	if err != nil {
		t.Fatalf("valid peers: %v", err)
	}
	for dst, want := range map[string]string{
		"10.245.2.9":   "198.18.0.12:8285",
		"10.245.3.200": "198.18.0.13:8285",
		"10.245.17.1":  "198.18.0.14:8285",
		"10.245.16.1":  "198.18.0.15:8285",
		"10.245.4.1":   "",
		"10.245.1.1":   "", // ours: not in the table
	} {
		got, ok := tbl.lookup(netip.MustParseAddr(dst))
		if want == "" {
			if ok {
				t.Errorf("lookup(%s) = %s, want no peer", dst, got)
			}
			continue
		}
		if !ok || got.String() != want {
			t.Errorf("lookup(%s) = %s, %v; want %s", dst, got, ok, want)
		}
	}

	// Full replacement: the second table knows nothing of the first.
	tbl, err = udpBuildTable(local, 9000, []Peer{peer("10.245.3.0/24", "198.18.0.13")})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tbl.lookup(netip.MustParseAddr("10.245.2.9")); ok {
		t.Error("a departed peer is still routed to")
	}
	if got, _ := tbl.lookup(netip.MustParseAddr("10.245.3.1")); got.String() != "198.18.0.13:9000" {
		t.Errorf("peer port = %s, want this machine's port 9000", got)
	}

	bad := []Peer{
		peer("10.246.5.0/24", "198.18.0.20"), // outside the overlay
		peer("10.245.1.0/24", "198.18.0.21"), // ours
		peer("10.245.0.0/20", "198.18.0.22"), // overlaps ours
		peer("10.245.7.0/24", "198.18.0.11"), // our own public IP
		peer("10.245.8.0/24", "198.18.0.24"), // good
		peer("10.245.8.0/24", "198.18.0.25"), // the same subnet held by another machine
		{Subnet: netip.MustParsePrefix("10.245.9.0/24"), PublicIP: netip.MustParseAddr("198.18.0.26"), BackendType: "vxlan"},
		{Subnet: netip.MustParsePrefix("10.245.10.0/24")},                                  // no public IP
		{Subnet: netip.MustParsePrefix("fd00::/64"), PublicIP: netip.MustParseAddr("::1")}, // not IPv4
	}
	tbl, err = udpBuildTable(local, 8285, bad)
	if err == nil {
		t.Fatal("bad peers were accepted without an error")
	}
	if n := strings.Count(err.Error(), "left out"); n != len(bad)-1 {
		t.Errorf("%d peers reported, want %d:\n%v", n, len(bad)-1, err)
	}
	if len(tbl.byNet) != 1 {
		t.Errorf("table has %d entries, want only the one good peer: %v", len(tbl.byNet), tbl.byNet)
	}
	if got, ok := tbl.lookup(netip.MustParseAddr("10.245.8.1")); !ok || got.Addr().String() != "198.18.0.24" {
		t.Errorf("the good peer among bad ones: %s, %v", got, ok)
	}
}

// The per-packet decisions: what is forwarded, and why the rest is dropped.
func TestUDPPacketChecks(t *testing.T) {
	own := netip.MustParsePrefix("10.245.1.0/24")
	tbl, err := udpBuildTable(udpTestLocal(), 8285, []Peer{
		{Subnet: netip.MustParsePrefix("10.245.2.0/24"), PublicIP: netip.MustParseAddr("198.18.0.12")},
	})
	if err != nil {
		t.Fatal(err)
	}
	truncated := udpPacket("10.245.1.1", "10.245.2.1", 100)[:60]
	lying := udpPacket("10.245.1.1", "10.245.2.1", 10)
	lying[0] = 0x4f // a 60-byte header in a 30-byte packet
	ipv6 := make([]byte, 40)
	ipv6[0] = 0x60

	for _, c := range []struct {
		name     string
		pkt      []byte
		out, in  udpDrop
		outwards string
	}{
		{"to a peer", udpPacket("10.245.1.1", "10.245.2.1", 100), udpDropNone, udpDropForeign, "198.18.0.12:8285"},
		{"to us", udpPacket("10.245.2.1", "10.245.1.7", 0), udpDropLocal, udpDropNone, ""},
		{"to nobody", udpPacket("10.245.1.1", "10.245.3.1", 0), udpDropNoPeer, udpDropForeign, ""},
		{"outside the overlay", udpPacket("10.245.2.1", "192.0.2.1", 0), udpDropNoPeer, udpDropForeign, ""},
		{"ipv6", ipv6, udpDropNotIPv4, udpDropNotIPv4, ""},
		{"empty", nil, udpDropNotIPv4, udpDropNotIPv4, ""},
		{"short header", []byte{0x45, 0, 0, 10, 0, 0, 0, 0, 64, 17}, udpDropMalformed, udpDropMalformed, ""},
		{"truncated", truncated, udpDropMalformed, udpDropMalformed, ""},
		{"bad header length", lying, udpDropMalformed, udpDropMalformed, ""},
	} {
		to, out := udpRoute(c.pkt, own, tbl)
		if out != c.out {
			t.Errorf("%s: from the device: %v, want %v", c.name, out, c.out)
		}
		if out == udpDropNone && to.String() != c.outwards {
			t.Errorf("%s: sent to %s, want %s", c.name, to, c.outwards)
		}
		if in := udpCheckInbound(c.pkt, own); in != c.in {
			t.Errorf("%s: from a peer: %v, want %v", c.name, in, c.in)
		}
	}
	if _, d := udpRoute(udpPacket("10.245.1.1", "10.245.2.1", 0), own, nil); d != udpDropNoPeer {
		t.Errorf("with no table yet: %v, want %v", d, udpDropNoPeer)
	}
}

// The steady-state path allocates nothing per packet.
func TestUDPRouteDoesNotAllocate(t *testing.T) {
	own := netip.MustParsePrefix("10.245.1.0/24")
	var peers []Peer
	for i := 2; i < 200; i++ {
		peers = append(peers, Peer{
			Subnet:   netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 245, byte(i), 0}), 24),
			PublicIP: netip.AddrFrom4([4]byte{198, 19, 0, byte(i)}),
		})
	}
	tbl, err := udpBuildTable(udpTestLocal(), 8285, peers)
	if err != nil {
		t.Fatal(err)
	}
	out := udpPacket("10.245.1.1", "10.245.150.1", 1400)
	in := udpPacket("10.245.150.1", "10.245.1.1", 1400)
	allocs := testing.AllocsPerRun(1000, func() {
		if _, d := udpRoute(out, own, tbl); d != udpDropNone {
			t.Fatalf("route: %v", d)
		}
		if d := udpCheckInbound(in, own); d != udpDropNone {
			t.Fatalf("inbound: %v", d)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per packet, want 0", allocs)
	}
}

// udpNode is one machine of a kernel test: a namespace on the test's bridge
// with a stand-in for the overlay manager's bridge, and a udp backend.
type udpNode struct {
	ns      string
	h       *netlink.Handle
	local   Local
	b       *udpBackend
	mtu     int
	gateway netip.Addr // the subnet's .1, on corral0
}

func (n *udpNode) peer() Peer {
	return Peer{Subnet: n.local.Subnet, PublicIP: n.local.PublicIP, BackendType: "udp"}
}

// udpCluster makes n nodes on a fresh bridge, each with a started udp
// backend synced with all the others. Everything is removed by t.Cleanup,
// backends before namespaces.
func udpCluster(t *testing.T, count int) []*udpNode {
	t.Helper()
	c := nstestNewCluster(t, count)
	nodes := make([]*udpNode, count)
	for i, nn := range c.nodes {
		n := &udpNode{ns: nn.ns, h: nn.h, local: nn.local(), gateway: nn.addr}
		n.b = NewUDP(n.h, "").(*udpBackend)
		t.Cleanup(func() {
			if err := n.b.Close(); err != nil {
				t.Errorf("closing %s's backend: %v", n.ns, err)
			}
		})
		var data []byte
		err := hostnet.Do(n.ns, func() error {
			var err error
			data, n.mtu, err = n.b.Start(n.local)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != "null" {
			t.Errorf("BackendData = %s, want null", data)
		}
		if n.mtu != 1500-28 {
			t.Errorf("MTU = %d, want %d", n.mtu, 1500-28)
		}
		nodes[i] = n
	}
	for _, n := range nodes {
		var peers []Peer
		for _, o := range nodes {
			if o != n {
				peers = append(peers, o.peer())
			}
		}
		if err := n.b.Sync(peers); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// udpListen opens a TCP listener on n's overlay address, inside n's
// namespace, and serves one connection: it echoes everything back. wait
// returns the server's error once it is done; cleanup closes the listener
// and waits for the server, so no goroutine outlives the test.
func udpListen(t *testing.T, n *udpNode) (addr netip.AddrPort, wait func() error) {
	t.Helper()
	var ln net.Listener
	err := hostnet.Do(n.ns, func() error {
		var err error
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(n.gateway, 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	finished := make(chan struct{})
	var serveErr error
	go func() {
		defer close(finished)
		serveErr = func() error {
			c, err := ln.Accept()
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(time.Minute))
			if _, err := io.Copy(c, c); err != nil {
				return err
			}
			return c.(*net.TCPConn).CloseWrite()
		}()
	}()
	t.Cleanup(func() {
		ln.Close()
		<-finished
	})
	return netip.MustParseAddrPort(ln.Addr().String()), func() error {
		<-finished
		return serveErr
	}
}

// udpDial connects from n's overlay address to to, inside n's namespace.
func udpDial(n *udpNode, to netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	var c net.Conn
	err := hostnet.Do(n.ns, func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(n.gateway, 0))}
		var err error
		c, err = d.Dial("tcp4", to.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// udpEcho sends data over c, reads it back, and checks it came back intact.
func udpEcho(t *testing.T, c *net.TCPConn, data []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(time.Minute))
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.CloseWrite()
		}
		wrote <- err
	}()
	got, err := io.ReadAll(c)
	if werr := <-wrote; werr != nil {
		t.Fatalf("writing: %v", werr)
	}
	if err != nil {
		t.Fatalf("reading the echo: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echo differs: %d bytes back of %d sent", len(got), len(data))
	}
}

// Three machines: TCP between two subnets crosses the overlay intact, in
// segments the overlay MTU's MSS cuts, and a datagram bigger than the MTU
// crosses as fragments.
func TestUDPOverlayCarriesTraffic(t *testing.T) {
	nodes := udpCluster(t, 3)
	a, c := nodes[0], nodes[2]

	addr, served := udpListen(t, c)
	conn, err := udpDial(a, addr, 10*time.Second)
	if err != nil {
		t.Fatalf("dialling %s from %s: %v", addr, a.gateway, err)
	}
	defer conn.Close()
	data := make([]byte, 1<<20)
	rand.Read(data)
	udpEcho(t, conn, data)
	if err := served(); err != nil {
		t.Fatalf("server: %v", err)
	}

	// Every byte crossed A's tx and C's rx path; the counters prove it went
	// through this backend and not some other route.
	as, cs := a.b.stats(), c.b.stats()
	if as.Tx.Bytes < 1<<20 || cs.Rx.Bytes < 1<<20 {
		t.Errorf("forwarded bytes: A tx %d, C rx %d; want at least %d each", as.Tx.Bytes, cs.Rx.Bytes, 1<<20)
	}
	if as.Tx.Drops[udpDropNoPeer] != 0 || as.Tx.Drops[udpDropIOError] != 0 || cs.Rx.Drops[udpDropForeign] != 0 || cs.Rx.Drops[udpDropMalformed] != 0 {
		t.Errorf("unexpected drops: A %+v, C %+v", as.Tx, cs.Rx)
	}

	// 4000 bytes of UDP payload: the kernel fragments it on the device
	// (MTU 1472), each fragment crosses on its own, and C reassembles.
	var rx *net.UDPConn
	err = hostnet.Do(c.ns, func() error {
		var err error
		rx, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.gateway, 0)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	var tx *net.UDPConn
	err = hostnet.Do(a.ns, func() error {
		var err error
		tx, err = net.DialUDP("udp4",
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(a.gateway, 0)),
			net.UDPAddrFromAddrPort(netip.MustParseAddrPort(rx.LocalAddr().String())))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	big := data[:4000]
	if _, err := tx.Write(big); err != nil {
		t.Fatal(err)
	}
	rx.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 8000)
	n, err := rx.Read(buf)
	if err != nil {
		t.Fatalf("the fragmented datagram didn't arrive: %v", err)
	}
	if !bytes.Equal(buf[:n], big) {
		t.Fatalf("fragmented datagram: got %d bytes, differing from the %d sent", n, len(big))
	}
}

// Sync is a full replacement: a peer left out is unreachable, one put back
// is reachable again, and the others are unaffected throughout.
func TestUDPSyncRemovesPeer(t *testing.T) {
	nodes := udpCluster(t, 3)
	a, b, c := nodes[0], nodes[1], nodes[2]

	if err := a.b.Sync([]Peer{b.peer()}); err != nil {
		t.Fatal(err)
	}
	addr, _ := udpListen(t, c)
	// The timeout is the expected outcome, not a wait for something: with
	// C gone from A's table, A's SYNs are dropped at A's device.
	if conn, err := udpDial(a, addr, time.Second); err == nil {
		conn.Close()
		t.Fatal("A reached C after C left A's peers")
	}

	// A still reaches B. A's device is read by one goroutine in order, so
	// once this connection is up, the SYNs for C before it were counted.
	addrB, _ := udpListen(t, b)
	conn, err := udpDial(a, addrB, 10*time.Second)
	if err != nil {
		t.Fatalf("A to B while A has no route to C: %v", err)
	}
	udpEcho(t, conn, []byte("A to B"))
	conn.Close()
	if d := a.b.stats().Tx.Drops[udpDropNoPeer]; d == 0 {
		t.Error("A's SYNs to C were not counted as packets with no peer")
	}

	// B still reaches C.
	conn, err = udpDial(b, addr, 10*time.Second)
	if err != nil {
		t.Fatalf("B to C while A has no route to C: %v", err)
	}
	udpEcho(t, conn, []byte("B to C"))
	conn.Close()

	// Put C back in A's table: A reaches it again.
	if err := a.b.Sync([]Peer{b.peer(), c.peer()}); err != nil {
		t.Fatal(err)
	}
	addr2, served := udpListen(t, c)
	conn, err = udpDial(a, addr2, 10*time.Second)
	if err != nil {
		t.Fatalf("A to C after C came back: %v", err)
	}
	defer conn.Close()
	udpEcho(t, conn, []byte("back again"))
	if err := served(); err != nil {
		t.Fatalf("server: %v", err)
	}
}

// Close removes the device, frees the port and returns only once the
// forwarding goroutines have exited; a closed backend refuses further use.
func TestUDPClose(t *testing.T) {
	nodes := udpCluster(t, 2)
	n := nodes[0]
	if got := n.b.running.Load(); got != 2 {
		t.Fatalf("%d forwarding goroutines running, want 2", got)
	}
	if _, err := n.h.LinkByName(udpDefaultDevice); err != nil {
		t.Fatalf("device after Start: %v", err)
	}

	// Hold both goroutines at their exit, after they have seen their fds
	// closed, to show that Close waits for them rather than racing them.
	arrived := make(chan struct{}, 2)
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	t.Cleanup(release) // before the backend's own cleanup, even on failure
	hook := func() {
		arrived <- struct{}{}
		<-gate
	}
	n.b.exitHook.Store(&hook)
	type result struct {
		err     error
		running int32
	}
	closed := make(chan result, 1)
	go func() {
		err := n.b.Close()
		closed <- result{err, n.b.running.Load()}
	}()
	<-arrived
	<-arrived
	// Close can't return while the goroutines are held, however long we
	// look; the timer only bounds how long we look for a wrong early return.
	select {
	case r := <-closed:
		t.Fatalf("Close returned (%v) while %d forwarding goroutines were still running", r.err, r.running)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	r := <-closed
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.running != 0 {
		t.Errorf("%d forwarding goroutines still running after Close", r.running)
	}
	if _, err := n.h.LinkByName(udpDefaultDevice); !udpIsNotFound(err) {
		t.Errorf("device after Close: %v, want not found", err)
	}
	// The socket is closed: the port can be bound again at once.
	err := hostnet.Do(n.ns, func() error {
		c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(n.local.PublicIP, udpDefaultPort)))
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Errorf("binding the port after Close: %v", err)
	}
	if err := n.b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := n.b.Sync([]Peer{nodes[1].peer()}); err == nil {
		t.Error("Sync after Close succeeded")
	}
	if _, _, err := n.b.Start(n.local); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// A Start that fails leaves no device behind, and a started backend can't
// be started again.
func TestUDPStartFailures(t *testing.T) {
	nodes := udpCluster(t, 1)
	n := nodes[0]
	if _, _, err := n.b.Start(n.local); err == nil {
		t.Error("second Start succeeded")
	}

	dev := "cu-second" // inside the test's own namespace: no clash possible
	// The port is taken by the running backend, so this one fails after
	// creating its device, which it must then remove.
	second := NewUDP(n.h, dev)
	t.Cleanup(func() { second.Close() })
	err := hostnet.Do(n.ns, func() error {
		_, _, err := second.Start(n.local)
		return err
	})
	if err == nil {
		t.Fatal("Start on a port in use succeeded")
	}
	if _, err := n.h.LinkByName(dev); !udpIsNotFound(err) {
		t.Errorf("device after the failed Start: %v, want not found", err)
	}

	for name, mutate := range map[string]func(*Local){
		"unknown underlay":       func(l *Local) { l.Underlay = "nosuch0" },
		"subnet outside network": func(l *Local) { l.Subnet = netip.MustParsePrefix("10.9.1.0/24") },
		"subnet is the network":  func(l *Local) { l.Subnet = l.Network },
		"ipv6 public IP":         func(l *Local) { l.PublicIP = netip.MustParseAddr("fd00::1") },
	} {
		local := n.local
		local.Port = 18285
		mutate(&local)
		bad := NewUDP(n.h, dev)
		err := hostnet.Do(n.ns, func() error {
			_, _, err := bad.Start(local)
			return err
		})
		if err == nil {
			bad.Close()
			t.Errorf("%s: Start succeeded", name)
		}
		if _, err := n.h.LinkByName(dev); !udpIsNotFound(err) {
			t.Errorf("%s: device after the failed Start: %v, want not found", name, err)
		}
	}

	for _, dev := range []string{"much-too-long-name", "tun%d", "a/b"} {
		if _, _, err := NewUDP(n.h, dev).Start(n.local); err == nil {
			t.Errorf("device name %q accepted", dev)
		}
	}
}

// udpDatagram builds a complete IPv4/UDP packet with a valid header
// checksum (the UDP checksum is left 0, which IPv4 allows).
func udpDatagram(src, dst netip.AddrPort, payload []byte) []byte {
	pkt := udpPacket(src.Addr().String(), dst.Addr().String(), 8+len(payload))
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(pkt[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(pkt[10:12], ^uint16(sum))
	binary.BigEndian.PutUint16(pkt[20:], src.Port())
	binary.BigEndian.PutUint16(pkt[22:], dst.Port())
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload)))
	copy(pkt[28:], payload)
	return pkt
}

// A datagram sent to a node's port is written to its device only if it
// holds an IPv4 packet for the node's subnet: the port can't be used to
// inject packets addressed elsewhere (here: to the node's underlay address).
func TestUDPInboundFiltering(t *testing.T) {
	nodes := udpCluster(t, 2)
	b, c := nodes[0], nodes[1]

	// Two listeners on C: one on its underlay address, which a forwarded
	// forged packet would reach, and one on its overlay address for the
	// legitimate packet that follows the forged ones.
	listen := func(addr netip.Addr) *net.UDPConn {
		var l *net.UDPConn
		err := hostnet.Do(c.ns, func() error {
			var err error
			l, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 0)))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	victim := listen(c.local.PublicIP)
	overlay := listen(c.gateway)
	victimAddr := netip.MustParseAddrPort(victim.LocalAddr().String())
	overlayAddr := netip.MustParseAddrPort(overlay.LocalAddr().String())

	// A plain socket in B, not B's backend, plays the attacker.
	var s *net.UDPConn
	err := hostnet.Do(b.ns, func() error {
		var err error
		s, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(c.local.PublicIP, udpDefaultPort)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	from := netip.AddrPortFrom(b.gateway, 4000)
	for _, pkt := range [][]byte{
		udpDatagram(from, victimAddr, []byte("forged")),
		append([]byte{0x45, 0, 0, 200}, "too short for its length"...),
		udpDatagram(from, overlayAddr, []byte("marker")),
	} {
		if _, err := s.Write(pkt); err != nil {
			t.Fatal(err)
		}
	}

	// C's backend reads its socket in order: once the marker is through,
	// the two before it have been dealt with.
	overlay.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 100)
	n, err := overlay.Read(buf)
	if err != nil || string(buf[:n]) != "marker" {
		t.Fatalf("the legitimate packet: %q, %v", buf[:n], err)
	}
	st := c.b.stats().Rx
	if st.Drops[udpDropForeign] != 1 || st.Drops[udpDropMalformed] != 1 {
		t.Errorf("drops: foreign %d, malformed %d; want 1 each (%+v)", st.Drops[udpDropForeign], st.Drops[udpDropMalformed], st)
	}
	// Had the forged packet been written to the device, it would have been
	// queued here before the marker reached its listener.
	// (A read with a deadline in the past wouldn't even look: ask the
	// socket directly, without waiting.)
	rc, err := victim.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		got, _, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if rerr == nil {
		t.Errorf("a forged packet reached C's underlay address: %q", buf[:got])
	} else if !errors.Is(rerr, unix.EAGAIN) {
		t.Errorf("checking C's underlay listener: %v", rerr)
	}
}
