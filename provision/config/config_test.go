package config

import (
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/templates"
	"github.com/hashicorp/hcl/v2"
)

// lines joins source lines, so that a test can name the line an error is on
// by counting.
func lines(ls ...string) []byte {
	return []byte(strings.Join(ls, "\n") + "\n")
}

func mustParse(t *testing.T, src []byte) *Config {
	t.Helper()
	cfg, diags := Parse(src, "file.hcl", Inputs{})
	if diags != nil {
		t.Fatalf("Parse: unexpected diagnostics:\n%s", diags.Error())
	}
	return cfg
}

func TestExample(t *testing.T) {
	const path = "../../examples/local.hcl"
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, diags := Load(path, Inputs{})
	if diags != nil {
		t.Fatalf("Load: unexpected diagnostics:\n%s", diags.Error())
	}
	want := &Config{
		Filename: path,
		Cluster:  Cluster{Name: "local", EtcdMembers: 3, MachineTTL: 10 * time.Second},
		Provider: Provider{
			Type:      "local",
			Local:     &LocalProvider{CIDR: netip.MustParsePrefix("10.77.0.0/24")},
			DeclRange: declRange(t, path, src, `provider "local"`),
		},
		NodeGroups: []NodeGroup{{
			Name:            "core",
			DesiredCapacity: 3,
			MaxSize:         -1,
			Userdata:        templates.FormatIgnition,
			DeclRange:       declRange(t, path, src, `node_group "core"`),
		}},
		Network: &Network{
			CIDR: netip.MustParsePrefix("10.1.0.0/16"), SubnetLen: 24, Backend: "vxlan",
			Bridge: "corral0", IPMasq: true, DeclRange: declRange(t, path, src, `network`),
		},
	}
	// The evaluation context and sources are the package's own business.
	cfg.ctx, cfg.files = nil, nil
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("Load(%s) =\n%#v\nwant\n%#v", path, cfg, want)
	}
	// The default cidr is written out, not left to the default.
	if !strings.Contains(string(src), `cidr = "10.77.0.0/24"`) {
		t.Errorf("%s does not write out the default cidr", path)
	}
}

// declRange is the range of a block header, which starts a line of src.
func declRange(t *testing.T, filename string, src []byte, header string) hcl.Range {
	t.Helper()
	i := strings.Index(string(src), "\n"+header)
	if i < 0 {
		t.Fatalf("%s: no line starts with %s", filename, header)
	}
	start := i + 1
	line := strings.Count(string(src[:start]), "\n") + 1
	return hcl.Range{
		Filename: filename,
		Start:    hcl.Pos{Line: line, Column: 1, Byte: start},
		End:      hcl.Pos{Line: line, Column: 1 + len(header), Byte: start + len(header)},
	}
}

func TestDefaults(t *testing.T) {
	cfg := mustParse(t, lines(
		`cluster "c" {}`,
		`provider "local" {}`,
		`node_group "core" { desired_capacity = 1 }`,
	))
	if got, want := cfg.Cluster, (Cluster{Name: "c", EtcdMembers: 3, MachineTTL: 10 * time.Second}); !reflect.DeepEqual(got, want) {
		t.Errorf("Cluster = %+v, want %+v", got, want)
	}
	if got, want := cfg.Provider.Local.CIDR, netip.MustParsePrefix("10.77.0.0/24"); got != want {
		t.Errorf("CIDR = %v, want %v", got, want)
	}
	if md := cfg.NodeGroups[0].Metadata; md != nil {
		t.Errorf("Metadata = %v, want nil", md)
	}
}

