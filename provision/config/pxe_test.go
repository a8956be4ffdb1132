package config

import (
	"net"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const pxeProvider = `provider "pxe" {
  listen  = "10.0.0.1:8080"
  tftp    = true
  network = "10.0.0.0/24"
}`

func pxeFiles() map[string]string {
	return map[string]string{"assets/vmlinuz": "kernel", "assets/initrd.img": "initrd"}
}

// The example: three named machines, one with metadata, booting a
// kernel and initrd beside the file.
func TestPXE(t *testing.T) {
	src := `cluster "metal" {}
` + pxeProvider + `
node_group "metal" {
  desired_capacity = 3
  machine "node1" {
    mac      = "52:54:00:A1:00:01"
    metadata = { rack = "r1" }
  }
  machine "node2" { mac = "52-54-00-a1-00-02" }
  machine "node3" {
    mac  = "52:54:00:a1:00:03"
    uuid = "a1b2c3d4-0000-0000-0000-000000000003"
  }
  mac_range {
    from = "52:54:00:a1:01:00"
    to   = "52:54:00:a1:01:ff"
  }
  boot {
    kernel = "assets/vmlinuz"
    initrd = ["assets/initrd.img"]
    args   = ["console=ttyS0"]
  }
  install_to_disk = false
}
`
	cfg := mustParseIn(t, src, Inputs{}, pxeFiles())
	p := cfg.Provider.PXE
	if p == nil || p.Listen != "10.0.0.1:8080" || p.URL != "http://10.0.0.1:8080" || !p.TFTP || p.Network.String() != "10.0.0.0/24" {
		t.Fatalf("provider: %+v", p)
	}
	g := cfg.NodeGroups[0]
	dir, _ := filepath.Abs(".")
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	want := &PXEGroup{
		Machines: []BareMetal{
			{Name: "node1", MAC: mac("52:54:00:a1:00:01"), Metadata: map[string]string{"rack": "r1"}},
			{Name: "node2", MAC: mac("52:54:00:a1:00:02")},
			{Name: "node3", MAC: mac("52:54:00:a1:00:03"), UUID: "a1b2c3d4-0000-0000-0000-000000000003"},
		},
		Ranges: []MACRange{{mac("52:54:00:a1:01:00"), mac("52:54:00:a1:01:ff")}},
		Boot: &Boot{Kernel: filepath.Join(dir, "assets/vmlinuz"), Initrds: []string{filepath.Join(dir, "assets/initrd.img")},
			Args: []string{"console=ttyS0"}},
	}
	if !reflect.DeepEqual(g.PXE, want) {
		t.Errorf("group:\n got %+v\nwant %+v", g.PXE, want)
	}
	if names := g.NodeNames(); !reflect.DeepEqual(names, []string{"node1", "node2", "node3"}) {
		t.Errorf("node names %v", names)
	}
	if !g.PXE.Ranges[0].Contains(mac("52:54:00:a1:01:7f")) || g.PXE.Ranges[0].Contains(mac("52:54:00:a1:02:00")) {
		t.Error("MACRange.Contains")
	}
}

func TestPXEErrors(t *testing.T) {
	group := func(body ...string) string {
		return `cluster "c" {}
` + pxeProvider + `
node_group "metal" {
` + strings.Join(body, "\n") + `
}
`
	}
	boot := `  boot { kernel = "assets/vmlinuz" }`
	tests := []struct {
		name, src, summary, detail string
		line                       int
	}{
		{"bad MAC", group(`  desired_capacity = 1`, `  machine "a" { mac = "52:54:00" }`, boot),
			"Invalid MAC address", `"52:54:00" is not an Ethernet MAC address`, 9},
		{"no boot block", group(`  desired_capacity = 1`, `  machine "a" { mac = "52:54:00:00:00:01" }`),
			"Missing boot block", `Node group "metal" of provider "pxe" needs a boot block`, 7},
		{"more nodes than machines", group(`  desired_capacity = 2`, `  machine "a" { mac = "52:54:00:00:00:01" }`, boot),
			"Too many nodes", `desired_capacity is 2, but node group "metal" names 1 machines`, 8},
		{"duplicate MAC", group(`  desired_capacity = 2`, `  machine "a" { mac = "52:54:00:00:00:01" }`, `  machine "b" { mac = "52-54-00-00-00-01" }`, boot),
			"Duplicate MAC address", `Machine "b" of node group "metal" has MAC 52:54:00:00:00:01, as machine "a" does.`, 7},
		{"duplicate machine", group(`  desired_capacity = 1`, `  machine "a" { mac = "52:54:00:00:00:01" }`, `  machine "a" { mac = "52:54:00:00:00:02" }`, boot),
			`Duplicate machine "a"`, `already has a machine "a"`, 10},
		{"boot file missing", group(`  desired_capacity = 0`, `  boot { kernel = "assets/nope" }`),
			"Boot file not found", `assets/nope: stat`, 9},
		{"range backwards", group(`  desired_capacity = 0`, `  mac_range {`, `    from = "52:54:00:00:00:09"`, `    to = "52:54:00:00:00:01"`, `  }`, boot),
			"Invalid mac_range", "to 52:54:00:00:00:01 is below from 52:54:00:00:00:09.", 11},
		{"install_to_disk with Corral's initramfs", group(`  desired_capacity = 0`, `  install_to_disk = true`, boot),
			"install_to_disk needs an installer", `boots Corral's initramfs, which runs from memory`, 7},
		{"machines without provider pxe", `cluster "c" {}
provider "local" {}
node_group "metal" {
  desired_capacity = 1
  machine "a" { mac = "52:54:00:00:00:01" }
}
`, `Bare-metal settings without provider "pxe"`, `Node group "metal" has machine`, 3},
		{"listen on any address without url", `cluster "c" {}
provider "pxe" {
  listen  = "0.0.0.0:8080"
  network = "10.0.0.0/24"
}
node_group "metal" {
  desired_capacity = 0
` + boot + `
}
`, "Missing url", "set url to the address they reach it at", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, diags := parseIn(t, tc.src, Inputs{}, pxeFiles())
			if diags == nil || len(diags.Diags) != 1 {
				t.Fatalf("want one diagnostic, got %v", diags)
			}
			d := diags.Diags[0]
			if d.Summary != tc.summary || !strings.Contains(d.Detail, tc.detail) || d.Subject == nil || d.Subject.Start.Line != tc.line {
				t.Errorf("got %q / %q at %v\nwant %q / %q at line %d", d.Summary, d.Detail, d.Subject, tc.summary, tc.detail, tc.line)
			}
		})
	}
}
