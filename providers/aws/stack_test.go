package aws

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"golang.org/x/crypto/ssh"

	"github.com/corral-dev/corral/clusterd/deployhook"
	"github.com/corral-dev/corral/internal/awsemu"
	"github.com/corral-dev/corral/internal/syncbuf"
)

// emu starts an emulator for the test and returns it with its URL.
func emu(t *testing.T) (*awsemu.Emulator, string) {
	t.Helper()
	return emuWith(t, awsemu.Options{})
}

// emuWith starts an emulator with opts.
func emuWith(t *testing.T, opts awsemu.Options) (*awsemu.Emulator, string) {
	t.Helper()
	awsemu.SetTestEnv(t)
	e := awsemu.New(opts)
	url, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	importKey(t, url)
	return e, url
}

// importKey imports the test spec's key pair, demo-key, as a user would.
func importKey(t *testing.T, url string) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	_, err = newClients(url).ec2.ImportKeyPair(context.Background(), &ec2.ImportKeyPairInput{
		KeyName: aws.String("demo-key"), PublicKeyMaterial: ssh.MarshalAuthorizedKey(key)})
	if err != nil {
		t.Fatal(err)
	}
}

// testSpec is a two-group cluster: core with a sticky HTTP load balancer
// and a volume, workers with none.
func testSpec(endpoint string) Spec {
	return Spec{
		Cluster: "demo", Region: "us-west-2", Zones: []string{"us-west-2a", "us-west-2b"},
		VPCCIDR:      netip.MustParsePrefix("10.1.0.0/16"),
		AllowSSHFrom: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
		KeyPair:      "demo-key", Endpoint: endpoint,
		Groups: []Group{
			{Name: "core", Desired: 3, Min: 3, Max: 5, InstanceType: "t3.small", Image: "ami-0123456789abcdef0",
				Volumes:       []Volume{{Path: "/var/lib/docker", SizeGB: 10}},
				LoadBalancers: []LoadBalancer{{Name: "web", Port: 80, TargetPort: 3000, Protocol: "HTTP", Sticky: true}},
				UserData:      []byte("#cloud-config\nhostname: core\n")},
			{Name: "worker", Desired: 2, Min: 1, Max: 4, InstanceType: "t3.medium", Image: "ami-0fedcba9876543210",
				UserData: []byte("#cloud-config\nhostname: worker\n")},
		},
		BackupExpirationDays: 10, LogRetentionDays: 7, DeployHookPort: deployhook.DefaultPort,
	}
}

func newStack(t *testing.T, spec Spec) (*Stack, *syncbuf.Buffer) {
	t.Helper()
	log := &syncbuf.Buffer{}
	s, err := New(context.Background(), spec, Options{Log: log, WaitDelay: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, ProfileWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s, log
}

// clients are plain SDK clients for the tests to look at what Apply made.
type clients struct {
	ec2 *ec2.Client
	asg *autoscaling.Client
	elb *elb.Client
	iam *iam.Client
	s3  *s3.Client
	lg  *cloudwatchlogs.Client
}

func newClients(url string) clients {
	cfg := awsemu.TestConfig(url)
	return clients{ec2.NewFromConfig(cfg), autoscaling.NewFromConfig(cfg), elb.NewFromConfig(cfg), iam.NewFromConfig(cfg),
		s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true }), cloudwatchlogs.NewFromConfig(cfg)}
}

