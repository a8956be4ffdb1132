package awsemu

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ---- security groups

func (s *ec2State) createSG(q query) (string, error) {
	v, err := s.vpc(q.get("VpcId"))
	if err != nil {
		return "", err
	}
	name, desc := q.get("GroupName"), q.get("GroupDescription")
	if name == "" || desc == "" {
		return "", errf("MissingParameter", "The request must contain the parameters groupName and groupDescription")
	}
	for _, g := range s.sgs {
		if g.vpcID == v.id && g.name == name {
			return "", errf("InvalidGroup.Duplicate", "The security group '%s' already exists for VPC '%s'", name, v.id)
		}
	}
	g := &secGroup{id: newID("sg"), name: name, desc: desc, vpcID: v.id, egress: []sgRule{{proto: "-1", cidr: "0.0.0.0/0"}}}
	s.sgs[g.id] = g
	s.setTags(g.id, specTags(q, "security-group"))
	return xt("groupId", g.id) + xt("securityGroupArn", "arn:aws:ec2:"+s.e.opts.Region+":"+s.e.opts.AccountID+":security-group/"+g.id) + s.tagSet(g.id), nil
}

func normProto(p string) string {
	switch strings.ToLower(p) {
	case "6", "tcp":
		return "tcp"
	case "17", "udp":
		return "udp"
	case "1", "icmp":
		return "icmp"
	case "-1", "all", "":
		return "-1"
	}
	return strings.ToLower(p)
}

// rules expands the request's permissions into rule atoms.
func (s *ec2State) rules(q query, g *secGroup) ([]sgRule, error) {
	perms := q.structs("IpPermissions")
	if len(perms) == 0 && q.get("IpProtocol") != "" { // legacy top-level form
		perms = []query{q}
	}
	var out []sgRule
	for _, p := range perms {
		base := sgRule{proto: normProto(p.get("IpProtocol"))}
		if base.proto != "-1" {
			var err error
			if base.from, _, err = p.integer("FromPort"); err != nil {
				return nil, err
			}
			if base.to, _, err = p.integer("ToPort"); err != nil {
				return nil, err
			}
		}
		n := len(out)
		for _, r := range p.structs("IpRanges") {
			a := base
			a.cidr, a.desc = r.get("CidrIp"), r.get("Description")
			out = append(out, a)
		}
		if c := p.get("CidrIp"); c != "" {
			a := base
			a.cidr = c
			out = append(out, a)
		}
		for _, r := range p.structs("Groups") {
			a := base
			a.group, a.desc = r.get("GroupId"), r.get("Description")
			if a.group == "" && r.get("GroupName") != "" {
				for _, o := range s.sgs {
					if o.vpcID == g.vpcID && o.name == r.get("GroupName") {
						a.group = o.id
					}
				}
			}
			if s.sgs[a.group] == nil {
				return nil, errf("InvalidGroup.NotFound", "The security group '%s' does not exist", a.group+r.get("GroupName"))
			}
			out = append(out, a)
		}
		if len(out) == n {
			return nil, errf("MissingParameter", "Each permission must specify an IP range or a source group")
		}
	}
	for i := range out {
		if out[i].cidr != "" {
			p, err := parsePrefix("cidrIp", out[i].cidr, 0, 32)
			if err != nil {
				return nil, err
			}
			out[i].cidr = p.String()
		}
	}
	return out, nil
}

func sameRule(a, b sgRule) bool {
	return a.proto == b.proto && a.from == b.from && a.to == b.to && a.cidr == b.cidr && a.group == b.group
}

func (s *ec2State) sg(q query) (*secGroup, error) {
	id := q.get("GroupId")
	if id == "" && q.get("GroupName") != "" {
		for _, g := range s.sgs {
			if g.name == q.get("GroupName") {
				return g, nil
			}
		}
		return nil, errf("InvalidGroup.NotFound", "The security group '%s' does not exist", q.get("GroupName"))
	}
	g := s.sgs[id]
	if g == nil {
		return nil, errf("InvalidGroup.NotFound", "The security group '%s' does not exist", id)
	}
	return g, nil
}

