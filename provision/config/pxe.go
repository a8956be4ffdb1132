package config

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// PXEProvider network-boots bare-metal machines: provision serves their
// iPXE scripts, kernels, initramfs and boot configs over HTTP (and iPXE's
// chainload binaries over TFTP), and the machines, matched by MAC, boot
// into clusterd:
//
//	provider "pxe" {
//	  listen    = "0.0.0.0:8080"           # the HTTP boot server
//	  url       = "http://10.0.0.1:8080"   # how machines reach it
//	  tftp      = true                     # serve undionly.kpxe / ipxe.efi
//	  interface = "eth1"                   # for the dnsmasq config
//	}
//
// Its node groups name their machines and what they boot (see PXEGroup).
type PXEProvider struct {
	// Listen is the boot server's host:port.
	Listen string
	// URL is the server as machines reach it: by default http://<Listen>,
	// which needs Listen to name an address, not 0.0.0.0.
	URL string
	// TFTP serves iPXE's chainload binaries on port 69 of Listen's host.
	TFTP bool
	// Network is the machines' network. Named machines get fixed
	// addresses in it, node n of them (counting across groups in file
	// order) .10+n, which the dnsmasq configuration reserves by MAC: the
	// etcd members' addresses must be known before they boot, as every
	// joining node's config names them. Machines of a mac_range or a
	// default group get whatever DHCP gives them, so they can't be members.
	Network netip.Prefix
	// Interface and ProxyDHCP shape the dnsmasq configuration that
	// `provision render --format dnsmasq` prints: proxy-DHCP (the network
	// has a DHCP server of its own) or a full DHCP server.
	Interface string
	ProxyDHCP bool
}

// PXEGroup is a node group's bare-metal part:
//
//	node_group "metal" {
//	  desired_capacity = 3
//	  machine "node1" { mac = "52:54:00:a1:00:01"  metadata = { rack = "r1" } }
//	  machine "node2" { mac = "52:54:00:a1:00:02" }
//	  mac_range { from = "52:54:00:a1:01:00"  to = "52:54:00:a1:01:ff" }
//	  boot { kernel = "assets/vmlinuz"  initrd = ["assets/initrd.img"]  args = ["console=ttyS0"] }
//	  install_to_disk = false
//	}
//
// Named machines are nodes under their own names, in file order; beyond
// them, nodes "<group>-<n>" go to the first machines that boot with a MAC
// in a mac_range (or any unknown MAC, with default = true).
type PXEGroup struct {
	Machines []BareMetal
	Ranges   []MACRange
	// Default takes any machine whose MAC no group knows.
	Default bool
	Boot    *Boot
	// InstallToDisk: the machine installs and then boots from its disk;
	// the boot server answers it with a local boot from then on.
	InstallToDisk bool
}

// BareMetal is a bare-metal machine known by its MAC.
type BareMetal struct {
	Name     string
	MAC      net.HardwareAddr
	UUID     string            // optional: must match too
	Metadata map[string]string // merged over the group's
}

// MACRange is an inclusive range of MAC addresses.
type MACRange struct{ From, To net.HardwareAddr }

// Contains reports whether mac is in the range.
func (r MACRange) Contains(mac net.HardwareAddr) bool {
	return len(mac) == len(r.From) && slices.Compare(mac, r.From) >= 0 && slices.Compare(mac, r.To) <= 0
}

// Boot is what a group's machines network-boot: files as absolute paths.
type Boot struct {
	Kernel  string
	Initrds []string
	Args    []string
	// OwnIgnition: the OS applies Ignition itself (Flatcar, Fedora CoreOS):
	// the kernel gets ignition.config.url instead of Corral's init.
	OwnIgnition bool
}

var (
	pxeSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "listen"}, {Name: "url"}, {Name: "tftp"}, {Name: "interface"}, {Name: "proxy_dhcp"}, {Name: "network", Required: true},
	}}
	machineSchema  = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "mac", Required: true}, {Name: "uuid"}, {Name: "metadata"}}}
	macRangeSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "from", Required: true}, {Name: "to", Required: true}}}
	bootSchema     = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "kernel", Required: true}, {Name: "initrd"}, {Name: "args"}, {Name: "own_ignition"},
	}}
)

const defaultPXEListen = "0.0.0.0:8080"

