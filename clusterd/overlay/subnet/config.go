package subnet

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
)

// Config is flannel's network config, the JSON document at ConfigKey:
//
//	{"Network":"10.1.0.0/16","SubnetLen":24,"SubnetMin":"10.1.1.0","SubnetMax":"10.1.254.0",
//	 "Backend":{"Type":"vxlan","VNI":1,"Port":8472}}
//
// Zero fields mean flannel's defaults (see ParseConfig); Validate and every
// function that takes a Config apply them first, so a Config built in code
// needs only Network.
type Config struct {
	Network   netip.Prefix  `json:"Network"`
	SubnetLen int           `json:"SubnetLen,omitzero"`
	SubnetMin netip.Addr    `json:"SubnetMin,omitzero"`
	SubnetMax netip.Addr    `json:"SubnetMax,omitzero"`
	Backend   BackendConfig `json:"Backend"`
}

// BackendConfig is the "Backend" object of the network config. flannel lets
// each backend type add fields of its own; only these are understood here,
// and others are ignored when parsing (and so not written back by PutConfig).
type BackendConfig struct {
	Type string `json:"Type,omitempty"` // vxlan, host-gw, udp or aws-vpc
	VNI  int    `json:"VNI,omitzero"`   // vxlan network identifier
	Port int    `json:"Port,omitzero"`  // vxlan/udp port; 0 means the backend's default
}

// Backend types a network config may name.
const (
	BackendVXLAN  = "vxlan"
	BackendHostGW = "host-gw"
	BackendUDP    = "udp"
	BackendAWSVPC = "aws-vpc"
)

// maxVNI is the largest VXLAN network identifier: the field is 24 bits wide.
const maxVNI = 1<<24 - 1

// ParseConfig parses a network config as flannel writes and reads it, fills
// in the defaults flannel would, and validates the result.
//
// The defaults are flannel's, so that a config written by hand for flannel
// (often just {"Network": ...}) divides the network exactly as flannel
// would: SubnetLen is 24 if the network is a /22 or wider and its length
// plus 2 otherwise; SubnetMin is the second subnet (flannel skips the first,
// whose first address is the network address); SubnetMax is the last.
// Backend.Type defaults to vxlan (flannel's own default is the obsolete udp)
// and a vxlan VNI to 1. A Network that is not a network address
// ("10.1.5.0/16") is masked, as flannel does.
//
// Fields this package does not know are ignored, but a config that enables
// IPv6 is refused rather than half understood.
func ParseConfig(b []byte) (*Config, error) {
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	// flannel's dual-stack fields: an IPv6 overlay configured here would
	// silently not exist, which is worse than refusing it.
	var family struct {
		EnableIPv4  *bool
		EnableIPv6  bool
		IPv6Network string
	}
	if err := json.Unmarshal(b, &family); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidConfig, err)
	}
	switch {
	case family.EnableIPv6 || family.IPv6Network != "":
		return nil, fmt.Errorf("%w: EnableIPv6/IPv6Network: only IPv4 overlays are supported", ErrInvalidConfig)
	case family.EnableIPv4 != nil && !*family.EnableIPv4:
		return nil, fmt.Errorf("%w: EnableIPv4 is false: only IPv4 overlays are supported", ErrInvalidConfig)
	}
	cfg.Network = cfg.Network.Masked()
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// withDefaults returns a copy of c with flannel's defaults in its zero
// fields. It leaves fields alone when the ones they derive from are invalid,
// so that Validate reports the cause rather than a consequence.
func (c Config) withDefaults() Config {
	if !c.Network.IsValid() || !c.Network.Addr().Is4() {
		return c
	}
	bits := c.Network.Bits()
	if c.SubnetLen == 0 {
		switch {
		case bits <= 22:
			c.SubnetLen = 24
		case bits <= 28:
			// Four subnets, of which three are used once the first is
			// skipped: the least that is still a network of machines.
			c.SubnetLen = bits + 2
		}
		// Above /28 SubnetLen stays 0, and Validate says the network is
		// too small.
	}
	if c.SubnetLen > bits && c.SubnetLen <= 32 {
		base := addrToUint(c.Network.Addr())
		size := uint64(1) << (32 - c.SubnetLen)
		if !c.SubnetMin.IsValid() {
			c.SubnetMin = uintToAddr(base + size)
		}
		if !c.SubnetMax.IsValid() {
			c.SubnetMax = uintToAddr(base + uint64(1)<<(32-bits) - size)
		}
	}
	if c.Backend.Type == "" {
		c.Backend.Type = BackendVXLAN
	}
	if c.Backend.Type == BackendVXLAN && c.Backend.VNI == 0 {
		c.Backend.VNI = 1
	}
	return c
}

