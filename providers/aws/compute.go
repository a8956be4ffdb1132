package aws

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	asgtypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// flatcarOwner is the AWS account that publishes Flatcar Container Linux's
// AMIs.
const flatcarOwner = "075585003325"

// architecture is the CPU architecture of an instance type: Graviton types
// carry a "g" after their generation (t4g, m6gd, c7gn), whereas the GPU
// family's "g" comes before it (g4dn).
func architecture(instanceType string) string {
	family, _, _ := strings.Cut(instanceType, ".")
	rest := strings.TrimLeft(strings.TrimLeft(family, "abcdefghijklmnopqrstuvwxyz"), "0123456789")
	if strings.Contains(rest, "g") {
		return "arm64"
	}
	return "x86_64"
}

// resolveImages finds each group's AMI: an AMI id as given, a Flatcar
// channel as its newest image for the group's architecture.
func (r *run) resolveImages(ctx context.Context) error {
	var mu sync.Mutex
	found := map[string]string{} // channel/arch → AMI
	for _, g := range r.s.spec.Groups {
		pattern, ok := flatcarChannels[g.Image]
		if !ok {
			r.images[g.Name] = g.Image
			continue
		}
		arch := architecture(g.InstanceType)
		key := g.Image + "/" + arch
		mu.Lock()
		id, done := found[key]
		mu.Unlock()
		if !done {
			out, err := r.s.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{
				Owners: []string{flatcarOwner},
				Filters: []types.Filter{
					{Name: aws.String("name"), Values: []string{pattern}},
					{Name: aws.String("architecture"), Values: []string{arch}},
					{Name: aws.String("state"), Values: []string{"available"}},
				},
			})
			if err != nil {
				return wrap("describe images", g.Image+" ("+arch+")", err)
			}
			newest := ""
			for _, im := range out.Images {
				if aws.ToString(im.CreationDate) > newest {
					newest, id = aws.ToString(im.CreationDate), aws.ToString(im.ImageId)
				}
			}
			if id == "" {
				return fmt.Errorf("node group %q: no %s image for %s (%s) in %s from owner %s; set image to an AMI id instead",
					g.Name, g.Image, arch, g.InstanceType, r.s.spec.Region, flatcarOwner)
			}
			mu.Lock()
			found[key] = id
			mu.Unlock()
		}
		r.images[g.Name] = id
	}
	return nil
}

// keyPair checks that the key pair exists: AWS itself only finds out when
// Auto Scaling fails to launch, out of sight of provision.
func (r *run) keyPair(ctx context.Context) error {
	sp := &r.s.spec
	if sp.KeyPair == "" {
		return nil
	}
	_, err := r.s.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{sp.KeyPair}})
	if isCode(err, "InvalidKeyPair.NotFound") {
		return fmt.Errorf("key pair %q does not exist in %s: import your public key (aws ec2 import-key-pair --region %s --key-name %s --public-key-material fileb://~/.ssh/id_ed25519.pub), or remove key_pair and use ssh_authorized_keys",
			sp.KeyPair, sp.Region, sp.Region, sp.KeyPair)
	}
	return wrap("describe key pair", sp.KeyPair, err)
}

// templateData is what a group's instances launch with.
func (r *run) templateData(g *Group) *types.RequestLaunchTemplateData {
	sp := &r.s.spec
	name := sp.name(g.Name)
	d := &types.RequestLaunchTemplateData{
		ImageId:            aws.String(r.images[g.Name]),
		InstanceType:       types.InstanceType(g.InstanceType),
		IamInstanceProfile: &types.LaunchTemplateIamInstanceProfileSpecificationRequest{Name: aws.String(sp.name("node"))},
		SecurityGroupIds:   []string{r.nodesSG},
		UserData:           aws.String(base64.StdEncoding.EncodeToString(g.UserData)),
		// IMDSv2 only, as AWS recommends; a hop limit of 2 so that
		// containers on the node reach it too.
		MetadataOptions: &types.LaunchTemplateInstanceMetadataOptionsRequest{
			HttpTokens: types.LaunchTemplateHttpTokensStateRequired, HttpEndpoint: types.LaunchTemplateInstanceMetadataEndpointStateEnabled,
			HttpPutResponseHopLimit: aws.Int32(2),
		},
	}
	if sp.KeyPair != "" {
		d.KeyName = aws.String(sp.KeyPair)
	}
	for i, v := range g.Volumes {
		d.BlockDeviceMappings = append(d.BlockDeviceMappings, types.LaunchTemplateBlockDeviceMappingRequest{
			DeviceName: aws.String(volumeDevice(i)),
			Ebs: &types.LaunchTemplateEbsBlockDeviceRequest{
				VolumeSize: aws.Int32(int32(v.SizeGB)), VolumeType: types.VolumeTypeGp3,
				DeleteOnTermination: aws.Bool(true), Encrypted: aws.Bool(true),
			},
		})
	}
	for _, rt := range []types.ResourceType{types.ResourceTypeInstance, types.ResourceTypeVolume} {
		d.TagSpecifications = append(d.TagSpecifications, types.LaunchTemplateTagSpecificationRequest{
			ResourceType: rt, Tags: ec2Tags(sp.tags(name, g.Name)),
		})
	}
	return d
}

