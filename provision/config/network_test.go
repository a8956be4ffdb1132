package config

import (
	"net/netip"
	"strings"
	"testing"
)

const networkBase = "cluster \"c\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 1 }\n"

func TestNetworkBlock(t *testing.T) {
	cfg, diags := Parse([]byte(networkBase+"network {\n  cidr = \"10.1.0.0/16\"\n}\n"), "n.hcl", Inputs{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	want := Network{CIDR: netip.MustParsePrefix("10.1.0.0/16"), SubnetLen: 24, Backend: "vxlan", Bridge: "corral0", IPMasq: true}
	got := *cfg.Network
	got.DeclRange = want.DeclRange
	if got != want {
		t.Fatalf("network = %+v, want %+v", got, want)
	}
	cfg, diags = Parse([]byte(networkBase+`network {
  cidr = "10.9.0.0/20"
  subnet_len = 26
  backend = "udp"
  port = 9999
  bridge = "docker0"
  ip_masq = false
}
`), "n.hcl", Inputs{})
	if diags.HasErrors() {
		t.Fatal(diags.Error())
	}
	if n := cfg.Network; n.SubnetLen != 26 || n.Backend != "udp" || n.Port != 9999 || n.Bridge != "docker0" || n.IPMasq {
		t.Fatalf("network = %+v", n)
	}
	if cfg, _ := Parse([]byte(networkBase), "n.hcl", Inputs{}); cfg.Network != nil {
		t.Fatal("a file without a network block has an overlay")
	}
}

func TestNetworkErrors(t *testing.T) {
	cases := []struct{ body, want string }{
		{`cidr = "10.1.0.1/16"`, "did you mean 10.1.0.0/16"},
		{`cidr = "fd00::/64"`, "IPv4 network"},
		{"cidr = \"10.1.0.0/16\"\n  subnet_len = 16", "subnet_len must be between /18"},
		{"cidr = \"10.1.0.0/16\"\n  backend = \"gre\"", `backend "gre" is not one of`},
		{"cidr = \"10.1.0.0/16\"\n  vni = 0", "vni must be between 1"},
		{"cidr = \"10.1.0.0/16\"\n  bridge = \"much-too-long-bridge\"", "interface name"},
		{`cidr = "10.77.0.0/16"`, "overlaps the local provider's cidr 10.77.0.0/24"},
		{`subnet_len = 24`, `"cidr" is required`},
	}
	for _, tc := range cases {
		_, diags := Parse([]byte(networkBase+"network {\n  "+tc.body+"\n}\n"), "n.hcl", Inputs{})
		if !diags.HasErrors() || len(diags.Diags) != 1 || !strings.Contains(diags.Error(), tc.want) {
			t.Errorf("%q: want one error with %q, got %v", tc.body, tc.want, diags.Error())
		}
	}
	_, diags := Parse([]byte(networkBase+"network { cidr = \"10.1.0.0/16\" }\nnetwork { cidr = \"10.2.0.0/16\" }\n"), "n.hcl", Inputs{})
	if !strings.Contains(diags.Error(), "Duplicate network block") {
		t.Errorf("two network blocks: %v", diags.Error())
	}
}
