package aws

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sync/errgroup"
)

// dependencyWait bounds retries of deletes that AWS refuses while something
// it is still tearing down (a load balancer's network interfaces, an
// instance) holds on to the resource.
const dependencyWait = 5 * time.Minute

// Destroy removes everything tagged corral:cluster=<cluster>, found by its
// tags and names alone (no state needed), in reverse dependency order. The
// backup bucket is kept unless forceDeleteData, since it holds the
// cluster's etcd snapshots. Destroying what is already gone does nothing.
func (s *Stack) Destroy(ctx context.Context, forceDeleteData bool) error {
	if err := s.destroyGroups(ctx); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.destroyLoadBalancers(gctx) })
	g.Go(func() error { return s.destroyLaunchTemplates(gctx) })
	g.Go(func() error { return s.destroyIAM(gctx) })
	g.Go(func() error { return s.destroyLogGroup(gctx) })
	g.Go(func() error { return s.destroyBucket(gctx, forceDeleteData) })
	if err := g.Wait(); err != nil {
		return err
	}
	return s.destroyNetwork(ctx)
}

// destroyGroups deletes the Auto Scaling groups with their instances, and
// any other instance of the cluster, and waits until they are terminated:
// until then they hold the security groups and subnets.
func (s *Stack) destroyGroups(ctx context.Context) error {
	p := autoscaling.NewDescribeAutoScalingGroupsPaginator(s.asg, &autoscaling.DescribeAutoScalingGroupsInput{
		Filters: []asgtypes.Filter{{Name: aws.String("tag:" + tagCluster), Values: []string{s.spec.Cluster}}},
	})
	var names []string
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			return wrap("describe auto scaling groups of cluster", s.spec.Cluster, err)
		}
		for _, g := range out.AutoScalingGroups {
			names = append(names, aws.ToString(g.AutoScalingGroupName))
		}
	}
	for _, name := range names {
		_, err := s.asg.DeleteAutoScalingGroup(ctx, &autoscaling.DeleteAutoScalingGroupInput{AutoScalingGroupName: &name, ForceDelete: aws.Bool(true)})
		if err != nil && !isCode(err, "ValidationError") { // gone already
			return wrap("delete auto scaling group", name, err)
		}
		s.logf("deleted auto scaling group %q", name)
	}
	if len(names) > 0 {
		err := autoscaling.NewGroupNotExistsWaiter(s.asg, func(o *autoscaling.GroupNotExistsWaiterOptions) {
			o.MinDelay = s.waitMin(o.MinDelay)
		}).Wait(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: names}, s.waitMax())
		if err != nil {
			return wrap("wait for deletion of auto scaling groups of cluster", s.spec.Cluster, err)
		}
	}
	out, err := s.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{Filters: append(s.byCluster(),
		types.Filter{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped", "shutting-down"}})})
	if err != nil {
		return wrap("describe instances of cluster", s.spec.Cluster, err)
	}
	var ids, running []string
	for _, res := range out.Reservations {
		for _, in := range res.Instances {
			ids = append(ids, aws.ToString(in.InstanceId))
			if in.State == nil || in.State.Name != types.InstanceStateNameShuttingDown {
				running = append(running, aws.ToString(in.InstanceId))
			}
		}
	}
	if len(running) > 0 {
		if _, err := s.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: running}); err != nil {
			return wrap("terminate instances of cluster", s.spec.Cluster, err)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	s.logf("waiting for %d instances to terminate", len(ids))
	err = ec2.NewInstanceTerminatedWaiter(s.ec2, func(o *ec2.InstanceTerminatedWaiterOptions) {
		o.MinDelay = s.waitMin(o.MinDelay)
	}).Wait(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids}, s.waitMax())
	return wrap("wait for termination of instances of cluster", s.spec.Cluster, err)
}

// taggedELB returns the ARNs among arns tagged with the cluster.
func (s *Stack) taggedELB(ctx context.Context, arns []string) ([]string, error) {
	var mine []string
	for len(arns) > 0 {
		n := min(len(arns), 20) // DescribeTags' limit
		out, err := s.elb.DescribeTags(ctx, &elb.DescribeTagsInput{ResourceArns: arns[:n]})
		if err != nil {
			return nil, wrap("describe tags of load balancers of cluster", s.spec.Cluster, err)
		}
		for _, d := range out.TagDescriptions {
			for _, t := range d.Tags {
				if aws.ToString(t.Key) == tagCluster && aws.ToString(t.Value) == s.spec.Cluster {
					mine = append(mine, aws.ToString(d.ResourceArn))
				}
			}
		}
		arns = arns[n:]
	}
	return mine, nil
}

// destroyLoadBalancers deletes the cluster's load balancers (with their
// listeners), waits until they are gone, then deletes the target groups.
func (s *Stack) destroyLoadBalancers(ctx context.Context) error {
	var arns []string
	names := map[string]string{} // ARN → name, for the messages
	lbs := elb.NewDescribeLoadBalancersPaginator(s.elb, &elb.DescribeLoadBalancersInput{})
	for lbs.HasMorePages() {
		out, err := lbs.NextPage(ctx)
		if err != nil {
			return wrap("describe load balancers of cluster", s.spec.Cluster, err)
		}
		for _, lb := range out.LoadBalancers {
			arns = append(arns, aws.ToString(lb.LoadBalancerArn))
			names[aws.ToString(lb.LoadBalancerArn)] = aws.ToString(lb.LoadBalancerName)
		}
	}
	mine, err := s.taggedELB(ctx, arns)
	if err != nil {
		return err
	}
	for _, arn := range mine {
		if _, err := s.elb.DeleteLoadBalancer(ctx, &elb.DeleteLoadBalancerInput{LoadBalancerArn: &arn}); err != nil && !isCode(err, "LoadBalancerNotFound") {
			return wrap("delete load balancer", names[arn], err)
		}
		s.logf("deleted load balancer %q", names[arn])
	}
	if len(mine) > 0 {
		err := elb.NewLoadBalancersDeletedWaiter(s.elb, func(o *elb.LoadBalancersDeletedWaiterOptions) {
			o.MinDelay = s.waitMin(o.MinDelay)
		}).Wait(ctx, &elb.DescribeLoadBalancersInput{LoadBalancerArns: mine}, s.waitMax())
		if err != nil {
			return wrap("wait for deletion of load balancers of cluster", s.spec.Cluster, err)
		}
	}
	arns = nil
	tgs := elb.NewDescribeTargetGroupsPaginator(s.elb, &elb.DescribeTargetGroupsInput{})
	for tgs.HasMorePages() {
		out, err := tgs.NextPage(ctx)
		if err != nil {
			return wrap("describe target groups of cluster", s.spec.Cluster, err)
		}
		for _, tg := range out.TargetGroups {
			arns = append(arns, aws.ToString(tg.TargetGroupArn))
			names[aws.ToString(tg.TargetGroupArn)] = aws.ToString(tg.TargetGroupName)
		}
	}
	if mine, err = s.taggedELB(ctx, arns); err != nil {
		return err
	}
	for _, arn := range mine {
		err := retryWhile(ctx, dependencyWait, func(err error) bool { return isCode(err, "ResourceInUse") }, func() error {
			_, err := s.elb.DeleteTargetGroup(ctx, &elb.DeleteTargetGroupInput{TargetGroupArn: &arn})
			return err
		})
		if err != nil && !isCode(err, "TargetGroupNotFound") {
			return wrap("delete target group", names[arn], err)
		}
		s.logf("deleted target group %q", names[arn])
	}
	return nil
}

func (s *Stack) destroyLaunchTemplates(ctx context.Context) error {
	out, err := s.ec2.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{Filters: s.byCluster()})
	if err != nil {
		return wrap("describe launch templates of cluster", s.spec.Cluster, err)
	}
	for _, lt := range out.LaunchTemplates {
		name := aws.ToString(lt.LaunchTemplateName)
		if _, err := s.ec2.DeleteLaunchTemplate(ctx, &ec2.DeleteLaunchTemplateInput{LaunchTemplateId: lt.LaunchTemplateId}); err != nil {
			return wrap("delete launch template", name, err)
		}
		s.logf("deleted launch template %q", name)
	}
	return nil
}

