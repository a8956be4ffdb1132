package awsemu

import (
	"fmt"
	"maps"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

const ec2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

type ec2State struct {
	e          *Emulator
	vpcs       map[string]*vpc
	subnets    map[string]*subnet
	igws       map[string]*igw
	rtbs       map[string]*routeTable
	sgs        map[string]*secGroup
	lts        map[string]*launchTemplate
	instances  map[string]*instance
	images     map[string]*image
	keys       map[string]*keyPair          // by key pair id
	tags       map[string]map[string]string // resource id → key → value
	instSeq    int
	createTime time.Time
}

type vpc struct {
	id, cidr              string
	prefix                netip.Prefix
	dnsSupport, dnsHosts  bool
	mainRtb, defaultGroup string
}

type subnet struct {
	id, vpcID, az, cidr string
	prefix              netip.Prefix
	mapPublicIP         bool
	used                map[netip.Addr]bool
}

type igw struct{ id, vpcID string }

type route struct{ dest, gatewayID, instanceID, origin string }

type rtbAssoc struct {
	id, subnetID string
	main         bool
}

type routeTable struct {
	id, vpcID string
	routes    []route
	assocs    []rtbAssoc
}

// sgRule is one atom of a security group rule: a protocol/port range
// with a single CIDR or source group.
type sgRule struct {
	proto    string
	from, to int
	cidr     string
	group    string
	desc     string
}

type secGroup struct {
	id, name, desc, vpcID string
	ingress, egress       []sgRule
}

type ltVersion struct {
	num     int
	desc    string
	data    query // LaunchTemplateData members, as requested
	created time.Time
}

type launchTemplate struct {
	id, name   string
	defaultVer int
	versions   []*ltVersion
	created    time.Time
}

type instance struct {
	id, reservation, imageID, itype, keyName string
	subnetID, vpcID, az, ip, userData        string
	groups                                   []string
	state                                    string
	changeAt, launched                       time.Time
	ltID, ltName                             string
	ltVersion                                int
	sourceDestCheck                          bool
	iamProfile                               string
	index                                    int
}

func newEC2(e *Emulator) *queryService {
	s := &ec2State{
		e: e, vpcs: map[string]*vpc{}, subnets: map[string]*subnet{}, igws: map[string]*igw{},
		rtbs: map[string]*routeTable{}, sgs: map[string]*secGroup{}, lts: map[string]*launchTemplate{},
		instances: map[string]*instance{}, tags: map[string]map[string]string{},
		images: seedImages(), keys: map[string]*keyPair{},
	}
	e.ec2 = s
	return &queryService{e: e, namespace: ec2Namespace, ec2Style: true, actions: map[string]func(query) (string, error){
		"DescribeRegions":           s.describeRegions,
		"DescribeAvailabilityZones": s.describeAZs,

		"CreateVpc": s.createVpc, "DescribeVpcs": s.describeVpcs, "DeleteVpc": s.deleteVpc,
		"ModifyVpcAttribute": s.modifyVpcAttribute, "DescribeVpcAttribute": s.describeVpcAttribute,

		"CreateSubnet": s.createSubnet, "DescribeSubnets": s.describeSubnets, "DeleteSubnet": s.deleteSubnet,
		"ModifySubnetAttribute": s.modifySubnetAttribute,

		"CreateInternetGateway": s.createIgw, "AttachInternetGateway": s.attachIgw, "DetachInternetGateway": s.detachIgw,
		"DeleteInternetGateway": s.deleteIgw, "DescribeInternetGateways": s.describeIgws,

		"CreateRouteTable": s.createRtb, "AssociateRouteTable": s.associateRtb, "DisassociateRouteTable": s.disassociateRtb,
		"CreateRoute": s.createRoute, "ReplaceRoute": s.replaceRoute, "DeleteRoute": s.deleteRoute,
		"DescribeRouteTables": s.describeRtbs, "DeleteRouteTable": s.deleteRtb,

		"CreateSecurityGroup": s.createSG, "DescribeSecurityGroups": s.describeSGs, "DeleteSecurityGroup": s.deleteSG,
		"AuthorizeSecurityGroupIngress": s.authorize(true, false), "RevokeSecurityGroupIngress": s.authorize(true, true),
		"AuthorizeSecurityGroupEgress": s.authorize(false, false), "RevokeSecurityGroupEgress": s.authorize(false, true),

		"CreateTags": s.createTags, "DeleteTags": s.deleteTags, "DescribeTags": s.describeTags,

		"CreateLaunchTemplate": s.createLT, "CreateLaunchTemplateVersion": s.createLTVersion,
		"DescribeLaunchTemplates": s.describeLTs, "DescribeLaunchTemplateVersions": s.describeLTVersions,
		"ModifyLaunchTemplate": s.modifyLT, "DeleteLaunchTemplate": s.deleteLT,

		"RunInstances": s.runInstancesAction, "DescribeInstances": s.describeInstances,
		"TerminateInstances": s.terminateInstancesAction, "ModifyInstanceAttribute": s.modifyInstanceAttribute,
		"DescribeInstanceAttribute": s.describeInstanceAttribute,

		"DescribeImages": s.describeImages, "DescribeInstanceTypes": s.describeInstanceTypes,
		"ImportKeyPair": s.importKeyPair, "DescribeKeyPairs": s.describeKeyPairs, "DeleteKeyPair": s.deleteKeyPair,
	}}
}

func ok() (string, error) { return xb("return", true), nil }

// ---- regions and zones

func (s *ec2State) zones() []string {
	var z []string
	for _, c := range "abcd" {
		z = append(z, s.e.opts.Region+string(c))
	}
	return z
}

func (s *ec2State) zoneID(zone string) string {
	short := ""
	for _, p := range strings.Split(s.e.opts.Region, "-") {
		if p != "" && p[0] >= '0' && p[0] <= '9' {
			short += p
		} else if p != "" {
			short += p[:1]
		}
	}
	return fmt.Sprintf("%s-az%d", short, zone[len(zone)-1]-'a'+1)
}

func (s *ec2State) describeRegions(q query) (string, error) {
	var items []string
	for _, r := range []string{"us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-central-1", "ap-southeast-1", "ap-northeast-1"} {
		attrs := map[string][]string{"region-name": {r}, "opt-in-status": {"opt-in-not-required"}}
		if match, err := s.match(q, "", attrs); err != nil {
			return "", err
		} else if !match || !wanted(q.list("RegionName"), r) {
			continue
		}
		items = append(items, xt("regionName", r)+xt("regionEndpoint", "ec2."+r+".amazonaws.com")+xt("optInStatus", "opt-in-not-required"))
	}
	return xlist("regionInfo", "item", items), nil
}

func (s *ec2State) describeAZs(q query) (string, error) {
	var items []string
	for _, z := range s.zones() {
		attrs := map[string][]string{"zone-name": {z}, "zone-id": {s.zoneID(z)}, "region-name": {s.e.opts.Region},
			"state": {"available"}, "zone-type": {"availability-zone"}}
		if match, err := s.match(q, "", attrs); err != nil {
			return "", err
		} else if !match || !wanted(q.list("ZoneName"), z) || !wanted(q.list("ZoneId"), s.zoneID(z)) {
			continue
		}
		items = append(items, xt("zoneName", z)+xt("zoneId", s.zoneID(z))+xt("zoneState", "available")+
			xt("regionName", s.e.opts.Region)+xt("zoneType", "availability-zone")+xt("optInStatus", "opt-in-not-required")+
			xt("groupName", s.e.opts.Region)+xt("networkBorderGroup", s.e.opts.Region))
	}
	return xlist("availabilityZoneInfo", "item", items), nil
}

// wanted reports whether id is in ids, or ids is empty.
func wanted(ids []string, id string) bool { return len(ids) == 0 || slices.Contains(ids, id) }

// ---- filters and tags

// match evaluates the request's Filter.N against a resource's filter
// attributes and its tags; unknown filter names are an error.
func (s *ec2State) match(q query, id string, attrs map[string][]string) (bool, error) {
	for _, f := range q.structs("Filter") {
		name, vals := f.get("Name"), f.list("Value")
		var have []string
		switch {
		case strings.HasPrefix(name, "tag:"):
			if v, ok := s.tags[id][name[4:]]; ok {
				have = []string{v}
			}
		case name == "tag-key":
			for k := range s.tags[id] {
				have = append(have, k)
			}
		case name == "tag-value":
			for _, v := range s.tags[id] {
				have = append(have, v)
			}
		default:
			var ok bool
			if have, ok = attrs[name]; !ok {
				return false, errf("InvalidParameterValue", "The filter '%s' is invalid", name)
			}
		}
		if !anyMatch(vals, have) {
			return false, nil
		}
	}
	return true, nil
}

func anyMatch(patterns, have []string) bool {
	for _, p := range patterns {
		for _, h := range have {
			if ok, _ := path.Match(p, h); ok || p == h {
				return true
			}
		}
	}
	return false
}

func (s *ec2State) tagSet(id string) string {
	keys := slices.Sorted(maps.Keys(s.tags[id]))
	items := make([]string, len(keys))
	for i, k := range keys {
		items[i] = xt("key", k) + xt("value", s.tags[id][k])
	}
	return xlist("tagSet", "item", items)
}

func (s *ec2State) setTags(id string, tags []tag) {
	if len(tags) == 0 {
		return
	}
	if s.tags[id] == nil {
		s.tags[id] = map[string]string{}
	}
	for _, t := range tags {
		s.tags[id][t.key] = t.value
	}
}

// specTags returns the tags of TagSpecification.N for resourceType.
func specTags(q query, resourceType string) []tag {
	var out []tag
	for _, ts := range q.structs("TagSpecification") {
		if ts.get("ResourceType") == resourceType {
			out = append(out, ts.tags("Tag")...)
		}
	}
	return out
}

func resourceType(id string) string {
	switch id[:strings.IndexByte(id+"-", '-')] {
	case "vpc":
		return "vpc"
	case "subnet":
		return "subnet"
	case "igw":
		return "internet-gateway"
	case "rtb":
		return "route-table"
	case "sg":
		return "security-group"
	case "lt":
		return "launch-template"
	case "i":
		return "instance"
	case "key":
		return "key-pair"
	case "ami":
		return "image"
	}
	return ""
}

func (s *ec2State) exists(id string) bool {
	switch resourceType(id) {
	case "vpc":
		return s.vpcs[id] != nil
	case "subnet":
		return s.subnets[id] != nil
	case "internet-gateway":
		return s.igws[id] != nil
	case "route-table":
		return s.rtbs[id] != nil
	case "security-group":
		return s.sgs[id] != nil
	case "launch-template":
		return s.lts[id] != nil
	case "instance":
		return s.instances[id] != nil
	case "key-pair":
		return s.keys[id] != nil
	case "image":
		return s.images[id] != nil
	}
	return false
}

func notFound(id string) error {
	codes := map[string]string{"vpc": "InvalidVpcID.NotFound", "subnet": "InvalidSubnetID.NotFound",
		"internet-gateway": "InvalidInternetGatewayID.NotFound", "route-table": "InvalidRouteTableID.NotFound",
		"security-group": "InvalidGroup.NotFound", "launch-template": "InvalidLaunchTemplateId.NotFound",
		"instance": "InvalidInstanceID.NotFound", "key-pair": "InvalidKeyPair.NotFound", "image": "InvalidAMIID.NotFound"}
	code := codes[resourceType(id)]
	if code == "" {
		code = "InvalidID"
	}
	return errf(code, "The ID '%s' does not exist", id)
}

func (s *ec2State) createTags(q query) (string, error) {
	ids := q.list("ResourceId")
	for _, id := range ids {
		if !s.exists(id) {
			return "", notFound(id)
		}
	}
	for _, id := range ids {
		s.setTags(id, q.tags("Tag"))
	}
	return ok()
}

func (s *ec2State) deleteTags(q query) (string, error) {
	for _, id := range q.list("ResourceId") {
		tags := q.structs("Tag")
		if len(tags) == 0 {
			delete(s.tags, id)
		}
		for _, t := range tags {
			if v, ok := s.tags[id][t.get("Key")]; ok && (!t.has("Value") || t.get("Value") == v) {
				delete(s.tags[id], t.get("Key"))
			}
		}
	}
	return ok()
}

func (s *ec2State) describeTags(q query) (string, error) {
	ids := slices.Sorted(maps.Keys(s.tags))
	var items []string
	for _, id := range ids {
		for _, k := range slices.Sorted(maps.Keys(s.tags[id])) {
			v := s.tags[id][k]
			attrs := map[string][]string{"resource-id": {id}, "resource-type": {resourceType(id)}, "key": {k}, "value": {v}}
			if m, err := s.match(q, "", attrs); err != nil {
				return "", err
			} else if !m {
				continue
			}
			items = append(items, xt("resourceId", id)+xt("resourceType", resourceType(id))+xt("key", k)+xt("value", v))
		}
	}
	return xlist("tagSet", "item", items), nil
}

// describe selects resources by an id list and filters, returning their XML.
func describe[T any](s *ec2State, q query, idParam string, all map[string]T, id func(T) string,
	attrs func(T) map[string][]string, render func(T) string) ([]string, error) {
	ids := q.list(idParam)
	for _, i := range ids {
		if _, ok := all[i]; !ok {
			return nil, notFound(i)
		}
	}
	keys := slices.Sorted(maps.Keys(all))
	var out []string
	for _, k := range keys {
		r := all[k]
		if !wanted(ids, id(r)) {
			continue
		}
		m, err := s.match(q, id(r), attrs(r))
		if err != nil {
			return nil, err
		}
		if m {
			out = append(out, render(r))
		}
	}
	return out, nil
}

// ---- VPCs

func parsePrefix(param, cidr string, minBits, maxBits int) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || !p.Addr().Is4() {
		return p, errf("InvalidParameterValue", "Value (%s) for parameter %s is invalid. This is not a valid CIDR block.", cidr, param)
	}
	if p.Bits() < minBits || p.Bits() > maxBits {
		return p, errf("InvalidParameterValue", "Value (%s) for parameter %s is invalid. The block size must be between /%d and /%d.", cidr, param, minBits, maxBits)
	}
	return p.Masked(), nil
}

