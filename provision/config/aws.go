package config

import (
	"fmt"
	"math/big"
	"math/bits"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/gocty"
)

// AWSProvider runs the cluster on EC2, in a VPC of its own:
//
//	provider "aws" {
//	  region             = "us-west-2"
//	  availability_zones = ["us-west-2a", "us-west-2b", "us-west-2c"]
//	  vpc_cidr           = "10.1.0.0/16"
//	  subnets            = ["10.1.1.0/24", "10.1.2.0/24", "10.1.3.0/24"]
//	  allow_ssh_from     = "203.0.113.0/24"
//	  key_pair           = "my-keypair"
//	  endpoint           = "http://localhost:4566"
//	  profile            = "work"
//	  overlay            = "aws-vpc"
//	}
//
// Its node groups may set instance_type, image, volume and load_balancer
// (see decodeAWSGroup), and the file may have backup_bucket and log_group
// blocks. Every setting is checked here, without calling AWS: a plan must
// not need credentials to say that a file is wrong.
type AWSProvider struct {
	// Region is the AWS region, e.g. "us-west-2".
	Region string
	// Zones are the availability zones, one subnet each; by default the
	// region's zones a, b and c.
	Zones []string
	// VPCCIDR is the VPC's network; 10.1.0.0/16 by default.
	VPCCIDR netip.Prefix
	// Subnets are the zones' subnets, Subnets[i] in Zones[i]; nil when not
	// set, and then ZoneSubnets carves them from VPCCIDR.
	Subnets []netip.Prefix
	// AllowSSHFrom are the networks allowed to reach the nodes' SSH port;
	// nil means no SSH rule at all.
	AllowSSHFrom []netip.Prefix
	// KeyPair is the EC2 key pair the instances are launched with; "" for
	// none (ssh_authorized_keys still works).
	KeyPair string
	// Endpoint overrides every AWS service's endpoint (LocalStack-style
	// emulators); "" for AWS itself.
	Endpoint string
	// Profile is the shared-config profile; the --profile flag overrides it.
	Profile string
	// Overlay is how the overlay reaches other nodes: "vxlan" (the
	// default) or "aws-vpc" (routes in the VPC route table, as flannel's
	// aws-vpc backend).
	Overlay string
}

// ZoneSubnets is the subnet of each zone: Subnets when set, otherwise one
// /24 per zone carved in order from the start of VPCCIDR. It is nil when
// the settings it depends on are in error.
func (p *AWSProvider) ZoneSubnets() []netip.Prefix {
	if p.Subnets != nil {
		return p.Subnets
	}
	if !p.VPCCIDR.IsValid() || p.VPCCIDR.Bits() > awsDefaultSubnetBits || len(p.Zones) > 1<<(awsDefaultSubnetBits-p.VPCCIDR.Bits()) {
		return nil
	}
	out := make([]netip.Prefix, len(p.Zones))
	size := big.NewInt(1 << (32 - awsDefaultSubnetBits))
	for i := range p.Zones {
		n := new(big.Int).Mul(big.NewInt(int64(i)), size)
		n.Add(n, addrInt(p.VPCCIDR.Addr()))
		out[i] = netip.PrefixFrom(intAddr(n, p.VPCCIDR.Addr()), awsDefaultSubnetBits)
	}
	return out
}

// Volume is an extra EBS volume of each machine of a node group, mounted
// at Path:
//
//	volume "/var/lib/docker" { size_gb = 10 }
type Volume struct {
	Path      string
	SizeGB    int
	DeclRange hcl.Range
}

// LoadBalancer is a load balancer in front of a node group's machines:
// Port on the load balancer forwards to TargetPort on the machines.
//
//	load_balancer "web" {
//	  port        = 80
//	  target_port = 3000
//	  protocol    = "HTTP"
//	  sticky      = true
//	}
//
// (HCL allows one argument only in a block written on one line.)
type LoadBalancer struct {
	// Name is the block's label; on AWS the load balancer is named
	// "<cluster>-<name>".
	Name string
	Port int
	// TargetPort is Port when not set.
	TargetPort int
	// Protocol is "HTTP" (the default), "HTTPS" or "TCP".
	Protocol string
	// Sticky keeps a client on one machine with a load-balancer cookie;
	// only HTTP and HTTPS have cookies.
	Sticky    bool
	DeclRange hcl.Range
}

