package awsemu

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
)

// startEmu runs an Emulator and returns it with an SDK config pointed at it.
func startEmu(t *testing.T, opts Options) (*Emulator, aws.Config) {
	t.Helper()
	e := New(opts)
	url, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e, TestConfig(url)
}

// scopeAuth is an Authorization header whose credential scope routes a
// hand-made request to service (signatures are not checked).
func scopeAuth(service string) string {
	return "AWS4-HMAC-SHA256 Credential=AKID/20261123/us-west-2/" + service + "/aws4_request, SignedHeaders=host, Signature=x"
}

func must[T any](v T, err error) func(testing.TB) T {
	return func(t testing.TB) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// wantCode checks that err is the AWS API error code.
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != code {
		t.Fatalf("got error %v, want %s", err, code)
	}
}

func nameTag(rt ec2types.ResourceType, name string) []ec2types.TagSpecification {
	return []ec2types.TagSpecification{{ResourceType: rt, Tags: []ec2types.Tag{{Key: aws.String("Name"), Value: aws.String(name)}}}}
}

type network struct {
	vpc, igw, rtb, sg string
	subnets           []string
	assocs            []string
}

// buildNetwork creates a VPC with three subnets in three zones, an
// internet gateway, a public route table and a self-referencing group.
func buildNetwork(t *testing.T, ctx context.Context, c *ec2.Client) network {
	t.Helper()
	var n network
	azs := must(c.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{}))(t)
	if len(azs.AvailabilityZones) < 3 {
		t.Fatalf("zones: %+v", azs.AvailabilityZones)
	}
	v := must(c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16"), TagSpecifications: nameTag(ec2types.ResourceTypeVpc, "corral")}))(t)
	n.vpc = *v.Vpc.VpcId
	must(c.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: &n.vpc, EnableDnsHostnames: &ec2types.AttributeBooleanValue{Value: aws.Bool(true)}}))(t)
	for i, az := range azs.AvailabilityZones[:3] {
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i), 0}), 24).String()
		s := must(c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: &n.vpc, CidrBlock: &cidr, AvailabilityZone: az.ZoneName,
			TagSpecifications: nameTag(ec2types.ResourceTypeSubnet, "corral-"+*az.ZoneName)}))(t)
		if *s.Subnet.AvailabilityZone != *az.ZoneName || *s.Subnet.AvailableIpAddressCount != 251 {
			t.Fatalf("subnet %+v", s.Subnet)
		}
		n.subnets = append(n.subnets, *s.Subnet.SubnetId)
	}
	g := must(c.CreateInternetGateway(ctx, &ec2.CreateInternetGatewayInput{}))(t)
	n.igw = *g.InternetGateway.InternetGatewayId
	must(c.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{InternetGatewayId: &n.igw, VpcId: &n.vpc}))(t)
	rt := must(c.CreateRouteTable(ctx, &ec2.CreateRouteTableInput{VpcId: &n.vpc}))(t)
	n.rtb = *rt.RouteTable.RouteTableId
	must(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &n.rtb, DestinationCidrBlock: aws.String("0.0.0.0/0"), GatewayId: &n.igw}))(t)
	for _, s := range n.subnets {
		a := must(c.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{RouteTableId: &n.rtb, SubnetId: aws.String(s)}))(t)
		n.assocs = append(n.assocs, *a.AssociationId)
	}
	sg := must(c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{VpcId: &n.vpc, GroupName: aws.String("nodes"), Description: aws.String("cluster nodes")}))(t)
	n.sg = *sg.GroupId
	must(c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &n.sg, IpPermissions: []ec2types.IpPermission{
		{IpProtocol: aws.String("-1"), UserIdGroupPairs: []ec2types.UserIdGroupPair{{GroupId: &n.sg}}},
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}},
	}}))(t)
	return n
}

