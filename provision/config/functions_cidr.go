package config

import (
	"fmt"
	"math/big"
	"net/netip"
	"strings"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/gocty"
)

// The CIDR functions are Terraform's, for IPv4 and IPv6 alike, with its
// error messages. Addresses are computed as big integers so that IPv6's 128
// bits need no special case.

var cidrSubnetFunc = function.New(&function.Spec{
	Description: "Calculates a subnet address within a given IP network address prefix.",
	Params: []function.Parameter{
		{Name: "prefix", Type: cty.String},
		{Name: "newbits", Type: cty.Number},
		{Name: "netnum", Type: cty.Number},
	},
	Type: function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		p, err := parseCIDR(args[0])
		if err != nil {
			return cty.NilVal, err
		}
		var newbits int
		if err := gocty.FromCtyValue(args[1], &newbits); err != nil {
			return cty.NilVal, function.NewArgError(1, err)
		}
		if newbits < 0 {
			return cty.NilVal, function.NewArgErrorf(1, "must not be negative, got %d", newbits)
		}
		netnum, err := bigInt(args[2], 2)
		if err != nil {
			return cty.NilVal, err
		}
		bits, width := p.Bits(), p.Addr().BitLen()
		if bits+newbits > width {
			return cty.NilVal, fmt.Errorf("insufficient address space to extend prefix of %d by %d", bits, newbits)
		}
		if netnum.Sign() < 0 || netnum.BitLen() > newbits {
			return cty.NilVal, fmt.Errorf("prefix extension of %d does not accommodate a subnet numbered %s", newbits, netnum)
		}
		start := new(big.Int).Lsh(netnum, uint(width-bits-newbits))
		start.Add(start, addrInt(p.Addr()))
		return cty.StringVal(netip.PrefixFrom(intAddr(start, p.Addr()), bits+newbits).String()), nil
	},
})

var cidrHostFunc = function.New(&function.Spec{
	Description: "Calculates a full host IP address within a given IP network address prefix; a negative hostnum counts back from the last address.",
	Params: []function.Parameter{
		{Name: "prefix", Type: cty.String},
		{Name: "hostnum", Type: cty.Number},
	},
	Type: function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		p, err := parseCIDR(args[0])
		if err != nil {
			return cty.NilVal, err
		}
		hostnum, err := bigInt(args[1], 1)
		if err != nil {
			return cty.NilVal, err
		}
		hostLen := p.Addr().BitLen() - p.Bits()
		size := new(big.Int).Lsh(big.NewInt(1), uint(hostLen))
		n := new(big.Int).Set(hostnum)
		if n.Sign() < 0 {
			n.Add(n, size) // -1 is the last address
		}
		if n.Sign() < 0 || n.Cmp(size) >= 0 {
			return cty.NilVal, fmt.Errorf("prefix of %d does not accommodate a host numbered %s", p.Bits(), hostnum)
		}
		n.Add(n, addrInt(p.Addr()))
		return cty.StringVal(intAddr(n, p.Addr()).String()), nil
	},
})

var cidrNetmaskFunc = function.New(&function.Spec{
	Description: "Converts an IPv4 address prefix given in CIDR notation into a subnet mask address.",
	Params:      []function.Parameter{{Name: "prefix", Type: cty.String}},
	Type:        function.StaticReturnType(cty.String),
	Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
		p, err := parseCIDR(args[0])
		if err != nil {
			return cty.NilVal, err
		}
		if !p.Addr().Is4() {
			return cty.NilVal, fmt.Errorf("IPv6 addresses cannot have a netmask: %s", args[0].AsString())
		}
		mask := new(big.Int).Lsh(big.NewInt(1), 32)
		mask.Sub(mask, new(big.Int).Lsh(big.NewInt(1), uint(32-p.Bits())))
		return cty.StringVal(intAddr(mask, p.Addr()).String()), nil
	},
})

// parseCIDR parses a function's prefix argument (always the first). As in
// Terraform, host bits may be set and are ignored: cidrsubnet("10.0.0.5/24",
// …) works within 10.0.0.0/24.
func parseCIDR(v cty.Value) (netip.Prefix, error) {
	s := v.AsString()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		// netip's message repeats the call; keep only the reason.
		msg := err.Error()
		if _, reason, ok := strings.Cut(msg, "): "); ok {
			msg = reason
		}
		return p, function.NewArgErrorf(0, "invalid CIDR expression %q: %s", s, msg)
	}
	return p.Masked(), nil
}

// bigInt reads a whole-number argument, which for IPv6 may not fit in 64
// bits.
func bigInt(v cty.Value, arg int) (*big.Int, error) {
	n, acc := v.AsBigFloat().Int(nil)
	if acc != big.Exact {
		return nil, function.NewArgErrorf(arg, "must be a whole number, got %s", v.AsBigFloat().Text('f', -1))
	}
	return n, nil
}

func addrInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

// intAddr is the address n, of the same family as like. n must fit.
func intAddr(n *big.Int, like netip.Addr) netip.Addr {
	a, _ := netip.AddrFromSlice(n.FillBytes(make([]byte, like.BitLen()/8)))
	return a
}
