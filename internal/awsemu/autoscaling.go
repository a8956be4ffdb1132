package awsemu

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

const asgNamespace = "http://autoscaling.amazonaws.com/doc/2011-01-01/"

type asgTag struct {
	key, value string
	propagate  bool
}

type asGroup struct {
	name, arn               string
	ltID, ltName, ltVersion string
	min, max, desired       int
	subnets                 []string
	tags                    []asgTag
	targetGroups            []string
	instances               []string // EC2 instance ids, oldest first
	created                 time.Time
	healthCheckType         string
	healthCheckGrace        int
	defaultCooldown         int
	newInstancesProtected   bool
}

type asgState struct {
	e      *Emulator
	groups map[string]*asGroup

	// targetHook, when set, is called as group instances come and go so
	// the ELBv2 emulation can (de)register them with the group's target
	// groups. It runs with the Emulator's state lock held.
	targetHook func(targetGroupARNs, registered, deregistered []string)
}

func newAutoScaling(e *Emulator) *queryService {
	s := &asgState{e: e, groups: map[string]*asGroup{}}
	e.asg = s
	return &queryService{e: e, namespace: asgNamespace, actions: map[string]func(query) (string, error){
		"CreateAutoScalingGroup":              s.create,
		"UpdateAutoScalingGroup":              s.update,
		"DescribeAutoScalingGroups":           s.describe,
		"DeleteAutoScalingGroup":              s.delete,
		"SetDesiredCapacity":                  s.setDesired,
		"TerminateInstanceInAutoScalingGroup": s.terminateInstance,
		"DescribeAutoScalingInstances":        s.describeInstances,
		"CreateOrUpdateTags":                  s.createOrUpdateTags,
		"DeleteTags":                          s.deleteTags,
		"AttachLoadBalancerTargetGroups":      s.attachTargetGroups,
		"DetachLoadBalancerTargetGroups":      s.detachTargetGroups,
		"DescribeLoadBalancerTargetGroups":    s.describeTargetGroups,
	}}
}

func validationError(format string, args ...any) error {
	return errf("ValidationError", format, args...)
}

func (s *asgState) group(name string) (*asGroup, error) {
	g := s.groups[name]
	if g == nil {
		return nil, validationError("AutoScalingGroup name not found - AutoScalingGroup '%s' not found", name)
	}
	return g, nil
}

// sizes reads MinSize/MaxSize/DesiredCapacity over g's current values.
func sizes(q query, g *asGroup, creating bool) (min, max, desired int, err error) {
	min, max, desired = g.min, g.max, g.desired
	n, hasMin, err := q.integer("MinSize")
	if err != nil {
		return
	}
	if hasMin {
		min = n
	}
	n, hasMax, err := q.integer("MaxSize")
	if err != nil {
		return
	}
	if hasMax {
		max = n
	}
	if creating && (!hasMin || !hasMax) {
		err = validationError("MinSize and MaxSize are required")
		return
	}
	n, hasDesired, err := q.integer("DesiredCapacity")
	if err != nil {
		return
	}
	switch {
	case hasDesired:
		desired = n
	case creating:
		desired = min
	case desired < min:
		desired = min
	case desired > max:
		desired = max
	}
	if min > max {
		err = validationError("The MinSize must be less than or equal to the MaxSize")
	} else if desired < min || desired > max {
		err = validationError("Desired capacity:%d must be between the specified min size:%d and max size:%d", desired, min, max)
	}
	return
}

func (s *asgState) setTemplate(q query, g *asGroup) error {
	lt := q.sub("LaunchTemplate")
	if lt.empty() {
		lt = q.sub("MixedInstancesPolicy.LaunchTemplate.LaunchTemplateSpecification")
	}
	if lt.empty() {
		return nil
	}
	t, err := s.e.ec2.lt(lt)
	if err != nil {
		return validationError("You must use a valid fully-formed launch template. %s", asAPIError(err).msg)
	}
	if _, err := t.version(lt.get("Version")); err != nil {
		return validationError("You must use a valid fully-formed launch template. %s", asAPIError(err).msg)
	}
	g.ltID, g.ltName, g.ltVersion = t.id, t.name, lt.get("Version")
	if g.ltVersion == "" {
		g.ltVersion = "$Default"
	}
	return nil
}

