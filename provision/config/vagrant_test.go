package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/corral-dev/corral/providers/vagrant"
	"github.com/hashicorp/hcl/v2"
)

func TestVagrantDefaults(t *testing.T) {
	cfg := mustParse(t, lines(
		`cluster "c" {}`,
		`provider "vagrant" { box = "flatcar-stable" }`,
		`node_group "core" { desired_capacity = 3 }`,
	))
	want := &VagrantProvider{Box: "flatcar-stable", Provider: "virtualbox", Network: netip.MustParsePrefix("172.17.8.0/24"), Memory: 1024, CPUs: 1}
	if !reflect.DeepEqual(cfg.Provider.Vagrant, want) {
		t.Errorf("Vagrant = %+v, want %+v", cfg.Provider.Vagrant, want)
	}
	if cfg.Provider.Type != "vagrant" || cfg.Provider.Local != nil || cfg.Provider.SSH != nil {
		t.Errorf("Provider = %+v", cfg.Provider)
	}
	if len(cfg.Nodes()) != 3 {
		t.Errorf("%d nodes, want 3", len(cfg.Nodes()))
	}
}

func TestVagrantSettings(t *testing.T) {
	for _, prov := range vagrantProviders {
		t.Run(prov, func(t *testing.T) {
			cfg := mustParse(t, lines(
				`cluster "c" {}`,
				`provider "vagrant" {`,
				`  box      = "flatcar/flatcar-stable"`,
				`  provider = "`+prov+`"`,
				`  network  = "10.20.0.0/16"`,
				`  memory   = 2048`,
				`  cpus     = 2`,
				`}`,
				`node_group "core" { desired_capacity = 5 }`,
			))
			want := &VagrantProvider{Box: "flatcar/flatcar-stable", Provider: prov, Network: netip.MustParsePrefix("10.20.0.0/16"), Memory: 2048, CPUs: 2}
			if !reflect.DeepEqual(cfg.Provider.Vagrant, want) {
				t.Errorf("Vagrant = %+v, want %+v", cfg.Provider.Vagrant, want)
			}
		})
	}
}

// TestVagrantProvidersInStep: the file accepts exactly the Vagrant
// providers that providers/vagrant can drive.
func TestVagrantProvidersInStep(t *testing.T) {
	if got := vagrant.Providers(); !slices.Equal(got, vagrantProviders) {
		t.Errorf("providers/vagrant supports %q, the cluster file accepts %q", got, vagrantProviders)
	}
}

// TestVagrantCapacity: machine n gets .100+n, so a /24 has room for 154
// machines (.101 to .254) and a /25 for 26.
func TestVagrantCapacity(t *testing.T) {
	for _, tt := range []struct {
		network string
		fits    int
	}{{"172.17.8.0/24", 154}, {"192.168.56.0/25", 26}, {"10.0.0.0/23", 410}} {
		for _, n := range []int{tt.fits, tt.fits + 1} {
			src := lines(`cluster "c" {}`,
				`provider "vagrant" {`, `  box = "b"`, `  network = "`+tt.network+`"`, `}`,
				`node_group "a" { desired_capacity = 1 }`,
				fmt.Sprintf(`node_group "b" { desired_capacity = %d }`, n-1))
			_, diags := Parse(src, "file.hcl", Inputs{})
			if n == tt.fits && diags != nil {
				t.Errorf("%s with %d machines: %s", tt.network, n, diags.Error())
			}
			if n > tt.fits && (diags == nil || !strings.Contains(diags.Error(), fmt.Sprintf("has room for %d machines", tt.fits))) {
				t.Errorf("%s with %d machines: want a capacity error, got %v", tt.network, n, diags)
			}
		}
	}
}

