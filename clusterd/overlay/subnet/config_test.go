package subnet_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

// Configs as flannel's documentation and users write them, and what flannel
// makes of them.
func TestParseConfigFlannelExamples(t *testing.T) {
	tests := []struct {
		name string
		json string
		want subnet.Config
	}{{
		name: "flannel README",
		json: `{"Network":"10.1.0.0/16","Backend":{"Type":"vxlan"}}`,
		want: subnet.Config{Network: pfx("10.1.0.0/16"), SubnetLen: 24, SubnetMin: addr("10.1.1.0"), SubnetMax: addr("10.1.255.0"),
			Backend: subnet.BackendConfig{Type: "vxlan", VNI: 1}},
	}, {
		name: "network only",
		json: `{"Network":"10.0.0.0/8"}`,
		want: subnet.Config{Network: pfx("10.0.0.0/8"), SubnetLen: 24, SubnetMin: addr("10.0.1.0"), SubnetMax: addr("10.255.255.0"),
			Backend: subnet.BackendConfig{Type: "vxlan", VNI: 1}},
	}, {
		name: "a /22 still gets /24s",
		json: `{"Network":"10.1.0.0/22"}`,
		want: subnet.Config{Network: pfx("10.1.0.0/22"), SubnetLen: 24, SubnetMin: addr("10.1.1.0"), SubnetMax: addr("10.1.3.0"),
			Backend: subnet.BackendConfig{Type: "vxlan", VNI: 1}},
	}, {
		name: "a smaller network is split in four",
		json: `{"Network":"10.1.0.0/24","Backend":{"Type":"host-gw"}}`,
		want: subnet.Config{Network: pfx("10.1.0.0/24"), SubnetLen: 26, SubnetMin: addr("10.1.0.64"), SubnetMax: addr("10.1.0.192"),
			Backend: subnet.BackendConfig{Type: "host-gw"}},
	}, {
		name: "everything explicit",
		json: `{"Network":"10.1.0.0/16","SubnetLen":20,"SubnetMin":"10.1.16.0","SubnetMax":"10.1.64.0",
			"Backend":{"Type":"vxlan","VNI":42,"Port":4789}}`,
		want: subnet.Config{Network: pfx("10.1.0.0/16"), SubnetLen: 20, SubnetMin: addr("10.1.16.0"), SubnetMax: addr("10.1.64.0"),
			Backend: subnet.BackendConfig{Type: "vxlan", VNI: 42, Port: 4789}},
	}, {
		name: "host bits in Network are masked, as flannel does",
		json: `{"Network":"10.1.5.0/16","Backend":{"Type":"udp","Port":8285}}`,
		want: subnet.Config{Network: pfx("10.1.0.0/16"), SubnetLen: 24, SubnetMin: addr("10.1.1.0"), SubnetMax: addr("10.1.255.0"),
			Backend: subnet.BackendConfig{Type: "udp", Port: 8285}},
	}, {
		name: "fields for other flannel features are ignored",
		json: `{"Network":"10.1.0.0/16","EnableIPv4":true,"Backend":{"Type":"vxlan","DirectRouting":true,"GBP":false}}`,
		want: subnet.Config{Network: pfx("10.1.0.0/16"), SubnetLen: 24, SubnetMin: addr("10.1.1.0"), SubnetMax: addr("10.1.255.0"),
			Backend: subnet.BackendConfig{Type: "vxlan", VNI: 1}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := subnet.ParseConfig([]byte(tt.json))
			if err != nil {
				t.Fatalf("ParseConfig: %v", err)
			}
			if *got != tt.want {
				t.Errorf("ParseConfig =\n %+v\nwant\n %+v", *got, tt.want)
			}
		})
	}
}