// mutating returns the mutating calls the emulator served after the
// first skip calls.
func mutating(e *awsemu.Emulator, skip int) []string {
	var out []string
	for _, c := range e.Calls()[skip:] {
		if c.Mutating {
			out = append(out, c.Service+":"+c.Action)
		}
	}
	return out
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func hasTags(tags []types.Tag, want map[string]string) bool {
	have := map[string]string{}
	for _, t := range tags {
		have[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return containsAll(have, want)
}

func TestApplyFromNothing(t *testing.T) {
	e, url := emu(t)
	ctx := context.Background()
	s, log := newStack(t, testSpec(url))
	out, err := s.Apply(ctx)
	if err != nil {
		t.Fatalf("apply: %v\nlog:\n%s", err, log)
	}
	c := newClients(url)
	cluster := map[string]string{tagCluster: "demo"}

	// Outputs.
	if out.VPCID == "" || len(out.SubnetIDs) != 2 || out.RouteTableID == "" || out.EtcdDNS == "" || out.LoadBalancers["web"] == "" {
		t.Errorf("outputs incomplete: %+v", out)
	}
	if out.Bucket != "demo-"+e.AccountID()+"-us-west-2" || out.LogGroup != "/corral/demo" {
		t.Errorf("bucket %q, log group %q", out.Bucket, out.LogGroup)
	}
	if out.TemplateVersions["core"] != 1 || out.TemplateVersions["worker"] != 1 || len(out.Replace) != 0 {
		t.Errorf("template versions %v, replace %v", out.TemplateVersions, out.Replace)
	}

	// Network.
	vpcs := must[*ec2.DescribeVpcsOutput](t)(c.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{out.VPCID}}))
	if v := vpcs.Vpcs[0]; aws.ToString(v.CidrBlock) != "10.1.0.0/16" || !hasTags(v.Tags, map[string]string{tagCluster: "demo", "Name": "demo-vpc"}) {
		t.Errorf("vpc %s %v", aws.ToString(v.CidrBlock), v.Tags)
	}
	for _, attr := range []types.VpcAttributeName{types.VpcAttributeNameEnableDnsSupport, types.VpcAttributeNameEnableDnsHostnames} {
		a := must[*ec2.DescribeVpcAttributeOutput](t)(c.ec2.DescribeVpcAttribute(ctx, &ec2.DescribeVpcAttributeInput{VpcId: &out.VPCID, Attribute: attr}))
		if (a.EnableDnsSupport == nil || !aws.ToBool(a.EnableDnsSupport.Value)) && (a.EnableDnsHostnames == nil || !aws.ToBool(a.EnableDnsHostnames.Value)) {
			t.Errorf("vpc attribute %s is off", attr)
		}
	}
	sns := must[*ec2.DescribeSubnetsOutput](t)(c.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: out.SubnetIDs}))
	cidrs := map[string]string{}
	for _, sn := range sns.Subnets {
		cidrs[aws.ToString(sn.AvailabilityZone)] = aws.ToString(sn.CidrBlock)
		if !aws.ToBool(sn.MapPublicIpOnLaunch) || !hasTags(sn.Tags, cluster) {
			t.Errorf("subnet %s: map public ip %v, tags %v", aws.ToString(sn.SubnetId), aws.ToBool(sn.MapPublicIpOnLaunch), sn.Tags)
		}
	}
	if cidrs["us-west-2a"] != "10.1.0.0/24" || cidrs["us-west-2b"] != "10.1.1.0/24" {
		t.Errorf("subnets carved as %v", cidrs)
	}
	igws := must[*ec2.DescribeInternetGatewaysOutput](t)(c.ec2.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{Filters: s.byCluster()}))
	if len(igws.InternetGateways) != 1 || len(igws.InternetGateways[0].Attachments) != 1 || aws.ToString(igws.InternetGateways[0].Attachments[0].VpcId) != out.VPCID {
		t.Errorf("internet gateways %+v", igws.InternetGateways)
	}
	rtbs := must[*ec2.DescribeRouteTablesOutput](t)(c.ec2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: []string{out.RouteTableID}}))
	rt := rtbs.RouteTables[0]
	var def string
	for _, r := range rt.Routes {
		if aws.ToString(r.DestinationCidrBlock) == "0.0.0.0/0" {
			def = aws.ToString(r.GatewayId)
		}
	}
	var assoc []string
	for _, a := range rt.Associations {
		assoc = append(assoc, aws.ToString(a.SubnetId))
	}
	if def != aws.ToString(igws.InternetGateways[0].InternetGatewayId) || !slices.Equal(sorted(assoc), sorted(out.SubnetIDs)) {
		t.Errorf("route table: default route → %q, associations %v", def, assoc)
	}

	// Security groups: nodes' rules, with the self references.
	sgs := must[*ec2.DescribeSecurityGroupsOutput](t)(c.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: s.byCluster()}))
	ids := map[string]string{}
	for _, g := range sgs.SecurityGroups {
		ids[aws.ToString(g.GroupId)] = aws.ToString(g.GroupName)
	}
	rules := map[string][]string{}
	for _, g := range sgs.SecurityGroups {
		for _, r := range flatten(g.IpPermissions, ids) {
			rules[aws.ToString(g.GroupName)] = append(rules[aws.ToString(g.GroupName)], r.String())
		}
	}
	for _, want := range []string{"tcp 22 from 203.0.113.0/24", "all traffic from group demo-lb", "tcp 2379 from group demo-nodes",
		"tcp 2380 from group demo-nodes", "tcp 7379 from group demo-nodes", "udp 8472 from group demo-nodes",
		"tcp 9479 from 10.1.0.0/16", "tcp 9443 from group demo-lb"} {
		if !slices.Contains(rules["demo-nodes"], want) {
			t.Errorf("demo-nodes lacks %q: %v", want, rules["demo-nodes"])
		}
	}
	if !slices.Equal(rules["demo-lb"], []string{"tcp 80 from 0.0.0.0/0", "tcp 9443 from 0.0.0.0/0"}) { // web, deploy hook
		t.Errorf("demo-lb rules %v", rules["demo-lb"])
	}

	// IAM.
	role := must[*iam.GetRoleOutput](t)(c.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("demo-node")}))
	if !sameDocument(aws.ToString(role.Role.AssumeRolePolicyDocument), trustPolicy) {
		t.Errorf("trust policy %s", aws.ToString(role.Role.AssumeRolePolicyDocument))
	}
	pol := must[*iam.GetRolePolicyOutput](t)(c.iam.GetRolePolicy(ctx, &iam.GetRolePolicyInput{RoleName: aws.String("demo-node"), PolicyName: aws.String(policyName)}))
	doc := aws.ToString(pol.PolicyDocument)
	for _, want := range []string{"ec2:DescribeInstances", "s3:GetObject", "arn:aws:s3:::" + out.Bucket, "logs:PutLogEvents"} {
		if !strings.Contains(doc, want) && !strings.Contains(doc, strings.ReplaceAll(want, ":", "%3A")) {
			t.Errorf("policy lacks %s: %s", want, doc)
		}
	}
	// What clusterd/backup and clusterd/logship call, each on its resource.
	logGroup := "arn:aws:logs:us-west-2:123456789012:log-group:/corral/demo"
	for action, resource := range map[string]string{
		"s3:PutObject":         "arn:aws:s3:::" + out.Bucket + "/backups/demo/demo-20260101T000000Z-r1.db",
		"s3:GetObject":         "arn:aws:s3:::" + out.Bucket + "/backups/demo/demo-20260101T000000Z-r1.db",
		"s3:DeleteObject":      "arn:aws:s3:::" + out.Bucket + "/backups/demo/demo-20260101T000000Z-r1.db",
		"s3:ListBucket":        "arn:aws:s3:::" + out.Bucket,
		"logs:CreateLogGroup":  logGroup,
		"logs:CreateLogStream": logGroup + ":log-stream:core-1",
		"logs:PutLogEvents":    logGroup + ":log-stream:core-1",
	} {
		if !allows(t, doc, action, resource) {
			t.Errorf("policy does not allow %s on %s: %s", action, resource, doc)
		}
	}
	if allows(t, doc, "s3:DeleteObject", "arn:aws:s3:::"+out.Bucket+"/bootstrap/ca.crt") {
		t.Errorf("policy allows deleting outside backups/: %s", doc)
	}
	if strings.Contains(doc, "CreateRoute") {
		t.Errorf("policy grants route changes without the aws-vpc overlay: %s", doc)
	}
	prof := must[*iam.GetInstanceProfileOutput](t)(c.iam.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String("demo-node")}))
	if len(prof.InstanceProfile.Roles) != 1 || aws.ToString(prof.InstanceProfile.Roles[0].RoleName) != "demo-node" {
		t.Errorf("instance profile roles %+v", prof.InstanceProfile.Roles)
	}

	// Bucket and log group.
	lc := must[*s3.GetBucketLifecycleConfigurationOutput](t)(c.s3.GetBucketLifecycleConfiguration(ctx, &s3.GetBucketLifecycleConfigurationInput{Bucket: &out.Bucket}))
	if len(lc.Rules) != 1 || aws.ToString(lc.Rules[0].Filter.Prefix) != "backups/" || aws.ToInt32(lc.Rules[0].Expiration.Days) != 10 {
		t.Errorf("lifecycle %+v", lc.Rules)
	}
	bt := must[*s3.GetBucketTaggingOutput](t)(c.s3.GetBucketTagging(ctx, &s3.GetBucketTaggingInput{Bucket: &out.Bucket}))
	if len(bt.TagSet) < 2 {
		t.Errorf("bucket tags %v", bt.TagSet)
	}
	lgs := must[*cloudwatchlogs.DescribeLogGroupsOutput](t)(c.lg.DescribeLogGroups(ctx, &cloudwatchlogs.DescribeLogGroupsInput{LogGroupNamePrefix: aws.String("/corral/demo")}))
	if len(lgs.LogGroups) != 1 || aws.ToInt32(lgs.LogGroups[0].RetentionInDays) != 7 {
		t.Errorf("log groups %+v", lgs.LogGroups)
	}

	// Launch template and Auto Scaling group of core.
	v := must[*ec2.DescribeLaunchTemplateVersionsOutput](t)(c.ec2.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
		LaunchTemplateName: aws.String("demo-core"), Versions: []string{"$Latest"}}))
	d := v.LaunchTemplateVersions[0].LaunchTemplateData
	ud, _ := base64.StdEncoding.DecodeString(aws.ToString(d.UserData))
	if aws.ToString(d.ImageId) != "ami-0123456789abcdef0" || d.InstanceType != "t3.small" || aws.ToString(d.KeyName) != "demo-key" ||
		string(ud) != "#cloud-config\nhostname: core\n" || d.IamInstanceProfile == nil || aws.ToString(d.IamInstanceProfile.Name) != "demo-node" ||
		len(d.BlockDeviceMappings) != 1 || aws.ToString(d.BlockDeviceMappings[0].DeviceName) != "/dev/xvdb" ||
		aws.ToInt32(d.BlockDeviceMappings[0].Ebs.VolumeSize) != 10 || len(d.SecurityGroupIds) != 1 || ids[d.SecurityGroupIds[0]] != "demo-nodes" {
		t.Errorf("launch template data %+v", d)
	}
	groups := must[*autoscaling.DescribeAutoScalingGroupsOutput](t)(c.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{
		AutoScalingGroupNames: []string{"demo-core"}}))
	a := groups.AutoScalingGroups[0]
	if aws.ToInt32(a.MinSize) != 3 || aws.ToInt32(a.MaxSize) != 5 || aws.ToInt32(a.DesiredCapacity) != 3 ||
		aws.ToString(a.LaunchTemplate.LaunchTemplateName) != "demo-core" || aws.ToString(a.LaunchTemplate.Version) != "$Latest" {
		t.Errorf("auto scaling group %+v", a)
	}
	propagated := map[string]string{}
	for _, tg := range a.Tags {
		if aws.ToBool(tg.PropagateAtLaunch) {
			propagated[aws.ToString(tg.Key)] = aws.ToString(tg.Value)
		}
	}
	if propagated[tagCluster] != "demo" || propagated[tagGroup] != "core" {
		t.Errorf("tags propagated at launch: %v", propagated)
	}
	if len(a.TargetGroupARNs) != 3 { // web, the deploy hook and etcd
		t.Errorf("core's target groups: %v", a.TargetGroupARNs)
	}
	inst := must[[]Instance](t)(s.Instances(ctx, "core"))
	if len(inst) != 3 {
		t.Errorf("core has %d instances, want 3", len(inst))
	}
	for _, i := range inst {
		if i.PrivateIP == "" || i.Zone == "" {
			t.Errorf("instance %+v", i)
		}
	}

	// Load balancers.
	lbs := must[*elb.DescribeLoadBalancersOutput](t)(c.elb.DescribeLoadBalancers(ctx, &elb.DescribeLoadBalancersInput{Names: []string{"demo-web", "demo-etcd"}}))
	for _, lb := range lbs.LoadBalancers {
		switch aws.ToString(lb.LoadBalancerName) {
		case "demo-web":
			if lb.Type != "application" || lb.Scheme != "internet-facing" || len(lb.SecurityGroups) != 1 || ids[lb.SecurityGroups[0]] != "demo-lb" {
				t.Errorf("web load balancer %+v", lb)
			}
		case "demo-etcd":
			if lb.Type != "network" || lb.Scheme != "internal" {
				t.Errorf("etcd load balancer %+v", lb)
			}
		}
		ls := must[*elb.DescribeListenersOutput](t)(c.elb.DescribeListeners(ctx, &elb.DescribeListenersInput{LoadBalancerArn: lb.LoadBalancerArn}))
		if len(ls.Listeners) != 1 {
			t.Errorf("%s listeners %+v", aws.ToString(lb.LoadBalancerName), ls.Listeners)
		}
	}
	tgs := must[*elb.DescribeTargetGroupsOutput](t)(c.elb.DescribeTargetGroups(ctx, &elb.DescribeTargetGroupsInput{Names: []string{"demo-web"}}))
	attrs := must[*elb.DescribeTargetGroupAttributesOutput](t)(c.elb.DescribeTargetGroupAttributes(ctx, &elb.DescribeTargetGroupAttributesInput{TargetGroupArn: tgs.TargetGroups[0].TargetGroupArn}))
	have := map[string]string{}
	for _, a := range attrs.Attributes {
		have[aws.ToString(a.Key)] = aws.ToString(a.Value)
	}
	if have["stickiness.enabled"] != "true" || have["stickiness.type"] != "lb_cookie" || aws.ToInt32(tgs.TargetGroups[0].Port) != 3000 {
		t.Errorf("web target group port %d, attributes %v", aws.ToInt32(tgs.TargetGroups[0].Port), have)
	}
	if !strings.Contains(log.String(), `create vpc "demo-vpc"`) {
		t.Errorf("progress log lacks the vpc:\n%s", log)
	}
}

