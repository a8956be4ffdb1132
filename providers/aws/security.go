package aws

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/corral-dev/corral/clusterd/metrics"
	"golang.org/x/sync/errgroup"
)

// Ports the nodes open to each other.
const (
	portEtcdClient = 2379
	portEtcdPeer   = 2380
	portClusterd   = 7379 // clusterd's API
	portVXLAN      = 8472 // the overlay's vxlan, UDP
)

// rule is one ingress permission atom: a protocol and port range from one
// CIDR or one security group. Groups are named by their Name tag, so that
// Plan can compare rules of groups that do not exist yet.
type rule struct {
	proto    string // "tcp", "udp" or "-1" (all)
	from, to int32
	cidr     string
	group    string // the source group's name ("demo-lb"), or its id when not the cluster's
}

func (r rule) String() string {
	p := r.proto + " " + strconv.Itoa(int(r.from))
	if r.from != r.to {
		p += "-" + strconv.Itoa(int(r.to))
	}
	if r.proto == "-1" {
		p = "all traffic"
	}
	src := r.cidr
	if r.group != "" {
		src = "group " + r.group
	}
	return p + " from " + src
}

// securityGroups converges the load balancers' group and the nodes' group.
// The nodes' rules refer to both groups, so both exist before any rule is
// added.
func (r *run) securityGroups(ctx context.Context) error {
	sp := &r.s.spec
	lbName, nodesName := sp.name("lb"), sp.name("nodes")
	var lbRules, nodeRules []rule
	var ports []int
	for _, g := range sp.Groups {
		for _, lb := range g.LoadBalancers {
			if !slices.Contains(ports, lb.Port) {
				ports = append(ports, lb.Port)
			}
		}
	}
	if p := sp.DeployHookPort; p != 0 && !slices.Contains(ports, p) {
		ports = append(ports, p) // the deploy hook's load balancer listens on it
	}
	sort.Ints(ports)
	for _, p := range ports {
		lbRules = append(lbRules, rule{proto: "tcp", from: int32(p), to: int32(p), cidr: "0.0.0.0/0"})
	}
	for _, n := range sp.AllowSSHFrom {
		nodeRules = append(nodeRules, rule{proto: "tcp", from: 22, to: 22, cidr: n.String()})
	}
	nodeRules = append(nodeRules,
		rule{proto: "-1", from: -1, to: -1, group: lbName},
		// The internal etcd network load balancer keeps the client's
		// address and has no security group of its own: its health
		// checks and the clients it forwards come from inside the VPC.
		rule{proto: "tcp", from: portEtcdClient, to: portEtcdClient, cidr: sp.VPCCIDR.String()},
		// clusterd's /metrics, for a Prometheus anywhere in the VPC.
		rule{proto: "tcp", from: metrics.DefaultPort, to: metrics.DefaultPort, cidr: sp.VPCCIDR.String()},
	)
	if p := int32(sp.DeployHookPort); p != 0 {
		// The all-traffic rule above lets the load balancers in already;
		// the hook's own rule keeps its port open, and named in plan,
		// should that rule ever be narrowed to the target ports.
		nodeRules = append(nodeRules, rule{proto: "tcp", from: p, to: p, group: lbName})
	}
	for _, p := range []int32{portEtcdClient, portEtcdPeer, portClusterd} {
		nodeRules = append(nodeRules, rule{proto: "tcp", from: p, to: p, group: nodesName})
	}
	nodeRules = append(nodeRules, rule{proto: "udp", from: portVXLAN, to: portVXLAN, group: nodesName})

	// Both groups first (in parallel), then both rule sets (in parallel):
	// the nodes' rules name both groups.
	var lb, nodes types.SecurityGroup
	var lbFound, nodesFound bool
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		lb, lbFound, err = r.securityGroup(gctx, lbName, "Corral "+sp.Cluster+": load balancers")
		return err
	})
	g.Go(func() (err error) {
		nodes, nodesFound, err = r.securityGroup(gctx, nodesName, "Corral "+sp.Cluster+": nodes")
		return err
	})
	if err := g.Wait(); err != nil {
		return err
	}
	r.lbSG, r.nodesSG = aws.ToString(lb.GroupId), aws.ToString(nodes.GroupId)
	ids := map[string]string{r.lbSG: lbName, r.nodesSG: nodesName}
	g, gctx = errgroup.WithContext(ctx)
	g.Go(func() error { return r.rules(gctx, lb, lbName, lbFound, lbRules, ids) })
	g.Go(func() error { return r.rules(gctx, nodes, nodesName, nodesFound, nodeRules, ids) })
	return g.Wait()
}

