package bench

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/overlay/backend"
	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ovlNetwork is the overlay the benchmark uses. It exists only inside the
// two namespaces, so it can't collide with the host's networks.
var ovlNetwork = netip.MustParsePrefix("10.247.0.0/16")

const (
	// ovlTarget is how long each timed stream should take: its byte count
	// is fixed before timing, from a warm-up on the same path, so that the
	// stream lasts about this long (at least 1 s on the direct path).
	ovlTarget = 1200 * time.Millisecond
	// ovlPattern is the size of the random data the streams repeat.
	ovlPattern = 4 << 20
	// ovlRounds is how many 1-byte round trips each latency run makes.
	ovlRounds = 5000
	// ovlIOLimit bounds every connection, so a broken path fails the
	// benchmark instead of hanging it. It is a limit, not a wait.
	ovlIOLimit = 2 * time.Minute
)

// ovlNode is one machine: a namespace with eth0 on the host bridge (the
// underlay) and a bridge corral0 holding the first address of its overlay
// subnet, as the overlay manager makes it.
type ovlNode struct {
	ns       string
	h        *netlink.Handle
	publicIP netip.Addr   // on eth0
	subnet   netip.Prefix // its overlay lease
	addr     netip.Addr   // the subnet's .1, on corral0
}

func (n *ovlNode) local() backend.Local {
	return backend.Local{Network: ovlNetwork, Subnet: n.subnet, PublicIP: n.publicIP, Underlay: "eth0"}
}

// ovlCase is one way from A to B: straight over the underlay, or through a
// backend between the corral0 addresses.
type ovlCase struct {
	name  string // as in the metric names
	lease string // the lease BackendType; "" for the direct path
	make  func(h *netlink.Handle) backend.Backend
}

var ovlCases = []ovlCase{
	{name: "direct"},
	{name: "vxlan", lease: "vxlan", make: func(h *netlink.Handle) backend.Backend { return backend.NewVXLAN(h, "") }},
	{name: "hostgw", lease: "host-gw", make: backend.NewHostGW},
	{name: "udp", lease: "udp", make: func(h *netlink.Handle) backend.Backend { return backend.NewUDP(h, "") }},
}

// ovlResult is one case's averages over b.N runs.
type ovlResult struct {
	mtu    int
	bytes  int64         // per timed stream
	tput   float64       // MB/s (10^6 bytes)
	rtt    time.Duration // per round trip
	stream time.Duration // mean duration of a timed stream
}

// BenchmarkOverlay measures what each overlay backend costs against the
// underlay it runs on: TCP throughput of one connection and the round-trip
// time of 1-byte ping-pong between two namespaces, directly (eth0 to eth0)
// and across the vxlan, host-gw and udp backends (corral0 to corral0). Each
// b.N iteration measures every case once; the figures are the means.
func BenchmarkOverlay(b *testing.B) {
	a, z := ovlSetup(b)
	pattern := make([]byte, ovlPattern)
	if _, err := rand.Read(pattern); err != nil {
		b.Fatal(err)
	}
	res := make(map[string]ovlResult, len(ovlCases))
	for _, c := range ovlCases {
		res[c.name] = ovlRunCase(b, c, a, z, pattern)
	}

	d := res["direct"]
	for _, c := range ovlCases {
		r := res[c.name]
		b.ReportMetric(r.tput, "MB/s-"+c.name)
		b.ReportMetric(float64(r.rtt)/float64(time.Microsecond), "µs-rtt-"+c.name)
	}
	for _, c := range ovlCases[1:] {
		r := res[c.name]
		b.ReportMetric(r.tput/d.tput, c.name+"/direct-tput")
		b.ReportMetric(float64(r.rtt)/float64(d.rtt), c.name+"/direct-rtt")
	}
	for _, c := range ovlCases {
		r := res[c.name]
		b.Logf("%-6s mtu %4d  tput %8.1f MB/s = %5.3f× direct  (%4d MiB in %.2fs)  rtt %6.1f µs = %5.2f× direct",
			c.name, r.mtu, r.tput, r.tput/d.tput, r.bytes>>20, r.stream.Seconds(),
			float64(r.rtt)/float64(time.Microsecond), float64(r.rtt)/float64(d.rtt))
	}
}