func decodePXE(body hcl.Body, ctx *hcl.EvalContext, _ string, p *Provider) hcl.Diagnostics {
	content, diags := body.Content(pxeSchema)
	x := &PXEProvider{Listen: defaultPXEListen}
	p.PXE = x
	for _, a := range []struct {
		name   string
		target any
	}{{"listen", &x.Listen}, {"url", &x.URL}, {"tftp", &x.TFTP}, {"interface", &x.Interface}, {"proxy_dhcp", &x.ProxyDHCP}} {
		_, d := decodeAttr(content, a.name, ctx, a.target)
		diags = append(diags, d...)
	}
	var network string
	if attr, d := decodeAttr(content, "network", ctx, &network); attr != nil {
		diags = append(diags, d...)
		if cidr, problem := parseLocalCIDR(network); problem != "" {
			diags = append(diags, attrError(attr, "Invalid network", strings.Replace(problem, "cidr", "network", 1)))
		} else {
			x.Network = cidr
		}
	}
	host, port, err := net.SplitHostPort(x.Listen)
	listen := content.Attributes["listen"]
	if err != nil || port == "" {
		if listen != nil {
			diags = append(diags, attrError(listen, "Invalid listen", fmt.Sprintf(`listen must be host:port such as "0.0.0.0:8080", got %q.`, x.Listen)))
		}
		return diags
	}
	if x.URL == "" {
		ip, err := netip.ParseAddr(host)
		if err != nil || ip.IsUnspecified() {
			d := &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Missing url",
				Detail:  fmt.Sprintf("The boot server listens on %s, which machines can't be told to reach: set url to the address they reach it at, e.g. url = \"http://10.0.0.1:%s\".", x.Listen, port),
				Subject: body.MissingItemRange().Ptr()}
			if listen != nil {
				d.Subject = listen.Expr.Range().Ptr()
			}
			return append(diags, d)
		}
		x.URL = "http://" + x.Listen
	} else if u := content.Attributes["url"]; !strings.HasPrefix(x.URL, "http://") && !strings.HasPrefix(x.URL, "https://") {
		diags = append(diags, attrError(u, "Invalid url", fmt.Sprintf("url must be an http:// or https:// URL (iPXE fetches it), got %q.", x.URL)))
	}
	x.URL = strings.TrimSuffix(x.URL, "/")
	return diags
}

// decodePXEGroup decodes a node group's machine, mac_range and boot
// blocks and install_to_disk and default attributes.
func decodePXEGroup(content *hcl.BodyContent, ctx *hcl.EvalContext, dir string, g *NodeGroup) hcl.Diagnostics {
	var diags hcl.Diagnostics
	x := &PXEGroup{}
	used := false
	for _, name := range []string{"install_to_disk", "default"} {
		if _, ok := content.Attributes[name]; ok {
			used = true
		}
	}
	_, d := decodeAttr(content, "install_to_disk", ctx, &x.InstallToDisk)
	diags = append(diags, d...)
	_, d = decodeAttr(content, "default", ctx, &x.Default)
	diags = append(diags, d...)
	seen := map[string]*hcl.Block{}
	for _, b := range content.Blocks {
		switch b.Type {
		case "machine":
			used = true
			if first, ok := seen[b.Labels[0]]; ok {
				diags = append(diags, duplicateIn(b, first, g.Name))
				continue
			}
			seen[b.Labels[0]] = b
			m, d := decodeMachine(b, ctx)
			diags = append(diags, d...)
			x.Machines = append(x.Machines, m)
		case "mac_range":
			used = true
			c, d := b.Body.Content(macRangeSchema)
			diags = append(diags, d...)
			var from, to string
			fa, d := decodeAttr(c, "from", ctx, &from)
			diags = append(diags, d...)
			ta, d := decodeAttr(c, "to", ctx, &to)
			diags = append(diags, d...)
			r, ok := MACRange{}, true
			var bad *hcl.Diagnostic
			if fa != nil {
				if r.From, bad = parseMAC(fa, from); bad != nil {
					diags, ok = append(diags, bad), false
				}
			}
			if ta != nil {
				if r.To, bad = parseMAC(ta, to); bad != nil {
					diags, ok = append(diags, bad), false
				}
			}
			if ok && fa != nil && ta != nil {
				if slices.Compare(r.From, r.To) > 0 {
					diags = append(diags, attrError(ta, "Invalid mac_range", fmt.Sprintf("to %s is below from %s.", r.To, r.From)))
				} else {
					x.Ranges = append(x.Ranges, r)
				}
			}
		case "boot":
			used = true
			if x.Boot != nil {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate boot block",
					Detail:  fmt.Sprintf("Node group %q already has a boot block at %s; a group boots one thing.", g.Name, position(content.Blocks.OfType("boot")[0].DefRange)),
					Subject: b.DefRange.Ptr()})
				continue
			}
			boot, d := decodeBoot(b, ctx, dir)
			diags = append(diags, d...)
			x.Boot = boot
		}
	}
	if used {
		g.PXE = x
	}
	return diags
}

func decodeMachine(b *hcl.Block, ctx *hcl.EvalContext) (BareMetal, hcl.Diagnostics) {
	m := BareMetal{Name: b.Labels[0]}
	diags := checkName(b, "machine")
	c, d := b.Body.Content(machineSchema)
	diags = append(diags, d...)
	var mac string
	attr, d := decodeAttr(c, "mac", ctx, &mac)
	diags = append(diags, d...)
	if attr != nil {
		if hw, d := parseMAC(attr, mac); d != nil {
			diags = append(diags, d)
		} else {
			m.MAC = hw
		}
	}
	_, d = decodeAttr(c, "uuid", ctx, &m.UUID)
	diags = append(diags, d...)
	attr, d = decodeAttr(c, "metadata", ctx, &m.Metadata)
	diags = append(diags, d...)
	if attr != nil {
		diags = append(diags, checkMetadata(attr, ctx, m.Metadata)...)
	}
	return m, diags
}