func TestEC2Network(t *testing.T) {
	ctx := context.Background()
	_, cfg := startEmu(t, Options{})
	c := ec2.NewFromConfig(cfg)
	n := buildNetwork(t, ctx, c)

	attr := must(c.DescribeVpcAttribute(ctx, &ec2.DescribeVpcAttributeInput{VpcId: &n.vpc, Attribute: ec2types.VpcAttributeNameEnableDnsHostnames}))(t)
	if !*attr.EnableDnsHostnames.Value {
		t.Error("enableDnsHostnames not set")
	}

	_, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: &n.vpc, CidrBlock: aws.String("10.0.1.128/25")})
	wantCode(t, err, "InvalidSubnet.Conflict")
	_, err = c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: &n.vpc, CidrBlock: aws.String("10.1.0.0/24")})
	wantCode(t, err, "InvalidSubnet.Range")
	_, err = c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: &n.vpc, CidrBlock: aws.String("10.0.9.0/24"), AvailabilityZone: aws.String("eu-west-1a")})
	wantCode(t, err, "InvalidParameterValue")

	// A duplicate rule is refused.
	_, err = c.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: &n.sg, IpPermissions: []ec2types.IpPermission{
		{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), IpRanges: []ec2types.IpRange{{CidrIp: aws.String("0.0.0.0/0")}}}}})
	wantCode(t, err, "InvalidPermission.Duplicate")

	sgs := must(c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{n.vpc}}, {Name: aws.String("group-name"), Values: []string{"nodes"}}}}))(t)
	if len(sgs.SecurityGroups) != 1 {
		t.Fatalf("groups: %+v", sgs.SecurityGroups)
	}
	var self, ssh bool
	for _, p := range sgs.SecurityGroups[0].IpPermissions {
		if *p.IpProtocol == "-1" && len(p.UserIdGroupPairs) == 1 && *p.UserIdGroupPairs[0].GroupId == n.sg {
			self = true
		}
		if *p.IpProtocol == "tcp" && *p.FromPort == 22 && len(p.IpRanges) == 1 && *p.IpRanges[0].CidrIp == "0.0.0.0/0" {
			ssh = true
		}
	}
	if !self || !ssh || len(sgs.SecurityGroups[0].IpPermissionsEgress) != 1 {
		t.Errorf("rules: %+v", sgs.SecurityGroups[0])
	}
	all := must(c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{n.vpc}}}}))(t)
	if len(all.SecurityGroups) != 2 { // nodes and default
		t.Errorf("groups in VPC: %d", len(all.SecurityGroups))
	}

	rts := must(c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: []ec2types.Filter{{Name: aws.String("association.subnet-id"), Values: []string{n.subnets[1]}}}}))(t)
	if len(rts.RouteTables) != 1 || *rts.RouteTables[0].RouteTableId != n.rtb || len(rts.RouteTables[0].Routes) != 2 ||
		*rts.RouteTables[0].Routes[1].GatewayId != n.igw || len(rts.RouteTables[0].Associations) != 3 {
		t.Errorf("route tables: %+v", rts.RouteTables)
	}
	igws := must(c.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{Filters: []ec2types.Filter{{Name: aws.String("attachment.vpc-id"), Values: []string{n.vpc}}}}))(t)
	if len(igws.InternetGateways) != 1 || *igws.InternetGateways[0].Attachments[0].VpcId != n.vpc {
		t.Errorf("igws: %+v", igws.InternetGateways)
	}

	// The VPC cannot go while it has dependencies; tear down in order.
	_, err = c.DeleteVpc(ctx, &ec2.DeleteVpcInput{VpcId: &n.vpc})
	wantCode(t, err, "DependencyViolation")
	_, err = c.DeleteRouteTable(ctx, &ec2.DeleteRouteTableInput{RouteTableId: &n.rtb})
	wantCode(t, err, "DependencyViolation")
	for _, a := range n.assocs {
		must(c.DisassociateRouteTable(ctx, &ec2.DisassociateRouteTableInput{AssociationId: aws.String(a)}))(t)
	}
	must(c.DeleteRouteTable(ctx, &ec2.DeleteRouteTableInput{RouteTableId: &n.rtb}))(t)
	_, err = c.DeleteInternetGateway(ctx, &ec2.DeleteInternetGatewayInput{InternetGatewayId: &n.igw})
	wantCode(t, err, "DependencyViolation")
	must(c.DetachInternetGateway(ctx, &ec2.DetachInternetGatewayInput{InternetGatewayId: &n.igw, VpcId: &n.vpc}))(t)
	must(c.DeleteInternetGateway(ctx, &ec2.DeleteInternetGatewayInput{InternetGatewayId: &n.igw}))(t)
	must(c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &n.sg}))(t)
	for _, s := range n.subnets {
		must(c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: aws.String(s)}))(t)
	}
	must(c.DeleteVpc(ctx, &ec2.DeleteVpcInput{VpcId: &n.vpc}))(t)
	_, err = c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{n.vpc}})
	wantCode(t, err, "InvalidVpcID.NotFound")
}

