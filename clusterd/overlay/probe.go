package overlay

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"golang.org/x/sys/unix"
)

// EchoPort is where every machine answers overlay probes, on its bridge
// address: reaching it proves the whole path, bridge to bridge.
const EchoPort = 7380

// Result is one probe from this machine to a peer.
type Result struct {
	MachineID string        `json:"machine_id"`
	Target    string        `json:"target"` // the peer's bridge address
	Reachable bool          `json:"reachable"`
	RTT       time.Duration `json:"rtt"`
	MTU       int           `json:"mtu"`    // the overlay MTU probed
	MTUOK     bool          `json:"mtu_ok"` // a full-size packet with DF set made the round trip
	Error     string        `json:"error,omitempty"`
}

// OK reports whether the peer passed every probe.
func (r Result) OK() bool { return r.Reachable && r.MTUOK }

// listenEcho answers probes: every datagram is sent back as it came.
func listenEcho(ip netip.Addr) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, EchoPort)))
	if err != nil {
		return nil, fmt.Errorf("overlay: probe responder: %w", err)
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed
			}
			c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	return c, nil
}

// Probe checks each target from this machine's bridge address: a small
// datagram proves reachability; one of exactly the overlay MTU with the
// don't-fragment bit set proves the path carries full-size packets.
func Probe(ctx context.Context, st *State, targets []subnet.Lease, timeout time.Duration) []Result {
	out := make([]Result, len(targets))
	var wg sync.WaitGroup
	for i, l := range targets {
		wg.Go(func() {
			out[i] = probeOne(ctx, st, l, timeout)
		})
	}
	wg.Wait()
	return out
}

func probeOne(ctx context.Context, st *State, l subnet.Lease, timeout time.Duration) Result {
	target := netip.AddrPortFrom(l.Subnet.Addr().Next(), EchoPort)
	r := Result{MachineID: l.MachineID, Target: target.Addr().String(), MTU: st.MTU}
	c, err := dialDF(st.Bridge, target)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	defer c.Close()
	start := time.Now()
	if err := roundTrip(ctx, c, 16, timeout); err != nil {
		r.Error = "unreachable: " + err.Error()
		return r
	}
	r.Reachable, r.RTT = true, time.Since(start)
	// 20 bytes of IP header and 8 of UDP: the payload that fills the MTU.
	if err := roundTrip(ctx, c, st.MTU-28, timeout); err != nil {
		r.Error = fmt.Sprintf("a %d-byte packet with DF set did not make the round trip: %v", st.MTU, err)
		return r
	}
	r.MTUOK = true
	return r
}

// dialDF opens a UDP socket from src to dst that never fragments.
func dialDF(src netip.Addr, dst netip.AddrPort) (*net.UDPConn, error) {
	d := net.Dialer{
		LocalAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
		Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO)
			})
			return errors.Join(err, serr)
		},
	}
	c, err := d.Dial("udp4", dst.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// roundTrip sends size random bytes and waits for them to come back,
// trying three times: one lost datagram is not a broken path.
func roundTrip(ctx context.Context, c *net.UDPConn, size int, timeout time.Duration) error {
	msg := make([]byte, size)
	rand.Read(msg)
	buf := make([]byte, size+1)
	var last error
	for range 3 {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if _, err := c.Write(msg); err != nil {
			return err // EMSGSIZE: the local route's MTU is smaller
		}
		c.SetReadDeadline(time.Now().Add(timeout))
		for {
			n, err := c.Read(buf)
			if err != nil {
				last = err
				break
			}
			if bytes.Equal(buf[:n], msg) {
				return nil
			}
		}
	}
	return last
}
