package aws

import (
	"context"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/sync/errgroup"
)

// ec2Tags returns tags as EC2 tags, sorted by key.
func ec2Tags(tags map[string]string) []types.Tag {
	out := make([]types.Tag, 0, len(tags))
	for k, v := range tags {
		out = append(out, types.Tag{Key: aws.String(k), Value: aws.String(v)})
	}
	sort.Slice(out, func(i, j int) bool { return *out[i].Key < *out[j].Key })
	return out
}

// tagSpec tags a resource as it is created, so that it is never seen
// untagged (and so never orphaned if this run dies the next instant).
func tagSpec(rt types.ResourceType, tags map[string]string) []types.TagSpecification {
	return []types.TagSpecification{{ResourceType: rt, Tags: ec2Tags(tags)}}
}

// byName filters EC2 resources to the cluster's one called name.
func (s *Stack) byName(name string) []types.Filter {
	return []types.Filter{
		{Name: aws.String("tag:" + tagCluster), Values: []string{s.spec.Cluster}},
		{Name: aws.String("tag:" + tagName), Values: []string{name}},
	}
}

// byCluster filters EC2 resources to the cluster's.
func (s *Stack) byCluster() []types.Filter {
	return []types.Filter{{Name: aws.String("tag:" + tagCluster), Values: []string{s.spec.Cluster}}}
}

// network converges the VPC, then its subnets and internet gateway, then
// the route table.
func (r *run) network(ctx context.Context) error {
	if err := r.vpc(ctx); err != nil {
		return err
	}
	r.subnets = make([]string, len(r.s.spec.Zones))
	g, gctx := errgroup.WithContext(ctx)
	for i := range r.s.spec.Zones {
		g.Go(func() error { return r.subnet(gctx, i) })
	}
	g.Go(func() error { return r.internetGateway(gctx) })
	if err := g.Wait(); err != nil {
		return err
	}
	r.out.SubnetIDs = r.subnets
	return r.routeTable(ctx)
}

func (r *run) vpc(ctx context.Context) error {
	sp, c := &r.s.spec, r.s.ec2
	name := sp.name("vpc")
	res := fmt.Sprintf("vpc %q", name)
	out, err := c.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: r.s.byName(name)})
	if err != nil {
		return wrap("describe vpc", name, err)
	}
	if len(out.Vpcs) == 0 {
		r.note(Create, res, sp.VPCCIDR.String())
		if !r.apply {
			return nil
		}
		cr, err := c.CreateVpc(ctx, &ec2.CreateVpcInput{
			CidrBlock:         aws.String(sp.VPCCIDR.String()),
			TagSpecifications: tagSpec(types.ResourceTypeVpc, sp.tags(name, "")),
		})
		if err != nil {
			return wrap("create vpc", name, err)
		}
		r.vpcID = aws.ToString(cr.Vpc.VpcId)
		r.out.VPCID = r.vpcID
		if err := ec2.NewVpcAvailableWaiter(c, func(o *ec2.VpcAvailableWaiterOptions) {
			o.MinDelay = r.s.waitMin(o.MinDelay)
		}).Wait(ctx, &ec2.DescribeVpcsInput{VpcIds: []string{r.vpcID}}, r.s.waitMax()); err != nil {
			return wrap("wait for vpc", name, err)
		}
		return r.vpcDNS(ctx, name, false, false)
	}
	v := out.Vpcs[0]
	r.vpcID = aws.ToString(v.VpcId)
	r.out.VPCID = r.vpcID
	if have := aws.ToString(v.CidrBlock); have != sp.VPCCIDR.String() {
		return fmt.Errorf("vpc %q (%s) has CIDR %s but the file says %s: a VPC's CIDR cannot change; set vpc_cidr back to %s, or run provision down and up again",
			name, r.vpcID, have, sp.VPCCIDR, have)
	}
	var on [2]bool
	for i, attr := range []types.VpcAttributeName{types.VpcAttributeNameEnableDnsSupport, types.VpcAttributeNameEnableDnsHostnames} {
		a, err := c.DescribeVpcAttribute(ctx, &ec2.DescribeVpcAttributeInput{VpcId: v.VpcId, Attribute: attr})
		if err != nil {
			return wrap("describe vpc attribute "+string(attr)+" of", name, err)
		}
		if i == 0 {
			on[i] = a.EnableDnsSupport != nil && aws.ToBool(a.EnableDnsSupport.Value)
		} else {
			on[i] = a.EnableDnsHostnames != nil && aws.ToBool(a.EnableDnsHostnames.Value)
		}
	}
	if on[0] && on[1] {
		r.note(Keep, res, "")
		return nil
	}
	r.note(Drift, res, "DNS support or DNS hostnames is off; the nodes resolve each other by name")
	if !r.apply {
		return nil
	}
	return r.vpcDNS(ctx, name, on[0], on[1])
}