// TestIdempotent: Plan makes no mutating call; a second Apply with nothing
// changed makes none either, and Plan then says keep for everything.
func TestIdempotent(t *testing.T) {
	e, url := emu(t)
	ctx := context.Background()
	s, _ := newStack(t, testSpec(url))
	n := len(e.Calls())
	plan := must[[]Change](t)(s.Plan(ctx))
	if m := mutating(e, n); len(m) != 0 {
		t.Fatalf("plan made mutating calls: %v", m)
	}
	for _, c := range plan {
		if c.Action != Create {
			t.Errorf("plan from nothing: %s", c)
		}
	}
	if len(plan) < 20 {
		t.Errorf("plan from nothing lists %d changes: %v", len(plan), plan)
	}
	first := must[Outputs](t)(s.Apply(ctx))
	n = len(e.Calls())
	again := must[Outputs](t)(s.Apply(ctx))
	if m := mutating(e, n); len(m) != 0 {
		t.Errorf("second apply made %d mutating calls: %v", len(m), m)
	}
	again.Changes, first.Changes = nil, nil
	if fmt.Sprint(again) != fmt.Sprint(first) {
		t.Errorf("outputs differ:\n%+v\n%+v", first, again)
	}
	for _, c := range must[[]Change](t)(s.Plan(ctx)) {
		if c.Action != Keep {
			t.Errorf("plan after apply: %s", c)
		}
	}
}