func (s *ec2State) authorize(ingress, revoke bool) func(query) (string, error) {
	return func(q query) (string, error) {
		g, err := s.sg(q)
		if err != nil {
			return "", err
		}
		rs, err := s.rules(q, g)
		if err != nil {
			return "", err
		}
		list := &g.egress
		if ingress {
			list = &g.ingress
		}
		for _, r := range rs {
			i := slices.IndexFunc(*list, func(o sgRule) bool { return sameRule(o, r) })
			if revoke && i < 0 {
				return "", errf("InvalidPermission.NotFound", "The specified rule does not exist in this security group.")
			}
			if !revoke && i >= 0 {
				return "", errf("InvalidPermission.Duplicate", "the specified rule \"peer: %s%s, %s, from port: %d, to port: %d, ALLOW\" already exists",
					r.cidr, r.group, strings.ToUpper(r.proto), r.from, r.to)
			}
		}
		for _, r := range rs {
			if revoke {
				*list = slices.DeleteFunc(*list, func(o sgRule) bool { return sameRule(o, r) })
			} else {
				*list = append(*list, r)
			}
		}
		return ok()
	}
}

func (s *ec2State) renderPerms(name string, rules []sgRule) string {
	type key struct {
		proto    string
		from, to int
	}
	var order []key
	byKey := map[key][]sgRule{}
	for _, r := range rules {
		k := key{r.proto, r.from, r.to}
		if _, ok := byKey[k]; !ok {
			order = append(order, k)
		}
		byKey[k] = append(byKey[k], r)
	}
	var items []string
	for _, k := range order {
		var cidrs, groups []string
		for _, r := range byKey[k] {
			if r.cidr != "" {
				cidrs = append(cidrs, xt("cidrIp", r.cidr)+xo("description", r.desc))
			} else {
				groups = append(groups, xt("groupId", r.group)+xt("userId", s.e.opts.AccountID)+xo("description", r.desc))
			}
		}
		it := xt("ipProtocol", k.proto)
		if k.proto != "-1" {
			it += xi("fromPort", k.from) + xi("toPort", k.to)
		}
		items = append(items, it+xlist("groups", "item", groups)+xlist("ipRanges", "item", cidrs)+
			xlist("ipv6Ranges", "item", nil)+xlist("prefixListIds", "item", nil))
	}
	return xlist(name, "item", items)
}

func (s *ec2State) describeSGs(q query) (string, error) {
	names := q.list("GroupName")
	items, err := describe(s, q, "GroupId", s.sgs, func(g *secGroup) string { return g.id },
		func(g *secGroup) map[string][]string {
			m := map[string][]string{"group-id": {g.id}, "group-name": {g.name}, "vpc-id": {g.vpcID},
				"description": {g.desc}, "owner-id": {s.e.opts.AccountID}, "ip-permission.group-id": nil, "ip-permission.cidr": nil}
			for _, r := range g.ingress {
				if r.group != "" {
					m["ip-permission.group-id"] = append(m["ip-permission.group-id"], r.group)
				} else {
					m["ip-permission.cidr"] = append(m["ip-permission.cidr"], r.cidr)
				}
			}
			if !wanted(names, g.name) {
				m["group-name"] = nil // excluded below
			}
			return m
		},
		func(g *secGroup) string {
			if !wanted(names, g.name) {
				return ""
			}
			return x("item", xt("ownerId", s.e.opts.AccountID), xt("groupId", g.id), xt("groupName", g.name),
				xt("groupDescription", g.desc), xt("vpcId", g.vpcID), s.renderPerms("ipPermissions", g.ingress),
				s.renderPerms("ipPermissionsEgress", g.egress), s.tagSet(g.id))
		})
	if err != nil {
		return "", err
	}
	if len(names) > 0 && len(strings.Join(items, "")) == 0 {
		return "", errf("InvalidGroup.NotFound", "The security group '%s' does not exist", names[0])
	}
	return x("securityGroupInfo", items...), nil
}