func TestEC2TagFilters(t *testing.T) {
	ctx := context.Background()
	_, cfg := startEmu(t, Options{})
	c := ec2.NewFromConfig(cfg)
	a := must(c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16"), TagSpecifications: nameTag(ec2types.ResourceTypeVpc, "alpha")}))(t)
	b := must(c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.1.0.0/16")}))(t)
	must(c.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{*b.Vpc.VpcId},
		Tags: []ec2types.Tag{{Key: aws.String("corral:cluster"), Value: aws.String("beta")}}}))(t)

	byName := must(c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:Name"), Values: []string{"alpha"}}}}))(t)
	if len(byName.Vpcs) != 1 || *byName.Vpcs[0].VpcId != *a.Vpc.VpcId || *byName.Vpcs[0].Tags[0].Value != "alpha" {
		t.Errorf("tag:Name: %+v", byName.Vpcs)
	}
	byKey := must(c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("tag-key"), Values: []string{"corral:*"}}}}))(t)
	if len(byKey.Vpcs) != 1 || *byKey.Vpcs[0].VpcId != *b.Vpc.VpcId {
		t.Errorf("tag-key: %+v", byKey.Vpcs)
	}
	tags := must(c.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []ec2types.Filter{{Name: aws.String("resource-type"), Values: []string{"vpc"}}}}))(t)
	if len(tags.Tags) != 2 {
		t.Errorf("tags: %+v", tags.Tags)
	}
	must(c.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{*a.Vpc.VpcId}, Tags: []ec2types.Tag{{Key: aws.String("Name")}}}))(t)
	none := must(c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:Name"), Values: []string{"alpha"}}}}))(t)
	if len(none.Vpcs) != 0 {
		t.Errorf("after DeleteTags: %+v", none.Vpcs)
	}
	_, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("bogus"), Values: []string{"x"}}}})
	wantCode(t, err, "InvalidParameterValue")
}