func TestCapacityChangeIsOneUpdate(t *testing.T) {
	e, url := emu(t)
	ctx := context.Background()
	spec := testSpec(url)
	s, _ := newStack(t, spec)
	must[Outputs](t)(s.Apply(ctx))
	spec.Groups[1].Desired, spec.Groups[1].Max = 3, 6
	s, _ = newStack(t, spec)
	plan := must[[]Change](t)(s.Plan(ctx))
	if !slices.ContainsFunc(plan, func(c Change) bool {
		return c.Action == Update && c.Resource == `auto scaling group "demo-worker"` && strings.Contains(c.Detail, "desired 2 → 3")
	}) {
		t.Errorf("plan does not show the capacity change: %v", plan)
	}
	n := len(e.Calls())
	must[Outputs](t)(s.Apply(ctx))
	if m := mutating(e, n); !slices.Equal(m, []string{"autoscaling:UpdateAutoScalingGroup"}) {
		t.Errorf("capacity change made %v, want exactly one UpdateAutoScalingGroup", m)
	}
	g := must[*autoscaling.DescribeAutoScalingGroupsOutput](t)(newClients(url).asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"demo-worker"}}))
	if a := g.AutoScalingGroups[0]; aws.ToInt32(a.DesiredCapacity) != 3 || aws.ToInt32(a.MaxSize) != 6 {
		t.Errorf("worker: desired %d, max %d", aws.ToInt32(a.DesiredCapacity), aws.ToInt32(a.MaxSize))
	}
}