func (s *asgState) setSubnets(q query, g *asGroup) error {
	if !q.has("VPCZoneIdentifier") {
		return nil
	}
	var subnets []string
	for _, id := range strings.Split(q.get("VPCZoneIdentifier"), ",") {
		id = strings.TrimSpace(id)
		if id == "" {
			continue
		}
		if s.e.ec2.subnets[id] == nil {
			return validationError("The subnet ID '%s' does not exist", id)
		}
		subnets = append(subnets, id)
	}
	if len(subnets) == 0 {
		return validationError("VPCZoneIdentifier must name at least one subnet")
	}
	g.subnets = subnets
	return nil
}

func (s *asgState) create(q query) (string, error) {
	name := q.get("AutoScalingGroupName")
	if name == "" {
		return "", validationError("AutoScalingGroupName is required")
	}
	if s.groups[name] != nil {
		return "", errf("AlreadyExists", "AutoScalingGroup by this name already exists - A group with the name %s already exists", name)
	}
	if q.get("LaunchConfigurationName") != "" || q.get("InstanceId") != "" {
		return "", validationError("awsemu supports only launch templates")
	}
	g := &asGroup{name: name, created: time.Now(), healthCheckType: "EC2", defaultCooldown: 300}
	g.arn = fmt.Sprintf("arn:aws:autoscaling:%s:%s:autoScalingGroup:%s:autoScalingGroupName/%s",
		s.e.opts.Region, s.e.opts.AccountID, newRequestID(), name)
	var err error
	if g.min, g.max, g.desired, err = sizes(q, g, true); err != nil {
		return "", err
	}
	if err := s.setTemplate(q, g); err != nil {
		return "", err
	}
	if g.ltID == "" {
		return "", validationError("Valid requests must contain either LaunchTemplate, LaunchConfigurationName, InstanceId or MixedInstancesPolicy parameter.")
	}
	if err := s.setSubnets(q, g); err != nil {
		return "", err
	}
	if len(g.subnets) == 0 {
		return "", validationError("awsemu requires VPCZoneIdentifier")
	}
	if v := q.get("HealthCheckType"); v != "" {
		g.healthCheckType = v
	}
	g.healthCheckGrace, _, _ = q.integer("HealthCheckGracePeriod")
	g.targetGroups = q.list("TargetGroupARNs")
	if err := s.checkTargetGroups(g.targetGroups); err != nil {
		return "", err
	}
	g.newInstancesProtected, _ = q.boolean("NewInstancesProtectedFromScaleIn")
	for _, t := range q.structs("Tags") {
		p, _ := t.boolean("PropagateAtLaunch")
		g.setTag(asgTag{t.get("Key"), t.get("Value"), p})
	}
	s.groups[name] = g
	s.reconcile(g)
	return "", nil
}

func (g *asGroup) setTag(t asgTag) {
	for i := range g.tags {
		if g.tags[i].key == t.key {
			g.tags[i] = t
			return
		}
	}
	g.tags = append(g.tags, t)
}

func (s *asgState) update(q query) (string, error) {
	g, err := s.group(q.get("AutoScalingGroupName"))
	if err != nil {
		return "", err
	}
	c := *g
	if c.min, c.max, c.desired, err = sizes(q, g, false); err != nil {
		return "", err
	}
	if err := s.setTemplate(q, &c); err != nil {
		return "", err
	}
	if err := s.setSubnets(q, &c); err != nil {
		return "", err
	}
	if v := q.get("HealthCheckType"); v != "" {
		c.healthCheckType = v
	}
	*g = c
	s.reconcile(g)
	return "", nil
}

func (s *asgState) setDesired(q query) (string, error) {
	g, err := s.group(q.get("AutoScalingGroupName"))
	if err != nil {
		return "", err
	}
	n, has, err := q.integer("DesiredCapacity")
	if err != nil {
		return "", err
	}
	if !has {
		return "", validationError("DesiredCapacity is required")
	}
	if n > g.max {
		return "", validationError("New SetDesiredCapacity value %d is above max value %d for the AutoScalingGroup.", n, g.max)
	}
	if n < g.min {
		return "", validationError("New SetDesiredCapacity value %d is below min value %d for the AutoScalingGroup.", n, g.min)
	}
	g.desired = n
	s.reconcile(g)
	return "", nil
}