// TestVagrantErrors checks that each rule of the vagrant provider reports
// exactly one error, on the offending attribute, with a precise summary
// and detail.
func TestVagrantErrors(t *testing.T) {
	const (
		cluster = `cluster "c" {}`
		group   = `node_group "core" { desired_capacity = 3 }`
	)
	// vagrantWith is the provider block with a box and the given
	// attributes, which start on line 4.
	vagrantWith := func(attrs ...string) []byte {
		ls := append([]string{cluster, `provider "vagrant" {`, `  box = "flatcar-stable"`}, attrs...)
		return lines(append(ls, `}`, group)...)
	}
	tests := []struct {
		name    string
		src     []byte
		line    int
		summary string
		detail  string
	}{
		{"no box", lines(cluster, `provider "vagrant" {`, `  memory = 1024`, `}`, group),
			2, "Missing required argument", `"box"`},
		{"empty box", lines(cluster, `provider "vagrant" {`, `  box = ""`, `}`, group),
			3, "Invalid box", `box must name a Vagrant box, such as "flatcar-stable".`},
		{"unknown provider", vagrantWith(`  provider = "qemu"`),
			4, "Unsupported Vagrant provider", `provider must be one of libvirt, parallels, virtualbox, vmware_desktop, got "qemu".`},
		{"docker", vagrantWith(`  provider = "docker"`),
			4, "Unsupported Vagrant provider", `provider "docker" is not supported: the docker provider runs containers, not boxes`},
		{"hyperv", vagrantWith(`  provider = "hyperv"`),
			4, "Unsupported Vagrant provider", `hyperv provider ignores private_network`},
		{"provider not a string", vagrantWith(`  provider = ["virtualbox"]`),
			4, "Incorrect attribute value type", `"provider"`},
		{"public network", vagrantWith(`  network = "8.8.8.0/24"`),
			4, "Invalid network", "network 8.8.8.0/24 is not a private network: it must be within 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16 (RFC 1918)."},
		{"just outside 172.16/12", vagrantWith(`  network = "172.32.0.0/24"`),
			4, "Invalid network", "network 172.32.0.0/24 is not a private network"},
		{"wider than 10/8", vagrantWith(`  network = "10.0.0.0/7"`),
			4, "Invalid network", "network 10.0.0.0/7 is not a private network"},
		{"IPv6 network", vagrantWith(`  network = "fd00::/64"`),
			4, "Invalid network", `network must be an IPv4 network such as "172.17.8.0/24", got "fd00::/64".`},
		{"not a network", vagrantWith(`  network = "172.17.8.1"`),
			4, "Invalid network", `got "172.17.8.1"`},
		{"host bits", vagrantWith(`  network = "172.17.8.1/24"`),
			4, "Invalid network", "network 172.17.8.1/24 has host bits set; did you mean 172.17.8.0/24?"},
		{"network too small", vagrantWith(`  network = "192.168.56.0/26"`),
			4, "Invalid network", "network 192.168.56.0/26 has no room for a machine: machine n gets host address .100+n; use a /25 or wider."},
		{"memory under 512", vagrantWith(`  memory = 256`),
			4, "Invalid memory", "memory is in MiB and must be at least 512, got 256."},
		{"memory not a number", vagrantWith(`  memory = "1G"`),
			4, "Incorrect attribute value type", `"memory"`},
		{"no cpus", vagrantWith(`  cpus = 0`),
			4, "Invalid cpus", "cpus must be at least 1, got 0."},
		{"negative cpus", vagrantWith(`  cpus = -2`),
			4, "Invalid cpus", "cpus must be at least 1, got -2."},
		{"unknown attribute", vagrantWith(`  ram = 1024`),
			4, "Unsupported argument", `"ram"`},
		{"capacity over the network", lines(cluster, `provider "vagrant" {`, `  box = "b"`, `  network = "192.168.56.0/25"`, `}`,
			`node_group "a" { desired_capacity = 20 }`, `node_group "b" {`, `  desired_capacity = 7`, `}`),
			8, "Too many nodes", "The node groups ask for 27 nodes in total, but network 192.168.56.0/25 has room for 26 machines (machine n gets host address .100+n, below the broadcast address); widen network or lower desired_capacity."},
		{"capacity over the default network", lines(cluster, `provider "vagrant" { box = "b" }`, `node_group "core" {`, `  desired_capacity = 155`, `}`),
			4, "Too many nodes", "network 172.17.8.0/24 has room for 154 machines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, diags := Parse(tt.src, "file.hcl", Inputs{})
			if cfg != nil {
				t.Errorf("Parse returned a Config along with errors")
			}
			if diags == nil || len(diags.Diags) != 1 {
				t.Fatalf("want one diagnostic, got:\n%v", diags)
			}
			d := diags.Diags[0]
			if d.Severity != hcl.DiagError || d.Subject == nil {
				t.Fatalf("want an error with a subject, got %s", diags.Error())
			}
			if d.Subject.Filename != "file.hcl" || d.Subject.Start.Line != tt.line {
				t.Errorf("subject = %s, want file.hcl line %d", d.Subject, tt.line)
			}
			if d.Summary != tt.summary {
				t.Errorf("summary %q, want %q", d.Summary, tt.summary)
			}
			if !strings.Contains(d.Detail, tt.detail) {
				t.Errorf("detail %q does not mention %q", d.Detail, tt.detail)
			}
		})
	}
}