func parseMAC(attr *hcl.Attribute, s string) (net.HardwareAddr, *hcl.Diagnostic) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return nil, attrError(attr, "Invalid MAC address", fmt.Sprintf(`%q is not an Ethernet MAC address such as "52:54:00:a1:00:01".`, s))
	}
	return hw, nil
}

func decodeBoot(b *hcl.Block, ctx *hcl.EvalContext, dir string) (*Boot, hcl.Diagnostics) {
	boot := &Boot{}
	c, diags := b.Body.Content(bootSchema)
	resolve := func(attr *hcl.Attribute, p string) (string, *hcl.Diagnostic) {
		if strings.HasPrefix(p, "~/") {
			if home, err := os.UserHomeDir(); err == nil {
				p = filepath.Join(home, p[2:])
			}
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs // the server serves it after any chdir
		}
		if _, err := os.Stat(p); err != nil {
			return p, attrError(attr, "Boot file not found", fmt.Sprintf("%s: %v. Build Corral's initramfs with `provision build initramfs`, or point at a kernel such as Debian's /boot/vmlinuz-*.", p, err))
		}
		return p, nil
	}
	attr, d := decodeAttr(c, "kernel", ctx, &boot.Kernel)
	diags = append(diags, d...)
	if attr != nil {
		var dd *hcl.Diagnostic
		if boot.Kernel, dd = resolve(attr, boot.Kernel); dd != nil {
			diags = append(diags, dd)
		}
	}
	attr, d = decodeAttr(c, "initrd", ctx, &boot.Initrds)
	diags = append(diags, d...)
	if attr != nil {
		for i, p := range boot.Initrds {
			var dd *hcl.Diagnostic
			if boot.Initrds[i], dd = resolve(attr, p); dd != nil {
				diags = append(diags, dd)
			}
		}
	}
	_, d = decodeAttr(c, "args", ctx, &boot.Args)
	diags = append(diags, d...)
	_, d = decodeAttr(c, "own_ignition", ctx, &boot.OwnIgnition)
	diags = append(diags, d...)
	return boot, diags
}

// checkPXE checks the node groups against the provider: bare-metal blocks
// only with provider "pxe", and with it every group boots something, has
// a machine for every node, and no MAC is in two places.
func checkPXE(p *Provider, groups []NodeGroup, capRanges []hcl.Range) hcl.Diagnostics {
	var diags hcl.Diagnostics
	macs := map[string]string{}
	for i, g := range groups {
		if p.Type != "pxe" {
			if g.PXE != nil && p.Type != "" {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Bare-metal settings without provider \"pxe\"",
					Detail:  fmt.Sprintf("Node group %q has machine, mac_range, boot, default or install_to_disk settings, which only provider \"pxe\" uses; remove them, or use provider \"pxe\".", g.Name),
					Subject: g.DeclRange.Ptr()})
			}
			continue
		}
		x := g.PXE
		if x == nil || x.Boot == nil {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Missing boot block",
				Detail:  fmt.Sprintf("Node group %q of provider \"pxe\" needs a boot block: boot { kernel = \"…\"  initrd = [\"…\"] }.", g.Name),
				Subject: g.DeclRange.Ptr()})
			continue
		}
		if x.InstallToDisk && !x.Boot.OwnIgnition {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "install_to_disk needs an installer",
				Detail: fmt.Sprintf("Node group %q installs to disk, but boots Corral's initramfs, which runs from memory (CoreOS's default) and installs nothing. "+
					"Boot an OS with its own installer (own_ignition = true, with its coreos.inst.* args), or drop install_to_disk.", g.Name),
				Subject: g.DeclRange.Ptr()})
		}
		if len(x.Ranges) == 0 && !x.Default && g.DesiredCapacity > len(x.Machines) {
			diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Too many nodes",
				Detail: fmt.Sprintf("desired_capacity is %d, but node group %q names %d machines and has no mac_range or default = true for more; add machine blocks or lower desired_capacity.",
					g.DesiredCapacity, g.Name, len(x.Machines)),
				Subject: capRanges[i].Ptr()})
		}
		for _, m := range x.Machines {
			if m.MAC == nil {
				continue
			}
			if other, ok := macs[m.MAC.String()]; ok {
				diags = append(diags, &hcl.Diagnostic{Severity: hcl.DiagError, Summary: "Duplicate MAC address",
					Detail:  fmt.Sprintf("Machine %q of node group %q has MAC %s, as machine %s does.", m.Name, g.Name, m.MAC, other),
					Subject: g.DeclRange.Ptr()})
			}
			macs[m.MAC.String()] = fmt.Sprintf("%q", m.Name)
		}
	}
	return diags
}

// NodeNames are the names of the group's nodes in the order they are made:
// its named machines first, then "<group>-<n>". Nil when nodes are all
// named "<group>-<n>".
func (g *NodeGroup) NodeNames() []string {
	if g == nil || g.PXE == nil || len(g.PXE.Machines) == 0 {
		return nil
	}
	var out []string
	for _, m := range g.PXE.Machines {
		out = append(out, m.Name)
	}
	return out
}