func (s *ec2State) createVpc(q query) (string, error) {
	p, err := parsePrefix("cidrBlock", q.get("CidrBlock"), 16, 28)
	if err != nil {
		return "", err
	}
	v := &vpc{id: newID("vpc"), cidr: p.String(), prefix: p, dnsSupport: true}
	s.vpcs[v.id] = v
	s.setTags(v.id, specTags(q, "vpc"))
	rt := &routeTable{id: newID("rtb"), vpcID: v.id, routes: []route{{dest: v.cidr, gatewayID: "local", origin: "CreateRouteTable"}}}
	rt.assocs = []rtbAssoc{{id: newID("rtbassoc"), main: true}}
	s.rtbs[rt.id] = rt
	v.mainRtb = rt.id
	sg := &secGroup{id: newID("sg"), name: "default", desc: "default VPC security group", vpcID: v.id}
	sg.ingress = []sgRule{{proto: "-1", group: sg.id}}
	sg.egress = []sgRule{{proto: "-1", cidr: "0.0.0.0/0"}}
	s.sgs[sg.id] = sg
	v.defaultGroup = sg.id
	return s.renderVpc(v, "vpc"), nil
}

func (s *ec2State) renderVpc(v *vpc, name string) string {
	return x(name, xt("vpcId", v.id), xt("ownerId", s.e.opts.AccountID), xt("state", "available"), xt("cidrBlock", v.cidr),
		xlist("cidrBlockAssociationSet", "item", []string{xt("cidrBlock", v.cidr) + xt("associationId", "vpc-cidr-assoc-"+v.id[4:]) +
			x("cidrBlockState", xt("state", "associated"))}),
		xt("dhcpOptionsId", "dopt-00000000000000000"), xt("instanceTenancy", "default"), xb("isDefault", false), s.tagSet(v.id))
}

