package pxe

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// DnsmasqOptions is what DnsmasqConfig needs to know of the network.
type DnsmasqOptions struct {
	// Interface is the NIC on the machines' network; "" means all.
	Interface string
	// Network is the machines' IPv4 network, e.g. 10.0.0.0/24.
	Network netip.Prefix
	// Proxy is for networks with a DHCP server of their own: dnsmasq then
	// only adds the boot options to its answers (proxy-DHCP) and hands out
	// no address. Otherwise dnsmasq is the network's DHCP server, leasing
	// RangeStart–RangeEnd.
	Proxy                bool
	RangeStart, RangeEnd netip.Addr
	// LeaseTime is how long addresses are leased for; 0 means 12 hours.
	LeaseTime time.Duration
	// BootURL is the boot server's script: Server's /boot.ipxe, e.g.
	// "http://10.0.0.1:8080/boot.ipxe".
	BootURL string
	// EnableTFTP has dnsmasq serve iPXE's binaries itself, from TFTPRoot
	// ("" means DefaultTFTPDir). Without it they are expected from
	// ServeTFTP, on this host or at TFTPServer.
	EnableTFTP bool
	TFTPRoot   string
	TFTPServer netip.Addr
	// Hosts are fixed addresses by MAC (full DHCP only): the etcd members'
	// addresses must be known before they boot, as every joining node's
	// config names them.
	Hosts []DnsmasqHost
}

// DnsmasqHost is a machine that always gets the same address.
type DnsmasqHost struct {
	MAC  string
	IP   netip.Addr
	Name string
}

