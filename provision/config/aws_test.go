package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
)

func prefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

// withoutAWSOnly is groups without their unexported bookkeeping, to
// compare with groups written out by hand.
func withoutAWSOnly(groups []NodeGroup) []NodeGroup {
	out := make([]NodeGroup, len(groups))
	for i, g := range groups {
		g.awsOnly = nil
		out[i] = g
	}
	return out
}

// TestAWSFull decodes a file that sets every aws setting.
func TestAWSFull(t *testing.T) {
	cfg := mustParse(t, lines(
		`cluster "prod" {}`,
		`provider "aws" {`,
		`  region             = "eu-central-1"`,
		`  availability_zones = ["eu-central-1a", "eu-central-1c"]`,
		`  vpc_cidr           = "10.4.0.0/20"`,
		`  subnets            = ["10.4.1.0/24", "10.4.8.0/22"]`,
		`  allow_ssh_from     = ["203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32"]`,
		`  key_pair           = "my-keypair"`,
		`  endpoint           = "http://localhost:4566"`,
		`  profile            = "work"`,
		`  overlay            = "aws-vpc"`,
		`}`,
		`node_group "core" {`,
		`  desired_capacity = 3`,
		`  min_size         = 3`,
		`  max_size         = 9`,
		`  instance_type    = "m5d.2xlarge"`,
		`  image            = "ami-0123456789abcdef0"`,
		`  volume "/var/lib/docker" {`,
		`    size_gb = 10`,
		`  }`,
		`  volume "/srv" { size_gb = 16384 }`,
		`  load_balancer "web" {`,
		`    port        = 80`,
		`    target_port = 3000`,
		`    protocol    = "HTTP"`,
		`    sticky      = true`,
		`  }`,
		`  load_balancer "api" {`,
		`    port     = 443`,
		`    protocol = "HTTPS"`,
		`  }`,
		`  load_balancer "raw" {`,
		`    port     = 5432`,
		`    protocol = "TCP"`,
		`  }`,
		`}`,
		`node_group "db" {`,
		`  desired_capacity = 1`,
		`  image            = "flatcar-beta"`,
		`}`,
		`backup_bucket { expiration_days = 30 }`,
		`log_group {`,
		`  retention_days = 14`,
		`}`,
		`network { cidr = "10.244.0.0/16" }`,
	))
	want := &AWSProvider{
		Region:       "eu-central-1",
		Zones:        []string{"eu-central-1a", "eu-central-1c"},
		VPCCIDR:      netip.MustParsePrefix("10.4.0.0/20"),
		Subnets:      prefixes("10.4.1.0/24", "10.4.8.0/22"),
		AllowSSHFrom: prefixes("203.0.113.0/24", "198.51.100.7/32", "2001:db8::/32"),
		KeyPair:      "my-keypair",
		Endpoint:     "http://localhost:4566",
		Profile:      "work",
		Overlay:      "aws-vpc",
	}
	if cfg.Provider.Type != "aws" || !reflect.DeepEqual(cfg.Provider.AWS, want) {
		t.Errorf("Provider %q, AWS =\n%+v\nwant\n%+v", cfg.Provider.Type, cfg.Provider.AWS, want)
	}
	if got := cfg.Provider.AWS.ZoneSubnets(); !reflect.DeepEqual(got, want.Subnets) {
		t.Errorf("ZoneSubnets() = %v, want the given subnets %v", got, want.Subnets)
	}
	if cfg.Provider.Local != nil || cfg.Provider.SSH != nil || cfg.Provider.PXE != nil || cfg.Provider.Vagrant != nil {
		t.Errorf("Provider = %+v, want only AWS set", cfg.Provider)
	}
	at := func(line, col int) hcl.Range {
		return hcl.Range{Filename: "file.hcl", Start: hcl.Pos{Line: line, Column: col}}
	}
	// Only the start of each DeclRange is compared; its end is HCL's.
	startOf := func(r hcl.Range) hcl.Range {
		return hcl.Range{Filename: r.Filename, Start: hcl.Pos{Line: r.Start.Line, Column: r.Start.Column}}
	}
	groups := withoutAWSOnly(cfg.NodeGroups)
	for i := range groups {
		for j := range groups[i].Volumes {
			groups[i].Volumes[j].DeclRange = startOf(groups[i].Volumes[j].DeclRange)
		}
		for j := range groups[i].LoadBalancers {
			groups[i].LoadBalancers[j].DeclRange = startOf(groups[i].LoadBalancers[j].DeclRange)
		}
	}
	wantGroups := []NodeGroup{{
		Name: "core", DesiredCapacity: 3, MinSize: 3, MaxSize: 9, Userdata: "ignition",
		InstanceType: "m5d.2xlarge", Image: "ami-0123456789abcdef0",
		Volumes: []Volume{
			{Path: "/var/lib/docker", SizeGB: 10, DeclRange: at(19, 3)},
			{Path: "/srv", SizeGB: 16384, DeclRange: at(22, 3)},
		},
		LoadBalancers: []LoadBalancer{
			{Name: "web", Port: 80, TargetPort: 3000, Protocol: "HTTP", Sticky: true, DeclRange: at(23, 3)},
			{Name: "api", Port: 443, TargetPort: 443, Protocol: "HTTPS", DeclRange: at(29, 3)},
			{Name: "raw", Port: 5432, TargetPort: 5432, Protocol: "TCP", DeclRange: at(33, 3)},
		},
		DeclRange: cfg.NodeGroups[0].DeclRange,
	}, {
		Name: "db", DesiredCapacity: 1, MaxSize: -1, Userdata: "ignition",
		InstanceType: "t3.small", Image: "flatcar-beta",
		DeclRange: cfg.NodeGroups[1].DeclRange,
	}}
	if !reflect.DeepEqual(groups, wantGroups) {
		t.Errorf("NodeGroups =\n%+v\nwant\n%+v", groups, wantGroups)
	}
	if b := cfg.BackupBucket; b == nil || b.ExpirationDays != 30 || b.DeclRange.Start.Line != 42 {
		t.Errorf("BackupBucket = %+v, want 30 days declared on line 42", b)
	}
	if l := cfg.LogGroup; l == nil || l.RetentionDays != 14 || l.DeclRange.Start.Line != 43 {
		t.Errorf("LogGroup = %+v, want 14 days declared on line 43", l)
	}
}

