package aws

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/aws/aws-sdk-go-v2/aws"
	elb "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
	"golang.org/x/sync/errgroup"
)

// balancer is one load balancer with its target group and listener.
type balancer struct {
	name, group     string // AWS name; the node group it forwards to
	label           string // the load_balancer block's name; "" for etcd
	typ             elbtypes.LoadBalancerTypeEnum
	scheme          elbtypes.LoadBalancerSchemeEnum
	securityGroups  []string
	protocol        elbtypes.ProtocolEnum
	port, target    int32
	sticky          bool
	healthCheckPath string
}

// balancers lists the stack's load balancers: per load_balancer block an
// internet-facing one (application for HTTP, network for TCP), one for the
// deploy hook when the cluster has one, and the internal etcd load
// balancer in front of the first group.
//
// The book put etcd behind an internal classic ELB. Classic ELB is legacy;
// a network load balancer passes TCP through without terminating TLS, so
// etcd's mutual TLS keeps working end to end (clients present their
// certificates to etcd itself), and it keeps the client's address.
func (r *run) balancers() []balancer {
	sp := &r.s.spec
	var out []balancer
	for _, g := range sp.Groups {
		for _, lb := range g.LoadBalancers {
			b := balancer{
				name: sp.name(lb.Name), group: g.Name, label: lb.Name,
				typ: elbtypes.LoadBalancerTypeEnumApplication, scheme: elbtypes.LoadBalancerSchemeEnumInternetFacing,
				securityGroups: []string{r.lbSG}, protocol: elbtypes.ProtocolEnumHttp,
				port: int32(lb.Port), target: int32(lb.TargetPort), sticky: lb.Sticky, healthCheckPath: "/",
			}
			if lb.Protocol == "TCP" {
				b.typ, b.protocol, b.healthCheckPath = elbtypes.LoadBalancerTypeEnumNetwork, elbtypes.ProtocolEnumTcp, ""
			}
			out = append(out, b)
		}
	}
	if p := int32(sp.DeployHookPort); p != 0 {
		// The deploy hook speaks HTTPS with the cluster CA's certificates:
		// a network load balancer passes it through untouched. It has the
		// load balancers' security group, so the nodes admit it by group.
		out = append(out, balancer{
			name: sp.name("deploy"), group: sp.Groups[0].Name, label: "deploy",
			typ: elbtypes.LoadBalancerTypeEnumNetwork, scheme: elbtypes.LoadBalancerSchemeEnumInternetFacing,
			securityGroups: []string{r.lbSG}, protocol: elbtypes.ProtocolEnumTcp, port: p, target: p,
		})
	}
	return append(out, balancer{
		name: sp.name("etcd"), group: sp.Groups[0].Name,
		typ: elbtypes.LoadBalancerTypeEnumNetwork, scheme: elbtypes.LoadBalancerSchemeEnumInternal,
		protocol: elbtypes.ProtocolEnumTcp, port: portEtcdClient, target: portEtcdClient,
	})
}

// loadBalancers converges every load balancer, in parallel.
func (r *run) loadBalancers(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, b := range r.balancers() {
		g.Go(func() error { return r.balancer(gctx, b) })
	}
	return g.Wait()
}

func elbTags(tags map[string]string) []elbtypes.Tag {
	var out []elbtypes.Tag
	for _, t := range ec2Tags(tags) {
		out = append(out, elbtypes.Tag{Key: t.Key, Value: t.Value})
	}
	return out
}