func TestUserDataChangeIsNewTemplateVersion(t *testing.T) {
	e, url := emu(t)
	ctx := context.Background()
	spec := testSpec(url)
	s, _ := newStack(t, spec)
	must[Outputs](t)(s.Apply(ctx))
	spec.Groups[0].UserData = []byte("#cloud-config\nhostname: core-v2\n")
	s, log := newStack(t, spec)
	n := len(e.Calls())
	out := must[Outputs](t)(s.Apply(ctx))
	if m := mutating(e, n); !slices.Equal(m, []string{"ec2:CreateLaunchTemplateVersion"}) {
		t.Errorf("user data change made %v, want one CreateLaunchTemplateVersion (no group replaced)", m)
	}
	if out.TemplateVersions["core"] != 2 || out.TemplateVersions["worker"] != 1 || !slices.Equal(out.Replace, []string{"core"}) {
		t.Errorf("versions %v, replace %v", out.TemplateVersions, out.Replace)
	}
	if !strings.Contains(log.String(), `node group "core" needs a rolling replacement`) {
		t.Errorf("apply did not say core needs replacing:\n%s", log)
	}
	// Replacing one instance launches its successor from version 2.
	inst := must[[]Instance](t)(s.Instances(ctx, "core"))
	if err := s.TerminateInstance(ctx, inst[0].ID, false); err != nil {
		t.Fatal(err)
	}
	after := must[[]Instance](t)(s.Instances(ctx, "core"))
	if len(after) != 3 || slices.ContainsFunc(after, func(i Instance) bool { return i.ID == inst[0].ID }) {
		t.Errorf("after replacing %s: %+v", inst[0].ID, after)
	}
	d := must[*ec2.DescribeInstancesOutput](t)(newClients(url).ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{after[len(after)-1].ID}}))
	if !hasTags(d.Reservations[0].Instances[0].Tags, map[string]string{"aws:ec2launchtemplate:version": "2", tagCluster: "demo", tagGroup: "core"}) {
		t.Errorf("replacement instance tags %v", d.Reservations[0].Instances[0].Tags)
	}
}

func TestTerminateInstanceDecrements(t *testing.T) {
	_, url := emu(t)
	ctx := context.Background()
	s, _ := newStack(t, testSpec(url))
	must[Outputs](t)(s.Apply(ctx))
	inst := must[[]Instance](t)(s.Instances(ctx, "worker"))
	if err := s.TerminateInstance(ctx, inst[1].ID, true); err != nil {
		t.Fatal(err)
	}
	after := must[[]Instance](t)(s.Instances(ctx, "worker"))
	if len(after) != 1 || after[0].ID != inst[0].ID {
		t.Errorf("after scaling in by %s: %+v", inst[1].ID, after)
	}
	err := s.TerminateInstance(ctx, "i-0000000000000dead", true)
	if err == nil || !strings.Contains(err.Error(), `terminate instance "i-0000000000000dead": ValidationError`) {
		t.Errorf("terminating an unknown instance: %v", err)
	}
}