func (s *ec2State) describeVpcs(q query) (string, error) {
	items, err := describe(s, q, "VpcId", s.vpcs, func(v *vpc) string { return v.id },
		func(v *vpc) map[string][]string {
			return map[string][]string{"vpc-id": {v.id}, "cidr": {v.cidr}, "cidr-block": {v.cidr},
				"cidr-block-association.cidr-block": {v.cidr}, "state": {"available"}, "is-default": {"false"},
				"owner-id": {s.e.opts.AccountID}, "dhcp-options-id": {"dopt-00000000000000000"}}
		},
		func(v *vpc) string { return s.renderVpc(v, "item") })
	if err != nil {
		return "", err
	}
	return x("vpcSet", items...), nil
}

// byID is the resource id in m, or EC2's error for a missing parameter
// (named param) or an unknown id.
func byID[T any](m map[string]*T, id, param string) (*T, error) {
	if id == "" {
		return nil, errf("MissingParameter", "The request must contain the parameter %s", param)
	}
	r := m[id]
	if r == nil {
		return nil, notFound(id)
	}
	return r, nil
}

func (s *ec2State) vpc(id string) (*vpc, error) { return byID(s.vpcs, id, "vpcId") }

func (s *ec2State) deleteVpc(q query) (string, error) {
	v, err := s.vpc(q.get("VpcId"))
	if err != nil {
		return "", err
	}
	dep := func(what, id string) error {
		return errf("DependencyViolation", "The vpc '%s' has dependencies and cannot be deleted (%s %s).", v.id, what, id)
	}
	for _, sn := range s.subnets {
		if sn.vpcID == v.id {
			return "", dep("subnet", sn.id)
		}
	}
	if lb := s.e.elb.uses(v.id); lb != "" {
		return "", dep("load balancer", lb)
	}
	for _, g := range s.igws {
		if g.vpcID == v.id {
			return "", dep("internet gateway", g.id)
		}
	}
	for _, g := range s.sgs {
		if g.vpcID == v.id && g.id != v.defaultGroup {
			return "", dep("security group", g.id)
		}
	}
	for _, r := range s.rtbs {
		if r.vpcID == v.id && r.id != v.mainRtb {
			return "", dep("route table", r.id)
		}
	}
	delete(s.rtbs, v.mainRtb)
	delete(s.sgs, v.defaultGroup)
	delete(s.tags, v.mainRtb)
	delete(s.tags, v.defaultGroup)
	delete(s.vpcs, v.id)
	delete(s.tags, v.id)
	return ok()
}