func (s *ec2State) deleteSG(q query) (string, error) {
	g, err := s.sg(q)
	if err != nil {
		return "", err
	}
	if v := s.vpcs[g.vpcID]; v != nil && v.defaultGroup == g.id {
		return "", errf("CannotDelete", "the specified group: \"%s\" name: \"default\" cannot be deleted by a user", g.id)
	}
	for _, o := range s.sgs {
		if o.id == g.id {
			continue
		}
		for _, r := range append(slices.Clone(o.ingress), o.egress...) {
			if r.group == g.id {
				return "", errf("DependencyViolation", "resource %s has a dependent object", g.id)
			}
		}
	}
	s.refresh()
	for _, in := range s.instances {
		if in.state != "terminated" && slices.Contains(in.groups, g.id) {
			return "", errf("DependencyViolation", "resource %s has a dependent object (instance %s)", g.id, in.id)
		}
	}
	if lb := s.e.elb.uses(g.id); lb != "" {
		return "", errf("DependencyViolation", "resource %s has a dependent object (load balancer %s)", g.id, lb)
	}
	delete(s.sgs, g.id)
	delete(s.tags, g.id)
	return ok()
}

// ---- launch templates

func (s *ec2State) lt(q query) (*launchTemplate, error) {
	if id := q.get("LaunchTemplateId"); id != "" {
		if t := s.lts[id]; t != nil {
			return t, nil
		}
		return nil, errf("InvalidLaunchTemplateId.Malformed", "The specified launch template ID %s does not exist", id)
	}
	if name := q.get("LaunchTemplateName"); name != "" {
		for _, t := range s.lts {
			if t.name == name {
				return t, nil
			}
		}
		return nil, errf("InvalidLaunchTemplateName.NotFoundException", "The specified launch template, with template name %s, does not exist.", name)
	}
	return nil, errf("MissingParameter", "The request must contain the parameter launchTemplateName or launchTemplateId")
}

// version resolves "$Latest", "$Default" or a number ("" is $Default).
func (t *launchTemplate) version(v string) (*ltVersion, error) {
	n := t.defaultVer
	switch v {
	case "", "$Default":
	case "$Latest":
		n = len(t.versions)
	default:
		var err error
		if n, err = strconv.Atoi(v); err != nil {
			return nil, errf("InvalidLaunchTemplateId.VersionNotFound", "Could not find launch template version %s for %s", v, t.id)
		}
	}
	if n < 1 || n > len(t.versions) || t.versions[n-1] == nil {
		return nil, errf("InvalidLaunchTemplateId.VersionNotFound", "Could not find launch template version %s for %s", v, t.id)
	}
	return t.versions[n-1], nil
}

func (s *ec2State) createLT(q query) (string, error) {
	name := q.get("LaunchTemplateName")
	if name == "" {
		return "", errf("MissingParameter", "The request must contain the parameter LaunchTemplateName")
	}
	for _, t := range s.lts {
		if t.name == name {
			return "", errf("InvalidLaunchTemplateName.AlreadyExistsException", "Launch template name already in use.")
		}
	}
	now := time.Now()
	t := &launchTemplate{id: newID("lt"), name: name, defaultVer: 1, created: now}
	t.versions = []*ltVersion{{num: 1, desc: q.get("VersionDescription"), data: q.sub("LaunchTemplateData"), created: now}}
	s.lts[t.id] = t
	s.setTags(t.id, specTags(q, "launch-template"))
	return s.renderLT(t, "launchTemplate"), nil
}

func (s *ec2State) renderLT(t *launchTemplate, name string) string {
	return x(name, xt("launchTemplateId", t.id), xt("launchTemplateName", t.name), xtime("createTime", t.created),
		xt("createdBy", "arn:aws:iam::"+s.e.opts.AccountID+":user/awsemu"), xi("defaultVersionNumber", t.defaultVer),
		xi("latestVersionNumber", len(t.versions)), s.tagSet(t.id))
}

// topField returns the top-level member a data key belongs to
// ("SecurityGroupId.1" → "SecurityGroupId", "Placement.Tenancy" → "Placement").
func topField(k string) string {
	if i := strings.IndexByte(k, '.'); i >= 0 {
		return k[:i]
	}
	return k
}

// overlay returns base with every top-level member present in over replaced.
func overlay(base, over query) query {
	out := query{map[string][]string{}}
	fields := map[string]bool{}
	for k := range over.v {
		fields[topField(k)] = true
	}
	for k, v := range base.v {
		if !fields[topField(k)] {
			out.v[k] = v
		}
	}
	for k, v := range over.v {
		out.v[k] = v
	}
	return out
}