// destroyIAM deletes the instance profile, the role's inline policies and
// the role, if the role is the cluster's (tagged so).
func (s *Stack) destroyIAM(ctx context.Context) error {
	name := s.spec.name("node")
	role, err := s.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: &name})
	if isCode(err, "NoSuchEntity") {
		role = nil
	} else if err != nil {
		return wrap("get iam role", name, err)
	}
	if role != nil {
		ours := false
		for _, t := range role.Role.Tags {
			ours = ours || (aws.ToString(t.Key) == tagCluster && aws.ToString(t.Value) == s.spec.Cluster)
		}
		if !ours {
			return fmt.Errorf("iam role %q is not tagged %s=%s, so it is not this cluster's: left alone; delete it yourself if it is", name, tagCluster, s.spec.Cluster)
		}
	}
	p, err := s.iam.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: &name})
	switch {
	case isCode(err, "NoSuchEntity"):
	case err != nil:
		return wrap("get instance profile", name, err)
	default:
		for _, r := range p.InstanceProfile.Roles {
			if _, err := s.iam.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{InstanceProfileName: &name, RoleName: r.RoleName}); err != nil {
				return wrap("remove role from instance profile", name, err)
			}
		}
		if _, err := s.iam.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: &name}); err != nil {
			return wrap("delete instance profile", name, err)
		}
		s.logf("deleted instance profile %q", name)
	}
	if role == nil {
		return nil
	}
	pols, err := s.iam.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: &name})
	if err != nil {
		return wrap("list policies of iam role", name, err)
	}
	for _, pol := range pols.PolicyNames {
		if _, err := s.iam.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: &name, PolicyName: &pol}); err != nil {
			return wrap("delete policy "+pol+" of iam role", name, err)
		}
	}
	if _, err := s.iam.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: &name}); err != nil {
		return wrap("delete iam role", name, err)
	}
	s.logf("deleted iam role %q", name)
	return nil
}