// leaseString writes d the way dnsmasq reads it.
func leaseString(d time.Duration) string {
	switch {
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return fmt.Sprintf("%d", d/time.Second)
}

func (o DnsmasqOptions) check() error {
	if !o.Network.IsValid() || !o.Network.Addr().Is4() {
		return fmt.Errorf("pxe: dnsmasq: want the machines' IPv4 network, not %v", o.Network)
	}
	u, err := url.Parse(o.BootURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("pxe: dnsmasq: want the boot server's http:// URL of /boot.ipxe, not %q", o.BootURL)
	}
	for what, v := range map[string]string{"interface": o.Interface, "boot URL": o.BootURL, "TFTP root": o.TFTPRoot} {
		if err := checkWord(what, v, false); err != nil {
			return err
		}
		if bytes.ContainsAny([]byte(v), `,"#`) {
			return fmt.Errorf("pxe: dnsmasq: the %s %q contains a character dnsmasq's configuration can't hold", what, v)
		}
	}
	if o.TFTPServer.IsValid() && !o.TFTPServer.Is4() {
		return fmt.Errorf("pxe: dnsmasq: TFTP server %v is not an IPv4 address", o.TFTPServer)
	}
	if o.LeaseTime != 0 && o.LeaseTime < 2*time.Minute {
		return fmt.Errorf("pxe: dnsmasq: lease time %v is shorter than dnsmasq's minimum of 2m", o.LeaseTime)
	}
	if o.Proxy {
		if len(o.Hosts) > 0 {
			return fmt.Errorf("pxe: dnsmasq: fixed addresses need full DHCP: in proxy mode the network's DHCP server hands out addresses")
		}
		return nil
	}
	n := o.Network.Masked()
	for _, h := range o.Hosts {
		if _, err := NormalizeMAC(h.MAC); err != nil {
			return err
		}
		if !n.Contains(h.IP) {
			return fmt.Errorf("pxe: dnsmasq: host %s's address %v is not in %v", h.Name, h.IP, n)
		}
		if err := checkWord("host name", h.Name, false); err != nil || strings.ContainsAny(h.Name, `,"#`) {
			return fmt.Errorf("pxe: dnsmasq: host name %q can't go in dnsmasq's configuration", h.Name)
		}
	}
	if !o.RangeStart.IsValid() || !o.RangeEnd.IsValid() {
		return fmt.Errorf("pxe: dnsmasq: full DHCP needs the range of addresses to lease (RangeStart, RangeEnd)")
	}
	if !n.Contains(o.RangeStart) || !n.Contains(o.RangeEnd) {
		return fmt.Errorf("pxe: dnsmasq: the range %v–%v is not all in %v", o.RangeStart, o.RangeEnd, n)
	}
	if o.RangeEnd.Less(o.RangeStart) {
		return fmt.Errorf("pxe: dnsmasq: the range %v–%v ends before it starts", o.RangeStart, o.RangeEnd)
	}
	return nil
}

// DnsmasqConfig writes a dnsmasq configuration that network-boots machines
// into iPXE and then into the boot server's /boot.ipxe, to be run as it is:
// `dnsmasq --conf-file=FILE --no-daemon`. dnsmasq's DNS server is off.
func DnsmasqConfig(o DnsmasqOptions) ([]byte, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	n := o.Network.Masked()
	mask := net.IP(net.CIDRMask(n.Bits(), 32)).String()
	lease := o.LeaseTime
	if lease == 0 {
		lease = 12 * time.Hour
	}
	root := o.TFTPRoot
	if root == "" {
		root = DefaultTFTPDir
	}
	server := "" // where PXE ROMs fetch iPXE from, when not from dnsmasq's host
	if !o.EnableTFTP && o.TFTPServer.IsValid() {
		server = o.TFTPServer.String()
	}

	var b bytes.Buffer
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	p("# dnsmasq configuration written by Corral to network-boot bare-metal nodes.")
	p("# Run it as it is: dnsmasq --conf-file=THIS-FILE --no-daemon")
	p("#")
	p("# Machines' PXE ROMs are sent iPXE over TFTP; iPXE is then sent the boot")
	p("# server's script over HTTP, which boots each machine as the cluster file says.")
	if o.Proxy {
		p("#")
		p("# Mode: proxy-DHCP. The network's own DHCP server still hands out the")
		p("# addresses; dnsmasq only adds the network-boot options to its answers.")
	} else {
		p("#")
		p("# Mode: full DHCP. dnsmasq is the network's DHCP server: make sure no other")
		p("# DHCP server answers on it.")
	}
	p("")
	p("# No DNS: this dnsmasq serves DHCP (and TFTP) only.")
	p("port=0")
	p("")
	if o.Interface != "" {
		p("# Answer on the machines' network only.")
		p("interface=%s", o.Interface)
		p("bind-dynamic")
		p("")
	}
	if o.Proxy {
		p("# Proxy-DHCP on %s: boot options only, no addresses.", n)
		p("dhcp-range=%s,proxy,%s", n.Addr(), mask)
	} else {
		p("# Addresses leased to the machines, for %s each.", leaseString(lease))
		p("dhcp-range=%s,%s,%s,%s", o.RangeStart, o.RangeEnd, mask, leaseString(lease))
		if len(o.Hosts) > 0 {
			p("")
			p("# Fixed addresses: the etcd members' must be known before they boot.")
			for _, h := range o.Hosts {
				mac, _ := NormalizeMAC(h.MAC)
				p("dhcp-host=%s,%s,%s", mac, h.IP, h.Name)
			}
		}
	}
	p("")
	p("# iPXE says who it is with user class \"iPXE\" and option 175: tag its requests")
	p("# \"ipxe\", so that iPXE is sent the boot script and only the firmware's PXE ROM")
	p("# is sent iPXE itself; otherwise iPXE would load iPXE again, in a loop.")
	p("dhcp-userclass=set:ipxe,iPXE")
	p("dhcp-match=set:ipxe,175")
	p("")
	tftpFrom := "from this host"
	if server != "" {
		tftpFrom = "from " + server
	}
	at := ""
	if server != "" {
		at = "," + server
	}
	if o.Proxy {
		p("# PXE ROMs: fetch iPXE over TFTP, %s: undionly.kpxe for BIOS,", tftpFrom)
		p("# ipxe.efi for UEFI (or snponly.efi, for NICs ipxe.efi has no driver for).")
		p("pxe-service=tag:!ipxe,x86PC,\"Corral: load iPXE\",undionly.kpxe%s", at)
		p("pxe-service=tag:!ipxe,X86-64_EFI,\"Corral: load iPXE (UEFI)\",ipxe.efi%s", at)
		p("pxe-service=tag:!ipxe,BC_EFI,\"Corral: load iPXE (UEFI)\",ipxe.efi%s", at)
		p("")
		p("# iPXE: boot with the boot server's script, over HTTP.")
		p("pxe-service=tag:ipxe,x86PC,\"Corral: boot\",%s", o.BootURL)
		p("pxe-service=tag:ipxe,X86-64_EFI,\"Corral: boot\",%s", o.BootURL)
		p("pxe-service=tag:ipxe,BC_EFI,\"Corral: boot\",%s", o.BootURL)
	} else {
		p("# UEFI firmware says so in its client architecture (option 93): 7 and 9 are")
		p("# x86-64 UEFI; anything else is taken for BIOS.")
		p("dhcp-match=set:efi,option:client-arch,7")
		p("dhcp-match=set:efi,option:client-arch,9")
		p("")
		p("# PXE ROMs: fetch iPXE over TFTP, %s: undionly.kpxe for BIOS,", tftpFrom)
		p("# ipxe.efi for UEFI (or snponly.efi, for NICs ipxe.efi has no driver for).")
		if server != "" {
			at = ",," + server
		}
		p("dhcp-boot=tag:!ipxe,tag:!efi,undionly.kpxe%s", at)
		p("dhcp-boot=tag:!ipxe,tag:efi,ipxe.efi%s", at)
		p("")
		p("# iPXE: boot with the boot server's script, over HTTP.")
		p("dhcp-boot=tag:ipxe,%s", o.BootURL)
	}
	p("")
	if o.EnableTFTP {
		p("# dnsmasq's own read-only TFTP server sends iPXE's binaries.")
		p("enable-tftp")
		p("tftp-root=%s", root)
	} else {
		p("# TFTP is off here: Corral's own TFTP server sends iPXE's binaries (%s).", tftpFrom)
	}
	p("")
	p("# Log each DHCP conversation: what a machine asked and was told.")
	p("log-dhcp")
	return b.Bytes(), nil
}