// ovlSetup makes two namespaces on a new host bridge, each with corral0 and
// an unreachable route for the rest of the overlay, all removed by
// b.Cleanup whether or not the benchmark passes.
func ovlSetup(b *testing.B) (a, z *ovlNode) {
	b.Helper()
	if err := hostnet.Check(); err != nil {
		b.Fatalf("needs network namespaces: %v (run as root)", err)
	}
	var raw [3]byte
	if _, err := rand.Read(raw[:]); err != nil {
		b.Fatal(err)
	}
	id := hex.EncodeToString(raw[:])
	underlay := ovlUnderlay(b)
	bridge := "brbo" + id
	gateway := underlay.Addr().Next()
	b.Cleanup(func() {
		if err := hostnet.DeleteLink(bridge); err != nil {
			b.Errorf("removing bridge %s: %v", bridge, err)
		}
	})
	if err := hostnet.EnsureBridge(bridge, netip.PrefixFrom(gateway, underlay.Bits())); err != nil {
		b.Fatal(err)
	}
	var nodes []*ovlNode
	publicIP := gateway
	for i, letter := range []string{"a", "b"} {
		publicIP = publicIP.Next()
		hn := hostnet.Node{
			Namespace: "corral-bovl-" + id + "-" + letter,
			HostVeth:  "vbo" + id + letter,
			Bridge:    bridge,
			Addr:      netip.PrefixFrom(publicIP, underlay.Bits()),
			Gateway:   gateway,
		}
		b.Cleanup(func() {
			if err := hostnet.DeleteNamespace(hn.Namespace); err != nil {
				b.Errorf("removing namespace %s: %v", hn.Namespace, err)
			}
			if err := hostnet.DeleteLink(hn.HostVeth); err != nil {
				b.Errorf("removing veth %s: %v", hn.HostVeth, err)
			}
		})
		if err := hostnet.EnsureNode(hn); err != nil {
			b.Fatal(err)
		}
		h, err := hostnet.Handle(hn.Namespace)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(h.Close) // before the namespace goes: cleanups run last-in first-out
		o4 := ovlNetwork.Addr().As4()
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{o4[0], o4[1], byte(i + 1), 0}), 24)
		n := &ovlNode{ns: hn.Namespace, h: h, publicIP: publicIP, subnet: subnet, addr: subnet.Addr().Next()}
		if err := ovlSetUpNode(n); err != nil {
			b.Fatalf("%s: %v", n.ns, err)
		}
		nodes = append(nodes, n)
	}
	return nodes[0], nodes[1]
}

// ovlUnderlay picks a random /24 from 198.18.0.0/15 (RFC 2544's
// benchmarking range) that no host route overlaps.
func ovlUnderlay(b *testing.B) netip.Prefix {
	b.Helper()
	for range 32 {
		var raw [2]byte
		if _, err := rand.Read(raw[:]); err != nil {
			b.Fatal(err)
		}
		r := binary.BigEndian.Uint16(raw[:]) % 512
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(r>>8), byte(r), 0}), 24)
		if used, err := hostnet.RoutesOverlapping(p, ""); err == nil && len(used) == 0 {
			return p
		}
	}
	b.Fatal("no free /24 in 198.18.0.0/15 for the underlay")
	return netip.Prefix{}
}

// ovlSetUpNode gives a node corral0 with its subnet's .1, and a route
// marking the rest of the overlay unreachable, so that a path a backend
// failed to set up fails at once instead of leaving through eth0's default
// route. The route has a high metric: the udp backend's connected route
// for the whole overlay, on its TUN device, must win over it.
func ovlSetUpNode(n *ovlNode) error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "corral0"}}
	if err := n.h.LinkAdd(br); err != nil {
		return fmt.Errorf("creating corral0: %w", err)
	}
	if err := n.h.AddrAdd(br, &netlink.Addr{IPNet: ovlIPNet(netip.PrefixFrom(n.addr, n.subnet.Bits()))}); err != nil {
		return fmt.Errorf("addressing corral0: %w", err)
	}
	if err := n.h.LinkSetUp(br); err != nil {
		return fmt.Errorf("corral0 up: %w", err)
	}
	unreachable := &netlink.Route{Dst: ovlIPNet(ovlNetwork), Type: unix.RTN_UNREACHABLE, Priority: 4000}
	if err := n.h.RouteAdd(unreachable); err != nil {
		return fmt.Errorf("unreachable route for %s: %w", ovlNetwork, err)
	}
	return nil
}

func ovlIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