func (s *ec2State) modifyVpcAttribute(q query) (string, error) {
	v, err := s.vpc(q.get("VpcId"))
	if err != nil {
		return "", err
	}
	if b, ok := q.boolean("EnableDnsSupport.Value"); ok {
		v.dnsSupport = b
	}
	if b, ok := q.boolean("EnableDnsHostnames.Value"); ok {
		v.dnsHosts = b
	}
	return ok()
}

func (s *ec2State) describeVpcAttribute(q query) (string, error) {
	v, err := s.vpc(q.get("VpcId"))
	if err != nil {
		return "", err
	}
	switch a := q.get("Attribute"); a {
	case "enableDnsSupport":
		return xt("vpcId", v.id) + x("enableDnsSupport", xb("value", v.dnsSupport)), nil
	case "enableDnsHostnames":
		return xt("vpcId", v.id) + x("enableDnsHostnames", xb("value", v.dnsHosts)), nil
	default:
		return "", errf("InvalidParameterValue", "Value (%s) for parameter attribute is invalid.", a)
	}
}

// ---- subnets

func (s *ec2State) createSubnet(q query) (string, error) {
	v, err := s.vpc(q.get("VpcId"))
	if err != nil {
		return "", err
	}
	p, err := parsePrefix("cidrBlock", q.get("CidrBlock"), 16, 28)
	if err != nil {
		return "", err
	}
	if p.Bits() < v.prefix.Bits() || !v.prefix.Contains(p.Addr()) {
		return "", errf("InvalidSubnet.Range", "The CIDR '%s' is invalid.", p)
	}
	for _, o := range s.subnets {
		if o.vpcID == v.id && o.prefix.Overlaps(p) {
			return "", errf("InvalidSubnet.Conflict", "The CIDR '%s' conflicts with another subnet", p)
		}
	}
	az := q.get("AvailabilityZone")
	if id := q.get("AvailabilityZoneId"); id != "" && az == "" {
		for _, z := range s.zones() {
			if s.zoneID(z) == id {
				az = z
			}
		}
		if az == "" {
			return "", errf("InvalidParameterValue", "Value (%s) for parameter availabilityZoneId is invalid.", id)
		}
	}
	if az == "" {
		az = s.zones()[0]
	}
	if !slices.Contains(s.zones(), az) {
		return "", errf("InvalidParameterValue", "Value (%s) for parameter availabilityZone is invalid. Subnets can currently only be created in the following availability zones: %s.",
			az, strings.Join(s.zones(), ", "))
	}
	sn := &subnet{id: newID("subnet"), vpcID: v.id, az: az, cidr: p.String(), prefix: p, used: map[netip.Addr]bool{}}
	s.subnets[sn.id] = sn
	s.setTags(sn.id, specTags(q, "subnet"))
	return s.renderSubnet(sn, "subnet"), nil
}

