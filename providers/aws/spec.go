package aws

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strings"

	"github.com/corral-dev/corral/clusterd/deployhook"
)

// Spec is the cluster's AWS infrastructure as provision wants it; provision
// maps its HCL file (provider "aws", node groups, backup_bucket, log_group)
// to it. Zero BackupExpirationDays and LogRetentionDays take the file's
// defaults (10 and 7 days).
type Spec struct {
	Cluster string
	Region  string
	Zones   []string
	VPCCIDR netip.Prefix
	// Subnets are the zones' subnets, Subnets[i] in Zones[i]; nil carves
	// one /24 per zone, in order, from the start of VPCCIDR.
	Subnets      []netip.Prefix
	AllowSSHFrom []netip.Prefix
	// KeyPair is the EC2 key pair to launch with; "" for none.
	KeyPair string
	// Endpoint, when set, is every AWS client's base endpoint (emulators).
	Endpoint string
	// Profile is the shared-config profile; "" for the default chain.
	Profile string
	Groups  []Group
	// BackupExpirationDays is how long objects under backups/ are kept.
	BackupExpirationDays int
	// LogRetentionDays is the log group's retention, a value CloudWatch
	// Logs accepts.
	LogRetentionDays int
	// AWSVPC is true for the overlay backend aws-vpc: the nodes' policy
	// then lets clusterd write routes in the VPC's route table and turn
	// off their source/destination check.
	AWSVPC bool
	// DeployHookPort is the deploy_hook block's port
	// (deployhook.DefaultPort unless the block sets one), which the nodes
	// open to the load balancers; 0, without a deploy_hook block, opens
	// nothing.
	DeployHookPort int
}

// Group is one node group: an Auto Scaling group with its launch template.
type Group struct {
	Name                string
	Desired, Min, Max   int
	InstanceType, Image string // Image: "flatcar-stable" (or -beta, -alpha) or an AMI id
	Volumes             []Volume
	LoadBalancers       []LoadBalancer
	UserData            []byte // as the instance receives it; base64-encoded here
}

// Volume is an extra EBS volume of each machine of a group. Volumes get
// device names /dev/xvdb, /dev/xvdc… in order; Path is where the node's
// user data mounts it, recorded here only as the volume's tag.
type Volume struct {
	Path   string
	SizeGB int
}

// LoadBalancer is a load balancer in front of a group: Port on the load
// balancer forwards to TargetPort on the instances. Protocol "HTTP" makes
// an application load balancer, "TCP" a network load balancer.
type LoadBalancer struct {
	Name       string
	Port       int
	TargetPort int
	Protocol   string
	Sticky     bool
}

// Defaults for the zero values of Spec, the same as provision/config's.
const (
	defaultBackupDays   = 10
	defaultLogRetention = 7
	// maxUserData is EC2's limit on user data, before base64.
	maxUserData = 16 << 10
	// maxELBName is AWS's limit on load balancer and target group names.
	maxELBName = 32
)

var (
	clusterRE = regexp.MustCompile(`^[a-z][a-z0-9-]*[a-z0-9]$`)
	groupRE   = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
	amiRE     = regexp.MustCompile(`^ami-[0-9a-f]{8,17}$`)
	// flatcarChannels maps the image names Group.Image may use to the AMI
	// name pattern of that Flatcar channel.
	flatcarChannels = map[string]string{
		"flatcar-stable": "Flatcar-stable-*",
		"flatcar-beta":   "Flatcar-beta-*",
		"flatcar-alpha":  "Flatcar-alpha-*",
	}
	logRetentionDays = []int{1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653}
)