func TestSettings(t *testing.T) {
	cfg := mustParse(t, lines(
		`cluster "prod-1" {`,
		`  etcd_members = 5`,
		`  machine_ttl  = "1m30s"`,
		`}`,
		`provider "local" { cidr = "172.16.0.0/16" }`,
		`node_group "web" {`,
		`  desired_capacity = 0`,
		`  metadata = { role = "web", "disk.type" = "ssd", rack_2 = "a-b" }`,
		`}`,
		`node_group "db" { desired_capacity = 250 }`,
	))
	if got, want := cfg.Cluster, (Cluster{Name: "prod-1", EtcdMembers: 5, MachineTTL: 90 * time.Second}); !reflect.DeepEqual(got, want) {
		t.Errorf("Cluster = %+v, want %+v", got, want)
	}
	if got, want := cfg.Provider.Local.CIDR, netip.MustParsePrefix("172.16.0.0/16"); got != want {
		t.Errorf("CIDR = %v, want %v", got, want)
	}
	wantMD := map[string]string{"role": "web", "disk.type": "ssd", "rack_2": "a-b"}
	if got := cfg.NodeGroups[0].Metadata; !reflect.DeepEqual(got, wantMD) {
		t.Errorf("Metadata = %v, want %v", got, wantMD)
	}
	if got := len(cfg.Nodes()); got != 250 {
		t.Errorf("len(Nodes()) = %d, want 250", got)
	}
}

func TestNodes(t *testing.T) {
	cfg := mustParse(t, lines(
		`cluster "c" {}`,
		`provider "local" {}`,
		`node_group "core" { desired_capacity = 3 }`,
		`node_group "empty" { desired_capacity = 0 }`,
		`node_group "db" {`,
		`  desired_capacity = 2`,
		`  metadata = { role = "db" }`,
		`}`,
	))
	db := map[string]string{"role": "db"}
	want := []Node{
		{Name: "core-1", Group: "core", Index: 1},
		{Name: "core-2", Group: "core", Index: 2},
		{Name: "core-3", Group: "core", Index: 3},
		{Name: "db-1", Group: "db", Index: 1, Metadata: db},
		{Name: "db-2", Group: "db", Index: 2, Metadata: db},
	}
	got := cfg.Nodes()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Nodes() =\n%+v\nwant\n%+v", got, want)
	}
	// Each node owns its metadata.
	got[3].Metadata["role"] = "changed"
	if got[4].Metadata["role"] != "db" || cfg.NodeGroups[2].Metadata["role"] != "db" {
		t.Error("nodes share metadata with each other or with their group")
	}
}