// TestAWSDefaults: a provider block with only a region, and a node group
// with no aws settings, get every default.
func TestAWSDefaults(t *testing.T) {
	cfg := mustParse(t, lines(
		`cluster "c" {}`,
		`provider "aws" { region = "us-west-2" }`,
		`node_group "core" { desired_capacity = 3 }`,
	))
	want := &AWSProvider{
		Region:  "us-west-2",
		Zones:   []string{"us-west-2a", "us-west-2b", "us-west-2c"},
		VPCCIDR: netip.MustParsePrefix("10.1.0.0/16"),
		Overlay: "vxlan",
	}
	if !reflect.DeepEqual(cfg.Provider.AWS, want) {
		t.Errorf("AWS = %+v, want %+v", cfg.Provider.AWS, want)
	}
	if got, want := cfg.Provider.AWS.ZoneSubnets(), prefixes("10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24"); !reflect.DeepEqual(got, want) {
		t.Errorf("ZoneSubnets() = %v, want %v", got, want)
	}
	g := cfg.NodeGroups[0]
	if g.InstanceType != "t3.small" || g.Image != "flatcar-stable" || g.Volumes != nil || g.LoadBalancers != nil {
		t.Errorf("node group = %+v, want t3.small, flatcar-stable, no volumes or load balancers", g)
	}
	if want := (&BackupBucket{ExpirationDays: 10}); !reflect.DeepEqual(cfg.BackupBucket, want) {
		t.Errorf("BackupBucket = %+v, want %+v", cfg.BackupBucket, want)
	}
	if want := (&LogGroup{RetentionDays: 7}); !reflect.DeepEqual(cfg.LogGroup, want) {
		t.Errorf("LogGroup = %+v, want %+v", cfg.LogGroup, want)
	}
}