// remaining lists what is still tagged with the cluster, by Describe calls.
func remaining(t *testing.T, s *Stack, c clients) []string {
	t.Helper()
	ctx := context.Background()
	var left []string
	f := s.byCluster()
	vpcs := must[*ec2.DescribeVpcsOutput](t)(c.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: f}))
	sns := must[*ec2.DescribeSubnetsOutput](t)(c.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: f}))
	igws := must[*ec2.DescribeInternetGatewaysOutput](t)(c.ec2.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{Filters: f}))
	rtbs := must[*ec2.DescribeRouteTablesOutput](t)(c.ec2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: f}))
	sgs := must[*ec2.DescribeSecurityGroupsOutput](t)(c.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: f}))
	lts := must[*ec2.DescribeLaunchTemplatesOutput](t)(c.ec2.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{Filters: f}))
	ins := must[*ec2.DescribeInstancesOutput](t)(c.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: f}))
	for _, v := range vpcs.Vpcs {
		left = append(left, aws.ToString(v.VpcId))
	}
	for _, v := range sns.Subnets {
		left = append(left, aws.ToString(v.SubnetId))
	}
	for _, v := range igws.InternetGateways {
		left = append(left, aws.ToString(v.InternetGatewayId))
	}
	for _, v := range rtbs.RouteTables {
		left = append(left, aws.ToString(v.RouteTableId))
	}
	for _, v := range sgs.SecurityGroups {
		left = append(left, aws.ToString(v.GroupId))
	}
	for _, v := range lts.LaunchTemplates {
		left = append(left, aws.ToString(v.LaunchTemplateName))
	}
	for _, r := range ins.Reservations {
		for _, i := range r.Instances {
			if i.State.Name != types.InstanceStateNameTerminated {
				left = append(left, aws.ToString(i.InstanceId)+" "+string(i.State.Name))
			}
		}
	}
	asgs := must[*autoscaling.DescribeAutoScalingGroupsOutput](t)(c.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{}))
	for _, g := range asgs.AutoScalingGroups {
		left = append(left, aws.ToString(g.AutoScalingGroupName))
	}
	lbs := must[*elb.DescribeLoadBalancersOutput](t)(c.elb.DescribeLoadBalancers(ctx, &elb.DescribeLoadBalancersInput{}))
	for _, lb := range lbs.LoadBalancers {
		left = append(left, aws.ToString(lb.LoadBalancerName))
	}
	tgs := must[*elb.DescribeTargetGroupsOutput](t)(c.elb.DescribeTargetGroups(ctx, &elb.DescribeTargetGroupsInput{}))
	for _, tg := range tgs.TargetGroups {
		left = append(left, aws.ToString(tg.TargetGroupName))
	}
	if _, err := c.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: aws.String("demo-node")}); !isCode(err, "NoSuchEntity") {
		left = append(left, fmt.Sprintf("iam role demo-node (%v)", err))
	}
	if _, err := c.iam.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: aws.String("demo-node")}); !isCode(err, "NoSuchEntity") {
		left = append(left, fmt.Sprintf("instance profile demo-node (%v)", err))
	}
	lgs := must[*cloudwatchlogs.DescribeLogGroupsOutput](t)(c.lg.DescribeLogGroups(ctx, &cloudwatchlogs.DescribeLogGroupsInput{LogGroupNamePrefix: aws.String("/corral/demo")}))
	for _, g := range lgs.LogGroups {
		left = append(left, aws.ToString(g.LogGroupName))
	}
	return left
}

func TestDestroy(t *testing.T) {
	e, url := emu(t)
	ctx := context.Background()
	s, log := newStack(t, testSpec(url))
	out := must[Outputs](t)(s.Apply(ctx))
	c := newClients(url)
	must[*s3.PutObjectOutput](t)(c.s3.PutObject(ctx, &s3.PutObjectInput{Bucket: &out.Bucket, Key: aws.String("backups/snap-1.db"), Body: strings.NewReader("snapshot")}))

	// A stack with no state at all finds everything by its tags.
	fresh, _ := newStack(t, testSpec(url))
	if err := fresh.Destroy(ctx, false); err != nil {
		t.Fatalf("destroy: %v\nlog:\n%s", err, log)
	}
	if left := remaining(t, s, c); len(left) != 0 {
		t.Errorf("left after destroy: %v", left)
	}
	if _, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &out.Bucket}); err != nil {
		t.Errorf("bucket deleted without force-delete-data: %v", err)
	}
	n := len(e.Calls())
	if err := fresh.Destroy(ctx, false); err != nil {
		t.Fatalf("second destroy: %v", err)
	}
	if m := mutating(e, n); len(m) != 0 {
		t.Errorf("second destroy made mutating calls: %v", m)
	}
	if err := fresh.Destroy(ctx, true); err != nil {
		t.Fatalf("destroy with data: %v", err)
	}
	if _, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &out.Bucket}); !isCode(err, "NotFound", "NoSuchBucket") {
		t.Errorf("bucket still there after force-delete-data: %v", err)
	}
}

// TestDestroyWaitsForInstances: instances take a while to terminate, and
// hold the security groups and subnets until they have; Destroy waits.
func TestDestroyWaitsForInstances(t *testing.T) {
	_, url := emuWith(t, awsemu.Options{StateDelay: 300 * time.Millisecond})
	ctx := context.Background()
	s, log := newStack(t, testSpec(url))
	must[Outputs](t)(s.Apply(ctx))
	if err := s.Destroy(ctx, true); err != nil {
		t.Fatalf("destroy: %v\nlog:\n%s", err, log)
	}
	if !strings.Contains(log.String(), "waiting for 5 instances to terminate") {
		t.Errorf("destroy did not wait for the instances:\n%s", log)
	}
	if left := remaining(t, s, newClients(url)); len(left) != 0 {
		t.Errorf("left after destroy: %v", left)
	}
}