// TestErrors checks that each rule reports exactly one error, on the right
// line, naming what is wrong.
func TestErrors(t *testing.T) {
	const (
		cluster  = `cluster "c" {}`
		provider = `provider "local" {}`
		group    = `node_group "core" { desired_capacity = 1 }`
	)
	tests := []struct {
		name string
		src  []byte
		line int
		want []string // in the summary or detail
	}{
		{"unknown block", lines(cluster, provider, group, `frobnicate "web" {}`),
			4, []string{"Unsupported block type", "frobnicate"}},
		{"unknown cluster argument", lines(`cluster "c" {`, `  colour = "red"`, `}`, provider, group),
			2, []string{"Unsupported argument", "colour"}},
		{"unknown provider argument", lines(cluster, `provider "local" {`, `  region = "eu"`, `}`, group),
			3, []string{"Unsupported argument", "region"}},
		{"unknown node_group argument", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  size = 2`, `}`),
			5, []string{"Unsupported argument", "size"}},
		{"wrong type", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = "three"`, `}`),
			4, []string{"desired_capacity", "number is required"}},
		{"fractional count", lines(cluster, provider, `node_group "core" { desired_capacity = 1.5 }`),
			3, []string{"desired_capacity"}},
		{"metadata not a map", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  metadata = "role=web"`, `}`),
			5, []string{"metadata", "map of string required"}},
		{"undeclared variable", lines(`cluster "c" { machine_ttl = var.ttl }`, provider, group),
			1, []string{"Reference to undeclared input variable", `"ttl"`}},

		{"missing cluster", lines(provider, group),
			1, []string{"Missing cluster block"}},
		{"second cluster", lines(cluster, provider, group, `cluster "d" {}`),
			4, []string{"Duplicate cluster block", "file.hcl:1,1"}},
		{"cluster name", lines(`cluster "Prod" {}`, provider, group),
			1, []string{"cluster name", `"Prod"`}},

		{"missing provider", lines(cluster, group),
			1, []string{"Missing provider block", `add provider "local" { }`}},
		{"second provider", lines(cluster, provider, group, provider),
			4, []string{"Duplicate provider block"}},
		{"unknown provider", lines(cluster, group, `provider "x" {}`),
			3, []string{`Unsupported provider "x"`, "supported: aws, local"}},
		{"aws without region", lines(cluster, `provider "aws" {}`, group),
			2, []string{"Missing required argument", `"region"`}},
		{"cidr not IPv4", lines(cluster, `provider "local" { cidr = "fd00::/64" }`, group),
			2, []string{"cidr", "IPv4"}},
		{"cidr not a prefix", lines(cluster, `provider "local" { cidr = "10.77.0.1" }`, group),
			2, []string{"cidr", "IPv4"}},
		{"cidr too wide", lines(cluster, `provider "local" { cidr = "10.0.0.0/8" }`, group),
			2, []string{"cidr", "/16", "/28", "/8"}},
		{"cidr too narrow", lines(cluster, `provider "local" { cidr = "10.77.0.0/29" }`, group),
			2, []string{"cidr", "/29"}},
		{"cidr host bits", lines(cluster, `provider "local" { cidr = "10.77.0.9/24" }`, group),
			2, []string{"cidr", "10.77.0.0/24"}},

		{"no node_group", lines(cluster, provider),
			1, []string{"Missing node_group block"}},
		{"node_group name", lines(cluster, provider, `node_group "1st" { desired_capacity = 1 }`),
			3, []string{"node_group name", `"1st"`}},
		{"node_group name uppercase", lines(cluster, provider, `node_group "Core" { desired_capacity = 1 }`),
			3, []string{"node_group name", `"Core"`}},
		{"node_group name trailing hyphen", lines(cluster, provider, `node_group "core-" { desired_capacity = 1 }`),
			3, []string{"node_group name"}},
		{"node_group name too long", lines(cluster, provider, `node_group "`+strings.Repeat("a", 41)+`" { desired_capacity = 1 }`),
			3, []string{"node_group name", "40"}},
		{"duplicate node_group", lines(cluster, provider, group, `node_group "db" { desired_capacity = 1 }`, group),
			5, []string{`Duplicate node_group "core"`, "file.hcl:3,1"}},
		{"missing desired_capacity", lines(cluster, provider, `node_group "core" {`, `}`),
			3, []string{"desired_capacity", "required"}},
		{"negative desired_capacity", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = -1`, `}`),
			4, []string{"desired_capacity must be 0 or more, got -1"}},
		{"over the local limit", lines(cluster, `provider "local" { cidr = "10.0.0.0/16" }`, `node_group "a" { desired_capacity = 200 }`,
			`node_group "b" { desired_capacity = 51 }`, `node_group "c" { desired_capacity = 9 }`),
			4, []string{"desired_capacity", "260", "at most 250"}},
		{"over the cidr", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 245`, `}`),
			4, []string{"desired_capacity", "245", "room for 244"}},
		{"huge desired_capacity", lines(cluster, provider, group, `node_group "db" { desired_capacity = 9223372036854775807 }`),
			4, []string{"9223372036854775807", "room for 244"}},
		{"invalid cidr, many nodes", lines(cluster, `provider "local" { cidr = "10.0.0.0/8" }`, `node_group "core" { desired_capacity = 249 }`),
			2, []string{"cidr", "/8"}},
		{"over a small cidr", lines(cluster, `provider "local" { cidr = "10.77.0.0/28" }`, `node_group "core" { desired_capacity = 5 }`),
			3, []string{"room for 4"}},

		{"etcd_members even", lines(`cluster "c" {`, `  etcd_members = 4`, `}`, provider, group),
			2, []string{"etcd_members", "1, 3, 5 or 7", "got 4"}},
		{"etcd_members too many", lines(`cluster "c" {`, `  etcd_members = 9`, `}`, provider, group),
			2, []string{"etcd_members", "got 9"}},
		{"machine_ttl unparsable", lines(`cluster "c" {`, `  machine_ttl = "10 seconds"`, `}`, provider, group),
			2, []string{"machine_ttl", "10 seconds"}},
		{"machine_ttl too short", lines(`cluster "c" {`, `  machine_ttl = "1500ms"`, `}`, provider, group),
			2, []string{"machine_ttl", "1.5s"}},
		{"machine_ttl too long", lines(`cluster "c" {`, `  machine_ttl = "6m"`, `}`, provider, group),
			2, []string{"machine_ttl", "6m"}},

		{"metadata key", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  metadata = {`,
			`    role = "web"`, `    "rack id" = "7"`, `  }`, `}`),
			7, []string{"metadata key", `"rack id"`}},
		{"metadata key twice", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  metadata = {`,
			`    role = "web"`, `    role = "db"`, `  }`, `}`),
			7, []string{"Duplicate metadata key", `"role"`, "file.hcl:6,5"}},
		{"metadata empty value", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  metadata = {`,
			`    role = ""`, `  }`, `}`),
			6, []string{"metadata value", `"role"`, "empty"}},
		{"metadata comma", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  metadata = { role = "web,db" }`, `}`),
			5, []string{"metadata value", `"web,db"`}},
		{"metadata equals", lines(cluster, provider, `node_group "core" {`, `  desired_capacity = 1`, `  metadata = { role = "a=b" }`, `}`),
			5, []string{"metadata value", `"a=b"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, diags := Parse(tt.src, "file.hcl", Inputs{})
			if cfg != nil {
				t.Errorf("Parse returned a Config along with errors")
			}
			if !diags.HasErrors() {
				t.Fatalf("no errors, want one on line %d", tt.line)
			}
			if len(diags.Diags) != 1 {
				t.Fatalf("got %d diagnostics, want 1:\n%s", len(diags.Diags), diags.Error())
			}
			d := diags.Diags[0]
			if d.Severity != hcl.DiagError {
				t.Errorf("severity = %v, want error", d.Severity)
			}
			if d.Subject == nil {
				t.Fatalf("no subject: %s", diags.Error())
			}
			if d.Subject.Filename != "file.hcl" || d.Subject.Start.Line != tt.line {
				t.Errorf("subject = %s, want file.hcl line %d", d.Subject, tt.line)
			}
			text := d.Summary + "; " + d.Detail
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("diagnostic %q does not mention %q", text, w)
				}
			}
		})
	}
}