// prepare checks s, fills its defaults and derived values, and says which
// field is wrong and how to fix it. provision/config checks the file
// first; this guards the API itself.
func (s *Spec) prepare() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("aws spec: %s: %s", field, fmt.Sprintf(format, args...))
	}
	if !clusterRE.MatchString(s.Cluster) || len(s.Cluster) > 28 {
		return bad("cluster", "%q must be 2 to 28 lowercase letters, digits and hyphens, starting with a letter: it names the bucket, load balancers and roles", s.Cluster)
	}
	if strings.HasPrefix(s.Cluster, "xn--") || strings.HasPrefix(s.Cluster, "sthree-") {
		return bad("cluster", "%q starts with a prefix S3 reserves, and the cluster name starts the bucket's name; choose another", s.Cluster)
	}
	if s.Region == "" {
		return bad("region", `is empty; set it to an AWS region such as "us-west-2"`)
	}
	if len(s.Zones) == 0 {
		return bad("zones", "is empty; list at least one availability zone of %s", s.Region)
	}
	if !s.VPCCIDR.IsValid() || !s.VPCCIDR.Addr().Is4() || s.VPCCIDR.Bits() < 16 || s.VPCCIDR.Bits() > 28 {
		return bad("vpc_cidr", "%v must be an IPv4 network from /16 to /28", s.VPCCIDR)
	}
	s.VPCCIDR = s.VPCCIDR.Masked()
	if s.Subnets == nil {
		if s.VPCCIDR.Bits() > 24 || len(s.Zones) > 1<<(24-s.VPCCIDR.Bits()) {
			return bad("vpc_cidr", "%s has no room for one /24 per zone (%d zones); widen it or give subnets", s.VPCCIDR, len(s.Zones))
		}
		base := s.VPCCIDR.Addr().As4()
		n := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
		for i := range s.Zones {
			v := n + uint32(i)<<8
			s.Subnets = append(s.Subnets, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 24))
		}
	}
	if len(s.Subnets) != len(s.Zones) {
		return bad("subnets", "gives %d subnets for %d zones; give one per zone, in the zones' order", len(s.Subnets), len(s.Zones))
	}
	for i, n := range s.Subnets {
		if !s.VPCCIDR.Contains(n.Addr()) || n.Bits() < s.VPCCIDR.Bits() {
			return bad(fmt.Sprintf("subnets[%d]", i), "%s is not inside vpc_cidr %s", n, s.VPCCIDR)
		}
	}
	if s.DeployHookPort != 0 {
		if err := deployhook.CheckPort(s.DeployHookPort); err != nil {
			return bad("deploy_hook.port", "%v; leave it 0 without a deploy_hook block", err)
		}
	}
	if s.BackupExpirationDays == 0 {
		s.BackupExpirationDays = defaultBackupDays
	}
	if s.BackupExpirationDays < 1 {
		return bad("backup_bucket.expiration_days", "must be 1 or more, got %d", s.BackupExpirationDays)
	}
	if s.LogRetentionDays == 0 {
		s.LogRetentionDays = defaultLogRetention
	}
	if !slices.Contains(logRetentionDays, s.LogRetentionDays) {
		return bad("log_group.retention_days", "%d is not a value CloudWatch Logs accepts (%v)", s.LogRetentionDays, logRetentionDays)
	}
	if len(s.Groups) == 0 {
		return bad("groups", "is empty; a cluster needs at least one node group")
	}
	lbNames := map[string]bool{}
	for i := range s.Groups {
		g := &s.Groups[i]
		field := func(f string) string { return fmt.Sprintf("groups[%d] (%s).%s", i, g.Name, f) }
		if !groupRE.MatchString(g.Name) {
			return bad(fmt.Sprintf("groups[%d].name", i), "%q must be lowercase letters, digits and hyphens, starting with a letter", g.Name)
		}
		if g.Min < 0 || g.Min > g.Desired || g.Desired > g.Max {
			return bad(field("desired_capacity"), "min %d ≤ desired %d ≤ max %d does not hold", g.Min, g.Desired, g.Max)
		}
		if g.InstanceType == "" {
			return bad(field("instance_type"), `is empty; set an EC2 instance type such as "t3.small"`)
		}
		if _, ok := flatcarChannels[g.Image]; !ok && !amiRE.MatchString(g.Image) {
			return bad(field("image"), `%q must be "flatcar-stable", "flatcar-beta", "flatcar-alpha" or an AMI id such as "ami-0123456789abcdef0"`, g.Image)
		}
		if len(g.UserData) > maxUserData {
			return bad(field("user data"), "is %d bytes; EC2 allows %d: move files out of the user data (fetch them from the bucket)", len(g.UserData), maxUserData)
		}
		if len(g.Volumes) > 24 {
			return bad(field("volume"), "%d volumes; at most 24 (/dev/xvdb to /dev/xvdy)", len(g.Volumes))
		}
		for _, v := range g.Volumes {
			if v.SizeGB < 1 || v.SizeGB > 16384 {
				return bad(field(fmt.Sprintf("volume %q.size_gb", v.Path)), "must be between 1 and 16384, got %d", v.SizeGB)
			}
		}
		for j := range g.LoadBalancers {
			lb := &g.LoadBalancers[j]
			lf := func(f string) string { return field(fmt.Sprintf("load_balancer %q.%s", lb.Name, f)) }
			if lb.Protocol == "" {
				lb.Protocol = "HTTP"
			}
			if lb.TargetPort == 0 {
				lb.TargetPort = lb.Port
			}
			switch {
			case lb.Name == "etcd" || lb.Name == "deploy" || lbNames[lb.Name]:
				return bad(lf("name"), "is reserved or used twice; load balancer names are unique, and \"etcd\" and \"deploy\" are the cluster's own")
			case len(s.Cluster)+1+len(lb.Name) > maxELBName:
				return bad(lf("name"), "%q is longer than AWS's %d characters; shorten it or the cluster name", s.Cluster+"-"+lb.Name, maxELBName)
			case lb.Port < 1 || lb.Port > 65535 || lb.TargetPort < 1 || lb.TargetPort > 65535:
				return bad(lf("port"), "ports must be 1 to 65535, got %d → %d", lb.Port, lb.TargetPort)
			case lb.Protocol == "HTTPS":
				return bad(lf("protocol"), `"HTTPS" needs a certificate, which the aws provider does not take yet; use "HTTP", or "TCP" and terminate TLS on the nodes`)
			case lb.Protocol != "HTTP" && lb.Protocol != "TCP":
				return bad(lf("protocol"), `must be "HTTP" or "TCP", got %q`, lb.Protocol)
			case lb.Protocol == "HTTP" && len(s.Zones) < 2:
				return bad(lf("protocol"), "an application load balancer (HTTP) needs subnets in at least two availability zones; list two zones, or use TCP")
			case lb.Sticky && lb.Protocol == "TCP":
				return bad(lf("sticky"), "stickiness is a load-balancer cookie, which TCP has not; remove sticky or use HTTP")
			}
			lbNames[lb.Name] = true
		}
	}
	if len(s.Cluster)+len("-etcd") > maxELBName {
		return bad("cluster", "%q is too long for the load balancer name %q", s.Cluster, s.Cluster+"-etcd")
	}
	return nil
}