// BackupBucket is the S3 bucket etcd snapshots go to:
//
//	backup_bucket { expiration_days = 10 }
type BackupBucket struct {
	// ExpirationDays is how long a snapshot is kept; 10 by default.
	ExpirationDays int
	// DeclRange is the zero Range when the block is absent and defaults apply.
	DeclRange hcl.Range
}

// LogGroup is the CloudWatch Logs group the nodes' logs go to:
//
//	log_group { retention_days = 7 }
type LogGroup struct {
	// RetentionDays is how long events are kept: one of
	// logRetentionDays, 7 by default.
	RetentionDays int
	// DeclRange is the zero Range when the block is absent and defaults apply.
	DeclRange hcl.Range
}

// Defaults and limits of the aws provider, all AWS's own.
const (
	defaultAWSInstanceType = "t3.small"
	defaultAWSImage        = "flatcar-stable"
	defaultAWSOverlay      = "vxlan"
	defaultBackupDays      = 10
	defaultLogRetention    = 7
	// A VPC and its subnets are /16 to /28.
	awsMinBits = 16
	awsMaxBits = 28
	// awsDefaultSubnetBits: without subnets, each zone gets a /24.
	awsDefaultSubnetBits = 24
	maxVolumeGB          = 16384 // gp3's largest volume
	maxLBNameLen         = 32
	// maxAWSZones: no region has more zones than this; the default is 3.
	maxAWSZones = 26
)

var (
	defaultVPCCIDR = netip.MustParsePrefix("10.1.0.0/16")
	awsRegionRE    = regexp.MustCompile(`^[a-z]{2}(-gov)?-[a-z]+-\d$`)
	awsZoneRE      = regexp.MustCompile(`^[a-z]{2}(-gov)?-[a-z]+-\d[a-z]$`)
	instanceTypeRE = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9]+$`)
	amiRE          = regexp.MustCompile(`^ami-[0-9a-f]{8,17}$`)
	// lbNameRE is AWS's rule for load balancer and target group names.
	lbNameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$`)
	// awsImages are the names image may use instead of an AMI id; the
	// provider looks up the channel's newest Flatcar AMI.
	awsImages = []string{"flatcar-stable", "flatcar-beta", "flatcar-alpha"}
	// logRetentionDays are the values CloudWatch Logs accepts.
	logRetentionDays = []int{1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}

	awsSchema = &hcl.BodySchema{
		Attributes: []hcl.AttributeSchema{
			{Name: "region", Required: true},
			{Name: "availability_zones"},
			{Name: "vpc_cidr"},
			{Name: "subnets"},
			{Name: "allow_ssh_from"},
			{Name: "key_pair"},
			{Name: "endpoint"},
			{Name: "profile"},
			{Name: "overlay"},
		},
	}
	volumeSchema       = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "size_gb", Required: true}}}
	loadBalancerSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{
		{Name: "port", Required: true}, {Name: "target_port"}, {Name: "protocol"}, {Name: "sticky"},
	}}
	backupBucketSchema = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "expiration_days"}}}
	logGroupSchema     = &hcl.BodySchema{Attributes: []hcl.AttributeSchema{{Name: "retention_days"}}}
)

func decodeAWS(body hcl.Body, ctx *hcl.EvalContext, _ string, p *Provider) hcl.Diagnostics {
	content, diags := body.Content(awsSchema)
	a := &AWSProvider{VPCCIDR: defaultVPCCIDR, Overlay: defaultAWSOverlay}
	p.AWS = a

	attr, d := decodeAttr(content, "region", ctx, &a.Region)
	diags = append(diags, d...)
	regionOK := attr != nil && awsRegionRE.MatchString(a.Region)
	if attr != nil && !regionOK {
		diags = append(diags, attrError(attr, "Invalid region",
			fmt.Sprintf(`region must be an AWS region such as "us-west-2", "eu-central-1" or "ap-southeast-2", got %q.`, a.Region)))
	}
	diags = append(diags, a.decodeZones(content, ctx, regionOK)...)
	diags = append(diags, a.decodeNetworks(content, ctx)...)

	attr, d = decodeAttr(content, "key_pair", ctx, &a.KeyPair)
	diags = append(diags, d...)
	if attr != nil && strings.TrimSpace(a.KeyPair) == "" {
		diags = append(diags, attrError(attr, "Invalid key_pair",
			`key_pair must name an EC2 key pair, such as "my-keypair"; remove it to launch without one.`))
	}
	attr, d = decodeAttr(content, "endpoint", ctx, &a.Endpoint)
	diags = append(diags, d...)
	if attr != nil && a.Endpoint != "" {
		if u, err := url.Parse(a.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			diags = append(diags, attrError(attr, "Invalid endpoint",
				fmt.Sprintf(`endpoint must be an http:// or https:// URL such as "http://localhost:4566", got %q.`, a.Endpoint)))
		}
	}
	_, d = decodeAttr(content, "profile", ctx, &a.Profile)
	diags = append(diags, d...)
	attr, d = decodeAttr(content, "overlay", ctx, &a.Overlay)
	diags = append(diags, d...)
	if attr != nil && a.Overlay != "vxlan" && a.Overlay != "aws-vpc" {
		diags = append(diags, attrError(attr, "Invalid overlay",
			fmt.Sprintf(`overlay must be "vxlan" or "aws-vpc" (routes in the VPC route table), got %q.`, a.Overlay)))
	}
	return diags
}