// TestDestroyLeavesOthersAlone: another cluster's resources in the same
// account survive.
func TestDestroyLeavesOthersAlone(t *testing.T) {
	_, url := emu(t)
	ctx := context.Background()
	other := testSpec(url)
	other.Cluster, other.VPCCIDR = "other", netip.MustParsePrefix("10.2.0.0/16")
	other.Groups[0].LoadBalancers[0].Name = "site"
	o, _ := newStack(t, other)
	must[Outputs](t)(o.Apply(ctx))
	s, _ := newStack(t, testSpec(url))
	must[Outputs](t)(s.Apply(ctx))
	if err := s.Destroy(ctx, true); err != nil {
		t.Fatal(err)
	}
	for _, c := range must[[]Change](t)(o.Plan(ctx)) {
		if c.Action != Keep {
			t.Errorf("other cluster after destroying demo: %s", c)
		}
	}
}

func TestPlanShowsDriftAndApplyRepairsIt(t *testing.T) {
	_, url := emu(t)
	ctx := context.Background()
	s, _ := newStack(t, testSpec(url))
	must[Outputs](t)(s.Apply(ctx))
	c := newClients(url)
	sgs := must[*ec2.DescribeSecurityGroupsOutput](t)(c.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: s.byName("demo-nodes")}))
	must[*ec2.AuthorizeSecurityGroupIngressOutput](t)(c.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{
		GroupId: sgs.SecurityGroups[0].GroupId, IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), CidrIp: aws.String("0.0.0.0/0")}))
	plan := must[[]Change](t)(s.Plan(ctx))
	want := Change{Drift, `security group "demo-nodes"`, "rule tcp 22 from 0.0.0.0/0 not in the file"}
	if !slices.Contains(plan, want) {
		t.Errorf("plan %v lacks %v", plan, want)
	}
	must[Outputs](t)(s.Apply(ctx))
	for _, c := range must[[]Change](t)(s.Plan(ctx)) {
		if c.Action != Keep {
			t.Errorf("after repair: %s", c)
		}
	}
}

func TestThrottlingConverges(t *testing.T) {
	e, url := emu(t)
	ctx := context.Background()
	e.SetThrottle(0.3)
	s, _ := newStack(t, testSpec(url))
	start := time.Now()
	if _, err := s.Apply(ctx); err != nil {
		t.Fatalf("apply with 30%% of calls throttled: %v", err)
	}
	throttled := 0
	for _, c := range e.Calls() {
		if c.Throttled {
			throttled++
		}
	}
	t.Logf("apply with 30%% throttling: %d calls, %d throttled, %v", len(e.Calls()), throttled, time.Since(start).Round(time.Millisecond))
	if throttled == 0 {
		t.Error("no call was throttled")
	}
	n := len(e.Calls())
	must[Outputs](t)(s.Apply(ctx))
	var m []string
	for _, c := range e.Calls()[n:] {
		if c.Mutating && !c.Throttled {
			m = append(m, c.Action)
		}
	}
	if len(m) != 0 {
		t.Errorf("re-run under throttling changed %v", m)
	}
}

// TestLatency: with 50 ms per call the parallel apply still converges; it
// prints the figures (call count and wall time of a full apply and a re-run).
func TestLatency(t *testing.T) {
	e, url := emu(t)
	ctx := context.Background()
	e.SetLatency(50 * time.Millisecond)
	s, _ := newStack(t, testSpec(url))
	start := time.Now()
	must[Outputs](t)(s.Apply(ctx))
	full, fullCalls := time.Since(start), len(e.Calls())
	start = time.Now()
	must[Outputs](t)(s.Apply(ctx))
	rerun, rerunCalls := time.Since(start), len(e.Calls())-fullCalls
	t.Logf("50 ms per call: full apply %d calls in %v (%.1f calls in flight on average); re-run %d calls in %v",
		fullCalls, full.Round(time.Millisecond), float64(fullCalls)*0.05/full.Seconds(), rerunCalls, rerun.Round(time.Millisecond))
	if m := mutating(e, fullCalls); len(m) != 0 {
		t.Errorf("re-run made mutating calls: %v", m)
	}
}

// TestEndpointFromEnvironment: with no Endpoint in the Spec, the SDK's
// AWS_ENDPOINT_URL reaches every client.
func TestEndpointFromEnvironment(t *testing.T) {
	e, url := emu(t)
	t.Setenv("AWS_ENDPOINT_URL", url)
	s, _ := newStack(t, testSpec(""))
	if _, err := s.Plan(context.Background()); err != nil {
		t.Fatal(err)
	}
	services := map[string]bool{}
	for _, c := range e.Calls() {
		services[c.Service] = true
	}
	for _, want := range []string{"sts", "ec2", "autoscaling", "iam", "s3", "logs", "elasticloadbalancing"} {
		if !services[want] {
			t.Errorf("no %s call reached the emulator through AWS_ENDPOINT_URL (saw %v)", want, services)
		}
	}
}