func TestAllErrorsInOnePass(t *testing.T) {
	src := lines(
		`cluster "c" {`,
		`  etcd_members = 2`,
		`}`,
		`provider "local" {}`,
		`node_group "core" {`,
		`  desired_capacity = -1`,
		`  metadata = { "a b" = "x" }`,
		`}`,
	)
	_, diags := Parse(src, "file.hcl", Inputs{})
	var got []int
	for _, d := range diags.Diags {
		got = append(got, d.Subject.Start.Line)
	}
	if want := []int{2, 6, 7}; !reflect.DeepEqual(got, want) {
		t.Errorf("errors on lines %v, want %v:\n%s", got, want, diags.Error())
	}
}

func TestSyntaxError(t *testing.T) {
	_, diags := Parse(lines(`cluster "c" {`, `  etcd_members = `, `}`), "file.hcl", Inputs{})
	if !diags.HasErrors() {
		t.Fatal("no error for a syntax error")
	}
	if line := diags.Diags[0].Subject.Start.Line; line != 2 && line != 3 {
		t.Errorf("syntax error on line %d, want 2 or 3", line)
	}
}

func TestLoadMissingFile(t *testing.T) {
	cfg, diags := Load(t.TempDir()+"/nope.hcl", Inputs{})
	if cfg != nil || !diags.HasErrors() {
		t.Fatalf("Load of a missing file = %v, %v; want nil and an error", cfg, diags)
	}
	if !strings.Contains(diags.Error(), "nope.hcl") {
		t.Errorf("error %q does not name the file", diags.Error())
	}
}