// Names of the resources, all derived from the cluster name, so that a
// second run (or Destroy with no state at all) finds what the first made.
func (s *Spec) name(thing string) string { return s.Cluster + "-" + thing }

// volumeDevice is the device name of a group's i-th extra volume.
func volumeDevice(i int) string { return "/dev/xvd" + string(rune('b'+i)) }

// subnetName names the subnet of zone ("demo-us-west-2a").
func (s *Spec) subnetName(zone string) string { return s.name(zone) }

// bucketName is <cluster>-<account>-<region>: globally unique across
// accounts and regions, and a valid bucket name since the cluster name is.
func (s *Spec) bucketName(account string) string {
	return strings.ToLower(s.Cluster + "-" + account + "-" + s.Region)
}

// backupPrefix is where clusterd/backup keeps snapshots in the cluster's
// bucket (destination "s3": backups/<cluster>/).
const backupPrefix = "backups/"

// logGroup is the CloudWatch Logs group of the cluster.
func (s *Spec) logGroup() string { return "/corral/" + s.Cluster }

// Tag keys.
const (
	tagCluster = "corral:cluster"
	tagGroup   = "corral:group"
	tagName    = "Name"
)

// tags returns the tags of the resource named name: the cluster, Name and,
// when group is not "", the node group.
func (s *Spec) tags(name, group string) map[string]string {
	t := map[string]string{tagCluster: s.Cluster, tagName: name}
	if group != "" {
		t[tagGroup] = group
	}
	return t
}