// decodeZones decodes availability_zones, or defaults it to the region's
// zones a, b and c when the region is valid.
func (a *AWSProvider) decodeZones(content *hcl.BodyContent, ctx *hcl.EvalContext, regionOK bool) hcl.Diagnostics {
	if _, ok := content.Attributes["availability_zones"]; !ok {
		if regionOK {
			a.Zones = []string{a.Region + "a", a.Region + "b", a.Region + "c"}
		}
		return nil
	}
	attr, diags := decodeAttr(content, "availability_zones", ctx, &a.Zones)
	if attr == nil {
		a.Zones = nil
		return diags
	}
	if len(a.Zones) == 0 || len(a.Zones) > maxAWSZones {
		a.Zones = nil
		return append(diags, attrError(attr, "Invalid availability_zones",
			fmt.Sprintf("availability_zones must list 1 to %d zones, such as [\"us-west-2a\", \"us-west-2b\"]; remove it for the region's zones a, b and c.", maxAWSZones)))
	}
	ok := true
	for i, z := range a.Zones {
		var problem string
		switch {
		case !awsZoneRE.MatchString(z):
			problem = fmt.Sprintf("%q is not an availability zone name: a zone is its region followed by a letter, such as \"us-west-2a\".", z)
		case regionOK && z[:len(z)-1] != a.Region:
			problem = fmt.Sprintf("availability zone %q is not in region %q; the region's zones are named %sa, %sb, and so on.", z, a.Region, a.Region, a.Region)
		case slices.Contains(a.Zones[:i], z):
			problem = fmt.Sprintf("availability zone %q is listed twice; each zone gets one subnet.", z)
		default:
			continue
		}
		ok = false
		diags = append(diags, elemError(attr, i, len(a.Zones), "Invalid availability_zones", problem))
	}
	if !ok {
		a.Zones = nil // so that no subnet count is checked against it
	}
	return diags
}

// decodeNetworks decodes vpc_cidr, subnets and allow_ssh_from.
func (a *AWSProvider) decodeNetworks(content *hcl.BodyContent, ctx *hcl.EvalContext) hcl.Diagnostics {
	var diags hcl.Diagnostics
	var s string
	vpcAttr, d := decodeAttr(content, "vpc_cidr", ctx, &s)
	diags = append(diags, d...)
	if _, set := content.Attributes["vpc_cidr"]; set {
		a.VPCCIDR = netip.Prefix{}
	}
	if vpcAttr != nil {
		if n, problem := parseAWSCIDR("vpc_cidr", s); problem != "" {
			diags = append(diags, attrError(vpcAttr, "Invalid vpc_cidr", problem))
		} else {
			a.VPCCIDR = n
		}
	}

	var subnets []string
	attr, d := decodeAttr(content, "subnets", ctx, &subnets)
	diags = append(diags, d...)
	_, subnetsSet := content.Attributes["subnets"]
	switch {
	case attr != nil:
		diags = append(diags, a.checkSubnets(attr, subnets)...)
	case subnetsSet || !a.VPCCIDR.IsValid() || a.Zones == nil:
		// What these depend on is in error, which is reported already.
	case a.ZoneSubnets() == nil:
		r := content.MissingItemRange
		if vpcAttr != nil {
			r = vpcAttr.Expr.Range()
		}
		need := awsDefaultSubnetBits - bits.Len(uint(len(a.Zones)-1))
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Invalid vpc_cidr",
			Detail: fmt.Sprintf("vpc_cidr %s has no room for one /24 per availability zone (%d zones); widen it to /%d or wider, or set subnets to one smaller subnet per zone.",
				a.VPCCIDR, len(a.Zones), need),
			Subject: r.Ptr(),
		})
	}

	diags = append(diags, a.decodeSSHFrom(content, ctx)...)
	return diags
}