func (r *run) balancer(ctx context.Context, b balancer) error {
	tg, err := r.targetGroup(ctx, b)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.targets[b.group] = append(r.targets[b.group], tg)
	r.mu.Unlock()

	sp, c := &r.s.spec, r.s.elb
	res := fmt.Sprintf("load balancer %q", b.name)
	out, err := c.DescribeLoadBalancers(ctx, &elb.DescribeLoadBalancersInput{Names: []string{b.name}})
	if err != nil && !isCode(err, "LoadBalancerNotFound") {
		return wrap("describe load balancer", b.name, err)
	}
	var lb elbtypes.LoadBalancer
	var diff []string
	if err != nil || len(out.LoadBalancers) == 0 {
		r.note(Create, res, fmt.Sprintf("%s %s, %s %d → %d", b.scheme, b.typ, b.protocol, b.port, b.target))
		if !r.apply {
			return nil
		}
		in := &elb.CreateLoadBalancerInput{
			Name: &b.name, Type: b.typ, Scheme: b.scheme, Subnets: r.subnets,
			Tags: elbTags(sp.tags(b.name, b.group)),
		}
		if b.label != "" {
			in.SecurityGroups = b.securityGroups
		}
		cr, err := c.CreateLoadBalancer(ctx, in)
		if err != nil {
			return wrap("create load balancer", b.name, err)
		}
		lb = cr.LoadBalancers[0]
		if err := elb.NewLoadBalancerAvailableWaiter(c, func(o *elb.LoadBalancerAvailableWaiterOptions) {
			o.MinDelay = r.s.waitMin(o.MinDelay)
		}).Wait(ctx, &elb.DescribeLoadBalancersInput{LoadBalancerArns: []string{aws.ToString(lb.LoadBalancerArn)}}, r.s.waitMax()); err != nil {
			return wrap("wait for load balancer", b.name, err)
		}
	} else {
		lb = out.LoadBalancers[0]
		if lb.Type != b.typ || lb.Scheme != b.scheme {
			return fmt.Errorf("load balancer %q is an %s %s one, but the file asks for an %s %s one, and AWS cannot change that in place: delete it (provision down, or the console) or rename the load_balancer",
				b.name, lb.Scheme, lb.Type, b.scheme, b.typ)
		}
		var have []string
		for _, z := range lb.AvailabilityZones {
			have = append(have, aws.ToString(z.SubnetId))
		}
		if !slices.Equal(sorted(have), sorted(r.subnets)) {
			diff = append(diff, "subnets differ")
			if r.apply {
				if _, err := c.SetSubnets(ctx, &elb.SetSubnetsInput{LoadBalancerArn: lb.LoadBalancerArn, Subnets: r.subnets}); err != nil {
					return wrap("set subnets of load balancer", b.name, err)
				}
			}
		}
		if b.typ == elbtypes.LoadBalancerTypeEnumApplication && !slices.Equal(sorted(lb.SecurityGroups), sorted(b.securityGroups)) {
			diff = append(diff, "security groups differ")
			if r.apply {
				if _, err := c.SetSecurityGroups(ctx, &elb.SetSecurityGroupsInput{LoadBalancerArn: lb.LoadBalancerArn, SecurityGroups: b.securityGroups}); err != nil {
					return wrap("set security groups of load balancer", b.name, err)
				}
			}
		}
	}
	r.mu.Lock()
	if b.label == "" {
		r.out.EtcdDNS = aws.ToString(lb.DNSName)
	} else {
		r.out.LoadBalancers[b.label] = aws.ToString(lb.DNSName)
	}
	r.mu.Unlock()
	d, err := r.listener(ctx, b, aws.ToString(lb.LoadBalancerArn), tg, out != nil && len(out.LoadBalancers) > 0)
	if err != nil {
		return err
	}
	diff = append(diff, d...)
	if out != nil && len(out.LoadBalancers) > 0 {
		if len(diff) > 0 {
			r.note(Drift, res, joinDetails(diff))
		} else {
			r.note(Keep, res, "")
		}
	}
	return nil
}

// listener converges the listener on b.port forwarding to target group tg.
func (r *run) listener(ctx context.Context, b balancer, lbARN, tg string, existed bool) ([]string, error) {
	c := r.s.elb
	forward := []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: &tg}}
	if existed {
		out, err := c.DescribeListeners(ctx, &elb.DescribeListenersInput{LoadBalancerArn: &lbARN})
		if err != nil {
			return nil, wrap("describe listeners of load balancer", b.name, err)
		}
		for _, l := range out.Listeners {
			if aws.ToInt32(l.Port) != b.port {
				continue
			}
			if l.Protocol == b.protocol && len(l.DefaultActions) == 1 && aws.ToString(l.DefaultActions[0].TargetGroupArn) == tg && tg != "" {
				return nil, nil
			}
			if r.apply {
				if _, err := c.ModifyListener(ctx, &elb.ModifyListenerInput{ListenerArn: l.ListenerArn, Protocol: b.protocol, DefaultActions: forward}); err != nil {
					return nil, wrap("modify listener of load balancer", b.name, err)
				}
			}
			return []string{fmt.Sprintf("listener %d does not forward %s to target group %s", b.port, b.protocol, b.name)}, nil
		}
	}
	if r.apply {
		_, err := c.CreateListener(ctx, &elb.CreateListenerInput{LoadBalancerArn: &lbARN, Port: &b.port, Protocol: b.protocol, DefaultActions: forward,
			Tags: elbTags(r.s.spec.tags(b.name, b.group))})
		if err != nil {
			return nil, wrap("create listener of load balancer", b.name, err)
		}
	}
	if existed {
		return []string{fmt.Sprintf("no listener on port %d", b.port)}, nil
	}
	return nil, nil
}