func TestEC2LaunchTemplatesAndInstances(t *testing.T) {
	ctx := context.Background()
	_, cfg := startEmu(t, Options{StateDelay: 300 * time.Millisecond})
	c := ec2.NewFromConfig(cfg)
	n := buildNetwork(t, ctx, c)

	const userData = "I2Nsb3VkLWNvbmZpZwo=" // base64, kept as given
	lt := must(c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("nodes"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-0123456789abcdef0"),
			InstanceType: ec2types.InstanceTypeT3Small, UserData: aws.String(userData), SecurityGroupIds: []string{n.sg},
			TagSpecifications: []ec2types.LaunchTemplateTagSpecificationRequest{{ResourceType: ec2types.ResourceTypeInstance,
				Tags: []ec2types.Tag{{Key: aws.String("Role"), Value: aws.String("node")}}}}}}))(t)
	ltID := *lt.LaunchTemplate.LaunchTemplateId
	v2 := must(c.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{LaunchTemplateId: &ltID, SourceVersion: aws.String("1"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{InstanceType: ec2types.InstanceTypeT3Large}}))(t)
	if *v2.LaunchTemplateVersion.VersionNumber != 2 || *v2.LaunchTemplateVersion.LaunchTemplateData.UserData != userData ||
		v2.LaunchTemplateVersion.LaunchTemplateData.InstanceType != ec2types.InstanceTypeT3Large {
		t.Fatalf("version 2: %+v", v2.LaunchTemplateVersion.LaunchTemplateData)
	}
	must(c.ModifyLaunchTemplate(ctx, &ec2.ModifyLaunchTemplateInput{LaunchTemplateId: &ltID, DefaultVersion: aws.String("2")}))(t)
	lts := must(c.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{LaunchTemplateNames: []string{"nodes"}}))(t)
	if len(lts.LaunchTemplates) != 1 || *lts.LaunchTemplates[0].DefaultVersionNumber != 2 || *lts.LaunchTemplates[0].LatestVersionNumber != 2 {
		t.Fatalf("templates: %+v", lts.LaunchTemplates)
	}
	vs := must(c.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{LaunchTemplateId: &ltID, Versions: []string{"$Default", "1"}}))(t)
	if len(vs.LaunchTemplateVersions) != 2 || !*vs.LaunchTemplateVersions[0].DefaultVersion ||
		vs.LaunchTemplateVersions[1].LaunchTemplateData.SecurityGroupIds[0] != n.sg {
		t.Fatalf("versions: %+v", vs.LaunchTemplateVersions)
	}

	run := must(c.RunInstances(ctx, &ec2.RunInstancesInput{MinCount: aws.Int32(2), MaxCount: aws.Int32(2), SubnetId: aws.String(n.subnets[0]),
		LaunchTemplate: &ec2types.LaunchTemplateSpecification{LaunchTemplateName: aws.String("nodes")}}))(t)
	if len(run.Instances) != 2 || run.Instances[0].State.Name != ec2types.InstanceStateNamePending {
		t.Fatalf("run: %+v", run.Instances)
	}
	if ip := *run.Instances[0].PrivateIpAddress; ip != "10.0.0.4" {
		t.Errorf("first IP %s, want 10.0.0.4", ip)
	}
	ids := []string{*run.Instances[0].InstanceId, *run.Instances[1].InstanceId}
	w := ec2.NewInstanceRunningWaiter(c, func(o *ec2.InstanceRunningWaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 200*time.Millisecond
	})
	if err := w.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	d := must(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
		{Name: aws.String("instance-state-name"), Values: []string{"running"}}, {Name: aws.String("tag:Role"), Values: []string{"node"}}}}))(t)
	if len(d.Reservations) != 1 || len(d.Reservations[0].Instances) != 2 {
		t.Fatalf("reservations: %+v", d.Reservations)
	}
	in := d.Reservations[0].Instances[0]
	if in.InstanceType != ec2types.InstanceTypeT3Large || *in.SubnetId != n.subnets[0] || *in.SecurityGroups[0].GroupId != n.sg ||
		*in.Placement.AvailabilityZone == "" {
		t.Errorf("instance: %+v", in)
	}
	var ltVer string
	for _, tg := range in.Tags {
		if *tg.Key == "aws:ec2launchtemplate:version" {
			ltVer = *tg.Value
		}
	}
	if ltVer != "2" {
		t.Errorf("launch template version tag %q", ltVer)
	}

	must(c.ModifyInstanceAttribute(ctx, &ec2.ModifyInstanceAttributeInput{InstanceId: &ids[0], SourceDestCheck: &ec2types.AttributeBooleanValue{Value: aws.Bool(false)}}))(t)
	ia := must(c.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{InstanceId: &ids[0], Attribute: ec2types.InstanceAttributeNameSourceDestCheck}))(t)
	if *ia.SourceDestCheck.Value {
		t.Error("SourceDestCheck still true")
	}
	must(c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &n.rtb, DestinationCidrBlock: aws.String("10.244.0.0/24"), InstanceId: &ids[0]}))(t)
	must(c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &n.rtb, DestinationCidrBlock: aws.String("10.244.0.0/24"), InstanceId: &ids[1]}))(t)

	_, err := c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: &n.subnets[0]})
	wantCode(t, err, "DependencyViolation")
	_, err = c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &n.sg})
	wantCode(t, err, "DependencyViolation")
	must(c.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: ids}))(t)
	tw := ec2.NewInstanceTerminatedWaiter(c, func(o *ec2.InstanceTerminatedWaiterOptions) {
		o.MinDelay, o.MaxDelay = 100*time.Millisecond, 200*time.Millisecond
	})
	if err := tw.Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	must(c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: &n.subnets[0]}))(t)
	must(c.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: &ltID}))(t)
}