func (s *Stack) destroyLogGroup(ctx context.Context) error {
	name := s.spec.logGroup()
	out, err := s.logs.DescribeLogGroups(ctx, &cloudwatchlogs.DescribeLogGroupsInput{LogGroupNamePrefix: &name})
	if err != nil {
		return wrap("describe log group", name, err)
	}
	for _, g := range out.LogGroups {
		if aws.ToString(g.LogGroupName) != name {
			continue
		}
		if _, err := s.logs.DeleteLogGroup(ctx, &cloudwatchlogs.DeleteLogGroupInput{LogGroupName: &name}); err != nil && !isCode(err, "ResourceNotFoundException") {
			return wrap("delete log group", name, err)
		}
		s.logf("deleted log group %q", name)
	}
	return nil
}

// destroyBucket empties and deletes the backup bucket when force; without
// it, it keeps the bucket and says how to remove it.
func (s *Stack) destroyBucket(ctx context.Context, force bool) error {
	account, err := s.accountID(ctx)
	if err != nil {
		return err
	}
	name := s.spec.bucketName(account)
	if _, err := s.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &name}); err != nil {
		if isCode(err, "NotFound", "NoSuchBucket") {
			return nil
		}
		return wrap("head bucket", name, err)
	}
	if !force {
		s.logf("kept s3 bucket %q: it holds the cluster's etcd backups; to delete it with them, run down again with force-delete-data (or: aws s3 rb s3://%s --force)", name, name)
		return nil
	}
	p := s3.NewListObjectsV2Paginator(s.s3, &s3.ListObjectsV2Input{Bucket: &name})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return wrap("list objects of s3 bucket", name, err)
		}
		if len(page.Contents) == 0 {
			continue
		}
		var ids []s3types.ObjectIdentifier
		for _, o := range page.Contents {
			ids = append(ids, s3types.ObjectIdentifier{Key: o.Key})
		}
		out, err := s.s3.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: &name, Delete: &s3types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		if err != nil {
			return wrap("delete objects of s3 bucket", name, err)
		}
		if len(out.Errors) > 0 {
			e := out.Errors[0]
			return fmt.Errorf("delete objects of s3 bucket %q: %s: %s (object %q, and %d more)", name, aws.ToString(e.Code), aws.ToString(e.Message), aws.ToString(e.Key), len(out.Errors)-1)
		}
	}
	if _, err := s.s3.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: &name}); err != nil && !isCode(err, "NoSuchBucket") {
		return wrap("delete s3 bucket", name, err)
	}
	s.logf("deleted s3 bucket %q and its backups", name)
	return nil
}