// vpcDNS turns on the VPC's DNS support and hostnames (one attribute per
// call, as EC2 requires).
func (r *run) vpcDNS(ctx context.Context, name string, support, hostnames bool) error {
	t := &types.AttributeBooleanValue{Value: aws.Bool(true)}
	if !support {
		if _, err := r.s.ec2.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: &r.vpcID, EnableDnsSupport: t}); err != nil {
			return wrap("enable DNS support on vpc", name, err)
		}
	}
	if !hostnames {
		if _, err := r.s.ec2.ModifyVpcAttribute(ctx, &ec2.ModifyVpcAttributeInput{VpcId: &r.vpcID, EnableDnsHostnames: t}); err != nil {
			return wrap("enable DNS hostnames on vpc", name, err)
		}
	}
	return nil
}

// subnet converges the subnet of zone i.
func (r *run) subnet(ctx context.Context, i int) error {
	sp, c := &r.s.spec, r.s.ec2
	zone, cidr := sp.Zones[i], sp.Subnets[i].String()
	name := sp.subnetName(zone)
	res := fmt.Sprintf("subnet %q", name)
	out, err := c.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: r.s.byName(name)})
	if err != nil {
		return wrap("describe subnet", name, err)
	}
	if len(out.Subnets) == 0 {
		r.note(Create, res, cidr+" in "+zone)
		if !r.apply {
			return nil
		}
		cr, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{
			VpcId: &r.vpcID, CidrBlock: &cidr, AvailabilityZone: &zone,
			TagSpecifications: tagSpec(types.ResourceTypeSubnet, sp.tags(name, "")),
		})
		if err != nil {
			return wrap("create subnet", name, err)
		}
		r.subnets[i] = aws.ToString(cr.Subnet.SubnetId)
		if err := ec2.NewSubnetAvailableWaiter(c, func(o *ec2.SubnetAvailableWaiterOptions) {
			o.MinDelay = r.s.waitMin(o.MinDelay)
		}).Wait(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{r.subnets[i]}}, r.s.waitMax()); err != nil {
			return wrap("wait for subnet", name, err)
		}
		return r.mapPublicIP(ctx, name, i)
	}
	sn := out.Subnets[0]
	r.subnets[i] = aws.ToString(sn.SubnetId)
	if aws.ToString(sn.CidrBlock) != cidr || aws.ToString(sn.AvailabilityZone) != zone {
		return fmt.Errorf("subnet %q (%s) is %s in %s but the file says %s in %s: a subnet cannot move; set it back, or run provision down and up again",
			name, r.subnets[i], aws.ToString(sn.CidrBlock), aws.ToString(sn.AvailabilityZone), cidr, zone)
	}
	if aws.ToBool(sn.MapPublicIpOnLaunch) {
		r.note(Keep, res, "")
		return nil
	}
	r.note(Drift, res, "does not map public IPs on launch; the nodes need them to reach the internet")
	if !r.apply {
		return nil
	}
	return r.mapPublicIP(ctx, name, i)
}

func (r *run) mapPublicIP(ctx context.Context, name string, i int) error {
	_, err := r.s.ec2.ModifySubnetAttribute(ctx, &ec2.ModifySubnetAttributeInput{
		SubnetId: &r.subnets[i], MapPublicIpOnLaunch: &types.AttributeBooleanValue{Value: aws.Bool(true)},
	})
	return wrap("map public IPs on launch in subnet", name, err)
}