func (s *asgState) delete(q query) (string, error) {
	g, err := s.group(q.get("AutoScalingGroupName"))
	if err != nil {
		return "", err
	}
	s.prune(g)
	force, _ := q.boolean("ForceDelete")
	if len(g.instances) > 0 && !force {
		return "", errf("ResourceInUse", "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group.")
	}
	removed := slices.Clone(g.instances)
	for _, id := range g.instances {
		s.e.ec2.terminate(s.e.ec2.instances[id])
	}
	s.notify(g, nil, removed)
	delete(s.groups, g.name)
	return "", nil
}

func (s *asgState) groupOf(instanceID string) *asGroup {
	for _, g := range s.groups {
		if slices.Contains(g.instances, instanceID) {
			return g
		}
	}
	return nil
}

func (s *asgState) terminateInstance(q query) (string, error) {
	id := q.get("InstanceId")
	s.e.ec2.refresh()
	for _, g := range s.groups {
		s.prune(g)
	}
	g := s.groupOf(id)
	if g == nil {
		return "", validationError("Instance Id not found - No managed instance found for instance ID: %s", id)
	}
	dec, has := q.boolean("ShouldDecrementDesiredCapacity")
	if !has {
		return "", validationError("ShouldDecrementDesiredCapacity is required")
	}
	if dec {
		if g.desired-1 < g.min {
			return "", validationError("Currently, desiredSize equals minSize (%d). Terminating instance without replacement will violate group's min size constraint. Either set shouldDecrementDesiredCapacity flag to false or lower group's min size.", g.min)
		}
		g.desired--
	}
	s.e.ec2.terminate(s.e.ec2.instances[id])
	cause := "At " + time.Now().UTC().Format(time.RFC3339) + " instance " + id + " was taken out of service in response to a user request"
	if dec {
		cause += ", shrinking the capacity from " + strconv.Itoa(g.desired+1) + " to " + strconv.Itoa(g.desired) + "."
	} else {
		cause += "."
	}
	s.reconcile(g)
	return x("Activity", xt("ActivityId", newRequestID()), xt("AutoScalingGroupName", g.name),
		xt("Description", "Terminating EC2 instance: "+id), xt("Cause", cause), xtime("StartTime", time.Now()),
		xt("StatusCode", "InProgress"), xi("Progress", 0), xt("Details", "{}")), nil
}

// prune drops instances that are shutting down or gone.
func (s *asgState) prune(g *asGroup) {
	var removed []string
	g.instances = slices.DeleteFunc(g.instances, func(id string) bool {
		in := s.e.ec2.instances[id]
		gone := in == nil || in.state == "shutting-down" || in.state == "terminated"
		if gone {
			removed = append(removed, id)
		}
		return gone
	})
	s.notify(g, nil, removed)
}

func (s *asgState) notify(g *asGroup, added, removed []string) {
	if s.targetHook != nil && len(g.targetGroups) > 0 && (len(added) > 0 || len(removed) > 0) {
		s.targetHook(g.targetGroups, added, removed)
	}
}

func (s *asgState) reconcileAll() {
	names := slices.Sorted(maps.Keys(s.groups))
	for _, n := range names {
		s.reconcile(s.groups[n])
	}
}