func (s *ec2State) createLTVersion(q query) (string, error) {
	t, err := s.lt(q)
	if err != nil {
		return "", err
	}
	data := q.sub("LaunchTemplateData")
	if src := q.get("SourceVersion"); src != "" {
		sv, err := t.version(src)
		if err != nil {
			return "", err
		}
		data = overlay(sv.data, data)
	}
	v := &ltVersion{num: len(t.versions) + 1, desc: q.get("VersionDescription"), data: data, created: time.Now()}
	t.versions = append(t.versions, v)
	return s.renderLTVersion(t, v, "launchTemplateVersion"), nil
}

func (s *ec2State) renderLTData(d query) string {
	var b strings.Builder
	for _, k := range []string{"ImageId", "InstanceType", "KeyName", "UserData", "EbsOptimized", "DisableApiTermination", "InstanceInitiatedShutdownBehavior"} {
		b.WriteString(xo(strings.ToLower(k[:1])+k[1:], d.get(k)))
	}
	b.WriteString(xtlist("securityGroupIdSet", "item", d.list("SecurityGroupId")))
	b.WriteString(xtlist("securityGroupSet", "item", d.list("SecurityGroup")))
	if ip := d.sub("IamInstanceProfile"); !ip.empty() {
		b.WriteString(x("iamInstanceProfile", xo("arn", ip.get("Arn")), xo("name", ip.get("Name"))))
	}
	if m := d.sub("MetadataOptions"); !m.empty() {
		b.WriteString(x("metadataOptions", xo("httpTokens", m.get("HttpTokens")), xo("httpEndpoint", m.get("HttpEndpoint")),
			xo("httpPutResponseHopLimit", m.get("HttpPutResponseHopLimit"))))
	}
	var nis []string
	for _, ni := range d.structs("NetworkInterface") {
		nis = append(nis, xo("deviceIndex", ni.get("DeviceIndex"))+xo("subnetId", ni.get("SubnetId"))+
			xo("associatePublicIpAddress", ni.get("AssociatePublicIpAddress"))+xo("deleteOnTermination", ni.get("DeleteOnTermination"))+
			xo("privateIpAddress", ni.get("PrivateIpAddress"))+xtlist("groupSet", "groupId", ni.list("SecurityGroupId")))
	}
	b.WriteString(xlist("networkInterfaceSet", "item", nis))
	var bdms []string
	for _, m := range d.structs("BlockDeviceMapping") {
		e := m.sub("Ebs")
		bdms = append(bdms, xo("deviceName", m.get("DeviceName"))+x("ebs", xo("volumeSize", e.get("VolumeSize")),
			xo("volumeType", e.get("VolumeType")), xo("deleteOnTermination", e.get("DeleteOnTermination")), xo("encrypted", e.get("Encrypted"))))
	}
	b.WriteString(xlist("blockDeviceMappingSet", "item", bdms))
	var specs []string
	for _, ts := range d.structs("TagSpecification") {
		var tags []string
		for _, t := range ts.tags("Tag") {
			tags = append(tags, xt("key", t.key)+xt("value", t.value))
		}
		specs = append(specs, xt("resourceType", ts.get("ResourceType"))+xlist("tagSet", "item", tags))
	}
	b.WriteString(xlist("tagSpecificationSet", "item", specs))
	return b.String()
}

func (s *ec2State) renderLTVersion(t *launchTemplate, v *ltVersion, name string) string {
	return x(name, xt("launchTemplateId", t.id), xt("launchTemplateName", t.name), xi("versionNumber", v.num),
		xo("versionDescription", v.desc), xtime("createTime", v.created), xt("createdBy", "arn:aws:iam::"+s.e.opts.AccountID+":user/awsemu"),
		xb("defaultVersion", v.num == t.defaultVer), x("launchTemplateData", s.renderLTData(v.data)))
}

func (s *ec2State) describeLTs(q query) (string, error) {
	names := q.list("LaunchTemplateName")
	items, err := describe(s, q, "LaunchTemplateId", s.lts, func(t *launchTemplate) string { return t.id },
		func(t *launchTemplate) map[string][]string {
			return map[string][]string{"launch-template-name": {t.name}, "launch-template-id": {t.id}}
		},
		func(t *launchTemplate) string {
			if !wanted(names, t.name) {
				return ""
			}
			return s.renderLT(t, "item")
		})
	if err != nil {
		return "", err
	}
	if len(names) > 0 && strings.Join(items, "") == "" {
		return "", errf("InvalidLaunchTemplateName.NotFoundException", "At least one of the launch templates specified in the request does not exist.")
	}
	return x("launchTemplates", items...), nil
}