func (sn *subnet) size() int { return 1 << (32 - sn.prefix.Bits()) }

func (s *ec2State) renderSubnet(sn *subnet, name string) string {
	return x(name, xt("subnetId", sn.id), xt("subnetArn", "arn:aws:ec2:"+s.e.opts.Region+":"+s.e.opts.AccountID+":subnet/"+sn.id),
		xt("state", "available"), xt("vpcId", sn.vpcID), xt("cidrBlock", sn.cidr), xt("ownerId", s.e.opts.AccountID),
		xi("availableIpAddressCount", sn.size()-5-len(sn.used)), xt("availabilityZone", sn.az), xt("availabilityZoneId", s.zoneID(sn.az)),
		xb("defaultForAz", false), xb("mapPublicIpOnLaunch", sn.mapPublicIP), xb("assignIpv6AddressOnCreation", false), s.tagSet(sn.id))
}

func (s *ec2State) describeSubnets(q query) (string, error) {
	items, err := describe(s, q, "SubnetId", s.subnets, func(sn *subnet) string { return sn.id },
		func(sn *subnet) map[string][]string {
			return map[string][]string{"subnet-id": {sn.id}, "vpc-id": {sn.vpcID}, "availability-zone": {sn.az},
				"availability-zone-id": {s.zoneID(sn.az)}, "cidr-block": {sn.cidr}, "cidr": {sn.cidr}, "cidrBlock": {sn.cidr},
				"state": {"available"}, "default-for-az": {"false"}, "owner-id": {s.e.opts.AccountID},
				"map-public-ip-on-launch": {strconv.FormatBool(sn.mapPublicIP)}}
		},
		func(sn *subnet) string { return s.renderSubnet(sn, "item") })
	if err != nil {
		return "", err
	}
	return x("subnetSet", items...), nil
}

func (s *ec2State) subnet(id string) (*subnet, error) { return byID(s.subnets, id, "subnetId") }