// targetGroup converges b's target group and returns its ARN ("" in a
// plan when it does not exist).
func (r *run) targetGroup(ctx context.Context, b balancer) (string, error) {
	sp, c := &r.s.spec, r.s.elb
	res := fmt.Sprintf("target group %q", b.name)
	out, err := c.DescribeTargetGroups(ctx, &elb.DescribeTargetGroupsInput{Names: []string{b.name}})
	if err != nil && !isCode(err, "TargetGroupNotFound") {
		return "", wrap("describe target group", b.name, err)
	}
	var arn string
	existed := err == nil && len(out.TargetGroups) > 0
	if !existed {
		r.note(Create, res, fmt.Sprintf("%s %d", b.protocol, b.target))
		if !r.apply {
			return "", nil
		}
		in := &elb.CreateTargetGroupInput{
			Name: &b.name, Protocol: b.protocol, Port: &b.target, VpcId: &r.vpcID,
			TargetType: elbtypes.TargetTypeEnumInstance, Tags: elbTags(sp.tags(b.name, b.group)),
		}
		if b.healthCheckPath != "" {
			in.HealthCheckPath = &b.healthCheckPath
		}
		cr, err := c.CreateTargetGroup(ctx, in)
		if err != nil {
			return "", wrap("create target group", b.name, err)
		}
		arn = aws.ToString(cr.TargetGroups[0].TargetGroupArn)
	} else {
		tg := out.TargetGroups[0]
		arn = aws.ToString(tg.TargetGroupArn)
		if tg.Protocol != b.protocol || aws.ToInt32(tg.Port) != b.target {
			return "", fmt.Errorf("target group %q forwards %s to port %d, but the file says %s to %d, and AWS cannot change that in place: delete the target group and its load balancer, or rename the load_balancer",
				b.name, tg.Protocol, aws.ToInt32(tg.Port), b.protocol, b.target)
		}
	}
	if b.protocol != elbtypes.ProtocolEnumHttp {
		if existed {
			r.note(Keep, res, "")
		}
		return arn, nil
	}
	// Stickiness is an attribute of HTTP target groups.
	want := map[string]string{"stickiness.enabled": fmt.Sprint(b.sticky)}
	if b.sticky {
		want["stickiness.type"] = "lb_cookie"
	}
	drift := !existed
	if existed {
		attrs, err := c.DescribeTargetGroupAttributes(ctx, &elb.DescribeTargetGroupAttributesInput{TargetGroupArn: &arn})
		if err != nil {
			return "", wrap("describe attributes of target group", b.name, err)
		}
		have := map[string]string{}
		for _, a := range attrs.Attributes {
			have[aws.ToString(a.Key)] = aws.ToString(a.Value)
		}
		if !b.sticky && have["stickiness.enabled"] == "" {
			have["stickiness.enabled"] = "false"
		}
		drift = !containsAll(have, want)
		if drift {
			r.note(Update, res, fmt.Sprintf("stickiness %s, the file says %v", have["stickiness.enabled"], b.sticky))
		} else {
			r.note(Keep, res, "")
		}
	}
	if drift && r.apply && (b.sticky || existed) {
		var attrs []elbtypes.TargetGroupAttribute
		for _, k := range slices.Sorted(maps.Keys(want)) {
			attrs = append(attrs, elbtypes.TargetGroupAttribute{Key: aws.String(k), Value: aws.String(want[k])})
		}
		if _, err := c.ModifyTargetGroupAttributes(ctx, &elb.ModifyTargetGroupAttributesInput{TargetGroupArn: &arn, Attributes: attrs}); err != nil {
			return "", wrap("set stickiness of target group", b.name, err)
		}
	}
	return arn, nil
}