func TestAutoScalingGroupLifecycle(t *testing.T) {
	ctx := context.Background()
	e, cfg := startEmu(t, Options{})
	c := ec2.NewFromConfig(cfg)
	as := autoscaling.NewFromConfig(cfg)
	n := buildNetwork(t, ctx, c)
	must(c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("workers"),
		LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-0123456789abcdef0"), SecurityGroupIds: []string{n.sg}}}))(t)
	lb := elbv2.NewFromConfig(cfg)
	tgARN := *must(lb.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("workers"),
		Protocol: elbtypes.ProtocolEnumTcp, Port: aws.Int32(2379), VpcId: &n.vpc}))(t).TargetGroups[0].TargetGroupArn
	// targets lists the instances registered in the target group.
	targets := func() []string {
		t.Helper()
		h := must(lb.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: &tgARN}))(t)
		var ids []string
		for _, d := range h.TargetHealthDescriptions {
			ids = append(ids, *d.Target.Id)
		}
		slices.Sort(ids)
		return ids
	}
	groupIDs := func(g astypes.AutoScalingGroup) []string {
		var ids []string
		for _, in := range g.Instances {
			ids = append(ids, *in.InstanceId)
		}
		slices.Sort(ids)
		return ids
	}

	_, err := as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String("bad"),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("workers")},
		MinSize:              aws.Int32(1), MaxSize: aws.Int32(2), DesiredCapacity: aws.Int32(3), VPCZoneIdentifier: &n.subnets[0]})
	wantCode(t, err, "ValidationError") // desired capacity above max
	_, err = as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String("bad"),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("workers")},
		MinSize:              aws.Int32(1), MaxSize: aws.Int32(2), VPCZoneIdentifier: &n.subnets[0],
		TargetGroupARNs: []string{"arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/nope/0123456789abcdef"}})
	wantCode(t, err, "ValidationError") // unknown target group

	before := mutating(e)
	must(as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{
		AutoScalingGroupName: aws.String("workers"),
		LaunchTemplate:       &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("workers"), Version: aws.String("$Latest")},
		MinSize:              aws.Int32(1), MaxSize: aws.Int32(5), DesiredCapacity: aws.Int32(3),
		VPCZoneIdentifier: aws.String(n.subnets[0] + "," + n.subnets[1] + "," + n.subnets[2]),
		TargetGroupARNs:   []string{tgARN},
		Tags: []astypes.Tag{
			{Key: aws.String("corral:cluster"), Value: aws.String("c1"), PropagateAtLaunch: aws.Bool(true)},
			{Key: aws.String("internal"), Value: aws.String("x"), PropagateAtLaunch: aws.Bool(false)},
		},
	}))(t)
	if got := mutating(e) - before; got != 1 {
		t.Errorf("mutating calls for CreateAutoScalingGroup: %d", got)
	}

	group := func() astypes.AutoScalingGroup {
		t.Helper()
		out := must(as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"workers"}}))(t)
		if len(out.AutoScalingGroups) != 1 {
			t.Fatalf("groups: %+v", out.AutoScalingGroups)
		}
		return out.AutoScalingGroups[0]
	}
	g := group()
	if len(g.Instances) != 3 || *g.DesiredCapacity != 3 || len(g.TargetGroupARNs) != 1 || len(g.AvailabilityZones) != 3 {
		t.Fatalf("group: %+v", g)
	}
	if *g.Instances[0].LaunchTemplate.Version != "1" || *g.Instances[0].HealthStatus != "Healthy" {
		t.Errorf("group instance: %+v", g.Instances[0])
	}
	if got, want := targets(), groupIDs(g); !slices.Equal(got, want) {
		t.Errorf("targets %v, want the group's instances %v", got, want)
	}

	members := func() []ec2types.Instance {
		t.Helper()
		d := must(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: []ec2types.Filter{
			{Name: aws.String("tag:aws:autoscaling:groupName"), Values: []string{"workers"}},
			{Name: aws.String("instance-state-name"), Values: []string{"pending", "running"}}}}))(t)
		var out []ec2types.Instance
		for _, r := range d.Reservations {
			out = append(out, r.Instances...)
		}
		return out
	}
	ins := members()
	if len(ins) != 3 {
		t.Fatalf("instances: %d", len(ins))
	}
	subnetCIDR := map[string]netip.Prefix{}
	sn := must(c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: n.subnets}))(t)
	for _, s := range sn.Subnets {
		subnetCIDR[*s.SubnetId] = netip.MustParsePrefix(*s.CidrBlock)
	}
	used := map[string]bool{}
	for _, in := range ins {
		used[*in.SubnetId] = true
		if !subnetCIDR[*in.SubnetId].Contains(netip.MustParseAddr(*in.PrivateIpAddress)) {
			t.Errorf("instance %s IP %s not in subnet %s", *in.InstanceId, *in.PrivateIpAddress, *in.SubnetId)
		}
		if in.State.Name != ec2types.InstanceStateNameRunning {
			t.Errorf("instance %s is %s", *in.InstanceId, in.State.Name)
		}
		tags := map[string]string{}
		for _, tg := range in.Tags {
			tags[*tg.Key] = *tg.Value
		}
		if tags["corral:cluster"] != "c1" || tags["aws:autoscaling:groupName"] != "workers" || tags["internal"] != "" {
			t.Errorf("instance tags: %v", tags)
		}
	}
	if len(used) != 3 {
		t.Errorf("instances not spread over subnets: %v", used)
	}

	must(as.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("workers"), DesiredCapacity: aws.Int32(4)}))(t)
	if g := group(); len(g.Instances) != 4 || len(members()) != 4 {
		t.Fatalf("after scale-out: %d instances", len(g.Instances))
	}
	_, err = as.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("workers"), DesiredCapacity: aws.Int32(6)})
	wantCode(t, err, "ValidationError")

	victim := *group().Instances[1].InstanceId
	must(as.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: &victim, ShouldDecrementDesiredCapacity: aws.Bool(true)}))(t)
	g = group()
	if len(g.Instances) != 3 || *g.DesiredCapacity != 3 {
		t.Fatalf("after terminate: %+v", g)
	}
	for _, in := range g.Instances {
		if *in.InstanceId == victim {
			t.Errorf("victim %s still in group", victim)
		}
	}
	vd := must(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{victim}}))(t)
	if st := vd.Reservations[0].Instances[0].State.Name; st != ec2types.InstanceStateNameTerminated && st != ec2types.InstanceStateNameShuttingDown {
		t.Errorf("victim state %s", st)
	}

	// Terminating without decrement gets a replacement.
	other := *g.Instances[0].InstanceId
	must(as.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: &other, ShouldDecrementDesiredCapacity: aws.Bool(false)}))(t)
	if got := members(); len(got) != 3 {
		t.Errorf("after replacement: %d", len(got))
	}
	if got, want := targets(), groupIDs(group()); !slices.Equal(got, want) || slices.Contains(got, other) || slices.Contains(got, victim) {
		t.Errorf("after terminations: targets %v, want the group's instances %v", got, want)
	}
	// Detaching deregisters the group's instances; attaching registers them.
	must(as.DetachLoadBalancerTargetGroups(ctx, &autoscaling.DetachLoadBalancerTargetGroupsInput{
		AutoScalingGroupName: aws.String("workers"), TargetGroupARNs: []string{tgARN}}))(t)
	if got := targets(); len(got) != 0 {
		t.Errorf("after detach: targets %v", got)
	}
	if d := must(as.DescribeLoadBalancerTargetGroups(ctx, &autoscaling.DescribeLoadBalancerTargetGroupsInput{
		AutoScalingGroupName: aws.String("workers")}))(t); len(d.LoadBalancerTargetGroups) != 0 {
		t.Errorf("after detach: %+v", d.LoadBalancerTargetGroups)
	}
	must(as.AttachLoadBalancerTargetGroups(ctx, &autoscaling.AttachLoadBalancerTargetGroupsInput{
		AutoScalingGroupName: aws.String("workers"), TargetGroupARNs: []string{tgARN}}))(t)
	if got, want := targets(), groupIDs(group()); !slices.Equal(got, want) {
		t.Errorf("after attach: targets %v, want %v", got, want)
	}
	if d := must(as.DescribeLoadBalancerTargetGroups(ctx, &autoscaling.DescribeLoadBalancerTargetGroupsInput{
		AutoScalingGroupName: aws.String("workers")}))(t); len(d.LoadBalancerTargetGroups) != 1 || *d.LoadBalancerTargetGroups[0].LoadBalancerTargetGroupARN != tgARN {
		t.Errorf("after attach: %+v", d.LoadBalancerTargetGroups)
	}
	asi := must(as.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{}))(t)
	if len(asi.AutoScalingInstances) != 3 || *asi.AutoScalingInstances[0].AutoScalingGroupName != "workers" {
		t.Errorf("autoscaling instances: %+v", asi.AutoScalingInstances)
	}

	_, err = as.UpdateAutoScalingGroup(ctx, &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: aws.String("workers"), DesiredCapacity: aws.Int32(0)})
	wantCode(t, err, "ValidationError")
	_, err = as.DeleteAutoScalingGroup(ctx, &autoscaling.DeleteAutoScalingGroupInput{AutoScalingGroupName: aws.String("workers")})
	wantCode(t, err, "ResourceInUse")
	must(as.DeleteAutoScalingGroup(ctx, &autoscaling.DeleteAutoScalingGroupInput{AutoScalingGroupName: aws.String("workers"), ForceDelete: aws.Bool(true)}))(t)
	if got := members(); len(got) != 0 {
		t.Errorf("after delete: %d", len(got))
	}
	if got := targets(); len(got) != 0 {
		t.Errorf("after delete: targets %v", got)
	}
}