// Validate reports whether c, with defaults applied, is a usable network: an
// IPv4 network that holds at least four subnets of SubnetLen (at most /30,
// so each has room for a bridge and a machine), SubnetMin and SubnetMax
// aligned subnet addresses inside it in order, and a known backend. All the
// problems found are reported together, each naming its field.
func (c *Config) Validate() error {
	v := c.withDefaults()
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}

	switch {
	case !v.Network.IsValid():
		bad("Network is missing")
	case !v.Network.Addr().Is4():
		bad("Network %s is not IPv4: only IPv4 overlays are supported", v.Network)
	case v.Network != v.Network.Masked():
		bad("Network %s is not a network address (did you mean %s?)", v.Network, v.Network.Masked())
	case v.SubnetLen == 0:
		bad("Network %s is too small: the smallest useful network is a /28", v.Network)
	case v.SubnetLen > 30:
		bad("SubnetLen %d is too long: a subnet needs at least 4 addresses, so SubnetLen can be at most 30", v.SubnetLen)
	case v.SubnetLen < v.Network.Bits()+2:
		bad("SubnetLen %d is too short for Network %s: it must be at least %d, so that the network holds at least four subnets",
			v.SubnetLen, v.Network, v.Network.Bits()+2)
	default:
		// Only with a sound network and subnet length do the bounds mean
		// anything.
		minOK := checkBound(v, "SubnetMin", v.SubnetMin, bad)
		maxOK := checkBound(v, "SubnetMax", v.SubnetMax, bad)
		if minOK && maxOK && v.SubnetMax.Less(v.SubnetMin) {
			bad("SubnetMin %s is above SubnetMax %s", v.SubnetMin, v.SubnetMax)
		}
	}

	switch v.Backend.Type {
	case BackendVXLAN, BackendHostGW, BackendUDP, BackendAWSVPC:
	default:
		bad("Backend.Type %q is not a known backend: use %s, %s, %s or %s",
			v.Backend.Type, BackendVXLAN, BackendHostGW, BackendUDP, BackendAWSVPC)
	}
	if v.Backend.VNI < 0 || v.Backend.VNI > maxVNI {
		bad("Backend.VNI %d is out of range: a VNI is 0 to %d", v.Backend.VNI, maxVNI)
	}
	if v.Backend.Port < 0 || v.Backend.Port > 65535 {
		bad("Backend.Port %d is out of range: a port is 1 to 65535, or 0 for the backend's default", v.Backend.Port)
	}

	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, strings.Join(problems, "; "))
	}
	return nil
}

// checkBound reports whether a, the field called name, is the address of a
// subnet of v's network, reporting to bad if it is not.
func checkBound(v Config, name string, a netip.Addr, bad func(string, ...any)) bool {
	switch {
	case !a.Is4():
		bad("%s %s is not an IPv4 address", name, a)
	case !v.Network.Contains(a):
		bad("%s %s is outside Network %s", name, a, v.Network)
	case netip.PrefixFrom(a, v.SubnetLen).Masked().Addr() != a:
		bad("%s %s is not the start of a /%d subnet", name, a, v.SubnetLen)
	default:
		return true
	}
	return false
}

// sameSubnets reports whether a and b (both with defaults applied) divide
// the network into the same leasable subnets; backend settings may differ.
func sameSubnets(a, b Config) bool {
	return a.Network == b.Network && a.SubnetLen == b.SubnetLen &&
		a.SubnetMin == b.SubnetMin && a.SubnetMax == b.SubnetMax
}

// describe names the leasable part of the network for error messages:
// "10.1.0.0/16 (/24 subnets from 10.1.1.0 to 10.1.255.0)".
func (c Config) describe() string {
	return fmt.Sprintf("%s (/%d subnets from %s to %s)", c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax)
}

// The leasable subnets are numbered 0 to count()-1 from SubnetMin; these
// helpers, used only on a validated Config with defaults applied, convert
// between numbers and prefixes.

// count is how many subnets lie between SubnetMin and SubnetMax inclusive.
func (c Config) count() uint64 {
	return (addrToUint(c.SubnetMax)-addrToUint(c.SubnetMin))>>(32-c.SubnetLen) + 1
}

// subnet returns the i'th leasable subnet.
func (c Config) subnet(i uint64) netip.Prefix {
	return netip.PrefixFrom(uintToAddr(addrToUint(c.SubnetMin)+i<<(32-c.SubnetLen)), c.SubnetLen)
}

// index returns p's number, and false if p is not one of the leasable
// subnets (wrong length, unaligned, or outside SubnetMin–SubnetMax).
func (c Config) index(p netip.Prefix) (uint64, bool) {
	a := p.Addr()
	if !a.Is4() || p.Bits() != c.SubnetLen || p.Masked() != p ||
		a.Less(c.SubnetMin) || c.SubnetMax.Less(a) {
		return 0, false
	}
	return (addrToUint(a) - addrToUint(c.SubnetMin)) >> (32 - c.SubnetLen), true
}

// fits reports whether p is one of c's leasable subnets.
func (c Config) fits(p netip.Prefix) bool {
	_, ok := c.index(p)
	return ok
}

// addrToUint and uintToAddr do arithmetic on IPv4 addresses. uint64 rather
// than uint32 so that the end of 0.0.0.0/0 does not wrap.
func addrToUint(a netip.Addr) uint64 {
	b := a.As4()
	return uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
}

func uintToAddr(u uint64) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}