func (s *ec2State) deleteSubnet(q query) (string, error) {
	sn, err := s.subnet(q.get("SubnetId"))
	if err != nil {
		return "", err
	}
	s.refresh()
	for _, in := range s.instances {
		if in.subnetID == sn.id && in.state != "terminated" {
			return "", errf("DependencyViolation", "The subnet '%s' has dependencies and cannot be deleted (instance %s).", sn.id, in.id)
		}
	}
	if lb := s.e.elb.uses(sn.id); lb != "" {
		return "", errf("DependencyViolation", "The subnet '%s' has dependencies and cannot be deleted (load balancer %s).", sn.id, lb)
	}
	for _, r := range s.rtbs {
		r.assocs = slices.DeleteFunc(r.assocs, func(a rtbAssoc) bool { return a.subnetID == sn.id })
	}
	delete(s.subnets, sn.id)
	delete(s.tags, sn.id)
	return ok()
}

func (s *ec2State) modifySubnetAttribute(q query) (string, error) {
	sn, err := s.subnet(q.get("SubnetId"))
	if err != nil {
		return "", err
	}
	if b, ok := q.boolean("MapPublicIpOnLaunch.Value"); ok {
		sn.mapPublicIP = b
	}
	return ok()
}

// allocIP returns the first free address of sn, skipping the network
// address, the three addresses AWS reserves after it and the broadcast.
func (s *ec2State) allocIP(sn *subnet, want string) (string, error) {
	if want != "" {
		a, err := netip.ParseAddr(want)
		if err != nil || !sn.prefix.Contains(a) {
			return "", errf("InvalidParameterValue", "Address %s is not in subnet %s", want, sn.cidr)
		}
		if sn.used[a] {
			return "", errf("InvalidIPAddress.InUse", "Address %s is in use.", want)
		}
		sn.used[a] = true
		return a.String(), nil
	}
	a := sn.prefix.Addr()
	for i := 0; i < 4; i++ {
		a = a.Next()
	}
	for i := 4; i < sn.size()-1; i, a = i+1, a.Next() {
		if !sn.used[a] {
			sn.used[a] = true
			return a.String(), nil
		}
	}
	return "", errf("InsufficientFreeAddressesInSubnet", "There are not enough free addresses in subnet '%s' to satisfy the requested number of instances.", sn.id)
}

// ---- internet gateways

func (s *ec2State) createIgw(q query) (string, error) {
	g := &igw{id: newID("igw")}
	s.igws[g.id] = g
	s.setTags(g.id, specTags(q, "internet-gateway"))
	return s.renderIgw(g, "internetGateway"), nil
}

func (s *ec2State) renderIgw(g *igw, name string) string {
	var att []string
	if g.vpcID != "" {
		att = append(att, xt("vpcId", g.vpcID)+xt("state", "available"))
	}
	return x(name, xt("internetGatewayId", g.id), xt("ownerId", s.e.opts.AccountID), xlist("attachmentSet", "item", att), s.tagSet(g.id))
}

func (s *ec2State) igw(id string) (*igw, error) { return byID(s.igws, id, "internetGatewayId") }

func (s *ec2State) attachIgw(q query) (string, error) {
	g, err := s.igw(q.get("InternetGatewayId"))
	if err != nil {
		return "", err
	}
	v, err := s.vpc(q.get("VpcId"))
	if err != nil {
		return "", err
	}
	if g.vpcID != "" {
		return "", errf("Resource.AlreadyAssociated", "resource %s is already attached to network %s", g.id, g.vpcID)
	}
	for _, o := range s.igws {
		if o.vpcID == v.id {
			return "", errf("InvalidParameterValue", "Network %s already has an internet gateway attached", v.id)
		}
	}
	g.vpcID = v.id
	return ok()
}

func (s *ec2State) detachIgw(q query) (string, error) {
	g, err := s.igw(q.get("InternetGatewayId"))
	if err != nil {
		return "", err
	}
	if g.vpcID == "" || g.vpcID != q.get("VpcId") {
		return "", errf("Gateway.NotAttached", "resource %s is not attached to network %s", g.id, q.get("VpcId"))
	}
	g.vpcID = ""
	return ok()
}

func (s *ec2State) deleteIgw(q query) (string, error) {
	g, err := s.igw(q.get("InternetGatewayId"))
	if err != nil {
		return "", err
	}
	if g.vpcID != "" {
		return "", errf("DependencyViolation", "The internetGateway '%s' has dependencies and cannot be deleted.", g.id)
	}
	delete(s.igws, g.id)
	delete(s.tags, g.id)
	return ok()
}

