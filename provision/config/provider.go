package config

import (
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Provider says where the cluster's machines run. Type is the provider
// block's label, and the field for that type holds its settings; the others
// are nil.
type Provider struct {
	Type      string
	Local     *LocalProvider
	SSH       *SSHProvider
	PXE       *PXEProvider
	Vagrant   *VagrantProvider
	AWS       *AWSProvider
	DeclRange hcl.Range
}

// LocalProvider runs every node on this host.
type LocalProvider struct {
	// CIDR is the nodes' network. Node n, counting from 1 across all groups
	// in file order, gets host address .10+n.
	CIDR netip.Prefix
}

// providerDecoders decode a provider block's body, by type label; dir is
// the cluster file's directory, which relative paths are relative to. Each
// provider has its own schema; adding a provider means adding an entry.
var providerDecoders = map[string]func(body hcl.Body, ctx *hcl.EvalContext, dir string, p *Provider) hcl.Diagnostics{
	"local":   decodeLocal,
	"ssh":     decodeSSH,
	"pxe":     decodePXE,
	"vagrant": decodeVagrant,
	"aws":     decodeAWS,
}

// plannedProviders are part of the language but not of this version. They
// get their own message so a file written for a later version is not
// reported as a typo.
var plannedProviders []string

func decodeProvider(block *hcl.Block, ctx *hcl.EvalContext, dir string, p *Provider) hcl.Diagnostics {
	p.Type = block.Labels[0]
	p.DeclRange = block.DefRange
	if dec, ok := providerDecoders[p.Type]; ok {
		return dec(block.Body, ctx, dir, p)
	}
	d := &hcl.Diagnostic{
		Severity: hcl.DiagError,
		Summary:  fmt.Sprintf("Unsupported provider %q", p.Type),
		Detail:   "supported: " + strings.Join(slices.Sorted(maps.Keys(providerDecoders)), ", "),
		Subject:  block.LabelRanges[0].Ptr(),
		Context:  block.DefRange.Ptr(),
	}
	if slices.Contains(plannedProviders, p.Type) {
		d.Summary = "Provider not available yet"
		d.Detail = fmt.Sprintf("provider %q is not available yet in this version; %s.", p.Type, d.Detail)
	}
	return hcl.Diagnostics{d}
}

// Limits of the local provider.
const (
	// maxLocalNodes bounds what one host can reasonably run.
	maxLocalNodes = 250
	// localHostOffset leaves the low addresses of the CIDR (.1 to .10) to
	// the host side: bridge, gateway and services.
	localHostOffset = 10
	minLocalBits    = 16
	maxLocalBits    = 28
)

var (
	defaultLocalCIDR = netip.MustParsePrefix("10.77.0.0/24")
	localSchema      = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{{Name: "cidr"}},
	}
)

func decodeLocal(body hcl.Body, ctx *hcl.EvalContext, _ string, p *Provider) hcl.Diagnostics {
	content, diags := body.Content(localSchema)
	p.Local = &LocalProvider{CIDR: defaultLocalCIDR}
	if _, ok := content.Attributes["cidr"]; !ok {
		return diags
	}
	// A cidr that is set but invalid leaves CIDR invalid, so that no
	// capacity error is reported against a network nobody asked for.
	p.Local.CIDR = netip.Prefix{}
	var s string
	attr, d := decodeAttr(content, "cidr", ctx, &s)
	diags = append(diags, d...)
	if attr != nil {
		if cidr, problem := parseLocalCIDR(s); problem != "" {
			diags = append(diags, attrError(attr, "Invalid cidr", problem))
		} else {
			p.Local.CIDR = cidr
		}
	}
	return diags
}

// parseLocalCIDR parses a local provider's network, or says what is wrong
// with it.
func parseLocalCIDR(s string) (netip.Prefix, string) {
	cidr, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !cidr.Addr().Is4():
		return cidr, fmt.Sprintf(`cidr must be an IPv4 network such as "10.77.0.0/24", got %q.`, s)
	case cidr.Bits() < minLocalBits || cidr.Bits() > maxLocalBits:
		return cidr, fmt.Sprintf("cidr prefix length must be between /%d and /%d, got /%d.",
			minLocalBits, maxLocalBits, cidr.Bits())
	case cidr != cidr.Masked():
		return cidr, fmt.Sprintf("cidr %s has host bits set; did you mean %s?", cidr, cidr.Masked())
	}
	return cidr, ""
}

// A nodeLimiter is a provider that can run only so many nodes.
type nodeLimiter interface {
	// maxNodes is how many nodes the provider can run, and why no more;
	// ok is false when the limit is unknown because the settings it
	// depends on are in error, which is reported already.
	maxNodes() (limit int, why string, ok bool)
}

// limiter is the provider's settings as a nodeLimiter, or nil for a
// provider without a limit or whose block failed to decode.
func (p *Provider) limiter() nodeLimiter {
	switch {
	case p.Local != nil:
		return p.Local
	case p.SSH != nil:
		return p.SSH
	case p.Vagrant != nil:
		return p.Vagrant
	}
	return nil
}

func (p *LocalProvider) maxNodes() (int, string, bool) {
	limit, why := maxLocalNodes, fmt.Sprintf("the local provider runs at most %d nodes on one host; lower desired_capacity.", maxLocalNodes)
	if p.CIDR.IsValid() {
		// Node addresses start after .10 and stop before the broadcast address.
		if fit := 1<<(32-p.CIDR.Bits()) - localHostOffset - 2; fit < limit {
			limit, why = fit, fmt.Sprintf("cidr %s has room for %d nodes; widen cidr or lower desired_capacity.", p.CIDR, fit)
		}
	}
	return limit, why, true
}

// checkCapacity reports the node group whose desired_capacity takes the
// total past what the provider can run; capRanges[i] locates groups[i]'s.
func checkCapacity(p nodeLimiter, groups []NodeGroup, capRanges []hcl.Range) hcl.Diagnostics {
	limit, why, ok := p.maxNodes()
	if !ok {
		return nil
	}
	total := 0
	for _, g := range groups {
		total += min(g.DesiredCapacity, math.MaxInt-total) // saturate, not wrap
	}
	sum := 0
	for i, g := range groups {
		// Compared this way round so that a huge desired_capacity cannot
		// overflow the sum.
		if g.DesiredCapacity > limit-sum {
			return hcl.Diagnostics{{
				Severity: hcl.DiagError,
				Summary:  "Too many nodes",
				Detail:   fmt.Sprintf("The node groups ask for %d nodes in total, but %s", total, why),
				Subject:  capRanges[i].Ptr(),
			}}
		}
		sum += g.DesiredCapacity
	}
	return nil
}