// TestAWSForms checks the forms a setting may take beyond the defaults.
func TestAWSForms(t *testing.T) {
	for _, tt := range []struct {
		name  string
		attrs []string
		check func(*AWSProvider) bool
	}{
		{"one CIDR", []string{`  allow_ssh_from = "203.0.113.0/24"`},
			func(a *AWSProvider) bool { return reflect.DeepEqual(a.AllowSSHFrom, prefixes("203.0.113.0/24")) }},
		{"no CIDRs", []string{`  allow_ssh_from = []`},
			func(a *AWSProvider) bool { return a.AllowSSHFrom == nil }},
		{"empty endpoint", []string{`  endpoint = ""`, `  profile = ""`},
			func(a *AWSProvider) bool { return a.Endpoint == "" && a.Profile == "" }},
		{"one zone in a /24", []string{`  availability_zones = ["us-west-2d"]`, `  vpc_cidr = "192.168.7.0/24"`},
			func(a *AWSProvider) bool {
				return reflect.DeepEqual(a.ZoneSubnets(), prefixes("192.168.7.0/24"))
			}},
		{"four zones in a /22", []string{`  availability_zones = ["us-west-2a", "us-west-2b", "us-west-2c", "us-west-2d"]`, `  vpc_cidr = "10.0.252.0/22"`},
			func(a *AWSProvider) bool {
				return reflect.DeepEqual(a.ZoneSubnets(), prefixes("10.0.252.0/24", "10.0.253.0/24", "10.0.254.0/24", "10.0.255.0/24"))
			}},
		{"small subnets in a small VPC", []string{`  availability_zones = ["us-west-2a", "us-west-2b"]`, `  vpc_cidr = "10.9.0.0/27"`,
			`  subnets = ["10.9.0.0/28", "10.9.0.16/28"]`},
			func(a *AWSProvider) bool {
				return reflect.DeepEqual(a.Subnets, prefixes("10.9.0.0/28", "10.9.0.16/28"))
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := append([]string{`cluster "c" {}`, `provider "aws" {`, `  region = "us-west-2"`}, tt.attrs...)
			cfg := mustParse(t, lines(append(src, `}`, `node_group "core" { desired_capacity = 1 }`)...))
			if !tt.check(cfg.Provider.AWS) {
				t.Errorf("AWS = %+v", cfg.Provider.AWS)
			}
		})
	}
	for _, region := range []string{"us-east-1", "eu-central-1", "ap-southeast-2", "us-gov-west-1", "sa-east-1"} {
		cfg := mustParse(t, lines(`cluster "c" {}`, `provider "aws" { region = "`+region+`" }`, `node_group "core" { desired_capacity = 1 }`))
		if z := cfg.Provider.AWS.Zones; len(z) != 3 || z[0] != region+"a" {
			t.Errorf("region %s: zones %q", region, z)
		}
	}
}

// TestAWSNotAWS: without provider "aws", no aws default is set.
func TestAWSNotAWS(t *testing.T) {
	cfg := mustParse(t, lines(`cluster "c" {}`, `provider "local" {}`, `node_group "core" { desired_capacity = 1 }`))
	if cfg.BackupBucket != nil || cfg.LogGroup != nil || cfg.NodeGroups[0].InstanceType != "" || cfg.NodeGroups[0].Image != "" || cfg.Provider.AWS != nil {
		t.Errorf("aws settings with provider local: %+v %+v %+v", cfg.BackupBucket, cfg.LogGroup, cfg.NodeGroups[0])
	}
}

