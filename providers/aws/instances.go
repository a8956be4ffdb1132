package aws

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
)

// Instance is one instance of a node group as Auto Scaling and EC2 see it.
type Instance struct {
	ID        string
	PrivateIP string
	Zone      string
	// State is the Auto Scaling lifecycle state (Pending, InService,
	// Terminating…), or EC2's state when Auto Scaling has let it go.
	State string
	// LaunchTemplateVersion is the template version it was launched with;
	// older than Outputs.TemplateVersions means it awaits replacement.
	LaunchTemplateVersion string
	Healthy               bool
}

// Instances lists the instances of node group group, oldest first as Auto
// Scaling lists them.
func (s *Stack) Instances(ctx context.Context, group string) ([]Instance, error) {
	name := s.spec.name(group)
	out, err := s.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}})
	if err != nil {
		return nil, wrap("describe auto scaling group", name, err)
	}
	if len(out.AutoScalingGroups) == 0 {
		return nil, fmt.Errorf("auto scaling group %q does not exist: run provision up first", name)
	}
	var list []Instance
	var ids []string
	for _, in := range out.AutoScalingGroups[0].Instances {
		i := Instance{
			ID: aws.ToString(in.InstanceId), Zone: aws.ToString(in.AvailabilityZone),
			State: string(in.LifecycleState), Healthy: aws.ToString(in.HealthStatus) == "Healthy",
		}
		if in.LaunchTemplate != nil {
			i.LaunchTemplateVersion = aws.ToString(in.LaunchTemplate.Version)
		}
		list = append(list, i)
		ids = append(ids, i.ID)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	desc, err := s.ec2.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: ids})
	if err != nil {
		return nil, wrap("describe instances of auto scaling group", name, err)
	}
	ip := map[string]string{}
	for _, r := range desc.Reservations {
		for _, in := range r.Instances {
			ip[aws.ToString(in.InstanceId)] = aws.ToString(in.PrivateIpAddress)
		}
	}
	for i := range list {
		list[i].PrivateIP = ip[list[i].ID]
	}
	return list, nil
}

// TerminateInstance terminates instance id of a node group. With decrement
// the group shrinks by exactly that instance; without, Auto Scaling
// launches a replacement (from the latest template: a rolling replacement
// is this, one instance at a time).
func (s *Stack) TerminateInstance(ctx context.Context, id string, decrement bool) error {
	_, err := s.asg.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: &id, ShouldDecrementDesiredCapacity: &decrement,
	})
	return wrap("terminate instance", id, err)
}

// Grow makes node group group's Auto Scaling group want at least desired
// instances (raising its maximum to match if needed), so that it launches
// the missing ones: provision grows a group by one for each node it
// brings up beside the one it replaces. A group that already wants that
// many is left alone, without a mutating call; Grow never shrinks one
// (scaling in goes through TerminateInstance, which picks the victim).
// It prints nothing: its callers run at once, and say what grew.
func (s *Stack) Grow(ctx context.Context, group string, desired int) (grew bool, err error) {
	name := s.spec.name(group)
	out, err := s.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}})
	if err != nil {
		return false, wrap("describe auto scaling group", name, err)
	}
	if len(out.AutoScalingGroups) == 0 {
		return false, fmt.Errorf("auto scaling group %q does not exist: run provision up first", name)
	}
	g := out.AutoScalingGroups[0]
	if int(aws.ToInt32(g.DesiredCapacity)) >= desired {
		return false, nil
	}
	in := &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: &name, DesiredCapacity: aws.Int32(int32(desired))}
	if int(aws.ToInt32(g.MaxSize)) < desired {
		in.MaxSize = aws.Int32(int32(desired))
	}
	if _, err := s.asg.UpdateAutoScalingGroup(ctx, in); err != nil {
		return false, wrap("grow auto scaling group", name, err)
	}
	return true, nil
}