func (s *ec2State) describeLTVersions(q query) (string, error) {
	var tmpls []*launchTemplate
	if q.get("LaunchTemplateId") != "" || q.get("LaunchTemplateName") != "" {
		t, err := s.lt(q)
		if err != nil {
			return "", err
		}
		tmpls = []*launchTemplate{t}
	} else {
		for _, t := range s.lts {
			tmpls = append(tmpls, t)
		}
		sort.Slice(tmpls, func(i, j int) bool { return tmpls[i].id < tmpls[j].id })
	}
	minV, hasMin, err := q.integer("MinVersion")
	if err != nil {
		return "", err
	}
	maxV, hasMax, err := q.integer("MaxVersion")
	if err != nil {
		return "", err
	}
	var items []string
	for _, t := range tmpls {
		var vs []*ltVersion
		if want := q.list("LaunchTemplateVersion"); len(want) > 0 {
			for _, w := range want {
				v, err := t.version(w)
				if err != nil {
					return "", err
				}
				vs = append(vs, v)
			}
		} else {
			vs = t.versions
		}
		for _, v := range vs {
			if (hasMin && v.num < minV) || (hasMax && v.num > maxV) {
				continue
			}
			attrs := map[string][]string{"is-default-version": {strconv.FormatBool(v.num == t.defaultVer)},
				"image-id": {v.data.get("ImageId")}, "instance-type": {v.data.get("InstanceType")}}
			if m, err := s.match(q, "", attrs); err != nil {
				return "", err
			} else if m {
				items = append(items, s.renderLTVersion(t, v, "item"))
			}
		}
	}
	return x("launchTemplateVersionSet", items...), nil
}

func (s *ec2State) modifyLT(q query) (string, error) {
	t, err := s.lt(q)
	if err != nil {
		return "", err
	}
	if d := q.get("SetDefaultVersion"); d != "" {
		v, err := t.version(d)
		if err != nil {
			return "", err
		}
		t.defaultVer = v.num
	}
	return s.renderLT(t, "launchTemplate"), nil
}

func (s *ec2State) deleteLT(q query) (string, error) {
	t, err := s.lt(q)
	if err != nil {
		return "", err
	}
	out := s.renderLT(t, "launchTemplate")
	delete(s.lts, t.id)
	delete(s.tags, t.id)
	return out, nil
}

// ---- instances