// checkSubnets checks the subnets attribute's values and sets Subnets when
// they are all valid.
func (a *AWSProvider) checkSubnets(attr *hcl.Attribute, subnets []string) hcl.Diagnostics {
	var diags hcl.Diagnostics
	if a.Zones != nil && len(subnets) != len(a.Zones) {
		return append(diags, attrError(attr, "Invalid subnets",
			fmt.Sprintf("subnets must give one subnet per availability zone, in the zones' order: %d zones (%s), %d subnets.",
				len(a.Zones), strings.Join(a.Zones, ", "), len(subnets))))
	}
	parsed := make([]netip.Prefix, len(subnets))
	ok := true
	for i, s := range subnets {
		n, problem := parseAWSCIDR("subnet", s)
		if problem == "" && a.VPCCIDR.IsValid() && !(a.VPCCIDR.Bits() <= n.Bits() && a.VPCCIDR.Contains(n.Addr())) {
			problem = fmt.Sprintf("subnet %s is not inside vpc_cidr %s.", n, a.VPCCIDR)
		}
		if problem == "" {
			for j, m := range parsed[:i] {
				if m.IsValid() && m.Overlaps(n) {
					problem = fmt.Sprintf("subnet %s overlaps subnet %s (the %s); subnets must not overlap.", n, m, ordinal(j+1))
					break
				}
			}
		}
		if problem != "" {
			ok = false
			diags = append(diags, elemError(attr, i, len(subnets), "Invalid subnets", problem))
			continue
		}
		parsed[i] = n
	}
	if ok && a.Zones != nil {
		a.Subnets = parsed
	}
	return diags
}

// decodeSSHFrom decodes allow_ssh_from: one CIDR or a list of them.
func (a *AWSProvider) decodeSSHFrom(content *hcl.BodyContent, ctx *hcl.EvalContext) hcl.Diagnostics {
	var val cty.Value
	attr, diags := decodeAttr(content, "allow_ssh_from", ctx, &val)
	if attr == nil {
		return diags
	}
	var cidrs []string
	if val.Type() == cty.String {
		cidrs = []string{val.AsString()}
	} else if list, err := convert.Convert(val, cty.List(cty.String)); err != nil || list.IsNull() || gocty.FromCtyValue(list, &cidrs) != nil {
		return append(diags, attrError(attr, "Invalid allow_ssh_from",
			`allow_ssh_from must be a CIDR or a list of CIDRs, such as "203.0.113.0/24" or ["203.0.113.0/24", "198.51.100.7/32"].`))
	}
	for i, s := range cidrs {
		n, err := netip.ParsePrefix(s)
		var problem string
		switch {
		case err != nil:
			problem = fmt.Sprintf(`allow_ssh_from entries must be CIDRs such as "203.0.113.0/24", got %q.`, s)
			if ip, err := netip.ParseAddr(s); err == nil {
				problem += fmt.Sprintf(" For one address, write %q.", netip.PrefixFrom(ip, ip.BitLen()))
			}
		case n != n.Masked():
			problem = fmt.Sprintf("allow_ssh_from entry %s has host bits set; did you mean %s?", n, n.Masked())
		default:
			a.AllowSSHFrom = append(a.AllowSSHFrom, n)
			continue
		}
		diags = append(diags, elemError(attr, i, len(cidrs), "Invalid allow_ssh_from", problem))
	}
	return diags
}

// parseAWSCIDR parses a VPC or subnet network, named what in messages, or
// says what is wrong with it.
func parseAWSCIDR(what, s string) (netip.Prefix, string) {
	n, err := netip.ParsePrefix(s)
	switch {
	case err != nil || !n.Addr().Is4():
		return n, fmt.Sprintf(`%s must be an IPv4 network such as "10.1.0.0/16", got %q.`, what, s)
	case n.Bits() < awsMinBits || n.Bits() > awsMaxBits:
		return n, fmt.Sprintf("%s %s: AWS allows prefix lengths /%d to /%d, got /%d.", what, n, awsMinBits, awsMaxBits, n.Bits())
	case n != n.Masked():
		return n, fmt.Sprintf("%s %s has host bits set; did you mean %s?", what, n, n.Masked())
	}
	return n, ""
}