func mutating(e *Emulator) int {
	n := 0
	for _, c := range e.Calls() {
		if c.Mutating && !c.Throttled {
			n++
		}
	}
	return n
}

func TestThrottleRetried(t *testing.T) {
	ctx := context.Background()
	e, cfg := startEmu(t, Options{})
	cfg.Retryer = func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = 12
			o.Backoff = retry.NewExponentialJitterBackoff(20 * time.Millisecond)
			o.RateLimiter = ratelimit.None
		})
	}
	e.SetThrottle(0.3)
	e.SetLatency(time.Millisecond)
	c := ec2.NewFromConfig(cfg)
	s := sts.NewFromConfig(cfg)
	as := autoscaling.NewFromConfig(cfg)
	lb := elbv2.NewFromConfig(cfg)
	ic := iam.NewFromConfig(cfg)
	lc := cloudwatchlogs.NewFromConfig(cfg)
	sc := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	for i := 0; i < 20; i++ {
		must(c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")}))(t)
		must(s.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}))(t)
		must(as.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{}))(t)
		must(lb.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{}))(t)
		must(ic.ListRoles(ctx, &iam.ListRolesInput{}))(t)
		must(lc.DescribeLogGroups(ctx, &cloudwatchlogs.DescribeLogGroupsInput{}))(t)
		must(sc.ListBuckets(ctx, &s3.ListBucketsInput{}))(t)
	}
	e.SetThrottle(0)
	vpcs := must(c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{}))(t)
	if len(vpcs.Vpcs) != 20 {
		t.Errorf("%d VPCs, want 20", len(vpcs.Vpcs))
	}
	throttled := map[string]int{}
	for _, c := range e.Calls() {
		if c.Throttled {
			throttled[c.Service]++
		}
	}
	for _, svc := range []string{"ec2", "sts", "autoscaling", "elasticloadbalancing", "iam", "logs", "s3"} {
		if throttled[svc] == 0 {
			t.Errorf("no throttled %s calls: %v", svc, throttled)
		}
	}
	if got := mutating(e); got != 20 {
		t.Errorf("%d mutating calls served, want 20", got)
	}
}