// reconcile launches or terminates instances until the group has its
// desired capacity, balancing them across the group's subnets.
func (s *asgState) reconcile(g *asGroup) {
	ec2 := s.e.ec2
	ec2.refresh()
	s.prune(g)
	perSubnet := func() map[string][]string {
		m := map[string][]string{}
		for _, id := range g.instances {
			sn := ec2.instances[id].subnetID
			m[sn] = append(m[sn], id)
		}
		return m
	}
	var added []string
	for len(g.instances) < g.desired {
		m := perSubnet()
		best := ""
		for _, sn := range g.subnets {
			if ec2.subnets[sn] != nil && (best == "" || len(m[sn]) < len(m[best])) {
				best = sn
			}
		}
		if best == "" {
			break
		}
		tags := []tag{{"aws:autoscaling:groupName", g.name}}
		for _, t := range g.tags {
			if t.propagate {
				tags = append(tags, tag{t.key, t.value})
			}
		}
		params := query{map[string][]string{
			"LaunchTemplate.LaunchTemplateId": {g.ltID}, "LaunchTemplate.Version": {g.ltVersion}, "SubnetId": {best}}}
		ins, err := ec2.runInstances(launchSpec{params: params, count: 1, extraTags: tags})
		if err != nil {
			break // AWS records a failed scaling activity and retries later
		}
		g.instances = append(g.instances, ins[0].id)
		added = append(added, ins[0].id)
	}
	var removed []string
	for len(g.instances) > g.desired {
		m := perSubnet()
		busiest := ""
		for sn, ids := range m {
			if busiest == "" || len(ids) > len(m[busiest]) || (len(ids) == len(m[busiest]) && sn < busiest) {
				busiest = sn
			}
		}
		victim := m[busiest][0]
		ec2.terminate(ec2.instances[victim])
		g.instances = slices.DeleteFunc(g.instances, func(id string) bool { return id == victim })
		removed = append(removed, victim)
	}
	s.notify(g, added, removed)
}

func lifecycle(in *instance) string {
	switch in.state {
	case "pending":
		return "Pending"
	case "running":
		return "InService"
	case "shutting-down":
		return "Terminating"
	}
	return "Terminated"
}

func (s *asgState) instanceXML(g *asGroup, in *instance, withGroup bool) string {
	out := xt("InstanceId", in.id) + xt("InstanceType", in.itype) + xt("AvailabilityZone", in.az) +
		xt("LifecycleState", lifecycle(in)) + xt("HealthStatus", "Healthy") +
		x("LaunchTemplate", xt("LaunchTemplateId", in.ltID), xt("LaunchTemplateName", in.ltName), xi("Version", in.ltVersion)) +
		xb("ProtectedFromScaleIn", g.newInstancesProtected)
	if withGroup {
		out += xt("AutoScalingGroupName", g.name)
	}
	return out
}

func (s *asgState) tagsXML(g *asGroup) string {
	var items []string
	for _, t := range g.tags {
		items = append(items, xt("ResourceId", g.name)+xt("ResourceType", "auto-scaling-group")+xt("Key", t.key)+
			xt("Value", t.value)+xb("PropagateAtLaunch", t.propagate))
	}
	return xlist("Tags", "member", items)
}

func (s *asgState) groupXML(g *asGroup) string {
	var ins, azs []string
	for _, id := range g.instances {
		ins = append(ins, s.instanceXML(g, s.e.ec2.instances[id], false))
	}
	for _, sn := range g.subnets {
		if n := s.e.ec2.subnets[sn]; n != nil && !slices.Contains(azs, n.az) {
			azs = append(azs, n.az)
		}
	}
	return xt("AutoScalingGroupName", g.name) + xt("AutoScalingGroupARN", g.arn) +
		x("LaunchTemplate", xt("LaunchTemplateId", g.ltID), xt("LaunchTemplateName", g.ltName), xt("Version", g.ltVersion)) +
		xi("MinSize", g.min) + xi("MaxSize", g.max) + xi("DesiredCapacity", g.desired) + xi("DefaultCooldown", g.defaultCooldown) +
		xtlist("AvailabilityZones", "member", azs) + xtlist("LoadBalancerNames", "member", nil) +
		xtlist("TargetGroupARNs", "member", g.targetGroups) + xt("HealthCheckType", g.healthCheckType) +
		xi("HealthCheckGracePeriod", g.healthCheckGrace) + xlist("Instances", "member", ins) + xtime("CreatedTime", g.created) +
		xlist("SuspendedProcesses", "member", nil) + xt("VPCZoneIdentifier", strings.Join(g.subnets, ",")) +
		xlist("EnabledMetrics", "member", nil) + s.tagsXML(g) + xtlist("TerminationPolicies", "member", []string{"Default"}) +
		xb("NewInstancesProtectedFromScaleIn", g.newInstancesProtected)
}

func (s *asgState) describe(q query) (string, error) {
	s.e.ec2.refresh()
	names := q.list("AutoScalingGroupNames")
	keys := slices.Sorted(maps.Keys(s.groups))
	var items []string
	for _, n := range keys {
		g := s.groups[n]
		if !wanted(names, n) {
			continue
		}
		s.prune(g)
		if !s.filtersMatch(q, g) {
			continue
		}
		items = append(items, s.groupXML(g))
	}
	return xlist("AutoScalingGroups", "member", items), nil
}