func TestConfigJSONRoundTrip(t *testing.T) {
	cfg, err := subnet.ParseConfig([]byte(`{"Network":"10.1.0.0/16","SubnetMax":"10.1.254.0","Backend":{"Type":"vxlan","Port":8472}}`))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"Network":"10.1.0.0/16","SubnetLen":24,"SubnetMin":"10.1.1.0","SubnetMax":"10.1.254.0","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`
	if string(b) != want {
		t.Errorf("Marshal =\n %s\nwant\n %s", b, want)
	}
	back, err := subnet.ParseConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	if *back != *cfg {
		t.Errorf("round trip = %+v, want %+v", *back, *cfg)
	}

	// Zero fields are left out, so that flannel's defaults apply to them.
	b, err = json.Marshal(&subnet.Config{Network: pfx("10.2.0.0/16"), Backend: subnet.BackendConfig{Type: "host-gw"}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"Network":"10.2.0.0/16","Backend":{"Type":"host-gw"}}`; string(b) != want {
		t.Errorf("Marshal of a sparse config = %s, want %s", b, want)
	}
}

func TestConfigValidationErrors(t *testing.T) {
	base := subnet.Config{Network: pfx("10.1.0.0/16")}
	with := func(f func(*subnet.Config)) subnet.Config {
		c := base
		f(&c)
		return c
	}
	tests := []struct {
		name string
		cfg  subnet.Config
		want string // each problem's message names its field
	}{
		{"no network", subnet.Config{}, "Network is missing"},
		{"IPv6", subnet.Config{Network: pfx("fd00::/64")}, "Network fd00::/64 is not IPv4"},
		{"IPv4-mapped", subnet.Config{Network: pfx("::ffff:10.1.0.0/112")}, "is not IPv4"},
		{"host bits", subnet.Config{Network: pfx("10.1.5.0/16")}, "Network 10.1.5.0/16 is not a network address (did you mean 10.1.0.0/16?)"},
		{"tiny network", subnet.Config{Network: pfx("10.1.0.0/29")}, "Network 10.1.0.0/29 is too small"},
		{"SubnetLen too long", with(func(c *subnet.Config) { c.SubnetLen = 31 }), "SubnetLen 31 is too long"},
		{"SubnetLen too short", with(func(c *subnet.Config) { c.SubnetLen = 17 }), "SubnetLen 17 is too short for Network 10.1.0.0/16: it must be at least 18"},
		{"SubnetMin outside", with(func(c *subnet.Config) { c.SubnetMin = addr("10.2.0.0") }), "SubnetMin 10.2.0.0 is outside Network 10.1.0.0/16"},
		{"SubnetMin unaligned", with(func(c *subnet.Config) { c.SubnetMin = addr("10.1.1.1") }), "SubnetMin 10.1.1.1 is not the start of a /24 subnet"},
		{"SubnetMin IPv6", with(func(c *subnet.Config) { c.SubnetMin = addr("fd00::") }), "SubnetMin fd00:: is not an IPv4 address"},
		{"SubnetMax outside", with(func(c *subnet.Config) { c.SubnetMax = addr("10.0.255.0") }), "SubnetMax 10.0.255.0 is outside Network 10.1.0.0/16"},
		{"SubnetMax unaligned", with(func(c *subnet.Config) { c.SubnetMax = addr("10.1.9.128") }), "SubnetMax 10.1.9.128 is not the start of a /24 subnet"},
		{"Min above Max", with(func(c *subnet.Config) { c.SubnetMin, c.SubnetMax = addr("10.1.9.0"), addr("10.1.8.0") }), "SubnetMin 10.1.9.0 is above SubnetMax 10.1.8.0"},
		{"backend type", with(func(c *subnet.Config) { c.Backend.Type = "ipsec" }), `Backend.Type "ipsec" is not a known backend`},
		{"VNI", with(func(c *subnet.Config) { c.Backend.VNI = 1 << 24 }), "Backend.VNI 16777216 is out of range"},
		{"port", with(func(c *subnet.Config) { c.Backend.Port = 70000 }), "Backend.Port 70000 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if err == nil {
				t.Fatalf("Validate(%+v) = nil, want an error containing %q", tt.cfg, tt.want)
			}
			if !errors.Is(err, subnet.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate(%+v) = %q, want ErrInvalidConfig containing %q", tt.cfg, err, tt.want)
			}
		})
	}

	if err := base.Validate(); err != nil {
		t.Errorf("Validate(%+v) = %v, want nil", base, err)
	}
	// Independent problems are reported together.
	two := with(func(c *subnet.Config) { c.SubnetMin = addr("10.1.1.1"); c.Backend.Port = -1 })
	err := two.Validate()
	if err == nil || !strings.Contains(err.Error(), "SubnetMin") || !strings.Contains(err.Error(), "Backend.Port") {
		t.Errorf("Validate with two problems = %v, want both named", err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct{ json, want string }{
		{`{"Network":`, "invalid network config"},
		{`{"Network":"10.1.0.0"}`, "invalid network config"}, // an address, not a prefix
		{`{"Network":"10.1.0.0/16","SubnetLen":"24"}`, "invalid network config"},
		{`{"Network":"10.1.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/56"}`, "only IPv4 overlays are supported"},
		{`{"Network":"10.1.0.0/16","EnableIPv4":false}`, "only IPv4 overlays are supported"},
		{`{"Network":"10.1.0.0/16","SubnetLen":8}`, "SubnetLen 8 is too short"},
		{`{"Network":"10.1.0.0/16","Backend":{"Type":"gre"}}`, `Backend.Type "gre"`},
	}
	for _, tt := range tests {
		_, err := subnet.ParseConfig([]byte(tt.json))
		if !errors.Is(err, subnet.ErrInvalidConfig) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseConfig(%s) = %v, want ErrInvalidConfig containing %q", tt.json, err, tt.want)
		}
	}
}