// decodeAWSGroup decodes a node group's instance_type and image
// attributes and volume and load_balancer blocks. Their defaults depend
// on the provider, which may come later in the file: checkAWS sets them.
func decodeAWSGroup(content *hcl.BodyContent, ctx *hcl.EvalContext, g *NodeGroup) hcl.Diagnostics {
	var diags hcl.Diagnostics
	for _, name := range []string{"instance_type", "image"} {
		if attr, ok := content.Attributes[name]; ok {
			g.awsOnly = append(g.awsOnly, awsSetting{name, attr.Range})
		}
	}
	attr, d := decodeAttr(content, "instance_type", ctx, &g.InstanceType)
	diags = append(diags, d...)
	if attr != nil && !instanceTypeRE.MatchString(g.InstanceType) {
		detail := fmt.Sprintf(`instance_type must be an EC2 instance type such as "t3.small" or "m5d.2xlarge", got %q.`, g.InstanceType)
		if l := strings.ToLower(g.InstanceType); l != g.InstanceType && instanceTypeRE.MatchString(l) {
			detail += fmt.Sprintf(" Instance types are lowercase: did you mean %q?", l)
		}
		diags = append(diags, attrError(attr, "Invalid instance_type", detail))
	}
	attr, d = decodeAttr(content, "image", ctx, &g.Image)
	diags = append(diags, d...)
	if attr != nil && !slices.Contains(awsImages, g.Image) && !amiRE.MatchString(g.Image) {
		diags = append(diags, attrError(attr, "Invalid image",
			fmt.Sprintf(`image must be %s, or an AMI id such as "ami-0123456789abcdef0", got %q.`, quoteList(awsImages), g.Image)))
	}

	paths := map[string]*hcl.Block{}
	for _, b := range content.Blocks {
		switch b.Type {
		case "volume":
			g.awsOnly = append(g.awsOnly, awsSetting{"volume", b.DefRange})
			if first, ok := paths[b.Labels[0]]; ok {
				diags = append(diags, duplicateIn(b, first, g.Name))
				continue
			}
			paths[b.Labels[0]] = b
			v, d := decodeVolume(b, ctx)
			diags = append(diags, d...)
			g.Volumes = append(g.Volumes, v)
		case "load_balancer":
			// Names are unique across the file; checkAWS checks that.
			g.awsOnly = append(g.awsOnly, awsSetting{"load_balancer", b.DefRange})
			lb, d := decodeLoadBalancer(b, ctx)
			diags = append(diags, d...)
			g.LoadBalancers = append(g.LoadBalancers, lb)
		}
	}
	return diags
}

// awsSetting locates a node group's setting that only provider "aws" uses.
type awsSetting struct {
	name string
	rng  hcl.Range
}

func decodeVolume(b *hcl.Block, ctx *hcl.EvalContext) (Volume, hcl.Diagnostics) {
	v := Volume{Path: b.Labels[0], DeclRange: b.DefRange}
	content, diags := b.Body.Content(volumeSchema)
	switch p := v.Path; {
	case !path.IsAbs(p):
		diags = append(diags, labelError(b, "Invalid volume path",
			fmt.Sprintf("volume path %q must be an absolute path to mount the volume at, such as \"/var/lib/docker\".", p)))
	case p == "/":
		diags = append(diags, labelError(b, "Invalid volume path", `volume path "/" is the root file system, which is the boot volume; mount the volume below it.`))
	case path.Clean(p) != p:
		diags = append(diags, labelError(b, "Invalid volume path",
			fmt.Sprintf("volume path %q is not clean; did you mean %q?", p, path.Clean(p))))
	}
	attr, d := decodeAttr(content, "size_gb", ctx, &v.SizeGB)
	diags = append(diags, d...)
	if attr != nil && (v.SizeGB < 1 || v.SizeGB > maxVolumeGB) {
		diags = append(diags, attrError(attr, "Invalid size_gb",
			fmt.Sprintf("size_gb must be between 1 and %d (EBS's largest volume), got %d.", maxVolumeGB, v.SizeGB)))
	}
	return v, diags
}

