package awsemu

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	elbtypes "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2/types"
)

func TestELBv2LoadBalancerLifecycle(t *testing.T) {
	ctx := context.Background()
	const delay = 300 * time.Millisecond
	e, cfg := startEmu(t, Options{StateDelay: delay})
	c := ec2.NewFromConfig(cfg)
	lb := elbv2.NewFromConfig(cfg)
	n := buildNetwork(t, ctx, c)

	_, err := lb.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("web"), Subnets: n.subnets[:1]})
	wantCode(t, err, "ValidationError") // an ALB needs two zones
	_, err = lb.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("web"), Subnets: []string{"subnet-nope"}})
	wantCode(t, err, "SubnetNotFound")

	start := time.Now()
	alb := must(lb.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("web"), Subnets: n.subnets,
		SecurityGroups: []string{n.sg}, Tags: []elbtypes.Tag{{Key: aws.String("corral:cluster"), Value: aws.String("c1")}}}))(t).LoadBalancers[0]
	if alb.Type != elbtypes.LoadBalancerTypeEnumApplication || alb.Scheme != elbtypes.LoadBalancerSchemeEnumInternetFacing ||
		alb.State.Code != elbtypes.LoadBalancerStateEnumProvisioning || *alb.VpcId != n.vpc || len(alb.AvailabilityZones) != 3 ||
		!regexp.MustCompile(`^web-\d+\.us-west-2\.elb\.amazonaws\.com$`).MatchString(*alb.DNSName) ||
		!regexp.MustCompile(`^arn:aws:elasticloadbalancing:us-west-2:123456789012:loadbalancer/app/web/[0-9a-f]{16}$`).MatchString(*alb.LoadBalancerArn) {
		t.Fatalf("load balancer: %+v", alb)
	}
	_, err = lb.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("web"), Subnets: n.subnets})
	wantCode(t, err, "DuplicateLoadBalancerName")
	nlb := must(lb.CreateLoadBalancer(ctx, &elbv2.CreateLoadBalancerInput{Name: aws.String("etcd"), Subnets: n.subnets[:1],
		Type: elbtypes.LoadBalancerTypeEnumNetwork, Scheme: elbtypes.LoadBalancerSchemeEnumInternal}))(t).LoadBalancers[0]
	if !regexp.MustCompile(`^internal-etcd-\d+\.`).MatchString(*nlb.DNSName) || nlb.Type != elbtypes.LoadBalancerTypeEnumNetwork {
		t.Errorf("network load balancer: %+v", nlb)
	}

	// The SDK's waiter sees provisioning turn active after StateDelay.
	w := elbv2.NewLoadBalancerAvailableWaiter(lb, func(o *elbv2.LoadBalancerAvailableWaiterOptions) {
		o.MinDelay, o.MaxDelay = 50*time.Millisecond, 100*time.Millisecond
	})
	if err := w.Wait(ctx, &elbv2.DescribeLoadBalancersInput{Names: []string{"web", "etcd"}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("active after %v, before StateDelay %v", took, delay)
	}
	_, err = lb.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{Names: []string{"nope"}})
	wantCode(t, err, "LoadBalancerNotFound")
	byARN := must(lb.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{LoadBalancerArns: []string{*nlb.LoadBalancerArn}}))(t)
	if len(byARN.LoadBalancers) != 1 || *byARN.LoadBalancers[0].LoadBalancerName != "etcd" {
		t.Errorf("by ARN: %+v", byARN.LoadBalancers)
	}

	// Target groups, attributes and listeners.
	tg := must(lb.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("web"), Protocol: elbtypes.ProtocolEnumHttp,
		Port: aws.Int32(8080), VpcId: &n.vpc, HealthCheckPath: aws.String("/healthz"), HealthCheckIntervalSeconds: aws.Int32(10),
		Matcher: &elbtypes.Matcher{HttpCode: aws.String("200-299")}}))(t).TargetGroups[0]
	if *tg.Port != 8080 || *tg.HealthCheckPath != "/healthz" || *tg.HealthCheckIntervalSeconds != 10 || *tg.Matcher.HttpCode != "200-299" ||
		tg.TargetType != elbtypes.TargetTypeEnumInstance || *tg.HealthCheckPort != "traffic-port" {
		t.Fatalf("target group: %+v", tg)
	}
	_, err = lb.CreateTargetGroup(ctx, &elbv2.CreateTargetGroupInput{Name: aws.String("web"), Protocol: elbtypes.ProtocolEnumHttp, Port: aws.Int32(80), VpcId: &n.vpc})
	wantCode(t, err, "DuplicateTargetGroupName")
	_, err = lb.ModifyTargetGroupAttributes(ctx, &elbv2.ModifyTargetGroupAttributesInput{TargetGroupArn: tg.TargetGroupArn,
		Attributes: []elbtypes.TargetGroupAttribute{{Key: aws.String("stickiness.lb_cookie.duration_seconds"), Value: aws.String("0")}}})
	wantCode(t, err, "InvalidConfigurationRequest")
	must(lb.ModifyTargetGroupAttributes(ctx, &elbv2.ModifyTargetGroupAttributesInput{TargetGroupArn: tg.TargetGroupArn,
		Attributes: []elbtypes.TargetGroupAttribute{{Key: aws.String("stickiness.enabled"), Value: aws.String("true")},
			{Key: aws.String("stickiness.lb_cookie.duration_seconds"), Value: aws.String("3600")}}}))(t)
	attrs := map[string]string{}
	for _, a := range must(lb.DescribeTargetGroupAttributes(ctx, &elbv2.DescribeTargetGroupAttributesInput{TargetGroupArn: tg.TargetGroupArn}))(t).Attributes {
		attrs[*a.Key] = *a.Value
	}
	if attrs["stickiness.enabled"] != "true" || attrs["stickiness.type"] != "lb_cookie" || attrs["stickiness.lb_cookie.duration_seconds"] != "3600" {
		t.Errorf("attributes: %v", attrs)
	}

	forward := []elbtypes.Action{{Type: elbtypes.ActionTypeEnumForward, TargetGroupArn: tg.TargetGroupArn}}
	l := must(lb.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: alb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumHttp,
		Port: aws.Int32(80), DefaultActions: forward}))(t).Listeners[0]
	_, err = lb.CreateListener(ctx, &elbv2.CreateListenerInput{LoadBalancerArn: alb.LoadBalancerArn, Protocol: elbtypes.ProtocolEnumHttp,
		Port: aws.Int32(80), DefaultActions: forward})
	wantCode(t, err, "DuplicateListener")
	ls := must(lb.DescribeListeners(ctx, &elbv2.DescribeListenersInput{LoadBalancerArn: alb.LoadBalancerArn}))(t).Listeners
	if len(ls) != 1 || *ls[0].Port != 80 || *ls[0].DefaultActions[0].TargetGroupArn != *tg.TargetGroupArn {
		t.Errorf("listeners: %+v", ls)
	}
	byLB := must(lb.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{LoadBalancerArn: alb.LoadBalancerArn}))(t).TargetGroups
	if len(byLB) != 1 || byLB[0].LoadBalancerArns[0] != *alb.LoadBalancerArn {
		t.Errorf("target groups of the load balancer: %+v", byLB)
	}
	_, err = lb.DescribeTargetGroups(ctx, &elbv2.DescribeTargetGroupsInput{Names: []string{"nope"}})
	wantCode(t, err, "TargetGroupNotFound")

	// Targets: registered instances turn healthy once running.
	run := must(c.RunInstances(ctx, &ec2.RunInstancesInput{ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: ec2types.InstanceTypeT3Small,
		MinCount: aws.Int32(2), MaxCount: aws.Int32(2), SubnetId: &n.subnets[0]}))(t)
	var targets []elbtypes.TargetDescription
	for _, in := range run.Instances {
		targets = append(targets, elbtypes.TargetDescription{Id: in.InstanceId})
	}
	must(lb.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tg.TargetGroupArn, Targets: targets}))(t)
	_, err = lb.RegisterTargets(ctx, &elbv2.RegisterTargetsInput{TargetGroupArn: tg.TargetGroupArn, Targets: []elbtypes.TargetDescription{{Id: aws.String("i-0000000000000000")}}})
	wantCode(t, err, "InvalidTarget")
	health := func() map[string]elbtypes.TargetHealthStateEnum {
		t.Helper()
		out := map[string]elbtypes.TargetHealthStateEnum{}
		for _, d := range must(lb.DescribeTargetHealth(ctx, &elbv2.DescribeTargetHealthInput{TargetGroupArn: tg.TargetGroupArn}))(t).TargetHealthDescriptions {
			out[*d.Target.Id] = d.TargetHealth.State
			if *d.Target.Port != 8080 {
				t.Errorf("target port %d", *d.Target.Port)
			}
		}
		return out
	}
	if h := health(); len(h) != 2 || h[*targets[0].Id] != elbtypes.TargetHealthStateEnumInitial {
		t.Errorf("health while pending: %v", h)
	}
	deadline := time.Now().Add(10 * time.Second)
	for health()[*targets[0].Id] != elbtypes.TargetHealthStateEnumHealthy {
		if time.Now().After(deadline) {
			t.Fatalf("target never healthy: %v", health())
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by the deadline
	}
	must(lb.DeregisterTargets(ctx, &elbv2.DeregisterTargetsInput{TargetGroupArn: tg.TargetGroupArn, Targets: targets[1:]}))(t)
	if h := health(); len(h) != 1 {
		t.Errorf("after deregister: %v", h)
	}

	// Tags.
	must(lb.AddTags(ctx, &elbv2.AddTagsInput{ResourceArns: []string{*alb.LoadBalancerArn, *tg.TargetGroupArn},
		Tags: []elbtypes.Tag{{Key: aws.String("Name"), Value: aws.String("web")}}}))(t)
	must(lb.RemoveTags(ctx, &elbv2.RemoveTagsInput{ResourceArns: []string{*alb.LoadBalancerArn}, TagKeys: []string{"corral:cluster"}}))(t)
	td := must(lb.DescribeTags(ctx, &elbv2.DescribeTagsInput{ResourceArns: []string{*alb.LoadBalancerArn, *tg.TargetGroupArn}}))(t).TagDescriptions
	if len(td) != 2 || len(td[0].Tags) != 1 || *td[0].Tags[0].Key != "Name" || len(td[1].Tags) != 1 {
		t.Errorf("tags: %+v", td)
	}

	// Dependencies: EC2 refuses to delete what a load balancer uses, ELB
	// refuses to delete a target group a listener forwards to.
	_, err = c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &n.sg})
	wantCode(t, err, "DependencyViolation")
	_, err = c.DeleteSubnet(ctx, &ec2.DeleteSubnetInput{SubnetId: &n.subnets[2]})
	wantCode(t, err, "DependencyViolation")
	_, err = lb.DeleteTargetGroup(ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: tg.TargetGroupArn})
	wantCode(t, err, "ResourceInUse")
	must(lb.DeleteListener(ctx, &elbv2.DeleteListenerInput{ListenerArn: l.ListenerArn}))(t)
	_, err = lb.DeleteListener(ctx, &elbv2.DeleteListenerInput{ListenerArn: l.ListenerArn})
	wantCode(t, err, "ListenerNotFound")
	if h := health(); h[*targets[0].Id] != elbtypes.TargetHealthStateEnumUnused {
		t.Errorf("health without a listener: %v", h)
	}
	must(lb.DeleteTargetGroup(ctx, &elbv2.DeleteTargetGroupInput{TargetGroupArn: tg.TargetGroupArn}))(t)
	must(lb.DeleteLoadBalancer(ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: alb.LoadBalancerArn}))(t)
	must(lb.DeleteLoadBalancer(ctx, &elbv2.DeleteLoadBalancerInput{LoadBalancerArn: nlb.LoadBalancerArn}))(t)
	left := must(lb.DescribeLoadBalancers(ctx, &elbv2.DescribeLoadBalancersInput{}))(t)
	if len(left.LoadBalancers) != 0 {
		t.Errorf("left: %+v", left.LoadBalancers)
	}
	must(c.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: &n.sg}))(t)

	for _, call := range e.Calls() {
		if call.Service == "elasticloadbalancing" && call.Mutating == strings.HasPrefix(call.Action, "Describe") {
			t.Errorf("call %+v: Mutating wrong", call)
		}
	}
}
