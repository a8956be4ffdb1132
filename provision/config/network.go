package config

import (
	"fmt"
	"net/netip"
	"regexp"

	"github.com/hashicorp/hcl/v2"
)

// Network is the overlay every machine gets a subnet of (flannel's model).
// A file without a network block has no overlay.
type Network struct {
	CIDR      netip.Prefix
	SubnetLen int
	Backend   string // vxlan, host-gw, udp, or aws-vpc with provider "aws"
	VNI       int    // vxlan only; 0 = default (1)
	Port      int    // vxlan and udp; 0 = the backend's default
	Bridge    string // the bridge on each machine that holds its subnet's first address
	IPMasq    bool   // masquerade traffic that leaves the overlay
	DeclRange hcl.Range
	// backendRange locates the backend attribute when it is "aws-vpc",
	// for the check against the provider.
	backendRange *hcl.Range
}

// Defaults of the network block.
const (
	defaultBackend = "vxlan"
	defaultBridge  = "corral0"
)

var networkSchema = &hcl.BodySchema{
	Attributes: []hcl.AttributeSchema{
		{Name: "cidr", Required: true},
		{Name: "subnet_len"},
		{Name: "backend"},
		{Name: "vni"},
		{Name: "port"},
		{Name: "bridge"},
		{Name: "ip_masq"},
	},
}

// Interface names are at most 15 bytes (IFNAMSIZ - 1).
var bridgeRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`)

func decodeNetwork(block *hcl.Block, ctx *hcl.EvalContext) (*Network, hcl.Diagnostics) {
	n := &Network{Backend: defaultBackend, Bridge: defaultBridge, IPMasq: true, DeclRange: block.DefRange}
	content, diags := block.Body.Content(networkSchema)

	var cidr string
	if attr, d := decodeAttr(content, "cidr", ctx, &cidr); attr != nil && !d.HasErrors() {
		p, err := netip.ParsePrefix(cidr)
		switch {
		case err != nil || !p.Addr().Is4():
			diags = append(diags, attrError(attr, "Invalid cidr", fmt.Sprintf("cidr must be an IPv4 network such as \"10.1.0.0/16\", got %q.", cidr)))
		case p.Masked() != p:
			diags = append(diags, attrError(attr, "Invalid cidr", fmt.Sprintf("%s has host bits set; did you mean %s?", p, p.Masked())))
		case p.Bits() > 28: // four /30 subnets at least, as flannel requires
			diags = append(diags, attrError(attr, "Invalid cidr", fmt.Sprintf("%s is too small for an overlay; use /28 or larger.", p)))
		default:
			n.CIDR = p
		}
	} else {
		diags = append(diags, d...)
	}

	attr, d := decodeAttr(content, "subnet_len", ctx, &n.SubnetLen)
	diags = append(diags, d...)
	// As flannel: at least four subnets in the network, none smaller than /30.
	if attr != nil && n.CIDR.IsValid() && (n.SubnetLen < n.CIDR.Bits()+2 || n.SubnetLen > 30) {
		diags = append(diags, attrError(attr, "Invalid subnet_len",
			fmt.Sprintf("subnet_len must be between /%d (four subnets of the network's /%d) and /30, got %d.", n.CIDR.Bits()+2, n.CIDR.Bits(), n.SubnetLen)))
	}
	if attr == nil && n.CIDR.IsValid() {
		// flannel's default: /24 subnets, or a quarter of a small network.
		n.SubnetLen = 24
		if n.CIDR.Bits() > 22 {
			n.SubnetLen = n.CIDR.Bits() + 2
		}
	}

	attr, d = decodeAttr(content, "backend", ctx, &n.Backend)
	diags = append(diags, d...)
	if attr != nil {
		switch n.Backend {
		case "vxlan", "host-gw", "udp":
		case "aws-vpc": // checked against the provider in checkOverlap
			n.backendRange = attr.Expr.Range().Ptr()
		default:
			diags = append(diags, attrError(attr, "Unsupported backend", fmt.Sprintf("backend %q is not one of vxlan, host-gw, udp, aws-vpc.", n.Backend)))
		}
	}
	for _, f := range []struct {
		name     string
		target   *int
		min, max int
	}{{"vni", &n.VNI, 1, 1<<24 - 1}, {"port", &n.Port, 1, 65535}} {
		attr, d := decodeAttr(content, f.name, ctx, f.target)
		diags = append(diags, d...)
		if attr != nil && !d.HasErrors() && (*f.target < f.min || *f.target > f.max) {
			diags = append(diags, attrError(attr, "Invalid "+f.name, fmt.Sprintf("%s must be between %d and %d, got %d.", f.name, f.min, f.max, *f.target)))
		}
	}
	attr, d = decodeAttr(content, "bridge", ctx, &n.Bridge)
	diags = append(diags, d...)
	if attr != nil && !bridgeRE.MatchString(n.Bridge) {
		diags = append(diags, attrError(attr, "Invalid bridge", fmt.Sprintf("bridge must be an interface name of 1 to 15 letters, digits, '.', '_' or '-', got %q.", n.Bridge)))
	}
	_, d = decodeAttr(content, "ip_masq", ctx, &n.IPMasq)
	diags = append(diags, d...)
	return n, diags
}

// checkOverlap refuses an overlay that overlaps the machines' own network:
// routes for the overlay would capture the underlay's traffic. It also
// checks the backend against the provider (checkAWSVPC).
func (n *Network) checkOverlap(p *Provider) hcl.Diagnostics {
	if d := n.checkAWSVPC(p); d != nil {
		return d
	}
	if p.Local == nil || !p.Local.CIDR.IsValid() || !n.CIDR.IsValid() || !n.CIDR.Overlaps(p.Local.CIDR) {
		return nil
	}
	return hcl.Diagnostics{{
		Severity: hcl.DiagError,
		Summary:  "Overlapping networks",
		Detail:   fmt.Sprintf("The network cidr %s overlaps the local provider's cidr %s; the overlay needs a range of its own.", n.CIDR, p.Local.CIDR),
		Subject:  n.DeclRange.Ptr(),
	}}
}

// checkAWSVPC allows backend "aws-vpc" (routes in the VPC route table, as
// flannel's aws-vpc) only with provider "aws" whose overlay = "aws-vpc",
// which gives the nodes' role the route-table permissions it needs.
func (n *Network) checkAWSVPC(p *Provider) hcl.Diagnostics {
	if n.Backend != "aws-vpc" || n.backendRange == nil || p.Type == "" {
		return nil
	}
	bad := func(detail string) hcl.Diagnostics {
		return hcl.Diagnostics{{Severity: hcl.DiagError, Summary: "Unsupported backend", Detail: detail, Subject: n.backendRange}}
	}
	switch {
	case p.Type != "aws":
		return bad(fmt.Sprintf(`backend "aws-vpc" routes the overlay through an AWS VPC route table, so it needs provider "aws"; this file's provider is %q: use backend "vxlan" (or "host-gw" when all machines share one L2 segment).`, p.Type))
	case p.AWS != nil && p.AWS.Overlay != "aws-vpc":
		return bad(fmt.Sprintf(`backend "aws-vpc" needs overlay = "aws-vpc" in provider "aws" (it gives the nodes' role the route-table permissions), but the provider's overlay is %q: set overlay = "aws-vpc" there, or use backend "vxlan".`, p.AWS.Overlay))
	}
	return nil
}