func decodeLoadBalancer(b *hcl.Block, ctx *hcl.EvalContext) (LoadBalancer, hcl.Diagnostics) {
	lb := LoadBalancer{Name: b.Labels[0], Protocol: "HTTP", DeclRange: b.DefRange}
	content, diags := b.Body.Content(loadBalancerSchema)
	switch n := lb.Name; {
	case len(n) > maxLBNameLen || !lbNameRE.MatchString(n):
		diags = append(diags, labelError(b, "Invalid load_balancer name",
			fmt.Sprintf("load_balancer name %q must be 1 to %d letters, digits and hyphens, not starting or ending with a hyphen: "+
				"AWS's limit for load balancer names, and on AWS it becomes \"<cluster>-%s\", which must fit that limit too.", n, maxLBNameLen, n)))
	case strings.HasPrefix(strings.ToLower(n), "internal-"):
		diags = append(diags, labelError(b, "Invalid load_balancer name",
			fmt.Sprintf("load_balancer name %q must not start with \"internal-\": AWS reserves that prefix.", n)))
	case n == "etcd" || n == "deploy":
		diags = append(diags, labelError(b, "Invalid load_balancer name",
			fmt.Sprintf(`load_balancer name %q is reserved: "<cluster>-etcd" is the cluster's internal etcd load balancer and "<cluster>-deploy" its deploy hook's. Choose another name.`, n)))
	}
	for _, f := range []struct {
		name   string
		target *int
	}{{"port", &lb.Port}, {"target_port", &lb.TargetPort}} {
		attr, d := decodeAttr(content, f.name, ctx, f.target)
		diags = append(diags, d...)
		if attr != nil && (*f.target < 1 || *f.target > 65535) {
			diags = append(diags, attrError(attr, "Invalid "+f.name,
				fmt.Sprintf("%s must be between 1 and 65535, got %d.", f.name, *f.target)))
		}
	}
	if _, ok := content.Attributes["target_port"]; !ok {
		lb.TargetPort = lb.Port
	}
	protoAttr, d := decodeAttr(content, "protocol", ctx, &lb.Protocol)
	diags = append(diags, d...)
	if protoAttr != nil && lb.Protocol != "HTTP" && lb.Protocol != "HTTPS" && lb.Protocol != "TCP" {
		detail := fmt.Sprintf(`protocol must be "HTTP", "HTTPS" or "TCP", got %q.`, lb.Protocol)
		if u := strings.ToUpper(lb.Protocol); u != lb.Protocol && (u == "HTTP" || u == "HTTPS" || u == "TCP") {
			detail += fmt.Sprintf(" Protocols are uppercase: did you mean %q?", u)
		}
		diags = append(diags, attrError(protoAttr, "Invalid protocol", detail))
	}
	attr, d := decodeAttr(content, "sticky", ctx, &lb.Sticky)
	diags = append(diags, d...)
	if attr != nil && lb.Sticky && lb.Protocol == "TCP" {
		diags = append(diags, attrError(attr, "Invalid sticky",
			`sticky needs protocol "HTTP" or "HTTPS": stickiness is a load-balancer cookie, and a TCP load balancer sees no cookies. Remove sticky or change protocol.`))
	}
	return lb, diags
}

// decodeAWSBlock decodes a backup_bucket or log_group block into cfg,
// reporting a second one of either.
func decodeAWSBlock(block *hcl.Block, ctx *hcl.EvalContext, cfg *Config) hcl.Diagnostics {
	var diags hcl.Diagnostics
	var (
		schema *hcl.BodySchema
		name   string
		target *int
		check  func(int) string
	)
	switch block.Type {
	case "backup_bucket":
		cfg.BackupBucket = &BackupBucket{ExpirationDays: defaultBackupDays, DeclRange: block.DefRange}
		schema, name, target = backupBucketSchema, "expiration_days", &cfg.BackupBucket.ExpirationDays
		check = func(n int) string {
			if n < 1 {
				return fmt.Sprintf("expiration_days is how many days snapshots are kept and must be 1 or more, got %d.", n)
			}
			return ""
		}
	default: // log_group
		cfg.LogGroup = &LogGroup{RetentionDays: defaultLogRetention, DeclRange: block.DefRange}
		schema, name, target = logGroupSchema, "retention_days", &cfg.LogGroup.RetentionDays
		check = func(n int) string {
			if slices.Contains(logRetentionDays, n) {
				return ""
			}
			vals := make([]string, len(logRetentionDays))
			for i, v := range logRetentionDays {
				vals[i] = strconv.Itoa(v)
			}
			return fmt.Sprintf("retention_days must be one of the values CloudWatch Logs accepts: %s; got %d.", strings.Join(vals, ", "), n)
		}
	}
	content, d := block.Body.Content(schema)
	diags = append(diags, d...)
	attr, d := decodeAttr(content, name, ctx, target)
	diags = append(diags, d...)
	if attr != nil {
		if problem := check(*target); problem != "" {
			diags = append(diags, attrError(attr, "Invalid "+name, problem))
		}
	}
	return diags
}