// securityGroup finds the group name, or creates it (Apply); found says
// whether it existed.
func (r *run) securityGroup(ctx context.Context, name, desc string) (types.SecurityGroup, bool, error) {
	c := r.s.ec2
	out, err := c.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: r.s.byName(name)})
	if err != nil {
		return types.SecurityGroup{}, false, wrap("describe security group", name, err)
	}
	if len(out.SecurityGroups) > 0 {
		return out.SecurityGroups[0], true, nil
	}
	if !r.apply {
		return types.SecurityGroup{}, false, nil
	}
	cr, err := c.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{
		GroupName: &name, Description: &desc, VpcId: &r.vpcID,
		TagSpecifications: tagSpec(types.ResourceTypeSecurityGroup, r.s.spec.tags(name, "")),
	})
	if err != nil {
		return types.SecurityGroup{}, false, wrap("create security group", name, err)
	}
	return types.SecurityGroup{GroupId: cr.GroupId, GroupName: &name}, false, nil
}

// rules makes g's ingress rules want: it authorizes the missing ones and
// revokes the ones not in the file, one call each at most.
func (r *run) rules(ctx context.Context, g types.SecurityGroup, name string, found bool, want []rule, ids map[string]string) error {
	have := flatten(g.IpPermissions, ids)
	var add, remove []rule
	var details []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			add = append(add, w)
			if found {
				details = append(details, "rule "+w.String()+" missing")
			}
		}
	}
	for _, h := range have {
		if !slices.Contains(want, h) {
			remove = append(remove, h)
			details = append(details, "rule "+h.String()+" not in the file")
		}
	}
	res := fmt.Sprintf("security group %q", name)
	switch {
	case !found:
		r.note(Create, res, plural(len(want), "ingress rule"))
	case len(details) > 0:
		r.note(Drift, res, joinDetails(details))
	default:
		r.note(Keep, res, "")
	}
	if !r.apply {
		return nil
	}
	byName := map[string]string{}
	for id, n := range ids {
		byName[n] = id
	}
	if len(add) > 0 {
		_, err := r.s.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: g.GroupId, IpPermissions: permissions(add, byName)})
		if err != nil {
			return wrap("authorize ingress to security group", name, err)
		}
	}
	if len(remove) > 0 {
		_, err := r.s.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: g.GroupId, IpPermissions: permissions(remove, byName)})
		if err != nil {
			return wrap("revoke ingress from security group", name, err)
		}
	}
	return nil
}

// flatten splits EC2's permissions into rules, naming the cluster's groups.
func flatten(perms []types.IpPermission, ids map[string]string) []rule {
	var out []rule
	for _, p := range perms {
		base := rule{proto: aws.ToString(p.IpProtocol), from: aws.ToInt32(p.FromPort), to: aws.ToInt32(p.ToPort)}
		if base.proto == "-1" {
			base.from, base.to = -1, -1
		}
		for _, ipr := range p.IpRanges {
			r := base
			r.cidr = aws.ToString(ipr.CidrIp)
			out = append(out, r)
		}
		for _, pair := range p.UserIdGroupPairs {
			r := base
			id := aws.ToString(pair.GroupId)
			if r.group = ids[id]; r.group == "" {
				r.group = id
			}
			out = append(out, r)
		}
	}
	return out
}

// permissions turns rules back into EC2's permissions, one per rule.
func permissions(rules []rule, idOf map[string]string) []types.IpPermission {
	out := make([]types.IpPermission, 0, len(rules))
	for _, r := range rules {
		p := types.IpPermission{IpProtocol: aws.String(r.proto)}
		if r.proto != "-1" {
			p.FromPort, p.ToPort = aws.Int32(r.from), aws.Int32(r.to)
		}
		if r.cidr != "" {
			p.IpRanges = []types.IpRange{{CidrIp: aws.String(r.cidr)}}
		} else {
			id := idOf[r.group]
			if id == "" {
				id = r.group
			}
			p.UserIdGroupPairs = []types.UserIdGroupPair{{GroupId: aws.String(id)}}
		}
		out = append(out, p)
	}
	return out
}

// plural is "1 rule", "2 rules".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