// destroyNetwork deletes the security groups (their cross references
// first), subnets, route tables, internet gateway and VPC.
func (s *Stack) destroyNetwork(ctx context.Context) error {
	c := s.ec2
	inUse := func(err error) bool { return isCode(err, "DependencyViolation", "InvalidGroup.InUse") }
	sgs, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: s.byCluster()})
	if err != nil {
		return wrap("describe security groups of cluster", s.spec.Cluster, err)
	}
	for _, g := range sgs.SecurityGroups {
		var refs []types.IpPermission
		for _, p := range g.IpPermissions {
			if len(p.UserIdGroupPairs) > 0 {
				p.IpRanges, p.Ipv6Ranges, p.PrefixListIds = nil, nil, nil
				refs = append(refs, p)
			}
		}
		if len(refs) > 0 {
			if _, err := c.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: g.GroupId, IpPermissions: refs}); err != nil {
				return wrap("revoke group references from security group", aws.ToString(g.GroupName), err)
			}
		}
	}
	for _, g := range sgs.SecurityGroups {
		err := retryWhile(ctx, dependencyWait, inUse, func() error {
			_, err := c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: g.GroupId})
			return err
		})
		if err != nil && !isCode(err, "InvalidGroup.NotFound") {
			return wrap("delete security group", aws.ToString(g.GroupName), err)
		}
		s.logf("deleted security group %q", aws.ToString(g.GroupName))
	}
	subnets, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: s.byCluster()})
	if err != nil {
		return wrap("describe subnets of cluster", s.spec.Cluster, err)
	}
	rtbs, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: s.byCluster()})
	if err != nil {
		return wrap("describe route tables of cluster", s.spec.Cluster, err)
	}
	for _, rt := range rtbs.RouteTables {
		for _, a := range rt.Associations {
			if aws.ToBool(a.Main) {
				continue
			}
			if _, err := c.DisassociateRouteTable(ctx, &ec2.DisassociateRouteTableInput{AssociationId: a.RouteTableAssociationId}); err != nil {
				return wrap("disassociate route table", nameOf(rt.Tags, rt.RouteTableId), err)
			}
		}
		if _, err := c.DeleteRouteTable(ctx, &ec2.DeleteRouteTableInput{RouteTableId: rt.RouteTableId}); err != nil {
			return wrap("delete route table", nameOf(rt.Tags, rt.RouteTableId), err)
		}
		s.logf("deleted route table %q", nameOf(rt.Tags, rt.RouteTableId))
	}
	for _, sn := range subnets.Subnets {
		err := retryWhile(ctx, dependencyWait, inUse, func() error {
			_, err := c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: sn.SubnetId})
			return err
		})
		if err != nil && !isCode(err, "InvalidSubnetID.NotFound") {
			return wrap("delete subnet", nameOf(sn.Tags, sn.SubnetId), err)
		}
		s.logf("deleted subnet %q", nameOf(sn.Tags, sn.SubnetId))
	}
	igws, err := c.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{Filters: s.byCluster()})
	if err != nil {
		return wrap("describe internet gateways of cluster", s.spec.Cluster, err)
	}
	for _, g := range igws.InternetGateways {
		for _, a := range g.Attachments {
			err := retryWhile(ctx, dependencyWait, inUse, func() error {
				_, err := c.DetachInternetGateway(ctx, &ec2.DetachInternetGatewayInput{InternetGatewayId: g.InternetGatewayId, VpcId: a.VpcId})
				return err
			})
			if err != nil {
				return wrap("detach internet gateway", nameOf(g.Tags, g.InternetGatewayId), err)
			}
		}
		if _, err := c.DeleteInternetGateway(ctx, &ec2.DeleteInternetGatewayInput{InternetGatewayId: g.InternetGatewayId}); err != nil {
			return wrap("delete internet gateway", nameOf(g.Tags, g.InternetGatewayId), err)
		}
		s.logf("deleted internet gateway %q", nameOf(g.Tags, g.InternetGatewayId))
	}
	vpcs, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: s.byCluster()})
	if err != nil {
		return wrap("describe vpcs of cluster", s.spec.Cluster, err)
	}
	var errs []error
	for _, v := range vpcs.Vpcs {
		err := retryWhile(ctx, dependencyWait, inUse, func() error {
			_, err := c.DeleteVpc(ctx, &ec2.DeleteVpcInput{VpcId: v.VpcId})
			return err
		})
		if err != nil {
			errs = append(errs, wrap("delete vpc", nameOf(v.Tags, v.VpcId), err))
			continue
		}
		s.logf("deleted vpc %q", nameOf(v.Tags, v.VpcId))
	}
	return errors.Join(errs...)
}

// nameOf is a resource's Name tag, or its id when it has none.
func nameOf(tags []types.Tag, id *string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == tagName {
			return aws.ToString(t.Value)
		}
	}
	return aws.ToString(id)
}