// checkAWS checks the parts of the file that belong to provider "aws"
// against the provider: with it, it sets their defaults and checks what
// spans blocks; with another, it reports every aws-only setting.
func checkAWS(cfg *Config) hcl.Diagnostics {
	var diags hcl.Diagnostics
	p := &cfg.Provider
	if p.Type != "aws" {
		if p.Type == "" {
			return nil // no provider, reported already
		}
		elsewhere := func(what string, r hcl.Range) {
			diags = append(diags, &hcl.Diagnostic{
				Severity: hcl.DiagError,
				Summary:  fmt.Sprintf("%s belongs to the aws provider", what),
				Detail: fmt.Sprintf("%s is a setting of provider \"aws\", but this file's provider is %q, which has no use for it; remove it, or use provider \"aws\".",
					what, p.Type),
				Subject: r.Ptr(),
			})
		}
		for _, g := range cfg.NodeGroups {
			for _, s := range g.awsOnly {
				elsewhere(s.name, s.rng)
			}
		}
		if cfg.BackupBucket != nil {
			elsewhere("backup_bucket", cfg.BackupBucket.DeclRange)
		}
		if cfg.LogGroup != nil {
			elsewhere("log_group", cfg.LogGroup.DeclRange)
		}
		return diags
	}

	if cfg.BackupBucket == nil {
		cfg.BackupBucket = &BackupBucket{ExpirationDays: defaultBackupDays}
	}
	if cfg.LogGroup == nil {
		cfg.LogGroup = &LogGroup{RetentionDays: defaultLogRetention}
	}
	names := map[string]LoadBalancer{}
	clusterOK := nameRE.MatchString(cfg.Cluster.Name)
	for i := range cfg.NodeGroups {
		g := &cfg.NodeGroups[i]
		if g.InstanceType == "" {
			g.InstanceType = defaultAWSInstanceType
		}
		if g.Image == "" {
			g.Image = defaultAWSImage
		}
		for _, lb := range g.LoadBalancers {
			if first, ok := names[lb.Name]; ok {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  fmt.Sprintf("Duplicate load_balancer %q", lb.Name),
					Detail: fmt.Sprintf("A load_balancer %q is already defined at %s; load balancer names are unique across the file, as they name AWS load balancers. Rename one of them.",
						lb.Name, position(first.DeclRange)),
					Subject: lb.DeclRange.Ptr(),
				})
				continue
			}
			names[lb.Name] = lb
			full := cfg.Cluster.Name + "-" + lb.Name
			if clusterOK && lbNameRE.MatchString(lb.Name) && len(lb.Name) <= maxLBNameLen && len(full) > maxLBNameLen {
				diags = append(diags, &hcl.Diagnostic{
					Severity: hcl.DiagError,
					Summary:  "Load balancer name too long",
					Detail: fmt.Sprintf("On AWS, load_balancer %q is named %q, %d characters; AWS allows at most %d. Shorten the load_balancer or the cluster name.",
						lb.Name, full, len(full), maxLBNameLen),
					Subject: lb.DeclRange.Ptr(),
				})
			}
		}
	}
	if n := cfg.Network; n != nil && n.CIDR.IsValid() && p.AWS != nil && p.AWS.VPCCIDR.IsValid() && n.CIDR.Overlaps(p.AWS.VPCCIDR) {
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  "Overlapping networks",
			Detail:   fmt.Sprintf("The network cidr %s overlaps the aws provider's vpc_cidr %s; the overlay needs a range of its own.", n.CIDR, p.AWS.VPCCIDR),
			Subject:  n.DeclRange.Ptr(),
		})
	}
	return diags
}

// quoteList formats names as `"a", "b" or "c"`.
func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	if len(q) < 2 {
		return strings.Join(q, "")
	}
	return strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
}