func TestAWSErrorsNameOperationAndResource(t *testing.T) {
	_, url := emu(t)
	ctx := context.Background()
	spec := testSpec(url)
	s, _ := newStack(t, spec)
	must[Outputs](t)(s.Apply(ctx))

	spec.Zones = append(spec.Zones, "us-west-2q") // not a zone of the region
	s, _ = newStack(t, spec)
	_, err := s.Apply(ctx)
	if err == nil || !strings.HasPrefix(err.Error(), `create subnet "demo-us-west-2q": `) {
		t.Errorf("apply in a zone that does not exist: %v", err)
	}
	var ae *Error
	if !errors.As(err, &ae) || ae.Code == "" || ae.Op != "create subnet" {
		t.Errorf("error %#v carries no AWS code", err)
	}

	spec = testSpec(url)
	spec.VPCCIDR = netip.MustParsePrefix("10.9.0.0/16")
	spec.Subnets = nil
	s, _ = newStack(t, spec)
	if _, err := s.Plan(ctx); err == nil || !strings.Contains(err.Error(), "a VPC's CIDR cannot change") {
		t.Errorf("plan with a new vpc cidr: %v", err)
	}
}

func TestSpecErrorsNameTheField(t *testing.T) {
	for _, tc := range []struct {
		edit func(*Spec)
		want string
	}{
		{func(s *Spec) { s.Cluster = "Demo" }, "cluster"},
		{func(s *Spec) { s.Zones = nil }, "zones"},
		{func(s *Spec) { s.VPCCIDR = netip.MustParsePrefix("10.0.0.0/8") }, "vpc_cidr"},
		{func(s *Spec) {
			s.Subnets = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24"), netip.MustParsePrefix("10.1.1.0/24")}
		}, "subnets[0]"},
		{func(s *Spec) { s.Groups[1].Min = 3 }, "groups[1] (worker).desired_capacity"},
		{func(s *Spec) { s.Groups[0].Image = "ubuntu" }, "groups[0] (core).image"},
		{func(s *Spec) { s.Groups[0].UserData = make([]byte, 17<<10) }, "groups[0] (core).user data"},
		{func(s *Spec) { s.Groups[0].LoadBalancers[0].Protocol = "HTTPS" }, `load_balancer "web".protocol`},
		{func(s *Spec) { s.Groups[0].LoadBalancers[0].Name = "a-very-long-load-balancer-name" }, `load_balancer "a-very-long-load-balancer-name".name`},
		{func(s *Spec) { s.LogRetentionDays = 8 }, "log_group.retention_days"},
		{func(s *Spec) { s.Zones, s.Subnets = s.Zones[:1], nil }, "needs subnets in at least two availability zones"},
		{func(s *Spec) { s.Cluster = "xn--demo" }, "prefix S3 reserves"},
		{func(s *Spec) { s.DeployHookPort = 70000 }, "deploy_hook.port"},
	} {
		spec := testSpec("http://127.0.0.1:1")
		tc.edit(&spec)
		_, err := New(context.Background(), spec, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error naming %s, got %v", tc.want, err)
		}
	}
	spec := testSpec("")
	spec.Zones = []string{"us-west-2a", "us-west-2b", "us-west-2c"}
	if err := spec.prepare(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(spec.Subnets); got != "[10.1.0.0/24 10.1.1.0/24 10.1.2.0/24]" {
		t.Errorf("carved subnets %s", got)
	}
}

func TestArchitecture(t *testing.T) {
	for typ, want := range map[string]string{"t3.small": "x86_64", "t4g.small": "arm64", "m6gd.large": "arm64", "g4dn.xlarge": "x86_64", "c7gn.large": "arm64", "m5.large": "x86_64"} {
		if got := architecture(typ); got != want {
			t.Errorf("architecture(%s) = %s, want %s", typ, got, want)
		}
	}
}

// TestSharedConfigProfile: Spec.Profile selects the shared config profile,
// its credentials and its endpoint_url.
func TestSharedConfigProfile(t *testing.T) {
	e, url := emu(t)
	awsemu.SetTestProfiles(t, "[profile work]\nregion = eu-west-1\nendpoint_url = "+url+"\n",
		"[work]\naws_access_key_id = AKIDWORK\naws_secret_access_key = worksecret\n")
	spec := testSpec("")
	spec.Profile = "work"
	s, _ := newStack(t, spec)
	n := len(e.Calls())
	if _, err := s.Plan(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(e.Calls()) == n {
		t.Error("no call reached the emulator through the profile's endpoint_url")
	}
	spec.Profile = "nosuch"
	if _, err := New(context.Background(), spec, Options{}); err == nil || !strings.Contains(err.Error(), `profile "nosuch"`) {
		t.Errorf("unknown profile: %v", err)
	}
}

// allows reports whether the policy document (possibly URL-encoded, as IAM
// returns it) has an Allow statement naming action on a resource pattern
// that matches resource, with IAM's "*" wildcard (which, unlike a shell's,
// matches "/" too).
func allows(t *testing.T, doc, action, resource string) bool {
	t.Helper()
	if d, err := url.QueryUnescape(doc); err == nil {
		doc = d
	}
	var p struct{ Statement []statement }
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		t.Fatalf("policy document %s: %v", doc, err)
	}
	for _, st := range p.Statement {
		if st.Effect != "Allow" || !slices.Contains(st.Action, action) {
			continue
		}
		for _, r := range st.Resource {
			pattern := "^" + strings.ReplaceAll(regexp.QuoteMeta(r), `\*`, ".*") + "$"
			if regexp.MustCompile(pattern).MatchString(resource) {
				return true
			}
		}
	}
	return false
}