// TestAWSErrors checks that each rule of the aws language reports exactly
// one error, on the offending line, with a precise summary and detail.
func TestAWSErrors(t *testing.T) {
	const cluster = `cluster "c" {}`
	// provider is the provider block with a region and the given
	// attributes, which start on line 4, then a node group.
	provider := func(attrs ...string) []byte {
		ls := append([]string{cluster, `provider "aws" {`, `  region = "us-west-2"`}, attrs...)
		return lines(append(ls, `}`, `node_group "core" { desired_capacity = 3 }`)...)
	}
	// group is a node group whose given lines start on line 5, under
	// provider kind (its block written on line 2).
	group := func(kind string, ls ...string) []byte {
		head := []string{cluster, kind, `node_group "core" {`, `  desired_capacity = 3`}
		return lines(append(append(head, ls...), `}`)...)
	}
	const aws = `provider "aws" { region = "us-west-2" }`
	const local = `provider "local" {}`
	tests := []struct {
		name    string
		src     []byte
		line    int
		summary string
		detail  string
	}{
		// region
		{"region without hyphen", lines(cluster, `provider "aws" {`, `  region = "us-west2"`, `}`, `node_group "core" { desired_capacity = 1 }`),
			3, "Invalid region", `region must be an AWS region such as "us-west-2", "eu-central-1" or "ap-southeast-2", got "us-west2".`},
		{"region uppercase", lines(cluster, `provider "aws" {`, `  region = "US-WEST-2"`, `}`, `node_group "core" { desired_capacity = 1 }`),
			3, "Invalid region", `got "US-WEST-2"`},
		{"region is a zone", lines(cluster, `provider "aws" {`, `  region = "us-west-2a"`, `}`, `node_group "core" { desired_capacity = 1 }`),
			3, "Invalid region", `got "us-west-2a"`},
		{"region not a string", lines(cluster, `provider "aws" {`, `  region = ["us-west-2"]`, `}`, `node_group "core" { desired_capacity = 1 }`),
			3, "Incorrect attribute value type", `"region"`},

		// availability_zones
		{"zone of another region", provider(`  availability_zones = ["us-west-2a",`, `    "us-east-1a"]`),
			5, "Invalid availability_zones", `availability zone "us-east-1a" is not in region "us-west-2"`},
		{"not a zone", provider(`  availability_zones = ["us-west-2a", "west"]`),
			4, "Invalid availability_zones", `"west" is not an availability zone name`},
		{"duplicate zone", provider(`  availability_zones = ["us-west-2a", "us-west-2b", "us-west-2a"]`),
			4, "Invalid availability_zones", `availability zone "us-west-2a" is listed twice`},
		{"no zones", provider(`  availability_zones = []`),
			4, "Invalid availability_zones", `availability_zones must list 1 to 26 zones`},

		// vpc_cidr
		{"vpc IPv6", provider(`  vpc_cidr = "fd00::/48"`),
			4, "Invalid vpc_cidr", `vpc_cidr must be an IPv4 network such as "10.1.0.0/16", got "fd00::/48".`},
		{"vpc not a CIDR", provider(`  vpc_cidr = "10.1.0.0"`),
			4, "Invalid vpc_cidr", `got "10.1.0.0"`},
		{"vpc too wide", provider(`  vpc_cidr = "10.0.0.0/8"`),
			4, "Invalid vpc_cidr", "vpc_cidr 10.0.0.0/8: AWS allows prefix lengths /16 to /28, got /8."},
		{"vpc too narrow", provider(`  vpc_cidr = "10.0.0.0/29"`),
			4, "Invalid vpc_cidr", "got /29"},
		{"vpc host bits", provider(`  vpc_cidr = "10.1.2.0/16"`),
			4, "Invalid vpc_cidr", "vpc_cidr 10.1.2.0/16 has host bits set; did you mean 10.1.0.0/16?"},
		{"vpc no room for a /24 per zone", provider(`  vpc_cidr = "10.1.0.0/23"`),
			4, "Invalid vpc_cidr", "vpc_cidr 10.1.0.0/23 has no room for one /24 per availability zone (3 zones); widen it to /22 or wider, or set subnets"},
		{"vpc narrower than a /24", provider(`  availability_zones = ["us-west-2a"]`, `  vpc_cidr = "10.1.0.0/25"`),
			5, "Invalid vpc_cidr", "widen it to /24 or wider"},

		// subnets
		{"too few subnets", provider(`  subnets = ["10.1.1.0/24", "10.1.2.0/24"]`),
			4, "Invalid subnets", "one subnet per availability zone, in the zones' order: 3 zones (us-west-2a, us-west-2b, us-west-2c), 2 subnets."},
		{"subnet outside the VPC", provider(`  subnets = [`, `    "10.1.1.0/24",`, `    "10.2.2.0/24",`, `    "10.1.3.0/24",`, `  ]`),
			6, "Invalid subnets", "subnet 10.2.2.0/24 is not inside vpc_cidr 10.1.0.0/16."},
		{"subnet wider than the VPC", provider(`  vpc_cidr = "10.1.0.0/20"`, `  subnets = ["10.1.0.0/16", "10.1.1.0/24", "10.1.2.0/24"]`),
			5, "Invalid subnets", "subnet 10.1.0.0/16 is not inside vpc_cidr 10.1.0.0/20."},
		{"subnet too small", provider(`  subnets = ["10.1.1.0/24", "10.1.2.0/29", "10.1.3.0/24"]`),
			4, "Invalid subnets", "subnet 10.1.2.0/29: AWS allows prefix lengths /16 to /28, got /29."},
		{"overlapping subnets", provider(`  subnets = ["10.1.0.0/20", "10.1.16.0/24", "10.1.1.0/24"]`),
			4, "Invalid subnets", "subnet 10.1.1.0/24 overlaps subnet 10.1.0.0/20 (the 1st); subnets must not overlap."},
		{"subnet not a CIDR", provider(`  subnets = ["10.1.1.0/24", "b", "10.1.3.0/24"]`),
			4, "Invalid subnets", `subnet must be an IPv4 network such as "10.1.0.0/16", got "b".`},
		{"subnet host bits", provider(`  subnets = ["10.1.1.0/24", "10.1.2.1/24", "10.1.3.0/24"]`),
			4, "Invalid subnets", "did you mean 10.1.2.0/24?"},

		// allow_ssh_from
		{"ssh from an address", provider(`  allow_ssh_from = "203.0.113.5"`),
			4, "Invalid allow_ssh_from", `allow_ssh_from entries must be CIDRs such as "203.0.113.0/24", got "203.0.113.5". For one address, write "203.0.113.5/32".`},
		{"ssh from a name", provider(`  allow_ssh_from = ["10.0.0.0/8", "office"]`),
			4, "Invalid allow_ssh_from", `got "office"`},
		{"ssh from host bits", provider(`  allow_ssh_from = ["203.0.113.9/24"]`),
			4, "Invalid allow_ssh_from", "allow_ssh_from entry 203.0.113.9/24 has host bits set; did you mean 203.0.113.0/24?"},
		{"ssh from a number", provider(`  allow_ssh_from = 22`),
			4, "Invalid allow_ssh_from", "allow_ssh_from must be a CIDR or a list of CIDRs"},

		// the other provider attributes
		{"empty key_pair", provider(`  key_pair = " "`),
			4, "Invalid key_pair", "key_pair must name an EC2 key pair"},
		{"endpoint without scheme", provider(`  endpoint = "localhost:4566"`),
			4, "Invalid endpoint", `endpoint must be an http:// or https:// URL such as "http://localhost:4566", got "localhost:4566".`},
		{"unknown overlay", provider(`  overlay = "host-gw"`),
			4, "Invalid overlay", `overlay must be "vxlan" or "aws-vpc" (routes in the VPC route table), got "host-gw".`},
		{"unknown provider attribute", provider(`  zones = ["us-west-2a"]`),
			4, "Unsupported argument", `"zones"`},

		// sizes: nodegroup.go's checks, under provider aws
		{"min above max", group(aws, `  min_size = 5`, `  max_size = 4`),
			6, "Invalid max_size", `max_size 4 is below min_size 5 of node group "core".`},
		{"desired above max", group(aws, `  max_size = 2`),
			4, "Invalid desired_capacity", `desired_capacity 3 is above max_size 2 of node group "core".`},
		{"desired below min", group(aws, `  min_size = 4`),
			4, "Invalid desired_capacity", `desired_capacity 3 is below min_size 4 of node group "core".`},

		// instance_type and image
		{"instance type without dot", group(aws, `  instance_type = "t3small"`),
			5, "Invalid instance_type", `instance_type must be an EC2 instance type such as "t3.small" or "m5d.2xlarge", got "t3small".`},
		{"instance type uppercase", group(aws, `  instance_type = "T3.small"`),
			5, "Invalid instance_type", `got "T3.small". Instance types are lowercase: did you mean "t3.small"?`},
		{"unknown image", group(aws, `  image = "ubuntu-22.04"`),
			5, "Invalid image", `image must be "flatcar-stable", "flatcar-beta" or "flatcar-alpha", or an AMI id such as "ami-0123456789abcdef0", got "ubuntu-22.04".`},
		{"short AMI id", group(aws, `  image = "ami-1234"`),
			5, "Invalid image", `got "ami-1234"`},
		{"AMI id uppercase", group(aws, `  image = "ami-0123456789ABCDEF0"`),
			5, "Invalid image", `got "ami-0123456789ABCDEF0"`},

		// volume
		{"relative volume path", group(aws, `  volume "data" { size_gb = 10 }`),
			5, "Invalid volume path", `volume path "data" must be an absolute path to mount the volume at, such as "/var/lib/docker".`},
		{"root volume path", group(aws, `  volume "/" { size_gb = 10 }`),
			5, "Invalid volume path", `volume path "/" is the root file system`},
		{"unclean volume path", group(aws, `  volume "/var/lib/docker/" { size_gb = 10 }`),
			5, "Invalid volume path", `volume path "/var/lib/docker/" is not clean; did you mean "/var/lib/docker"?`},
		{"duplicate volume", group(aws, `  volume "/data" { size_gb = 10 }`, `  volume "/data" { size_gb = 20 }`),
			6, `Duplicate volume "/data"`, `Node group "core" already has a volume "/data" at file.hcl:5,3`},
		{"empty volume", group(aws, `  volume "/data" { size_gb = 0 }`),
			5, "Invalid size_gb", "size_gb must be between 1 and 16384 (EBS's largest volume), got 0."},
		{"huge volume", group(aws, `  volume "/data" { size_gb = 16385 }`),
			5, "Invalid size_gb", "got 16385"},
		{"volume without size", group(aws, `  volume "/data" {`, `  }`),
			5, "Missing required argument", `"size_gb"`},

		// load_balancer
		{"load balancer name with underscore", group(aws, `  load_balancer "web_1" { port = 80 }`),
			5, "Invalid load_balancer name", `load_balancer name "web_1" must be 1 to 32 letters, digits and hyphens, not starting or ending with a hyphen: AWS's limit for load balancer names, and on AWS it becomes "<cluster>-web_1", which must fit that limit too.`},
		{"load balancer name hyphen", group(aws, `  load_balancer "web-" { port = 80 }`),
			5, "Invalid load_balancer name", `"web-" must be 1 to 32`},
		{"load balancer name too long", group(aws, `  load_balancer "`+strings.Repeat("w", 33)+`" { port = 80 }`),
			5, "Invalid load_balancer name", "must be 1 to 32"},
		{"load balancer internal-", group(aws, `  load_balancer "internal-web" { port = 80 }`),
			5, "Invalid load_balancer name", `must not start with "internal-": AWS reserves that prefix.`},
		{"load balancer etcd", group(aws, `  load_balancer "etcd" { port = 2379 }`),
			5, "Invalid load_balancer name", `"<cluster>-etcd" is the cluster's internal etcd load balancer`},
		{"load balancer name with cluster too long", group(aws, `  load_balancer "`+strings.Repeat("w", 31)+`" { port = 80 }`),
			5, "Load balancer name too long", `is named "c-` + strings.Repeat("w", 31) + `", 33 characters; AWS allows at most 32. Shorten the load_balancer or the cluster name.`},
		{"duplicate load balancer across groups", lines(cluster, aws,
			`node_group "core" {`, `  desired_capacity = 3`, `  load_balancer "web" { port = 80 }`, `}`,
			`node_group "edge" {`, `  desired_capacity = 3`, `  load_balancer "web" { port = 8080 }`, `}`),
			9, `Duplicate load_balancer "web"`, `A load_balancer "web" is already defined at file.hcl:5,3; load balancer names are unique across the file`},
		{"duplicate load balancer in a group", group(aws, `  load_balancer "web" { port = 80 }`, `  load_balancer "web" { port = 81 }`),
			6, `Duplicate load_balancer "web"`, "file.hcl:5,3"},
		{"port 0", group(aws, `  load_balancer "web" { port = 0 }`),
			5, "Invalid port", "port must be between 1 and 65535, got 0."},
		{"port too high", group(aws, `  load_balancer "web" {`, `    port = 80`, `    target_port = 70000`, `  }`),
			7, "Invalid target_port", "target_port must be between 1 and 65535, got 70000."},
		{"no port", group(aws, `  load_balancer "web" { target_port = 80 }`),
			5, "Missing required argument", `"port"`},
		{"UDP", group(aws, `  load_balancer "web" {`, `    port = 53`, `    protocol = "UDP"`, `  }`),
			7, "Invalid protocol", `protocol must be "HTTP", "HTTPS" or "TCP", got "UDP".`},
		{"lowercase protocol", group(aws, `  load_balancer "web" {`, `    port = 80`, `    protocol = "http"`, `  }`),
			7, "Invalid protocol", `Protocols are uppercase: did you mean "HTTP"?`},
		{"sticky TCP", group(aws, `  load_balancer "db" {`, `    port = 5432`, `    protocol = "TCP"`, `    sticky = true`, `  }`),
			8, "Invalid sticky", `sticky needs protocol "HTTP" or "HTTPS"`},

		// aws settings under another provider
		{"instance_type with local", group(local, `  instance_type = "t3.small"`),
			5, "instance_type belongs to the aws provider", `instance_type is a setting of provider "aws", but this file's provider is "local", which has no use for it; remove it, or use provider "aws".`},
		{"image with local", group(local, `  image = "flatcar-stable"`),
			5, "image belongs to the aws provider", `provider is "local"`},
		{"volume with local", group(local, `  volume "/data" { size_gb = 1 }`),
			5, "volume belongs to the aws provider", `volume is a setting of provider "aws"`},
		{"load_balancer with vagrant", group(`provider "vagrant" { box = "b" }`, `  load_balancer "web" { port = 80 }`),
			5, "load_balancer belongs to the aws provider", `provider is "vagrant"`},
		{"backup_bucket with local", lines(cluster, local, `node_group "core" { desired_capacity = 1 }`, `backup_bucket {}`),
			4, "backup_bucket belongs to the aws provider", `backup_bucket is a setting of provider "aws"`},
		{"log_group with local", lines(cluster, local, `node_group "core" { desired_capacity = 1 }`, `log_group { retention_days = 7 }`),
			4, "log_group belongs to the aws provider", `log_group is a setting of provider "aws"`},

		// backup_bucket and log_group
		{"expiration_days 0", lines(cluster, aws, `node_group "core" { desired_capacity = 1 }`, `backup_bucket {`, `  expiration_days = 0`, `}`),
			5, "Invalid expiration_days", "expiration_days is how many days snapshots are kept and must be 1 or more, got 0."},
		{"retention_days 8", lines(cluster, aws, `node_group "core" { desired_capacity = 1 }`, `log_group {`, `  retention_days = 8`, `}`),
			5, "Invalid retention_days", "retention_days must be one of the values CloudWatch Logs accepts: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653; got 8."},
		{"two backup buckets", lines(cluster, aws, `node_group "core" { desired_capacity = 1 }`, `backup_bucket {}`, `backup_bucket {}`),
			5, "Duplicate backup_bucket block", "file.hcl:4,1"},
		{"two log groups", lines(cluster, aws, `node_group "core" { desired_capacity = 1 }`, `log_group {}`, `log_group {}`),
			5, "Duplicate log_group block", "file.hcl:4,1"},
		{"unknown log_group argument", lines(cluster, aws, `node_group "core" { desired_capacity = 1 }`, `log_group {`, `  retention = 7`, `}`),
			5, "Unsupported argument", `"retention"`},

		// the overlay beside the VPC
		{"network overlaps the VPC", lines(cluster, aws, `node_group "core" { desired_capacity = 1 }`, `network { cidr = "10.0.0.0/8" }`),
			4, "Overlapping networks", "The network cidr 10.0.0.0/8 overlaps the aws provider's vpc_cidr 10.1.0.0/16"},
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

// TestAWSExampleFile loads testdata/aws.hcl, the language as a user
// writes it.
func TestAWSExampleFile(t *testing.T) {
	cfg, diags := Load("testdata/aws.hcl", Inputs{})
	if diags != nil {
		t.Fatalf("Load: unexpected diagnostics:\n%s", diags.Error())
	}
	a := cfg.Provider.AWS
	if a == nil || a.Region != "us-west-2" || len(a.Zones) != 3 || !reflect.DeepEqual(a.Subnets, prefixes("10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24")) ||
		!reflect.DeepEqual(a.AllowSSHFrom, prefixes("203.0.113.0/24")) || a.KeyPair != "my-keypair" || a.Overlay != "vxlan" {
		t.Errorf("AWS = %+v", a)
	}
	g := cfg.NodeGroups[0]
	wantLB := []LoadBalancer{{Name: "web", Port: 80, TargetPort: 3000, Protocol: "HTTP", Sticky: true, DeclRange: g.LoadBalancers[0].DeclRange}}
	if g.InstanceType != "t3.small" || g.Image != "flatcar-stable" || len(g.Volumes) != 1 || g.Volumes[0].SizeGB != 10 ||
		!reflect.DeepEqual(g.LoadBalancers, wantLB) || g.LoadBalancers[0].DeclRange.Start.Line != 23 {
		t.Errorf("node group = %+v", g)
	}
	if cfg.BackupBucket.ExpirationDays != 10 || cfg.LogGroup.RetentionDays != 7 {
		t.Errorf("BackupBucket %+v, LogGroup %+v", cfg.BackupBucket, cfg.LogGroup)
	}
}
