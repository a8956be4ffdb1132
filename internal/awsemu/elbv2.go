package awsemu

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"time"
)

const elbNamespace = "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"

// loadBalancer is an application or network load balancer.
type loadBalancer struct {
	arn, name, dns, scheme, typ, vpcID string
	subnets, groups                    []string
	created, activeAt                  time.Time
}

// healthCheck holds a target group's health check settings as given (or
// defaulted); they are reported, not acted on.
type healthCheck struct {
	enabled                               bool
	protocol, port, path, matcher         string
	interval, timeout, healthy, unhealthy int
}

type elbTarget struct {
	id   string
	port int
}

type targetGroup struct {
	arn, name, protocol, vpcID, targetType string
	port                                   int
	hc                                     healthCheck
	attrs                                  map[string]string
	targets                                []elbTarget
}

type listener struct {
	arn, lbARN, protocol string
	port                 int
	tgARN                string
}

// elbState is the Elastic Load Balancing v2 emulation. Its maps are guarded
// by the Emulator's state lock, like EC2's.
type elbState struct {
	e         *Emulator
	lbs       map[string]*loadBalancer // by ARN
	tgs       map[string]*targetGroup  // by ARN
	listeners map[string]*listener     // by ARN
	tags      map[string][]tag         // by resource ARN, in insertion order
}

func newELBv2(e *Emulator) *queryService {
	s := &elbState{e: e, lbs: map[string]*loadBalancer{}, tgs: map[string]*targetGroup{},
		listeners: map[string]*listener{}, tags: map[string][]tag{}}
	e.elb = s
	e.asg.targetHook = s.asgTargets
	return &queryService{e: e, namespace: elbNamespace, actions: map[string]func(query) (string, error){
		"CreateLoadBalancer": s.createLB, "DescribeLoadBalancers": s.describeLBs, "DeleteLoadBalancer": s.deleteLB,
		"CreateTargetGroup": s.createTG, "DescribeTargetGroups": s.describeTGs, "DeleteTargetGroup": s.deleteTG,
		"ModifyTargetGroupAttributes": s.modifyTGAttrs, "DescribeTargetGroupAttributes": s.describeTGAttrs,
		"CreateListener": s.createListener, "DescribeListeners": s.describeListeners, "DeleteListener": s.deleteListener,
		"RegisterTargets": s.registerTargets, "DeregisterTargets": s.deregisterTargets,
		"DescribeTargetHealth": s.describeTargetHealth,
		"AddTags":              s.addTags, "DescribeTags": s.describeTags, "RemoveTags": s.removeTags,
	}}
}