// ovlRunCase sets up one case, sizes its stream, measures it b.N times and
// tears the backends down again, so the next case runs alone.
func ovlRunCase(b *testing.B, c ovlCase, a, z *ovlNode, pattern []byte) ovlResult {
	b.Helper()
	src, dst := a.publicIP, z.publicIP
	mtu := 1500
	var bks []backend.Backend
	if c.make != nil {
		var err error
		bks, mtu, err = ovlStartBackends(b, c, []*ovlNode{a, z})
		if err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
		src, dst = a.addr, z.addr
	} else if link, err := a.h.LinkByName("eth0"); err == nil {
		mtu = link.Attrs().MTU
	}
	p := ovlPath{a: a, z: z, src: src, dst: dst}

	// Warm up (ARP, the backends' first packets, TCP's buffer
	// autotuning) and find how many bytes take ovlTarget on this path.
	blocks := 4
	for {
		took, err := p.stream(pattern, blocks, ovlCRC(pattern, blocks))
		if err != nil {
			b.Fatalf("%s: warm-up stream of %d MiB: %v", c.name, blocks*len(pattern)>>20, err)
		}
		if took >= ovlTarget/4 || blocks >= 1<<14 {
			rate := float64(blocks) / took.Seconds()
			blocks = max(4, int(rate*ovlTarget.Seconds()+0.999))
			break
		}
		blocks *= 2
	}
	if _, err := p.pingPong(ovlRounds / 10); err != nil {
		b.Fatalf("%s: warm-up ping-pong: %v", c.name, err)
	}

	want := ovlCRC(pattern, blocks)
	var streamed, rtts time.Duration
	for range b.N {
		took, err := p.stream(pattern, blocks, want)
		if err != nil {
			b.Fatalf("%s: stream of %d MiB: %v", c.name, blocks*len(pattern)>>20, err)
		}
		streamed += took
		took, err = p.pingPong(ovlRounds)
		if err != nil {
			b.Fatalf("%s: ping-pong: %v", c.name, err)
		}
		rtts += took
	}

	if c.make != nil {
		if err := ovlCloseBackends(bks, []*ovlNode{a, z}); err != nil {
			b.Fatalf("%s: %v", c.name, err)
		}
	}
	total := int64(blocks) * int64(len(pattern))
	return ovlResult{
		mtu:    mtu,
		bytes:  total,
		tput:   float64(total) * float64(b.N) / streamed.Seconds() / 1e6,
		rtt:    rtts / time.Duration(b.N*ovlRounds),
		stream: streamed / time.Duration(b.N),
	}
}

// ovlStartBackends starts c's backend in both namespaces (inside them: the
// udp backend opens its TUN device and socket on the calling thread), syncs
// each with the other's lease and gives corral0 the backend's MTU, as the
// overlay manager does. It returns the overlay MTU.
func ovlStartBackends(b *testing.B, c ovlCase, nodes []*ovlNode) ([]backend.Backend, int, error) {
	bks := make([]backend.Backend, len(nodes))
	peers := make([]backend.Peer, len(nodes))
	mtu := 0
	for i, n := range nodes {
		bk := c.make(n.h)
		bks[i] = bk
		// Closing twice is harmless: this is for a run that fails before
		// ovlCloseBackends.
		b.Cleanup(func() { bk.Close() })
		var data json.RawMessage
		var m int
		err := hostnet.Do(n.ns, func() error {
			var err error
			data, m, err = bk.Start(n.local())
			return err
		})
		if err != nil {
			return nil, 0, fmt.Errorf("%s: Start: %w", n.ns, err)
		}
		mtu = m
		peers[i] = backend.Peer{Subnet: n.subnet, PublicIP: n.publicIP, BackendType: c.lease, BackendData: data}
		br, err := n.h.LinkByName("corral0")
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", n.ns, err)
		}
		if err := n.h.LinkSetMTU(br, m); err != nil {
			return nil, 0, fmt.Errorf("%s: corral0 MTU %d: %w", n.ns, m, err)
		}
	}
	for i, n := range nodes {
		var others []backend.Peer
		for j := range nodes {
			if j != i {
				others = append(others, peers[j])
			}
		}
		if err := bks[i].Sync(others); err != nil {
			return nil, 0, fmt.Errorf("%s: Sync: %w", n.ns, err)
		}
	}
	return bks, mtu, nil
}

// ovlCloseBackends closes each node's backend, so the next case runs alone.
func ovlCloseBackends(bks []backend.Backend, nodes []*ovlNode) error {
	var errs []error
	for i, bk := range bks {
		if err := bk.Close(); err != nil {
			errs = append(errs, fmt.Errorf("%s: Close: %w", nodes[i].ns, err))
		}
	}
	return errors.Join(errs...)
}

var ovlCRCTable = crc32.MakeTable(crc32.Castagnoli)

// ovlCRC is the CRC-32C of pattern repeated blocks times.
func ovlCRC(pattern []byte, blocks int) uint32 {
	var sum uint32
	for range blocks {
		sum = crc32.Update(sum, ovlCRCTable, pattern)
	}
	return sum
}

// ovlPath is a TCP path from src in A's namespace to dst in B's.
type ovlPath struct {
	a, z     *ovlNode
	src, dst netip.Addr
}