func (s *ec2State) describeIgws(q query) (string, error) {
	items, err := describe(s, q, "InternetGatewayId", s.igws, func(g *igw) string { return g.id },
		func(g *igw) map[string][]string {
			m := map[string][]string{"internet-gateway-id": {g.id}, "owner-id": {s.e.opts.AccountID}}
			if g.vpcID != "" {
				m["attachment.vpc-id"] = []string{g.vpcID}
				m["attachment.state"] = []string{"available"}
			} else {
				m["attachment.vpc-id"], m["attachment.state"] = nil, nil
			}
			return m
		},
		func(g *igw) string { return s.renderIgw(g, "item") })
	if err != nil {
		return "", err
	}
	return x("internetGatewaySet", items...), nil
}

// ---- route tables

func (s *ec2State) createRtb(q query) (string, error) {
	v, err := s.vpc(q.get("VpcId"))
	if err != nil {
		return "", err
	}
	rt := &routeTable{id: newID("rtb"), vpcID: v.id, routes: []route{{dest: v.cidr, gatewayID: "local", origin: "CreateRouteTable"}}}
	s.rtbs[rt.id] = rt
	s.setTags(rt.id, specTags(q, "route-table"))
	return s.renderRtb(rt, "routeTable"), nil
}

func (s *ec2State) renderRtb(rt *routeTable, name string) string {
	s.refresh()
	var routes, assocs []string
	for _, r := range rt.routes {
		state := "active"
		if in := s.instances[r.instanceID]; r.instanceID != "" && (in == nil || in.state == "terminated") {
			state = "blackhole"
		}
		routes = append(routes, xt("destinationCidrBlock", r.dest)+xo("gatewayId", r.gatewayID)+xo("instanceId", r.instanceID)+
			xo("instanceOwnerId", map[bool]string{true: s.e.opts.AccountID}[r.instanceID != ""])+xt("state", state)+xt("origin", r.origin))
	}
	for _, a := range rt.assocs {
		assocs = append(assocs, xt("routeTableAssociationId", a.id)+xt("routeTableId", rt.id)+xo("subnetId", a.subnetID)+
			xb("main", a.main)+x("associationState", xt("state", "associated")))
	}
	return x(name, xt("routeTableId", rt.id), xt("vpcId", rt.vpcID), xt("ownerId", s.e.opts.AccountID),
		xlist("routeSet", "item", routes), xlist("associationSet", "item", assocs), s.tagSet(rt.id))
}

func (s *ec2State) describeRtbs(q query) (string, error) {
	items, err := describe(s, q, "RouteTableId", s.rtbs, func(rt *routeTable) string { return rt.id },
		func(rt *routeTable) map[string][]string {
			m := map[string][]string{"route-table-id": {rt.id}, "vpc-id": {rt.vpcID}, "owner-id": {s.e.opts.AccountID}}
			for _, a := range rt.assocs {
				m["association.route-table-association-id"] = append(m["association.route-table-association-id"], a.id)
				m["association.main"] = append(m["association.main"], strconv.FormatBool(a.main))
				if a.subnetID != "" {
					m["association.subnet-id"] = append(m["association.subnet-id"], a.subnetID)
				}
			}
			for _, k := range []string{"association.route-table-association-id", "association.main", "association.subnet-id",
				"route.destination-cidr-block", "route.gateway-id", "route.instance-id"} {
				if _, ok := m[k]; !ok {
					m[k] = nil
				}
			}
			for _, r := range rt.routes {
				m["route.destination-cidr-block"] = append(m["route.destination-cidr-block"], r.dest)
				m["route.gateway-id"] = append(m["route.gateway-id"], r.gatewayID)
				m["route.instance-id"] = append(m["route.instance-id"], r.instanceID)
			}
			return m
		},
		func(rt *routeTable) string { return s.renderRtb(rt, "item") })
	if err != nil {
		return "", err
	}
	return x("routeTableSet", items...), nil
}

func (s *ec2State) rtb(id string) (*routeTable, error) { return byID(s.rtbs, id, "routeTableId") }

func (s *ec2State) associateRtb(q query) (string, error) {
	rt, err := s.rtb(q.get("RouteTableId"))
	if err != nil {
		return "", err
	}
	sn, err := s.subnet(q.get("SubnetId"))
	if err != nil {
		return "", err
	}
	if sn.vpcID != rt.vpcID {
		return "", errf("InvalidParameterValue", "Route table %s and subnet %s belong to different networks", rt.id, sn.id)
	}
	for _, o := range s.rtbs {
		for _, a := range o.assocs {
			if a.subnetID == sn.id {
				return "", errf("Resource.AlreadyAssociated", "the specified association for route table %s conflicts with an existing association", rt.id)
			}
		}
	}
	a := rtbAssoc{id: newID("rtbassoc"), subnetID: sn.id}
	rt.assocs = append(rt.assocs, a)
	return xt("associationId", a.id) + x("associationState", xt("state", "associated")), nil
}