// templateDiff says how the live template data differs from want, one
// phrase per difference.
func templateDiff(have *types.ResponseLaunchTemplateData, want *types.RequestLaunchTemplateData) []string {
	if have == nil {
		return []string{"no data"}
	}
	var d []string
	if aws.ToString(have.ImageId) != aws.ToString(want.ImageId) {
		d = append(d, fmt.Sprintf("image %s → %s", aws.ToString(have.ImageId), aws.ToString(want.ImageId)))
	}
	if have.InstanceType != want.InstanceType {
		d = append(d, fmt.Sprintf("instance type %s → %s", have.InstanceType, want.InstanceType))
	}
	if aws.ToString(have.KeyName) != aws.ToString(want.KeyName) {
		d = append(d, fmt.Sprintf("key pair %q → %q", aws.ToString(have.KeyName), aws.ToString(want.KeyName)))
	}
	if aws.ToString(have.UserData) != aws.ToString(want.UserData) {
		d = append(d, "user data changed")
	}
	if have.IamInstanceProfile == nil || aws.ToString(have.IamInstanceProfile.Name) != aws.ToString(want.IamInstanceProfile.Name) {
		d = append(d, "instance profile")
	}
	if !slices.Equal(sorted(have.SecurityGroupIds), sorted(want.SecurityGroupIds)) {
		d = append(d, "security groups")
	}
	if have.MetadataOptions == nil || have.MetadataOptions.HttpTokens != types.LaunchTemplateHttpTokensState(want.MetadataOptions.HttpTokens) {
		d = append(d, "metadata options (IMDSv2)")
	}
	vols := func(dev string, size int32, typ string) string { return fmt.Sprintf("%s %d GiB %s", dev, size, typ) }
	var hv, wv []string
	for _, m := range have.BlockDeviceMappings {
		if m.Ebs != nil {
			hv = append(hv, vols(aws.ToString(m.DeviceName), aws.ToInt32(m.Ebs.VolumeSize), string(m.Ebs.VolumeType)))
		}
	}
	for _, m := range want.BlockDeviceMappings {
		wv = append(wv, vols(aws.ToString(m.DeviceName), aws.ToInt32(m.Ebs.VolumeSize), string(m.Ebs.VolumeType)))
	}
	if !slices.Equal(hv, wv) {
		d = append(d, fmt.Sprintf("volumes [%s] → [%s]", strings.Join(hv, ", "), strings.Join(wv, ", ")))
	}
	return d
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

// launchTemplate converges a group's launch template: a change makes a new
// version (the Auto Scaling group uses $Latest), and the group's running
// instances then need a rolling replacement, which Apply reports.
func (r *run) launchTemplate(ctx context.Context, g *Group) error {
	sp, c := &r.s.spec, r.s.ec2
	name := sp.name(g.Name)
	res := fmt.Sprintf("launch template %q", name)
	want := r.templateData(g)
	out, err := c.DescribeLaunchTemplates(ctx, &ec2.DescribeLaunchTemplatesInput{Filters: r.s.byName(name)})
	if err != nil {
		return wrap("describe launch template", name, err)
	}
	if len(out.LaunchTemplates) == 0 {
		r.note(Create, res, fmt.Sprintf("%s %s", aws.ToString(want.ImageId), g.InstanceType))
		if !r.apply {
			return nil
		}
		err := r.profileRetry(ctx, func() error {
			_, err := c.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{
				LaunchTemplateName: &name, LaunchTemplateData: want, VersionDescription: aws.String("corral"),
				TagSpecifications: tagSpec(types.ResourceTypeLaunchTemplate, sp.tags(name, g.Name)),
			})
			return err
		})
		if err != nil {
			return wrap("create launch template", name, err)
		}
		r.setVersion(g.Name, 1)
		return nil
	}
	lt := out.LaunchTemplates[0]
	latest := aws.ToInt64(lt.LatestVersionNumber)
	vers, err := c.DescribeLaunchTemplateVersions(ctx, &ec2.DescribeLaunchTemplateVersionsInput{
		LaunchTemplateId: lt.LaunchTemplateId, Versions: []string{strconv.FormatInt(latest, 10)},
	})
	if err != nil {
		return wrap("describe launch template versions of", name, err)
	}
	var have *types.ResponseLaunchTemplateData
	if len(vers.LaunchTemplateVersions) > 0 {
		have = vers.LaunchTemplateVersions[0].LaunchTemplateData
	}
	diff := templateDiff(have, want)
	if len(diff) == 0 {
		r.note(Keep, res, fmt.Sprintf("version %d", latest))
		r.setVersion(g.Name, latest)
		return nil
	}
	r.note(Update, res, fmt.Sprintf("%s: version %d; node group %q needs a rolling replacement", joinDetails(diff), latest+1, g.Name))
	if !r.apply {
		return nil
	}
	var nv *ec2.CreateLaunchTemplateVersionOutput
	err = r.profileRetry(ctx, func() error {
		var err error
		nv, err = c.CreateLaunchTemplateVersion(ctx, &ec2.CreateLaunchTemplateVersionInput{
			LaunchTemplateId: lt.LaunchTemplateId, LaunchTemplateData: want, VersionDescription: aws.String("corral: " + joinDetails(diff)),
		})
		return err
	})
	if err != nil {
		return wrap("create launch template version of", name, err)
	}
	r.setVersion(g.Name, aws.ToInt64(nv.LaunchTemplateVersion.VersionNumber))
	r.mu.Lock()
	r.out.Replace = append(r.out.Replace, g.Name)
	r.mu.Unlock()
	return nil
}