func (s *asgState) filtersMatch(q query, g *asGroup) bool {
	for _, f := range q.structs("Filters") {
		name, vals := f.get("Name"), f.list("Values")
		var have []string
		for _, t := range g.tags {
			switch {
			case name == "tag-key":
				have = append(have, t.key)
			case name == "tag-value":
				have = append(have, t.value)
			case name == "tag:"+t.key:
				have = append(have, t.value)
			}
		}
		if !anyMatch(vals, have) {
			return false
		}
	}
	return true
}

// checkTargetGroups refuses target group ARNs that ELBv2 does not know.
func (s *asgState) checkTargetGroups(arns []string) error {
	for _, a := range arns {
		if s.e.elb == nil || s.e.elb.tgs[a] == nil {
			return validationError("Provided Target Groups may not be valid. Please ensure they exist and try again. (%s)", a)
		}
	}
	return nil
}

func (s *asgState) attachTargetGroups(q query) (string, error) {
	g, err := s.group(q.get("AutoScalingGroupName"))
	if err != nil {
		return "", err
	}
	arns := q.list("TargetGroupARNs")
	if err := s.checkTargetGroups(arns); err != nil {
		return "", err
	}
	s.e.ec2.refresh()
	s.prune(g)
	var added []string
	for _, a := range arns {
		if !slices.Contains(g.targetGroups, a) {
			g.targetGroups = append(g.targetGroups, a)
			added = append(added, a)
		}
	}
	if s.targetHook != nil && len(added) > 0 {
		s.targetHook(added, g.instances, nil)
	}
	return "", nil
}

func (s *asgState) detachTargetGroups(q query) (string, error) {
	g, err := s.group(q.get("AutoScalingGroupName"))
	if err != nil {
		return "", err
	}
	arns := q.list("TargetGroupARNs")
	for _, a := range arns {
		if !slices.Contains(g.targetGroups, a) {
			return "", validationError("Target group %s is not attached to AutoScalingGroup %s", a, g.name)
		}
	}
	s.e.ec2.refresh()
	s.prune(g)
	g.targetGroups = slices.DeleteFunc(g.targetGroups, func(a string) bool { return slices.Contains(arns, a) })
	if s.targetHook != nil && len(arns) > 0 {
		s.targetHook(arns, nil, g.instances)
	}
	return "", nil
}

func (s *asgState) describeTargetGroups(q query) (string, error) {
	g, err := s.group(q.get("AutoScalingGroupName"))
	if err != nil {
		return "", err
	}
	var items []string
	for _, a := range g.targetGroups {
		items = append(items, xt("LoadBalancerTargetGroupARN", a)+xt("State", "InService"))
	}
	return xlist("LoadBalancerTargetGroups", "member", items), nil
}

func (s *asgState) describeInstances(q query) (string, error) {
	s.e.ec2.refresh()
	ids := q.list("InstanceIds")
	var items []string
	keys := slices.Sorted(maps.Keys(s.groups))
	for _, n := range keys {
		g := s.groups[n]
		s.prune(g)
		for _, id := range g.instances {
			if wanted(ids, id) {
				items = append(items, s.instanceXML(g, s.e.ec2.instances[id], true))
			}
		}
	}
	return xlist("AutoScalingInstances", "member", items), nil
}

func (s *asgState) createOrUpdateTags(q query) (string, error) {
	for _, t := range q.structs("Tags") {
		g, err := s.group(t.get("ResourceId"))
		if err != nil {
			return "", err
		}
		p, _ := t.boolean("PropagateAtLaunch")
		g.setTag(asgTag{t.get("Key"), t.get("Value"), p})
	}
	return "", nil
}

func (s *asgState) deleteTags(q query) (string, error) {
	for _, t := range q.structs("Tags") {
		g, err := s.group(t.get("ResourceId"))
		if err != nil {
			return "", err
		}
		g.tags = slices.DeleteFunc(g.tags, func(o asgTag) bool { return o.key == t.get("Key") })
	}
	return "", nil
}
