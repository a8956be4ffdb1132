package config

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// VagrantProvider runs each node on a Vagrant machine, as coreos-vagrant
// did:
//
//	provider "vagrant" {
//	  box      = "flatcar-stable"
//	  provider = "virtualbox"
//	  network  = "172.17.8.0/24"
//	  memory   = 1024
//	  cpus     = 1
//	}
type VagrantProvider struct {
	// Box is the Vagrant box every machine is made from.
	Box string
	// Provider is the Vagrant provider: one of vagrantProviders.
	Provider string
	// Network is the machines' private network. Node n, counting from 1
	// across all groups in file order, gets host address .100+n.
	Network netip.Prefix
	// Memory is each machine's memory in MiB; CPUs its processors.
	Memory int
	CPUs   int
}

const (
	defaultVagrantProvider = "virtualbox"
	defaultVagrantMemory   = 1024
	defaultVagrantCPUs     = 1
	minVagrantMemory       = 512
	// vagrantHostOffset: node n gets .100+n, as in coreos-vagrant.
	vagrantHostOffset = 100
)

// vagrantProviders are the Vagrant providers the vagrant provider
// supports (providers/vagrant.Providers, which a test keeps in step).
var vagrantProviders = []string{"libvirt", "parallels", "virtualbox", "vmware_desktop"}

// vagrantUnsupported are Vagrant providers Vagrant has but machines can't
// be made with, and why.
var vagrantUnsupported = map[string]string{
	"docker": "the docker provider runs containers, not boxes, and has no memory or cpus",
	"hyperv": "the hyperv provider ignores private_network, so a machine would not get its address",
}

var (
	defaultVagrantNetwork = netip.MustParsePrefix("172.17.8.0/24")
	// rfc1918 are the private IPv4 networks.
	rfc1918 = []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
	}
	vagrantSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "box", Required: true},
			{Name: "provider"},
			{Name: "network"},
			{Name: "memory"},
			{Name: "cpus"},
		},
	}
)

func decodeVagrant(body hcl.Body, ctx *hcl.EvalContext, _ string, p *Provider) hcl.Diagnostics {
	content, diags := body.Content(vagrantSchema)
	v := &VagrantProvider{
		Provider: defaultVagrantProvider,
		Network:  defaultVagrantNetwork,
		Memory:   defaultVagrantMemory,
		CPUs:     defaultVagrantCPUs,
	}
	p.Vagrant = v

	attr, d := decodeAttr(content, "box", ctx, &v.Box)
	diags = append(diags, d...)
	if attr != nil && strings.TrimSpace(v.Box) == "" {
		diags = append(diags, attrError(attr, "Invalid box",
			`box must name a Vagrant box, such as "flatcar-stable".`))
	}

	attr, d = decodeAttr(content, "provider", ctx, &v.Provider)
	diags = append(diags, d...)
	if attr != nil && !contains(vagrantProviders, v.Provider) {
		detail := fmt.Sprintf("provider must be one of %s, got %q.", strings.Join(vagrantProviders, ", "), v.Provider)
		if why, ok := vagrantUnsupported[v.Provider]; ok {
			detail = fmt.Sprintf("provider %q is not supported: %s; use one of %s.", v.Provider, why, strings.Join(vagrantProviders, ", "))
		}
		diags = append(diags, attrError(attr, "Unsupported Vagrant provider", detail))
	}

	if _, ok := content.Attributes["network"]; ok {
		// A network that is set but invalid leaves Network invalid, so
		// that no capacity error is reported against it.
		v.Network = netip.Prefix{}
		var s string
		attr, d := decodeAttr(content, "network", ctx, &s)
		diags = append(diags, d...)
		if attr != nil {
			if n, problem := parseVagrantNetwork(s); problem != "" {
				diags = append(diags, attrError(attr, "Invalid network", problem))
			} else {
				v.Network = n
			}
		}
	}

	attr, d = decodeAttr(content, "memory", ctx, &v.Memory)
	diags = append(diags, d...)
	if attr != nil && v.Memory < minVagrantMemory {
		diags = append(diags, attrError(attr, "Invalid memory",
			fmt.Sprintf("memory is in MiB and must be at least %d, got %d.", minVagrantMemory, v.Memory)))
	}
	attr, d = decodeAttr(content, "cpus", ctx, &v.CPUs)
	diags = append(diags, d...)
	if attr != nil && v.CPUs < 1 {
		diags = append(diags, attrError(attr, "Invalid cpus",
			fmt.Sprintf("cpus must be at least 1, got %d.", v.CPUs)))
	}
	return diags
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

// parseVagrantNetwork parses the machines' private network, or says what
// is wrong with it.
func parseVagrantNetwork(s string) (netip.Prefix, string) {
	n, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !n.Addr().Is4():
		return n, fmt.Sprintf(`network must be an IPv4 network such as "172.17.8.0/24", got %q.`, s)
	case n != n.Masked():
		return n, fmt.Sprintf("network %s has host bits set; did you mean %s?", n, n.Masked())
	}
	private := false
	for _, p := range rfc1918 {
		private = private || p.Bits() <= n.Bits() && p.Contains(n.Addr())
	}
	if !private {
		return n, fmt.Sprintf("network %s is not a private network: it must be within 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 (RFC 1918).", n)
	}
	if fit := vagrantFit(n); fit < 1 {
		return n, fmt.Sprintf("network %s has no room for a machine: machine n gets host address .%d+n; use a /25 or wider.", n, vagrantHostOffset)
	}
	return n, ""
}

// vagrantFit is how many machines the network has room for: from .101 to
// the address before the broadcast address.
func vagrantFit(n netip.Prefix) int {
	return 1<<(32-n.Bits()) - vagrantHostOffset - 2
}

func (p *VagrantProvider) maxNodes() (int, string, bool) {
	if !p.Network.IsValid() {
		return 0, "", false
	}
	fit := vagrantFit(p.Network)
	return fit, fmt.Sprintf("network %s has room for %d machines (machine n gets host address .%d+n, below the broadcast address); widen network or lower desired_capacity.",
		p.Network, fit, vagrantHostOffset), true
}