func (s *ec2State) disassociateRtb(q query) (string, error) {
	id := q.get("AssociationId")
	for _, rt := range s.rtbs {
		for i, a := range rt.assocs {
			if a.id == id {
				if a.main {
					return "", errf("InvalidParameterValue", "cannot disassociate the main route table association %s", id)
				}
				rt.assocs = slices.Delete(rt.assocs, i, i+1)
				return ok()
			}
		}
	}
	return "", errf("InvalidAssociationID.NotFound", "The association ID '%s' does not exist", id)
}

func (s *ec2State) routeTarget(q query, rt *routeTable) (route, error) {
	r := route{dest: q.get("DestinationCidrBlock"), origin: "CreateRoute"}
	p, err := parsePrefix("destinationCidrBlock", r.dest, 0, 32)
	if err != nil {
		return r, err
	}
	r.dest = p.String()
	switch {
	case q.get("GatewayId") != "":
		g := s.igws[q.get("GatewayId")]
		if g == nil {
			return r, errf("InvalidGatewayID.NotFound", "The gateway ID '%s' does not exist", q.get("GatewayId"))
		}
		if g.vpcID != rt.vpcID {
			return r, errf("InvalidParameterValue", "route table %s and network gateway %s belong to different networks", rt.id, g.id)
		}
		r.gatewayID = g.id
	case q.get("InstanceId") != "":
		in := s.instances[q.get("InstanceId")]
		if in == nil || in.state == "terminated" {
			return r, notFound(q.get("InstanceId"))
		}
		if in.vpcID != rt.vpcID {
			return r, errf("InvalidParameterValue", "route table %s and instance %s belong to different networks", rt.id, in.id)
		}
		r.instanceID = in.id
	default:
		return r, errf("MissingParameter", "The request must contain exactly one of gatewayId or instanceId")
	}
	return r, nil
}

// maxRoutes is AWS's default limit of routes per route table. It bounds
// the aws-vpc overlay backend, which adds one route per node.
const maxRoutes = 50

func (s *ec2State) createRoute(q query) (string, error) {
	rt, err := s.rtb(q.get("RouteTableId"))
	if err != nil {
		return "", err
	}
	r, err := s.routeTarget(q, rt)
	if err != nil {
		return "", err
	}
	for _, o := range rt.routes {
		if o.dest == r.dest {
			return "", errf("RouteAlreadyExists", "The route identified by %s already exists.", r.dest)
		}
	}
	if len(rt.routes) >= maxRoutes {
		return "", errf("RouteLimitExceeded", "The maximum number of routes (%d) has been reached for route table %s; use fewer, wider routes or another route table.", maxRoutes, rt.id)
	}
	rt.routes = append(rt.routes, r)
	return ok()
}

func (s *ec2State) findRoute(rt *routeTable, dest string) (int, error) {
	if p, err := netip.ParsePrefix(dest); err == nil {
		dest = p.Masked().String()
	}
	for i, o := range rt.routes {
		if o.dest == dest {
			if o.gatewayID == "local" {
				return 0, errf("InvalidParameterValue", "cannot remove or replace local route %s in route table %s", dest, rt.id)
			}
			return i, nil
		}
	}
	return 0, errf("InvalidRoute.NotFound", "no route with destination-cidr-block %s in route table %s", dest, rt.id)
}

func (s *ec2State) replaceRoute(q query) (string, error) {
	rt, err := s.rtb(q.get("RouteTableId"))
	if err != nil {
		return "", err
	}
	i, err := s.findRoute(rt, q.get("DestinationCidrBlock"))
	if err != nil {
		return "", err
	}
	r, err := s.routeTarget(q, rt)
	if err != nil {
		return "", err
	}
	r.origin = "CreateRoute"
	rt.routes[i] = r
	return ok()
}

func (s *ec2State) deleteRoute(q query) (string, error) {
	rt, err := s.rtb(q.get("RouteTableId"))
	if err != nil {
		return "", err
	}
	i, err := s.findRoute(rt, q.get("DestinationCidrBlock"))
	if err != nil {
		return "", err
	}
	rt.routes = slices.Delete(rt.routes, i, i+1)
	return ok()
}

func (s *ec2State) deleteRtb(q query) (string, error) {
	rt, err := s.rtb(q.get("RouteTableId"))
	if err != nil {
		return "", err
	}
	if len(rt.assocs) > 0 {
		return "", errf("DependencyViolation", "The routeTable '%s' has dependencies and cannot be deleted.", rt.id)
	}
	delete(s.rtbs, rt.id)
	delete(s.tags, rt.id)
	return ok()
}