var stateCodes = map[string]int{"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80}

// refresh advances instance states whose transition time has passed.
func (s *ec2State) refresh() {
	now := time.Now()
	for _, in := range s.instances {
		if now.Before(in.changeAt) {
			continue
		}
		switch in.state {
		case "pending":
			in.state = "running"
		case "shutting-down":
			in.state = "terminated"
			if sn := s.subnets[in.subnetID]; sn != nil {
				for a := range sn.used {
					if a.String() == in.ip {
						delete(sn.used, a)
					}
				}
			}
		}
	}
}

// launchSpec is a RunInstances request, possibly from a launch template.
type launchSpec struct {
	params    query // RunInstances parameters (LaunchTemplateData shape)
	count     int
	extraTags []tag
}

// runInstances launches instances; it is used by RunInstances and by Auto
// Scaling.
func (s *ec2State) runInstances(spec launchSpec) ([]*instance, error) {
	p := spec.params
	var t *launchTemplate
	var ver *ltVersion
	data := p
	var tags []tag
	if lt := p.sub("LaunchTemplate"); !lt.empty() {
		var err error
		if t, err = s.lt(lt); err != nil {
			return nil, err
		}
		if ver, err = t.version(lt.get("Version")); err != nil {
			return nil, err
		}
		data = overlay(ver.data, p)
		tags = append(tags, specTags(ver.data, "instance")...)
	}
	tags = append(tags, specTags(p, "instance")...)
	tags = append(tags, spec.extraTags...)
	if t != nil {
		tags = append(tags, tag{"aws:ec2launchtemplate:id", t.id}, tag{"aws:ec2launchtemplate:version", strconv.Itoa(ver.num)})
	}
	if data.get("ImageId") == "" {
		return nil, errf("MissingParameter", "The request must contain the parameter ImageId")
	}
	ni := data.sub("NetworkInterface.1")
	subnetID := data.get("SubnetId")
	if subnetID == "" {
		subnetID = ni.get("SubnetId")
	}
	if subnetID == "" {
		return nil, errf("MissingInput", "No subnets found for the default VPC. Please specify a subnet.")
	}
	sn, err := s.subnet(subnetID)
	if err != nil {
		return nil, err
	}
	groups := append(data.list("SecurityGroupId"), ni.list("SecurityGroupId")...)
	for _, name := range data.list("SecurityGroup") {
		found := ""
		for _, g := range s.sgs {
			if g.vpcID == sn.vpcID && g.name == name {
				found = g.id
			}
		}
		if found == "" {
			return nil, errf("InvalidGroup.NotFound", "The security group '%s' does not exist in VPC '%s'", name, sn.vpcID)
		}
		groups = append(groups, found)
	}
	for _, g := range groups {
		if sg := s.sgs[g]; sg == nil {
			return nil, errf("InvalidGroup.NotFound", "The security group '%s' does not exist", g)
		} else if sg.vpcID != sn.vpcID {
			return nil, errf("InvalidParameter", "Security group %s and subnet %s belong to different networks.", g, sn.id)
		}
	}
	if len(groups) == 0 {
		groups = []string{s.vpcs[sn.vpcID].defaultGroup}
	}
	itype := data.get("InstanceType")
	if itype == "" {
		itype = "m1.small"
	}
	if err := checkInstanceType(itype); err != nil {
		return nil, err
	}
	if err := checkImage(data.get("ImageId")); err != nil {
		return nil, err
	}
	if arn, name := data.get("IamInstanceProfile.Arn"), data.get("IamInstanceProfile.Name"); arn != "" || name != "" {
		if name == "" {
			name = profileName(arn)
		}
		// IAM is eventually consistent: a new profile is refused until it
		// has propagated (see iamService.SetInstanceProfileDelay).
		if !s.e.iam.InstanceProfileVisible(name) {
			return nil, errf("InvalidParameterValue", "Value (%s) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name", name)
		}
	}
	if k := data.get("KeyName"); k != "" {
		if _, err := s.keyByName(k); err != nil {
			return nil, err
		}
	}
	wantIP := data.get("PrivateIpAddress")
	if wantIP == "" {
		wantIP = ni.get("PrivateIpAddress")
	}
	if wantIP != "" && spec.count > 1 {
		return nil, errf("InvalidParameterCombination", "Cannot specify a private IP address when launching more than one instance")
	}
	if free := sn.size() - 5 - len(sn.used); free < spec.count {
		return nil, errf("InsufficientFreeAddressesInSubnet", "There are not enough free addresses in subnet '%s' to satisfy the requested number of instances.", sn.id)
	}
	res := newID("r")
	now := time.Now()
	var out []*instance
	for i := 0; i < spec.count; i++ {
		ip, err := s.allocIP(sn, wantIP)
		if err != nil {
			return nil, err
		}
		in := &instance{id: newID("i"), reservation: res, imageID: data.get("ImageId"), itype: itype, keyName: data.get("KeyName"),
			subnetID: sn.id, vpcID: sn.vpcID, az: sn.az, ip: ip, userData: data.get("UserData"), groups: groups,
			state: "pending", changeAt: now.Add(s.e.opts.StateDelay), launched: now, sourceDestCheck: true, index: i,
			iamProfile: data.get("IamInstanceProfile.Arn")}
		if in.iamProfile == "" && data.get("IamInstanceProfile.Name") != "" {
			in.iamProfile = "arn:aws:iam::" + s.e.opts.AccountID + ":instance-profile/" + data.get("IamInstanceProfile.Name")
		}
		if t != nil {
			in.ltID, in.ltName, in.ltVersion = t.id, t.name, ver.num
		}
		s.instances[in.id] = in
		s.setTags(in.id, tags)
		out = append(out, in)
		s.e.hooks.emit(true, s.snapshot(in))
	}
	return out, nil
}

func (s *ec2State) runInstancesAction(q query) (string, error) {
	minC, _, err := q.integer("MinCount")
	if err != nil {
		return "", err
	}
	maxC, _, err := q.integer("MaxCount")
	if err != nil {
		return "", err
	}
	if minC < 1 || maxC < minC {
		return "", errf("InvalidParameterValue", "MinCount and MaxCount must be positive and MinCount <= MaxCount")
	}
	ins, err := s.runInstances(launchSpec{params: q, count: maxC})
	if err != nil {
		return "", err
	}
	items := make([]string, len(ins))
	for i, in := range ins {
		items[i] = s.renderInstance(in)
	}
	return xt("reservationId", ins[0].reservation) + xt("ownerId", s.e.opts.AccountID) + s.groupSet(ins[0].groups) +
		xlist("instancesSet", "item", items), nil
}

func (s *ec2State) groupSet(groups []string) string {
	var items []string
	for _, g := range groups {
		name := ""
		if sg := s.sgs[g]; sg != nil {
			name = sg.name
		}
		items = append(items, xt("groupId", g)+xo("groupName", name))
	}
	return xlist("groupSet", "item", items)
}

func (s *ec2State) renderInstance(in *instance) string {
	dns := ""
	if in.state != "terminated" {
		dns = "ip-" + strings.ReplaceAll(in.ip, ".", "-") + "." + s.e.opts.Region + ".compute.internal"
	}
	var b strings.Builder
	b.WriteString(xt("instanceId", in.id) + xt("imageId", in.imageID) +
		x("instanceState", xi("code", stateCodes[in.state]), xt("name", in.state)) +
		xt("privateDnsName", dns) + xt("dnsName", "") + xo("keyName", in.keyName) + xi("amiLaunchIndex", in.index) +
		xt("instanceType", in.itype) + xtime("launchTime", in.launched) +
		x("placement", xt("availabilityZone", in.az), xt("tenancy", "default")) +
		x("monitoring", xt("state", "disabled")))
	if in.state != "terminated" {
		b.WriteString(xt("subnetId", in.subnetID) + xt("vpcId", in.vpcID) + xt("privateIpAddress", in.ip))
	}
	b.WriteString(xb("sourceDestCheck", in.sourceDestCheck) + s.groupSet(in.groups) + xt("architecture", "x86_64") +
		xt("rootDeviceType", "ebs") + xt("rootDeviceName", "/dev/xvda") + xt("virtualizationType", "hvm") + xt("hypervisor", "xen"))
	if in.iamProfile != "" {
		b.WriteString(x("iamInstanceProfile", xt("arn", in.iamProfile), xt("id", "AIPAAWSEMU"+strings.ToUpper(in.id[2:12]))))
	}
	if in.state != "terminated" {
		b.WriteString(xlist("networkInterfaceSet", "item", []string{xt("networkInterfaceId", "eni-"+in.id[2:]) +
			xt("subnetId", in.subnetID) + xt("vpcId", in.vpcID) + xt("ownerId", s.e.opts.AccountID) + xt("status", "in-use") +
			xt("privateIpAddress", in.ip) + xt("privateDnsName", dns) + xb("sourceDestCheck", in.sourceDestCheck) + s.groupSet(in.groups) +
			x("attachment", xt("attachmentId", "eni-attach-"+in.id[2:]), xi("deviceIndex", 0), xt("status", "attached"), xb("deleteOnTermination", true)) +
			xt("interfaceType", "interface")}))
	}
	b.WriteString(s.tagSet(in.id))
	return b.String()
}

func (s *ec2State) instanceAttrs(in *instance) map[string][]string {
	m := map[string][]string{"instance-id": {in.id}, "instance-state-name": {in.state},
		"instance-state-code": {strconv.Itoa(stateCodes[in.state])}, "subnet-id": {in.subnetID}, "vpc-id": {in.vpcID},
		"private-ip-address": {in.ip}, "availability-zone": {in.az}, "instance-type": {in.itype}, "image-id": {in.imageID},
		"reservation-id": {in.reservation}, "instance.group-id": in.groups, "group-id": in.groups, "key-name": {in.keyName},
		"network-interface.subnet-id": {in.subnetID}, "network-interface.vpc-id": {in.vpcID}}
	for _, g := range in.groups {
		if sg := s.sgs[g]; sg != nil {
			m["instance.group-name"] = append(m["instance.group-name"], sg.name)
			m["group-name"] = append(m["group-name"], sg.name)
		}
	}
	return m
}

func (s *ec2State) describeInstances(q query) (string, error) {
	s.refresh()
	ids := q.list("InstanceId")
	for _, id := range ids {
		if s.instances[id] == nil {
			return "", errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
	}
	var ins []*instance
	for _, in := range s.instances {
		if !wanted(ids, in.id) {
			continue
		}
		m, err := s.match(q, in.id, s.instanceAttrs(in))
		if err != nil {
			return "", err
		}
		if m {
			ins = append(ins, in)
		}
	}
	sort.Slice(ins, func(i, j int) bool {
		if !ins[i].launched.Equal(ins[j].launched) {
			return ins[i].launched.Before(ins[j].launched)
		}
		if ins[i].reservation != ins[j].reservation {
			return ins[i].reservation < ins[j].reservation
		}
		return ins[i].index < ins[j].index
	})
	var res []string
	for i := 0; i < len(ins); {
		j := i
		var items []string
		for ; j < len(ins) && ins[j].reservation == ins[i].reservation; j++ {
			items = append(items, s.renderInstance(ins[j]))
		}
		res = append(res, xt("reservationId", ins[i].reservation)+xt("ownerId", s.e.opts.AccountID)+
			s.groupSet(nil)+xlist("instancesSet", "item", items))
		i = j
	}
	return xlist("reservationSet", "item", res), nil
}

// terminate starts terminating the instance in; it returns its previous state.
func (s *ec2State) terminate(in *instance) string {
	prev := in.state
	if prev != "terminated" && prev != "shutting-down" {
		in.state = "shutting-down"
		in.changeAt = time.Now().Add(s.e.opts.StateDelay)
		s.e.hooks.emit(false, s.snapshot(in))
	}
	return prev
}

func (s *ec2State) terminateInstancesAction(q query) (string, error) {
	s.refresh()
	ids := q.list("InstanceId")
	if len(ids) == 0 {
		return "", errf("MissingParameter", "The request must contain the parameter InstanceId")
	}
	for _, id := range ids {
		if s.instances[id] == nil {
			return "", errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
		}
	}
	var items []string
	for _, id := range ids {
		in := s.instances[id]
		prev := s.terminate(in)
		items = append(items, xt("instanceId", id)+x("currentState", xi("code", stateCodes[in.state]), xt("name", in.state))+
			x("previousState", xi("code", stateCodes[prev]), xt("name", prev)))
	}
	s.refresh()
	if s.e.asg != nil {
		s.e.asg.reconcileAll()
	}
	return xlist("instancesSet", "item", items), nil
}

func (s *ec2State) instance(id string) (*instance, error) {
	in := s.instances[id]
	if in == nil {
		return nil, errf("InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", id)
	}
	return in, nil
}

func (s *ec2State) modifyInstanceAttribute(q query) (string, error) {
	in, err := s.instance(q.get("InstanceId"))
	if err != nil {
		return "", err
	}
	if b, ok := q.boolean("SourceDestCheck.Value"); ok {
		in.sourceDestCheck = b
	} else if q.get("Attribute") == "sourceDestCheck" {
		in.sourceDestCheck, _ = q.boolean("Value")
	}
	if g := q.list("GroupId"); len(g) > 0 {
		in.groups = g
	}
	return ok()
}

func (s *ec2State) describeInstanceAttribute(q query) (string, error) {
	in, err := s.instance(q.get("InstanceId"))
	if err != nil {
		return "", err
	}
	out := xt("instanceId", in.id)
	switch a := q.get("Attribute"); a {
	case "sourceDestCheck":
		return out + x("sourceDestCheck", xb("value", in.sourceDestCheck)), nil
	case "userData":
		return out + x("userData", xo("value", in.userData)), nil
	case "instanceType":
		return out + x("instanceType", xt("value", in.itype)), nil
	case "groupSet":
		return out + s.groupSet(in.groups), nil
	default:
		return "", errf("InvalidParameterValue", "Value (%s) for parameter attribute is invalid.", a)
	}
}