// randHex returns n random hex digits.
func randHex(n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

func (s *elbState) arn(resource string) string {
	return "arn:aws:elasticloadbalancing:" + s.e.opts.Region + ":" + s.e.opts.AccountID + ":" + resource
}

// elbName checks a load balancer or target group name as AWS does: 1-32
// alphanumerics or hyphens, not starting or ending with a hyphen.
func elbName(kind, name string) error {
	if name == "" || len(name) > 32 || strings.HasPrefix(name, "-") || strings.HasSuffix(name, "-") ||
		strings.ContainsFunc(name, func(r rune) bool {
			return !(r == '-' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
		}) {
		return validationError("%s name '%s' must have 1-32 alphanumeric or hyphen characters and must not begin or end with a hyphen", kind, name)
	}
	return nil
}

// ---- load balancers

func (s *elbState) createLB(q query) (string, error) {
	name := q.get("Name")
	if err := elbName("Load balancer", name); err != nil {
		return "", err
	}
	for _, lb := range s.lbs {
		if lb.name == name {
			return "", errf("DuplicateLoadBalancerName", "A load balancer with the name '%s' already exists", name)
		}
	}
	lb := &loadBalancer{name: name, typ: q.get("Type"), scheme: q.get("Scheme"), created: time.Now()}
	if lb.typ == "" {
		lb.typ = "application"
	}
	if lb.scheme == "" {
		lb.scheme = "internet-facing"
	}
	if lb.typ != "application" && lb.typ != "network" {
		return "", validationError("Load balancer type '%s' is not supported by awsemu; use application or network", lb.typ)
	}
	if lb.scheme != "internet-facing" && lb.scheme != "internal" {
		return "", validationError("Scheme '%s' must be internet-facing or internal", lb.scheme)
	}
	lb.subnets = q.list("Subnets")
	for _, m := range q.structs("SubnetMappings") {
		lb.subnets = append(lb.subnets, m.get("SubnetId"))
	}
	if len(lb.subnets) == 0 {
		return "", validationError("At least one subnet must be specified")
	}
	zones := map[string]bool{}
	for _, id := range lb.subnets {
		sn := s.e.ec2.subnets[id]
		if sn == nil {
			return "", errf("SubnetNotFound", "The subnet ID '%s' is not valid", id)
		}
		if lb.vpcID != "" && sn.vpcID != lb.vpcID {
			return "", errf("InvalidSubnet", "Subnets %s and %s are in different VPCs", lb.subnets[0], id)
		}
		if zones[sn.az] {
			return "", errf("InvalidConfigurationRequest", "A load balancer cannot be attached to multiple subnets in the same Availability Zone (%s)", sn.az)
		}
		zones[sn.az] = true
		lb.vpcID = sn.vpcID
	}
	if lb.typ == "application" && len(zones) < 2 {
		return "", validationError("At least two subnets in two different Availability Zones must be specified")
	}
	lb.groups = q.list("SecurityGroups")
	for _, g := range lb.groups {
		if sg := s.e.ec2.sgs[g]; sg == nil || sg.vpcID != lb.vpcID {
			return "", errf("InvalidSecurityGroup", "Security group '%s' does not exist in VPC '%s'", g, lb.vpcID)
		}
	}
	if len(lb.groups) == 0 && lb.typ == "application" {
		lb.groups = []string{s.e.ec2.vpcs[lb.vpcID].defaultGroup}
	}
	short := "app"
	if lb.typ == "network" {
		short = "net"
	}
	lb.arn = s.arn("loadbalancer/" + short + "/" + name + "/" + randHex(16))
	n, _ := rand.Int(rand.Reader, big.NewInt(900000000))
	lb.dns = fmt.Sprintf("%s-%d.%s.elb.amazonaws.com", name, 100000000+n.Int64(), s.e.opts.Region)
	if lb.scheme == "internal" {
		lb.dns = "internal-" + lb.dns
	}
	lb.activeAt = lb.created.Add(s.e.opts.StateDelay)
	s.lbs[lb.arn] = lb
	s.setTags(lb.arn, q.tags("Tags"))
	return xlist("LoadBalancers", "member", []string{s.renderLB(lb)}), nil
}

func (s *elbState) renderLB(lb *loadBalancer) string {
	state := "active"
	if time.Now().Before(lb.activeAt) {
		state = "provisioning"
	}
	var azs []string
	for _, id := range lb.subnets {
		az := ""
		if sn := s.e.ec2.subnets[id]; sn != nil {
			az = sn.az
		}
		azs = append(azs, xt("ZoneName", az)+xt("SubnetId", id))
	}
	zone := "Z1H1FL5HABSF5" // the ALB hosted zone of us-west-2; NLBs have their own
	if lb.typ == "network" {
		zone = "Z18D5FSROUN65G"
	}
	return xt("LoadBalancerArn", lb.arn) + xt("DNSName", lb.dns) + xt("CanonicalHostedZoneId", zone) +
		xtime("CreatedTime", lb.created) + xt("LoadBalancerName", lb.name) + xt("Scheme", lb.scheme) +
		xt("VpcId", lb.vpcID) + x("State", xt("Code", state)) + xt("Type", lb.typ) +
		xlist("AvailabilityZones", "member", azs) + xtlist("SecurityGroups", "member", lb.groups) +
		xt("IpAddressType", "ipv4")
}

func (s *elbState) describeLBs(q query) (string, error) {
	arns, names := q.list("LoadBalancerArns"), q.list("Names")
	for _, a := range arns {
		if s.lbs[a] == nil {
			return "", errf("LoadBalancerNotFound", "Load balancer '%s' not found", a)
		}
	}
	var items []string
	found := map[string]bool{}
	for _, a := range slices.Sorted(maps.Keys(s.lbs)) {
		lb := s.lbs[a]
		if wanted(arns, lb.arn) && wanted(names, lb.name) {
			items = append(items, s.renderLB(lb))
			found[lb.name] = true
		}
	}
	for _, n := range names {
		if !found[n] {
			return "", errf("LoadBalancerNotFound", "Load balancers '[%s]' not found", n)
		}
	}
	return xlist("LoadBalancers", "member", items), nil
}

// deleteLB deletes a load balancer and its listeners; like AWS it
// succeeds for a load balancer that does not exist.
func (s *elbState) deleteLB(q query) (string, error) {
	a := q.get("LoadBalancerArn")
	if a == "" {
		return "", validationError("LoadBalancerArn is required")
	}
	for la, l := range s.listeners {
		if l.lbARN == a {
			delete(s.listeners, la)
		}
	}
	delete(s.lbs, a)
	delete(s.tags, a)
	return "", nil
}

// uses returns the ARN of a load balancer that depends on the EC2 resource
// id (a VPC, subnet or security group), or "".
func (s *elbState) uses(id string) string {
	for _, a := range slices.Sorted(maps.Keys(s.lbs)) {
		lb := s.lbs[a]
		if lb.vpcID == id || slices.Contains(lb.subnets, id) || slices.Contains(lb.groups, id) {
			return a
		}
	}
	return ""
}

// ---- target groups

func (s *elbState) createTG(q query) (string, error) {
	name := q.get("Name")
	if err := elbName("Target group", name); err != nil {
		return "", err
	}
	for _, tg := range s.tgs {
		if tg.name == name {
			return "", errf("DuplicateTargetGroupName", "A target group with the name '%s' already exists", name)
		}
	}
	tg := &targetGroup{name: name, protocol: strings.ToUpper(q.get("Protocol")), vpcID: q.get("VpcId"),
		targetType: q.get("TargetType"), attrs: map[string]string{}}
	if tg.targetType == "" {
		tg.targetType = "instance"
	}
	if tg.targetType != "instance" {
		return "", validationError("Target type '%s' is not supported by awsemu; use instance", tg.targetType)
	}
	if !slices.Contains([]string{"HTTP", "HTTPS", "TCP", "UDP", "TLS", "TCP_UDP"}, tg.protocol) {
		return "", validationError("Protocol '%s' must be one of HTTP, HTTPS, TCP, UDP, TLS, TCP_UDP", q.get("Protocol"))
	}
	port, has, err := q.integer("Port")
	if err != nil {
		return "", err
	}
	if !has || port < 1 || port > 65535 {
		return "", validationError("Port must be between 1 and 65535 for an instance target group")
	}
	tg.port = port
	if s.e.ec2.vpcs[tg.vpcID] == nil {
		return "", validationError("The VPC ID '%s' is not found", tg.vpcID)
	}
	http := tg.protocol == "HTTP" || tg.protocol == "HTTPS"
	tg.hc = healthCheck{enabled: true, protocol: tg.protocol, port: "traffic-port", interval: 30, timeout: 5,
		healthy: 5, unhealthy: 2}
	if tg.protocol == "UDP" || tg.protocol == "TCP_UDP" || tg.protocol == "TLS" {
		tg.hc.protocol = "TCP"
	}
	if http {
		tg.hc.path, tg.hc.matcher, tg.hc.timeout = "/", "200", 5
	} else {
		tg.hc.timeout, tg.hc.healthy, tg.hc.unhealthy = 10, 3, 3
	}
	if b, ok := q.boolean("HealthCheckEnabled"); ok {
		tg.hc.enabled = b
	}
	for p, dst := range map[string]*string{"HealthCheckProtocol": &tg.hc.protocol, "HealthCheckPort": &tg.hc.port,
		"HealthCheckPath": &tg.hc.path, "Matcher.HttpCode": &tg.hc.matcher} {
		if v := q.get(p); v != "" {
			*dst = v
		}
	}
	for p, bound := range map[string]struct {
		dst      *int
		min, max int
	}{"HealthCheckIntervalSeconds": {&tg.hc.interval, 5, 300}, "HealthCheckTimeoutSeconds": {&tg.hc.timeout, 2, 120},
		"HealthyThresholdCount": {&tg.hc.healthy, 2, 10}, "UnhealthyThresholdCount": {&tg.hc.unhealthy, 2, 10}} {
		n, has, err := q.integer(p)
		if err != nil {
			return "", err
		}
		if has {
			if n < bound.min || n > bound.max {
				return "", validationError("%s must be between %d and %d, got %d", p, bound.min, bound.max, n)
			}
			*bound.dst = n
		}
	}
	if tg.hc.timeout >= tg.hc.interval {
		return "", validationError("Health check timeout (%d) must be smaller than the interval (%d)", tg.hc.timeout, tg.hc.interval)
	}
	tg.arn = s.arn("targetgroup/" + name + "/" + randHex(16))
	s.tgs[tg.arn] = tg
	s.setTags(tg.arn, q.tags("Tags"))
	return xlist("TargetGroups", "member", []string{s.renderTG(tg)}), nil
}

// lbsOf returns the load balancers whose listeners forward to tg.
func (s *elbState) lbsOf(tg *targetGroup) []string {
	var out []string
	for _, la := range slices.Sorted(maps.Keys(s.listeners)) {
		l := s.listeners[la]
		if l.tgARN == tg.arn && !slices.Contains(out, l.lbARN) {
			out = append(out, l.lbARN)
		}
	}
	return out
}

func (s *elbState) renderTG(tg *targetGroup) string {
	out := xt("TargetGroupArn", tg.arn) + xt("TargetGroupName", tg.name) + xt("Protocol", tg.protocol) +
		xi("Port", tg.port) + xt("VpcId", tg.vpcID) + xt("HealthCheckProtocol", tg.hc.protocol) +
		xt("HealthCheckPort", tg.hc.port) + xb("HealthCheckEnabled", tg.hc.enabled) +
		xi("HealthCheckIntervalSeconds", tg.hc.interval) + xi("HealthCheckTimeoutSeconds", tg.hc.timeout) +
		xi("HealthyThresholdCount", tg.hc.healthy) + xi("UnhealthyThresholdCount", tg.hc.unhealthy) +
		xo("HealthCheckPath", tg.hc.path)
	if tg.hc.matcher != "" {
		out += x("Matcher", xt("HttpCode", tg.hc.matcher))
	}
	return out + xtlist("LoadBalancerArns", "member", s.lbsOf(tg)) + xt("TargetType", tg.targetType) +
		xt("IpAddressType", "ipv4")
}

func (s *elbState) tg(a string) (*targetGroup, error) {
	tg := s.tgs[a]
	if tg == nil {
		return nil, errf("TargetGroupNotFound", "Target group '%s' not found", a)
	}
	return tg, nil
}

func (s *elbState) describeTGs(q query) (string, error) {
	arns, names, lbARN := q.list("TargetGroupArns"), q.list("Names"), q.get("LoadBalancerArn")
	for _, a := range arns {
		if _, err := s.tg(a); err != nil {
			return "", err
		}
	}
	if lbARN != "" && s.lbs[lbARN] == nil {
		return "", errf("LoadBalancerNotFound", "Load balancer '%s' not found", lbARN)
	}
	var items []string
	found := map[string]bool{}
	for _, a := range slices.Sorted(maps.Keys(s.tgs)) {
		tg := s.tgs[a]
		if !wanted(arns, tg.arn) || !wanted(names, tg.name) || (lbARN != "" && !slices.Contains(s.lbsOf(tg), lbARN)) {
			continue
		}
		items = append(items, s.renderTG(tg))
		found[tg.name] = true
	}
	for _, n := range names {
		if !found[n] {
			return "", errf("TargetGroupNotFound", "One or more target groups not found: '%s'", n)
		}
	}
	return xlist("TargetGroups", "member", items), nil
}

func (s *elbState) deleteTG(q query) (string, error) {
	a := q.get("TargetGroupArn")
	tg := s.tgs[a]
	if tg == nil {
		return "", nil // AWS: deleting a deleted target group succeeds
	}
	if lbs := s.lbsOf(tg); len(lbs) > 0 {
		return "", errf("ResourceInUse", "Target group '%s' is currently in use by a listener or a rule of load balancer '%s'", a, lbs[0])
	}
	delete(s.tgs, a)
	delete(s.tags, a)
	return "", nil
}

// tgAttrDefaults are the attributes every instance target group has.
var tgAttrDefaults = map[string]string{
	"deregistration_delay.timeout_seconds":  "300",
	"stickiness.enabled":                    "false",
	"stickiness.type":                       "lb_cookie",
	"stickiness.lb_cookie.duration_seconds": "86400",
	"load_balancing.algorithm.type":         "round_robin",
	"slow_start.duration_seconds":           "0",
}

func checkTGAttr(tg *targetGroup, k, v string) error {
	bad := func(want string) error {
		return errf("InvalidConfigurationRequest", "The value of '%s' must be %s, not '%s'", k, want, v)
	}
	intIn := func(min, max int) error {
		if n, err := strconv.Atoi(v); err != nil || n < min || n > max {
			return bad(fmt.Sprintf("an integer from %d to %d", min, max))
		}
		return nil
	}
	switch k {
	case "stickiness.enabled":
		if v != "true" && v != "false" {
			return bad("true or false")
		}
	case "stickiness.type":
		allowed := []string{"lb_cookie", "app_cookie"}
		if tg.protocol != "HTTP" && tg.protocol != "HTTPS" {
			allowed = []string{"source_ip"}
		}
		if !slices.Contains(allowed, v) {
			return bad("one of " + strings.Join(allowed, ", ") + " for a " + tg.protocol + " target group")
		}
	case "stickiness.lb_cookie.duration_seconds":
		return intIn(1, 604800)
	case "deregistration_delay.timeout_seconds":
		return intIn(0, 3600)
	case "slow_start.duration_seconds":
		return intIn(0, 900)
	case "load_balancing.algorithm.type":
		if v != "round_robin" && v != "least_outstanding_requests" {
			return bad("round_robin or least_outstanding_requests")
		}
	default:
		return errf("InvalidConfigurationRequest", "Target group attribute key '%s' is not recognized", k)
	}
	return nil
}

func (s *elbState) renderTGAttrs(tg *targetGroup) string {
	var items []string
	for _, k := range slices.Sorted(maps.Keys(tgAttrDefaults)) {
		v, ok := tg.attrs[k]
		if !ok {
			v = tgAttrDefaults[k]
		}
		items = append(items, xt("Key", k)+xt("Value", v))
	}
	return xlist("Attributes", "member", items)
}

func (s *elbState) modifyTGAttrs(q query) (string, error) {
	tg, err := s.tg(q.get("TargetGroupArn"))
	if err != nil {
		return "", err
	}
	attrs := q.structs("Attributes")
	for _, a := range attrs {
		if err := checkTGAttr(tg, a.get("Key"), a.get("Value")); err != nil {
			return "", err
		}
	}
	for _, a := range attrs {
		tg.attrs[a.get("Key")] = a.get("Value")
	}
	return s.renderTGAttrs(tg), nil
}

func (s *elbState) describeTGAttrs(q query) (string, error) {
	tg, err := s.tg(q.get("TargetGroupArn"))
	if err != nil {
		return "", err
	}
	return s.renderTGAttrs(tg), nil
}

// ---- listeners

func (s *elbState) createListener(q query) (string, error) {
	lb := s.lbs[q.get("LoadBalancerArn")]
	if lb == nil {
		return "", errf("LoadBalancerNotFound", "Load balancer '%s' not found", q.get("LoadBalancerArn"))
	}
	l := &listener{lbARN: lb.arn, protocol: strings.ToUpper(q.get("Protocol"))}
	if l.protocol == "" {
		l.protocol = map[string]string{"application": "HTTP", "network": "TCP"}[lb.typ]
	}
	port, has, err := q.integer("Port")
	if err != nil {
		return "", err
	}
	if !has || port < 1 || port > 65535 {
		return "", validationError("Port must be between 1 and 65535")
	}
	l.port = port
	for _, o := range s.listeners {
		if o.lbARN == lb.arn && o.port == port {
			return "", errf("DuplicateListener", "A listener already exists on port %d of load balancer '%s'", port, lb.arn)
		}
	}
	actions := q.structs("DefaultActions")
	if len(actions) != 1 || actions[0].get("Type") != "forward" {
		return "", validationError("awsemu supports exactly one default action, of type forward")
	}
	a := actions[0].get("TargetGroupArn")
	if a == "" {
		if fwd := actions[0].structs("ForwardConfig.TargetGroups"); len(fwd) == 1 {
			a = fwd[0].get("TargetGroupArn")
		}
	}
	tg, err := s.tg(a)
	if err != nil {
		return "", err
	}
	if tg.vpcID != lb.vpcID {
		return "", validationError("Target group '%s' is in VPC %s, load balancer '%s' in VPC %s", tg.arn, tg.vpcID, lb.arn, lb.vpcID)
	}
	if lbs := s.lbsOf(tg); len(lbs) > 0 && lbs[0] != lb.arn {
		return "", errf("TargetGroupAssociationLimit", "Target group '%s' is already associated with load balancer '%s'", tg.arn, lbs[0])
	}
	l.tgARN = tg.arn
	short := strings.TrimPrefix(lb.arn, s.arn("loadbalancer/"))
	l.arn = s.arn("listener/" + short + "/" + randHex(16))
	s.listeners[l.arn] = l
	s.setTags(l.arn, q.tags("Tags"))
	return xlist("Listeners", "member", []string{s.renderListener(l)}), nil
}

func (s *elbState) renderListener(l *listener) string {
	return xt("ListenerArn", l.arn) + xt("LoadBalancerArn", l.lbARN) + xi("Port", l.port) + xt("Protocol", l.protocol) +
		xlist("DefaultActions", "member", []string{xt("Type", "forward") + xt("TargetGroupArn", l.tgARN) +
			x("ForwardConfig", xlist("TargetGroups", "member", []string{xt("TargetGroupArn", l.tgARN) + xi("Weight", 1)}))})
}

func (s *elbState) describeListeners(q query) (string, error) {
	arns, lbARN := q.list("ListenerArns"), q.get("LoadBalancerArn")
	if lbARN == "" && len(arns) == 0 {
		return "", validationError("You must specify either listener ARNs or a load balancer ARN")
	}
	if lbARN != "" && s.lbs[lbARN] == nil {
		return "", errf("LoadBalancerNotFound", "Load balancer '%s' not found", lbARN)
	}
	for _, a := range arns {
		if s.listeners[a] == nil {
			return "", errf("ListenerNotFound", "Listener '%s' not found", a)
		}
	}
	var items []string
	for _, a := range slices.Sorted(maps.Keys(s.listeners)) {
		l := s.listeners[a]
		if wanted(arns, a) && (lbARN == "" || l.lbARN == lbARN) {
			items = append(items, s.renderListener(l))
		}
	}
	return xlist("Listeners", "member", items), nil
}

func (s *elbState) deleteListener(q query) (string, error) {
	a := q.get("ListenerArn")
	if s.listeners[a] == nil {
		return "", errf("ListenerNotFound", "Listener '%s' not found", a)
	}
	delete(s.listeners, a)
	delete(s.tags, a)
	return "", nil
}

// ---- targets

func (s *elbState) targets(q query, tg *targetGroup) ([]elbTarget, error) {
	var out []elbTarget
	for _, t := range q.structs("Targets") {
		et := elbTarget{id: t.get("Id"), port: tg.port}
		if p, has, err := t.integer("Port"); err != nil {
			return nil, err
		} else if has {
			et.port = p
		}
		out = append(out, et)
	}
	if len(out) == 0 {
		return nil, validationError("Targets must name at least one target")
	}
	return out, nil
}

func (s *elbState) register(tg *targetGroup, t elbTarget) {
	if !slices.Contains(tg.targets, t) {
		tg.targets = append(tg.targets, t)
	}
}

func (s *elbState) deregister(tg *targetGroup, t elbTarget) {
	tg.targets = slices.DeleteFunc(tg.targets, func(o elbTarget) bool { return o == t })
}

func (s *elbState) registerTargets(q query) (string, error) {
	tg, err := s.tg(q.get("TargetGroupArn"))
	if err != nil {
		return "", err
	}
	ts, err := s.targets(q, tg)
	if err != nil {
		return "", err
	}
	s.e.ec2.refresh()
	for _, t := range ts {
		in := s.e.ec2.instances[t.id]
		if in == nil || (in.state != "running" && in.state != "pending") {
			return "", errf("InvalidTarget", "The following targets are not in a running state and cannot be registered: '%s'", t.id)
		}
		if in.vpcID != tg.vpcID {
			return "", errf("InvalidTarget", "The following targets are not in the target group VPC '%s': '%s'", tg.vpcID, t.id)
		}
	}
	for _, t := range ts {
		s.register(tg, t)
	}
	return "", nil
}

func (s *elbState) deregisterTargets(q query) (string, error) {
	tg, err := s.tg(q.get("TargetGroupArn"))
	if err != nil {
		return "", err
	}
	ts, err := s.targets(q, tg)
	if err != nil {
		return "", err
	}
	for _, t := range ts {
		if !slices.Contains(tg.targets, t) {
			return "", errf("InvalidTarget", "The target '%s' (port %d) is not registered with target group '%s'", t.id, t.port, tg.arn)
		}
	}
	for _, t := range ts {
		s.deregister(tg, t)
	}
	return "", nil
}

// health reports a target's state the way ELB does for a target that
// passes its checks once its instance runs: no traffic is really checked.
func (s *elbState) health(tg *targetGroup, t elbTarget, registered bool) string {
	in := s.e.ec2.instances[t.id]
	state, reason, desc := "healthy", "", ""
	switch {
	case !registered:
		state, reason, desc = "unavailable", "Target.NotRegistered", "Target is not registered to the target group"
	case len(s.lbsOf(tg)) == 0:
		state, reason, desc = "unused", "Target.NotInUse", "Target group is not configured to receive traffic from the load balancer"
	case in == nil || in.state == "terminated" || in.state == "shutting-down":
		state, reason, desc = "unused", "Target.InvalidState", "Target is in the terminated state"
	case in.state == "pending":
		state, reason, desc = "initial", "Elb.RegistrationInProgress", "Target registration is in progress"
	}
	th := xt("State", state) + xo("Reason", reason) + xo("Description", desc)
	return x("Target", xt("Id", t.id), xi("Port", t.port)) + xt("HealthCheckPort", strconv.Itoa(t.port)) + x("TargetHealth", th)
}

func (s *elbState) describeTargetHealth(q query) (string, error) {
	tg, err := s.tg(q.get("TargetGroupArn"))
	if err != nil {
		return "", err
	}
	s.e.ec2.refresh()
	var items []string
	if q.has("Targets.member.1.Id") {
		ts, err := s.targets(q, tg)
		if err != nil {
			return "", err
		}
		for _, t := range ts {
			if s.e.ec2.instances[t.id] == nil {
				return "", errf("InvalidTarget", "The target '%s' does not exist", t.id)
			}
			items = append(items, s.health(tg, t, slices.Contains(tg.targets, t)))
		}
	} else {
		for _, t := range tg.targets {
			items = append(items, s.health(tg, t, true))
		}
	}
	return xlist("TargetHealthDescriptions", "member", items), nil
}

// asgTargets is Auto Scaling's targetHook: a group's instances follow it
// into and out of its target groups.
func (s *elbState) asgTargets(tgARNs, registered, deregistered []string) {
	for _, a := range tgARNs {
		tg := s.tgs[a]
		if tg == nil {
			continue // deleted under the group; AWS reports it in the group's activity
		}
		for _, id := range registered {
			s.register(tg, elbTarget{id, tg.port})
		}
		for _, id := range deregistered {
			s.deregister(tg, elbTarget{id, tg.port})
		}
	}
}

// ---- tags

func (s *elbState) exists(a string) bool {
	return s.lbs[a] != nil || s.tgs[a] != nil || s.listeners[a] != nil
}

func (s *elbState) setTags(a string, tags []tag) {
	for _, t := range tags {
		i := slices.IndexFunc(s.tags[a], func(o tag) bool { return o.key == t.key })
		if i >= 0 {
			s.tags[a][i] = t
		} else {
			s.tags[a] = append(s.tags[a], t)
		}
	}
}

func (s *elbState) resources(q query) ([]string, error) {
	arns := q.list("ResourceArns")
	if len(arns) == 0 {
		return nil, validationError("ResourceArns must name at least one resource")
	}
	for _, a := range arns {
		if !s.exists(a) {
			code := "LoadBalancerNotFound"
			if strings.Contains(a, ":targetgroup/") {
				code = "TargetGroupNotFound"
			} else if strings.Contains(a, ":listener/") {
				code = "ListenerNotFound"
			}
			return nil, errf(code, "Resource '%s' not found", a)
		}
	}
	return arns, nil
}

func (s *elbState) addTags(q query) (string, error) {
	arns, err := s.resources(q)
	if err != nil {
		return "", err
	}
	tags := q.tags("Tags")
	for _, a := range arns {
		n := len(s.tags[a])
		for _, t := range tags {
			if !slices.ContainsFunc(s.tags[a], func(o tag) bool { return o.key == t.key }) {
				n++
			}
		}
		if n > 50 {
			return "", errf("TooManyTags", "Resource '%s' would have %d tags; the limit is 50", a, n)
		}
	}
	for _, a := range arns {
		s.setTags(a, tags)
	}
	return "", nil
}

func (s *elbState) removeTags(q query) (string, error) {
	arns, err := s.resources(q)
	if err != nil {
		return "", err
	}
	keys := q.list("TagKeys")
	for _, a := range arns {
		s.tags[a] = slices.DeleteFunc(s.tags[a], func(t tag) bool { return slices.Contains(keys, t.key) })
	}
	return "", nil
}

func (s *elbState) describeTags(q query) (string, error) {
	arns, err := s.resources(q)
	if err != nil {
		return "", err
	}
	var items []string
	for _, a := range arns {
		var tags []string
		for _, t := range s.tags[a] {
			tags = append(tags, xt("Key", t.key)+xt("Value", t.value))
		}
		items = append(items, xt("ResourceArn", a)+xlist("Tags", "member", tags))
	}
	return xlist("TagDescriptions", "member", items), nil
}