func TestEndpointEnvAndCallerIdentity(t *testing.T) {
	e := New(Options{AccountID: "210987654321"})
	url, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	SetTestEnv(t)
	t.Setenv("AWS_ENDPOINT_URL", url)
	t.Setenv("AWS_REGION", "us-west-2")
	os.Unsetenv("AWS_PROFILE")
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	id := must(sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}))(t)
	if *id.Account != "210987654321" || *id.Arn != "arn:aws:iam::210987654321:user/awsemu" || *id.UserId == "" {
		t.Errorf("identity: %+v", id)
	}
	regions := must(ec2.NewFromConfig(cfg).DescribeRegions(ctx, &ec2.DescribeRegionsInput{RegionNames: []string{"us-west-2"}}))(t)
	if len(regions.Regions) != 1 || *regions.Regions[0].RegionName != "us-west-2" {
		t.Errorf("regions: %+v", regions.Regions)
	}
	if calls := e.Calls(); len(calls) != 2 || calls[0].Service != "sts" || calls[0].Action != "GetCallerIdentity" || calls[0].Mutating {
		t.Errorf("calls: %+v", calls)
	}
}

// TestWireErrors checks the raw error shapes and the dispatch by
// credential scope without the SDK.
func TestWireErrors(t *testing.T) {
	e := New(Options{})
	url, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	post := func(service, body string) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, url+"/", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKID/20261123/us-west-2/"+service+"/aws4_request, SignedHeaders=host, Signature=00")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := post("ec2", "Action=DescribeVpcs&Version=2016-11-15&VpcId.1=vpc-00000000000000000")
	if code != 400 || !strings.Contains(body, "<Response><Errors><Error><Code>InvalidVpcID.NotFound</Code>") {
		t.Errorf("ec2 error: %d %s", code, body)
	}
	code, body = post("autoscaling", "Action=SetDesiredCapacity&Version=2011-01-01&AutoScalingGroupName=nope&DesiredCapacity=1")
	if code != 400 || !strings.Contains(body, "<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>") {
		t.Errorf("autoscaling error: %d %s", code, body)
	}
	e.SetThrottle(1)
	if code, body = post("ec2", "Action=DescribeVpcs&Version=2016-11-15"); code != 503 || !strings.Contains(body, "RequestLimitExceeded") {
		t.Errorf("ec2 throttle: %d %s", code, body)
	}
	if code, body = post("sts", "Action=GetCallerIdentity&Version=2011-06-15"); code != 400 || !strings.Contains(body, "<Code>Throttling</Code>") {
		t.Errorf("sts throttle: %d %s", code, body)
	}
	e.SetThrottle(0)
	code, body = post("ec2", "Action=CreateVpc&Version=2016-11-15&CidrBlock=10.0.0.0/16&TagSpecification.1.ResourceType=vpc&TagSpecification.1.Tag.1.Key=k&TagSpecification.1.Tag.1.Value=v")
	if code != 200 || !regexp.MustCompile(`<vpcId>vpc-[0-9a-f]{17}</vpcId>`).MatchString(body) || !strings.Contains(body, "<key>k</key><value>v</value>") {
		t.Errorf("CreateVpc: %d %s", code, body)
	}
	calls := e.Calls()
	if last := calls[len(calls)-1]; last.Service != "ec2" || last.Action != "CreateVpc" || !last.Mutating || last.Throttled {
		t.Errorf("last call %+v", last)
	}
}