func (r *run) setVersion(group string, v int64) {
	r.mu.Lock()
	r.out.TemplateVersions[group] = v
	r.mu.Unlock()
}

// profileRetry calls fn again while EC2 or Auto Scaling cannot see the
// instance profile yet, up to Options.ProfileWait.
func (r *run) profileRetry(ctx context.Context, fn func() error) error {
	return retryWhile(ctx, r.s.opts.ProfileWait, func(err error) bool {
		if profileNotVisible(err) {
			r.s.logf("instance profile %q not yet visible to EC2 (IAM is eventually consistent); retrying", r.s.spec.name("node"))
			return true
		}
		return false
	}, fn)
}

// latest is the launch template version every Auto Scaling group uses, so
// that a new version is what replacement instances launch with.
const latest = "$Latest"

// autoScalingGroup converges a group's Auto Scaling group: capacity,
// subnets and template in at most one UpdateAutoScalingGroup, tags
// propagated at launch, and its load balancers' target groups.
func (r *run) autoScalingGroup(ctx context.Context, g *Group) error {
	sp, c := &r.s.spec, r.s.asg
	name := sp.name(g.Name)
	res := fmt.Sprintf("auto scaling group %q", name)
	subnets := strings.Join(r.subnets, ",")
	targets := r.targets[g.Name]
	var tags []asgtypes.Tag
	for _, t := range ec2Tags(sp.tags(name, g.Name)) {
		tags = append(tags, asgtypes.Tag{Key: t.Key, Value: t.Value, PropagateAtLaunch: aws.Bool(true),
			ResourceId: aws.String(name), ResourceType: aws.String("auto-scaling-group")})
	}
	out, err := c.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}})
	if err != nil {
		return wrap("describe auto scaling group", name, err)
	}
	if len(out.AutoScalingGroups) == 0 {
		r.note(Create, res, fmt.Sprintf("min %d, max %d, desired %d, in %d zones", g.Min, g.Max, g.Desired, len(sp.Zones)))
		if !r.apply {
			return nil
		}
		in := &autoscaling.CreateAutoScalingGroupInput{
			AutoScalingGroupName: &name,
			LaunchTemplate:       &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: &name, Version: aws.String(latest)},
			MinSize:              aws.Int32(int32(g.Min)), MaxSize: aws.Int32(int32(g.Max)), DesiredCapacity: aws.Int32(int32(g.Desired)),
			VPCZoneIdentifier: &subnets, Tags: tags, TargetGroupARNs: targets,
			// EC2 health checks only: with ELB checks Auto Scaling would
			// replace a node, etcd member and all, whenever the web service
			// behind a load balancer is unhealthy; clusterd reschedules
			// services itself.
			HealthCheckType: aws.String("EC2"), HealthCheckGracePeriod: aws.Int32(300),
		}
		err := r.profileRetry(ctx, func() error { _, err := c.CreateAutoScalingGroup(ctx, in); return err })
		return wrap("create auto scaling group", name, err)
	}
	a := out.AutoScalingGroups[0]
	in := &autoscaling.UpdateAutoScalingGroupInput{AutoScalingGroupName: &name}
	var diff []string
	for _, f := range []struct {
		what       string
		have, want int
		set        **int32
	}{
		{"min", int(aws.ToInt32(a.MinSize)), g.Min, &in.MinSize},
		{"max", int(aws.ToInt32(a.MaxSize)), g.Max, &in.MaxSize},
		{"desired", int(aws.ToInt32(a.DesiredCapacity)), g.Desired, &in.DesiredCapacity},
	} {
		if f.have != f.want {
			diff = append(diff, fmt.Sprintf("%s %d → %d", f.what, f.have, f.want))
			*f.set = aws.Int32(int32(f.want))
		}
	}
	if haveSubnets := strings.Split(aws.ToString(a.VPCZoneIdentifier), ","); !slices.Equal(sorted(haveSubnets), sorted(r.subnets)) {
		diff = append(diff, "subnets")
		in.VPCZoneIdentifier = &subnets
	}
	if lt := a.LaunchTemplate; lt == nil || aws.ToString(lt.LaunchTemplateName) != name || aws.ToString(lt.Version) != latest {
		diff = append(diff, "launch template "+name+" "+latest)
		in.LaunchTemplate = &asgtypes.LaunchTemplateSpecification{LaunchTemplateName: &name, Version: aws.String(latest)}
	}
	if len(diff) > 0 && r.apply {
		if _, err := c.UpdateAutoScalingGroup(ctx, in); err != nil {
			return wrap("update auto scaling group", name, err)
		}
	}
	haveTags := map[string]string{}
	for _, t := range a.Tags {
		if aws.ToBool(t.PropagateAtLaunch) {
			haveTags[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
	}
	if !containsAll(haveTags, sp.tags(name, g.Name)) {
		diff = append(diff, "tags not propagated at launch")
		if r.apply {
			if _, err := c.CreateOrUpdateTags(ctx, &autoscaling.CreateOrUpdateTagsInput{Tags: tags}); err != nil {
				return wrap("tag auto scaling group", name, err)
			}
		}
	}
	d, err := r.attachTargets(ctx, name, a.TargetGroupARNs, targets)
	if err != nil {
		return err
	}
	diff = append(diff, d...)
	if len(diff) == 0 {
		r.note(Keep, res, "")
	} else {
		r.note(Update, res, joinDetails(diff))
	}
	return nil
}

// attachTargets makes the group's target groups exactly want.
func (r *run) attachTargets(ctx context.Context, name string, have, want []string) ([]string, error) {
	var add, remove []string
	for _, w := range want {
		if w != "" && !slices.Contains(have, w) {
			add = append(add, w)
		}
	}
	for _, h := range have {
		if !slices.Contains(want, h) {
			remove = append(remove, h)
		}
	}
	var diff []string
	if len(add) > 0 {
		diff = append(diff, fmt.Sprintf("%d target groups to attach", len(add)))
		if r.apply {
			if _, err := r.s.asg.AttachLoadBalancerTargetGroups(ctx, &autoscaling.AttachLoadBalancerTargetGroupsInput{AutoScalingGroupName: &name, TargetGroupARNs: add}); err != nil {
				return nil, wrap("attach target groups to auto scaling group", name, err)
			}
		}
	}
	if len(remove) > 0 {
		diff = append(diff, fmt.Sprintf("%d target groups not in the file", len(remove)))
		if r.apply {
			if _, err := r.s.asg.DetachLoadBalancerTargetGroups(ctx, &autoscaling.DetachLoadBalancerTargetGroupsInput{AutoScalingGroupName: &name, TargetGroupARNs: remove}); err != nil {
				return nil, wrap("detach target groups from auto scaling group", name, err)
			}
		}
	}
	return diff, nil
}