// internetGateway converges the gateway and its attachment to the VPC.
func (r *run) internetGateway(ctx context.Context) error {
	sp, c := &r.s.spec, r.s.ec2
	name := sp.name("igw")
	res := fmt.Sprintf("internet gateway %q", name)
	out, err := c.DescribeInternetGateways(ctx, &ec2.DescribeInternetGatewaysInput{Filters: r.s.byName(name)})
	if err != nil {
		return wrap("describe internet gateway", name, err)
	}
	if len(out.InternetGateways) == 0 {
		r.note(Create, res, "")
		if !r.apply {
			return nil
		}
		cr, err := c.CreateInternetGateway(ctx, &ec2.CreateInternetGatewayInput{
			TagSpecifications: tagSpec(types.ResourceTypeInternetGateway, sp.tags(name, "")),
		})
		if err != nil {
			return wrap("create internet gateway", name, err)
		}
		r.igwID = aws.ToString(cr.InternetGateway.InternetGatewayId)
		_, err = c.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{InternetGatewayId: &r.igwID, VpcId: &r.vpcID})
		return wrap("attach internet gateway", name, err)
	}
	g := out.InternetGateways[0]
	r.igwID = aws.ToString(g.InternetGatewayId)
	for _, a := range g.Attachments {
		if aws.ToString(a.VpcId) == r.vpcID && r.vpcID != "" {
			r.note(Keep, res, "")
			return nil
		}
	}
	r.note(Drift, res, "not attached to the cluster's VPC")
	if !r.apply {
		return nil
	}
	for _, a := range g.Attachments {
		if _, err := c.DetachInternetGateway(ctx, &ec2.DetachInternetGatewayInput{InternetGatewayId: &r.igwID, VpcId: a.VpcId}); err != nil {
			return wrap("detach internet gateway", name, err)
		}
	}
	_, err = c.AttachInternetGateway(ctx, &ec2.AttachInternetGatewayInput{InternetGatewayId: &r.igwID, VpcId: &r.vpcID})
	return wrap("attach internet gateway", name, err)
}

// routeTable converges the public route table: a default route to the
// internet gateway, associated with every subnet.
func (r *run) routeTable(ctx context.Context) error {
	sp, c := &r.s.spec, r.s.ec2
	name := sp.name("public")
	res := fmt.Sprintf("route table %q", name)
	out, err := c.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{Filters: r.s.byName(name)})
	if err != nil {
		return wrap("describe route table", name, err)
	}
	var rtb types.RouteTable
	if len(out.RouteTables) == 0 {
		r.note(Create, res, "0.0.0.0/0 → internet gateway, associated with every subnet")
		if !r.apply {
			return nil
		}
		cr, err := c.CreateRouteTable(ctx, &ec2.CreateRouteTableInput{
			VpcId: &r.vpcID, TagSpecifications: tagSpec(types.ResourceTypeRouteTable, sp.tags(name, "")),
		})
		if err != nil {
			return wrap("create route table", name, err)
		}
		rtb = *cr.RouteTable
	} else {
		rtb = out.RouteTables[0]
	}
	id := aws.ToString(rtb.RouteTableId)
	r.out.RouteTableID = id
	var drift []string
	route := -1
	for i, rt := range rtb.Routes {
		if aws.ToString(rt.DestinationCidrBlock) == "0.0.0.0/0" {
			route = i
		}
	}
	switch {
	case route < 0:
		if len(out.RouteTables) > 0 {
			drift = append(drift, "no route 0.0.0.0/0")
		}
		if r.apply {
			if _, err := c.CreateRoute(ctx, &ec2.CreateRouteInput{RouteTableId: &id, DestinationCidrBlock: aws.String("0.0.0.0/0"), GatewayId: &r.igwID}); err != nil {
				return wrap("create default route in route table", name, err)
			}
		}
	case aws.ToString(rtb.Routes[route].GatewayId) != r.igwID || r.igwID == "":
		drift = append(drift, fmt.Sprintf("route 0.0.0.0/0 goes to %s, not the internet gateway", aws.ToString(rtb.Routes[route].GatewayId)))
		if r.apply {
			if _, err := c.ReplaceRoute(ctx, &ec2.ReplaceRouteInput{RouteTableId: &id, DestinationCidrBlock: aws.String("0.0.0.0/0"), GatewayId: &r.igwID}); err != nil {
				return wrap("replace default route in route table", name, err)
			}
		}
	}
	associated := map[string]bool{}
	for _, a := range rtb.Associations {
		associated[aws.ToString(a.SubnetId)] = true
	}
	for i, sn := range r.subnets {
		if sn != "" && associated[sn] {
			continue
		}
		if len(out.RouteTables) > 0 {
			drift = append(drift, fmt.Sprintf("subnet %s not associated", sp.subnetName(sp.Zones[i])))
		}
		if r.apply {
			if _, err := c.AssociateRouteTable(ctx, &ec2.AssociateRouteTableInput{RouteTableId: &id, SubnetId: &r.subnets[i]}); err != nil {
				return wrap("associate route table", name, err)
			}
		}
	}
	switch {
	case len(out.RouteTables) == 0:
	case len(drift) > 0:
		r.note(Drift, res, joinDetails(drift))
	default:
		r.note(Keep, res, "")
	}
	return nil
}