// connect opens a connection: the listener in B, the dialling socket in A
// bound to src, both made inside their namespaces and used from here on by
// ordinary goroutines.
func (p ovlPath) connect() (client, server *net.TCPConn, err error) {
	var ln *net.TCPListener
	err = hostnet.Do(p.z.ns, func() error {
		var err error
		ln, err = net.ListenTCP("tcp4", net.TCPAddrFromAddrPort(netip.AddrPortFrom(p.dst, 0)))
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("listening on %s in %s: %w", p.dst, p.z.ns, err)
	}
	defer ln.Close()
	var conn net.Conn
	err = hostnet.Do(p.a.ns, func() error {
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(p.src, 0)), Timeout: 10 * time.Second}
		var err error
		conn, err = d.Dial("tcp4", ln.Addr().String())
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("dialling %s from %s: %w", ln.Addr(), p.src, err)
	}
	client = conn.(*net.TCPConn)
	// The handshake is done, so the connection waits in the backlog.
	deadline := time.Now().Add(ovlIOLimit)
	ln.SetDeadline(deadline)
	server, err = ln.AcceptTCP()
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("accepting on %s: %w", ln.Addr(), err)
	}
	if got := server.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap(); got != p.src {
		client.Close()
		server.Close()
		return nil, nil, fmt.Errorf("connection came from %s, want %s", got, p.src)
	}
	client.SetDeadline(deadline)
	server.SetDeadline(deadline)
	return client, server, nil
}

// stream sends pattern blocks times over one new connection and returns
// the time from the first write to the last byte read. What arrived must
// be exactly what was sent: its length, its CRC-32C (want) and a clean end
// of stream.
func (p ovlPath) stream(pattern []byte, blocks int, want uint32) (time.Duration, error) {
	total := int64(blocks) * int64(len(pattern))

	client, server, err := p.connect()
	if err != nil {
		return 0, err
	}
	defer client.Close()
	defer server.Close()

	type received struct {
		at  time.Time
		err error
	}
	done := make(chan received, 1)
	go func() {
		at, err := func() (time.Time, error) {
			buf := make([]byte, 256<<10)
			var got int64
			var sum uint32
			for got < total {
				n, err := server.Read(buf[:min(int64(len(buf)), total-got)])
				sum = crc32.Update(sum, ovlCRCTable, buf[:n])
				got += int64(n)
				if err != nil {
					return time.Time{}, fmt.Errorf("after %d of %d bytes: %w", got, total, err)
				}
			}
			at := time.Now()
			if n, err := server.Read(buf[:1]); n != 0 || err != io.EOF {
				return time.Time{}, fmt.Errorf("after all %d bytes: %d more, %v; want the end of the stream", total, n, err)
			}
			if sum != want {
				return time.Time{}, fmt.Errorf("%d bytes arrived with CRC-32C %08x; %08x was sent", total, sum, want)
			}
			return at, nil
		}()
		if err != nil {
			// Unblock the sender.
			server.Close()
		}
		done <- received{at: at, err: err}
	}()

	start := time.Now()
	var werr error
	for range blocks {
		if _, werr = client.Write(pattern); werr != nil {
			break
		}
	}
	if werr == nil {
		werr = client.CloseWrite()
	}
	if werr != nil {
		// Unblock the reader.
		server.Close()
		<-done
		return 0, fmt.Errorf("sending: %w", werr)
	}
	r := <-done
	if r.err != nil {
		return 0, fmt.Errorf("receiving: %w", r.err)
	}
	return r.at.Sub(start), nil
}

// pingPong makes rounds 1-byte round trips over one new connection (after
// its handshake) and returns the time they took. Each byte must come back
// as sent.
func (p ovlPath) pingPong(rounds int) (time.Duration, error) {
	client, server, err := p.connect()
	if err != nil {
		return 0, err
	}
	defer client.Close()
	defer server.Close()

	echoed := make(chan error, 1)
	go func() {
		var buf [1]byte
		for range rounds {
			if _, err := io.ReadFull(server, buf[:]); err != nil {
				echoed <- err
				return
			}
			if _, err := server.Write(buf[:]); err != nil {
				echoed <- err
				return
			}
		}
		echoed <- nil
	}()

	var buf [1]byte
	start := time.Now()
	for i := range rounds {
		sent := byte(i*7 + 1)
		buf[0] = sent
		if _, err := client.Write(buf[:]); err != nil {
			client.Close()
			server.Close()
			<-echoed
			return 0, fmt.Errorf("round %d: sending: %w", i, err)
		}
		if _, err := io.ReadFull(client, buf[:]); err != nil {
			client.Close()
			server.Close()
			<-echoed
			return 0, fmt.Errorf("round %d: reading the echo: %w", i, err)
		}
		if buf[0] != sent {
			client.Close()
			server.Close()
			<-echoed
			return 0, fmt.Errorf("round %d: sent %#x, got %#x back", i, sent, buf[0])
		}
	}
	took := time.Since(start)
	if err := <-echoed; err != nil {
		return 0, fmt.Errorf("echoing: %w", err)
	}
	return took, nil
}
