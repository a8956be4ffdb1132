package provision_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/corral-dev/corral/internal/awsemu"
	awsprov "github.com/corral-dev/corral/providers/aws"
	"github.com/corral-dev/corral/provision"
	"github.com/corral-dev/corral/provision/state"
)

// awsCluster is one test's cluster on the emulator: its file, the
// emulator, and SDK clients to look at what provision made.
type awsCluster struct {
	t    *testing.T
	emu  *awsemu.Emulator
	url  string
	dir  string
	file string
	bin  string
	ec2  *ec2.Client
	asg  *autoscaling.Client
	s3   *s3.Client
}

// newAWSCluster starts an emulator, points the SDK's default chain at
// static test credentials (and away from this host's AWS files and
// instance metadata), and shortens the Stack's waits.
func newAWSCluster(t *testing.T) *awsCluster {
	t.Helper()
	awsemu.SetTestEnv(t)
	provision.SetAWSStackOptions(t, awsprov.Options{WaitDelay: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, ProfileWait: 30 * time.Second})
	e := awsemu.New(awsemu.Options{})
	url, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	dir := t.TempDir()
	// The emulator boots nothing: any file stands for the corral binary
	// that instances would fetch from the bucket.
	bin := filepath.Join(dir, "corral")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho corral for the emulator\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := awsemu.TestConfig(url)
	c := &awsCluster{t: t, emu: e, url: url, dir: dir, file: filepath.Join(dir, "demo.hcl"), bin: bin,
		ec2: ec2.NewFromConfig(cfg), asg: autoscaling.NewFromConfig(cfg),
		s3: s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })}
	c.write(3)
	return c
}

// write writes the cluster's file with the core group at desired.
func (c *awsCluster) write(desired int) {
	c.t.Helper()
	c.writeWith(fmt.Sprintf("desired_capacity = %d", desired), "")
}

// writeWith writes the cluster's file; group and provider are extra
// lines in the core group and the provider block.
func (c *awsCluster) writeWith(group, provider string) {
	c.t.Helper()
	hcl := fmt.Sprintf(`cluster "demo" {
  etcd_members = 3
}
provider "aws" {
  region         = "us-west-2"
  allow_ssh_from = "203.0.113.0/24"
  endpoint       = %q
  %s
}
node_group "core" {
  min_size      = 1
  max_size      = 6
  instance_type = "t3.small"
  %s
  load_balancer "web" {
    port        = 80
    target_port = 3000
  }
}
`, c.url, provider, group)
	if err := os.WriteFile(c.file, []byte(hcl), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

func (c *awsCluster) opts(out *bytes.Buffer) provision.Options {
	return provision.Options{File: c.file, Out: out, Err: out, Binary: c.bin}
}

// up runs `provision up --no-wait --auto-approve` and returns its output.
func (c *awsCluster) up() string {
	c.t.Helper()
	var out bytes.Buffer
	err := provision.Up(context.Background(), provision.UpOptions{Options: c.opts(&out), AutoApprove: true, NoWait: true, Timeout: time.Minute})
	if err != nil {
		c.t.Fatalf("up --no-wait: %v\n%s", err, out.String())
	}
	return out.String()
}

// down runs `provision down`, with --force-delete-data if force.
func (c *awsCluster) down(force bool) string {
	c.t.Helper()
	var out bytes.Buffer
	if err := provision.DownWith(context.Background(), provision.DownOptions{Options: c.opts(&out), ForceDeleteData: force}); err != nil {
		c.t.Fatalf("down: %v\n%s", err, out.String())
	}
	return out.String()
}

// state reads the cluster's state file.
func (c *awsCluster) state() *state.State {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, ".corral", "demo", "state.json"))
	if err != nil {
		c.t.Fatal(err)
	}
	var s state.State
	if err := json.Unmarshal(b, &s); err != nil {
		c.t.Fatal(err)
	}
	return &s
}

// mutating lists the mutating calls served after the first skip.
func (c *awsCluster) mutating(skip int) []string {
	var out []string
	for _, call := range c.emu.Calls()[skip:] {
		if call.Mutating && !call.Throttled {
			out = append(out, call.Service+":"+call.Action)
		}
	}
	return out
}

// instance is an instance of the cluster as the test sees it.
type instance struct {
	id, state, node, ip string
}

// instances lists every instance tagged with the cluster, by id.
func (c *awsCluster) instances() map[string]instance {
	c.t.Helper()
	out, err := c.ec2.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{
		Filters: []ec2types.Filter{{Name: aws.String("tag:corral:cluster"), Values: []string{"demo"}}}})
	if err != nil {
		c.t.Fatal(err)
	}
	m := map[string]instance{}
	for _, r := range out.Reservations {
		for _, in := range r.Instances {
			i := instance{id: aws.ToString(in.InstanceId), state: string(in.State.Name), ip: aws.ToString(in.PrivateIpAddress)}
			for _, tag := range in.Tags {
				if aws.ToString(tag.Key) == "corral:node" {
					i.node = aws.ToString(tag.Value)
				}
			}
			m[i.id] = i
		}
	}
	return m
}

// running lists the running instances by node ("" for unclaimed).
func (c *awsCluster) running() map[string]instance {
	out := map[string]instance{}
	for _, i := range c.instances() {
		if i.state == "running" || i.state == "pending" {
			if _, dup := out[i.node]; dup {
				c.t.Errorf("two running instances are node %q", i.node)
			}
			out[i.node] = i
		}
	}
	return out
}

// desired is the core group's desired capacity.
func (c *awsCluster) desired() int {
	c.t.Helper()
	out, err := c.asg.DescribeAutoScalingGroups(context.Background(), &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"demo-core"}})
	if err != nil || len(out.AutoScalingGroups) != 1 {
		c.t.Fatalf("auto scaling group demo-core: %v", err)
	}
	return int(aws.ToInt32(out.AutoScalingGroups[0].DesiredCapacity))
}

// checkNodes checks that the state's nodes are exactly names, each with
// the running instance tagged with it and that instance's address.
func (c *awsCluster) checkNodes(names ...string) {
	c.t.Helper()
	run := c.running()
	st := c.state()
	var have []string
	for _, n := range st.Nodes {
		have = append(have, n.Name)
		i, ok := run[n.Name]
		switch {
		case !ok:
			c.t.Errorf("%s: no running instance tagged corral:node=%s", n.Name, n.Name)
		case n.Instance != i.id || n.IP.String() != i.ip:
			c.t.Errorf("%s: the state records %s at %s, its instance is %s at %s", n.Name, n.Instance, n.IP, i.id, i.ip)
		}
	}
	if !slices.Equal(have, names) {
		c.t.Errorf("state nodes %v, want %v", have, names)
	}
	if len(run) != len(names) {
		c.t.Errorf("%d running instances, want %d: %v", len(run), len(names), run)
	}
}

// bucket is the cluster's bucket, as providers/aws names it.
const awsBucket = "demo-123456789012-us-west-2"

func (c *awsCluster) objects() []string {
	c.t.Helper()
	out, err := c.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(awsBucket)})
	if err != nil {
		c.t.Fatalf("listing the bucket: %v", err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, aws.ToString(o.Key))
	}
	return keys
}

// TestAWSUpNoWait builds the cluster from nothing: the network, the
// group's three instances claimed by core-1..3 and recorded in the state,
// the bootstrap material in the bucket, the outputs printed. Run again
// with nothing changed, up makes no mutating call at all.
func TestAWSUpNoWait(t *testing.T) {
	c := newAWSCluster(t)
	out := c.up()
	t.Log(out)
	ctx := context.Background()

	vpcs, err := c.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:corral:cluster"), Values: []string{"demo"}}}})
	if err != nil || len(vpcs.Vpcs) != 1 || aws.ToString(vpcs.Vpcs[0].CidrBlock) != "10.1.0.0/16" {
		t.Fatalf("VPC of the cluster: %v %+v", err, vpcs)
	}
	subnets, err := c.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{{Name: aws.String("vpc-id"), Values: []string{aws.ToString(vpcs.Vpcs[0].VpcId)}}}})
	if err != nil || len(subnets.Subnets) != 3 {
		t.Fatalf("subnets: %v, %d, want 3 (one per zone)", err, len(subnets.Subnets))
	}
	sgs, err := c.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{{Name: aws.String("tag:corral:cluster"), Values: []string{"demo"}}}})
	if err != nil || len(sgs.SecurityGroups) != 2 {
		t.Fatalf("security groups: %v, %d, want 2", err, len(sgs.SecurityGroups))
	}
	if d := c.desired(); d != 3 {
		t.Errorf("desired capacity %d, want 3", d)
	}
	c.checkNodes("core-1", "core-2", "core-3")
	st := c.state()
	for _, n := range st.Nodes {
		if !strings.Contains(out, n.Name) || !strings.Contains(out, n.Instance) || !strings.Contains(out, n.IP.String()) {
			t.Errorf("the output does not list %s, %s, %s:\n%s", n.Name, n.Instance, n.IP, out)
		}
	}
	for _, want := range []string{"aws provider, us-west-2 (3 zones), VPC 10.1.0.0/16", "load balancer web", "etcd load balancer",
		"bucket                   " + awsBucket, "log group                /corral/demo", "--no-wait"} {
		if !strings.Contains(out, want) {
			t.Errorf("the output has no %q:\n%s", want, out)
		}
	}
	keys := c.objects()
	for _, want := range []string{"corral/demo/bootstrap/ca.crt", "corral/demo/bootstrap/ca.key", "corral/demo/bootstrap/token", "corral/demo/assets/clusterd"} {
		if !slices.Contains(keys, want) {
			t.Errorf("the bucket has no %s: %v", want, keys)
		}
	}
	token, err := os.ReadFile(filepath.Join(c.dir, ".corral", "demo", "pki", "token"))
	if err != nil {
		t.Fatal(err)
	}
	obj, err := c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(awsBucket), Key: aws.String("corral/demo/bootstrap/token")})
	if err != nil {
		t.Fatal(err)
	}
	var up bytes.Buffer
	up.ReadFrom(obj.Body)
	obj.Body.Close()
	if up.String() != string(token) {
		t.Errorf("the bucket's token is %q, the cluster's %q", up.String(), token)
	}

	var outputs bytes.Buffer
	if err := provision.Output(provision.OutputOptions{Options: c.opts(&outputs)}); err != nil {
		t.Fatalf("output: %v", err)
	}
	for _, n := range st.Nodes {
		if !strings.Contains(outputs.String(), n.Instance) {
			t.Errorf("provision output does not list %s's instance %s:\n%s", n.Name, n.Instance, outputs.String())
		}
	}
	if !strings.Contains(outputs.String(), "elb.amazonaws.com") {
		t.Errorf("provision output lists no load balancer:\n%s", outputs.String())
	}

	before := len(c.emu.Calls())
	c.up()
	if m := c.mutating(before); len(m) > 0 {
		t.Errorf("up with nothing changed made mutating calls: %v", m)
	}
	c.checkNodes("core-1", "core-2", "core-3")
}

// userData is the core group's user data, from its launch template.
func (c *awsCluster) userData() []byte {
	c.t.Helper()
	out, err := c.ec2.DescribeLaunchTemplateVersions(context.Background(), &ec2.DescribeLaunchTemplateVersionsInput{
		LaunchTemplateName: aws.String("demo-core"), Versions: []string{"$Latest"}})
	if err != nil || len(out.LaunchTemplateVersions) != 1 {
		c.t.Fatalf("launch template demo-core: %v", err)
	}
	b, err := base64.StdEncoding.DecodeString(aws.ToString(out.LaunchTemplateVersions[0].LaunchTemplateData.UserData))
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// ignitionConfig is the part of an Ignition config the tests look at.
type ignitionConfig struct {
	Ignition struct {
		Config struct {
			Replace struct {
				Source string `json:"source"`
			} `json:"replace"`
		} `json:"config"`
	} `json:"ignition"`
	Storage struct {
		Files []struct {
			Path     string `json:"path"`
			Contents struct {
				Source string `json:"source"`
			} `json:"contents"`
		} `json:"files"`
	} `json:"storage"`
	Systemd struct {
		Units []struct {
			Name     string `json:"name"`
			Contents string `json:"contents"`
		} `json:"units"`
	} `json:"systemd"`
}

// TestAWSUserData: every instance of a group boots one Ignition config,
// with nothing of any one node in it: clusterd fetched from the bucket
// and run with --aws-bootstrap, no token, no host name. A config over
// EC2's 16 KiB becomes a pointer to the full one, uploaded to the bucket.
func TestAWSUserData(t *testing.T) {
	c := newAWSCluster(t)
	c.up()
	var cfg ignitionConfig
	if err := json.Unmarshal(c.userData(), &cfg); err != nil {
		t.Fatalf("the user data is not an Ignition config: %v", err)
	}
	var paths []string
	for _, f := range cfg.Storage.Files {
		paths = append(paths, f.Path)
		if f.Path == "/opt/bin/clusterd" && f.Contents.Source != "s3://"+awsBucket+"/corral/demo/assets/clusterd" {
			t.Errorf("clusterd is fetched from %q", f.Contents.Source)
		}
	}
	for _, p := range []string{"/etc/corral/token", "/etc/hostname", "/etc/corral/ca-key.pem"} {
		if slices.Contains(paths, p) {
			t.Errorf("the user data writes %s: %v", p, paths)
		}
	}
	if !slices.Contains(paths, "/opt/bin/clusterd") {
		t.Errorf("the user data does not install clusterd: %v", paths)
	}
	var unit string
	for _, u := range cfg.Systemd.Units {
		if u.Name == "clusterd.service" {
			unit = u.Contents
		}
	}
	for _, want := range []string{"--aws-bootstrap=s3://" + awsBucket + "/corral/demo/bootstrap \\", "--etcd-members=3", "ExecStart=/opt/bin/clusterd \\",
		"every instance of node group core"} {
		if !strings.Contains(unit, want) {
			t.Errorf("clusterd.service has no %q:\n%s", want, unit)
		}
	}
	for _, not := range []string{"--name=", "--token-file=", "--mode=", "--ip=", "clusterd.env"} {
		if strings.Contains(unit, not) {
			t.Errorf("clusterd.service has %q:\n%s", not, unit)
		}
	}

	// 20 KiB of base64 of random bytes, which do not compress: over the limit.
	big := make([]byte, 15<<10)
	rand.Read(big)
	c.writeWith(fmt.Sprintf("desired_capacity = 3\n  file \"/etc/big\" { content = %q }", base64.StdEncoding.EncodeToString(big)), "")
	c.up()
	ud := c.userData()
	if len(ud) > 16<<10 {
		t.Fatalf("user data of %d bytes", len(ud))
	}
	cfg = ignitionConfig{}
	if err := json.Unmarshal(ud, &cfg); err != nil {
		t.Fatal(err)
	}
	if want := "s3://" + awsBucket + "/corral/demo/userdata/core.ign"; cfg.Ignition.Config.Replace.Source != want {
		t.Errorf("the user data over the limit points to %q, want %q", cfg.Ignition.Config.Replace.Source, want)
	}
	if !slices.Contains(c.objects(), "corral/demo/userdata/core.ign") {
		t.Errorf("the full config is not in the bucket: %v", c.objects())
	}
}

// TestAWSProfileAndEndpoint: --profile overrides the file's profile, and
// the endpoint can come from the environment (AWS_ENDPOINT_URL) as well
// as from the file.
func TestAWSProfileAndEndpoint(t *testing.T) {
	c := newAWSCluster(t)
	awsemu.SetTestProfiles(t, "[profile emu]\nregion = us-west-2\n",
		"[emu]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = secret\n")
	c.writeWith("desired_capacity = 3", `profile = "missing"`)

	var out bytes.Buffer
	_, err := provision.Plan(context.Background(), provision.PlanOptions{Options: c.opts(&out)})
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("plan with the file's profile \"missing\": %v, want an error naming it\n%s", err, out.String())
	}
	out.Reset()
	o := c.opts(&out)
	o.Profile = "emu"
	if _, err := provision.Plan(context.Background(), provision.PlanOptions{Options: o}); err != nil {
		t.Fatalf("plan --profile emu: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `create vpc "demo-vpc"`) {
		t.Errorf("plan --profile emu does not plan the VPC:\n%s", out.String())
	}

	// No endpoint in the file: AWS_ENDPOINT_URL points the SDK at the emulator.
	url := c.url
	c.url = ""
	c.writeWith("desired_capacity = 3", "")
	c.url = url
	hcl, _ := os.ReadFile(c.file)
	if err := os.WriteFile(c.file, bytes.Replace(hcl, []byte(`endpoint       = ""`), nil, 1), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ENDPOINT_URL", url)
	t.Setenv("AWS_PROFILE", "emu")
	out.Reset()
	if _, err := provision.Plan(context.Background(), provision.PlanOptions{Options: c.opts(&out)}); err != nil || !strings.Contains(out.String(), `create vpc "demo-vpc"`) {
		t.Fatalf("plan with AWS_ENDPOINT_URL: %v\n%s", err, out.String())
	}
}

// TestAWSScaleOutAndIn: 3→4 changes the group's desired capacity once and
// core-4 claims the new instance, touching no other; 4→3 terminates
// exactly core-4's instance, decrementing the group.
func TestAWSScaleOutAndIn(t *testing.T) {
	c := newAWSCluster(t)
	c.up()
	first := c.running()

	c.write(4)
	before := len(c.emu.Calls())
	c.up()
	m := c.mutating(before)
	if n := countOf(m, "autoscaling:UpdateAutoScalingGroup"); n != 1 {
		t.Errorf("%d UpdateAutoScalingGroup calls, want 1: %v", n, m)
	}
	if n := countOf(m, "ec2:CreateTags"); n != 1 {
		t.Errorf("%d CreateTags calls, want 1 (core-4's claim): %v", n, m)
	}
	for _, call := range m {
		if strings.Contains(call, "Terminate") || strings.Contains(call, "Delete") {
			t.Errorf("scaling out made %s", call)
		}
	}
	if d := c.desired(); d != 4 {
		t.Errorf("desired capacity %d, want 4", d)
	}
	c.checkNodes("core-1", "core-2", "core-3", "core-4")
	now := c.running()
	for node, i := range first {
		if now[node].id != i.id {
			t.Errorf("%s moved from %s to %s", node, i.id, now[node].id)
		}
	}
	core4 := now["core-4"].id

	c.write(3)
	before = len(c.emu.Calls())
	c.up()
	m = c.mutating(before)
	if n := countOf(m, "autoscaling:TerminateInstanceInAutoScalingGroup"); n != 1 {
		t.Errorf("%d TerminateInstanceInAutoScalingGroup calls, want 1: %v", n, m)
	}
	if i := c.instances()[core4]; i.state == "running" || i.state == "pending" {
		t.Errorf("core-4's instance %s is %s", core4, i.state)
	}
	if d := c.desired(); d != 3 {
		t.Errorf("desired capacity %d, want 3", d)
	}
	c.checkNodes("core-1", "core-2", "core-3")
	now = c.running()
	for node, i := range first {
		if now[node].id != i.id {
			t.Errorf("%s moved from %s to %s", node, i.id, now[node].id)
		}
	}
}

func countOf(calls []string, what string) int {
	n := 0
	for _, c := range calls {
		if c == what {
			n++
		}
	}
	return n
}

// TestAWSPlanDrift: a rule removed by hand is reported by plan as drift,
// and plan makes no mutating call.
func TestAWSPlanDrift(t *testing.T) {
	c := newAWSCluster(t)
	c.up()
	ctx := context.Background()
	sgs, err := c.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:corral:cluster"), Values: []string{"demo"}}, {Name: aws.String("group-name"), Values: []string{"demo-nodes"}}}})
	if err != nil || len(sgs.SecurityGroups) != 1 {
		t.Fatalf("security group demo-nodes: %v", err)
	}
	_, err = c.ec2.RevokeSecurityGroupIngress(ctx, &ec2.RevokeSecurityGroupIngressInput{GroupId: sgs.SecurityGroups[0].GroupId,
		IpPermissions: []ec2types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22),
			IpRanges: []ec2types.IpRange{{CidrIp: aws.String("203.0.113.0/24")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	before := len(c.emu.Calls())
	var out bytes.Buffer
	changes, err := provision.Plan(ctx, provision.PlanOptions{Options: c.opts(&out)})
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, out.String())
	}
	t.Log(out.String())
	if m := c.mutating(before); len(m) > 0 {
		t.Errorf("plan made mutating calls: %v", m)
	}
	if !changes || !strings.Contains(out.String(), `! drift security group "demo-nodes"`) || !strings.Contains(out.String(), "1 drifted") {
		t.Errorf("plan does not report the removed rule as drift (changes %v):\n%s", changes, out.String())
	}
	if strings.Contains(out.String(), "keep ") {
		t.Errorf("plan lists unchanged resources without -v:\n%s", out.String())
	}
	out.Reset()
	if _, err := provision.Plan(ctx, provision.PlanOptions{Options: c.opts(&out), Verbose: true}); err != nil || !strings.Contains(out.String(), "keep vpc") {
		t.Errorf("plan -v does not list unchanged resources (%v):\n%s", err, out.String())
	}
}

// assertNothingLeft checks that nothing tagged with the cluster remains
// (terminated instances aside), and whether the bucket does.
func (c *awsCluster) assertNothingLeft(bucketKept bool) {
	c.t.Helper()
	ctx := context.Background()
	for id, i := range c.instances() {
		if i.state != "terminated" {
			c.t.Errorf("instance %s (%s) is %s", id, i.node, i.state)
		}
	}
	tagged := []ec2types.Filter{{Name: aws.String("tag:corral:cluster"), Values: []string{"demo"}}}
	if vpcs, err := c.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: tagged}); err != nil || len(vpcs.Vpcs) > 0 {
		c.t.Errorf("VPCs left: %v %v", err, vpcs)
	}
	if sgs, err := c.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: tagged}); err != nil || len(sgs.SecurityGroups) > 0 {
		c.t.Errorf("security groups left: %v %v", err, sgs)
	}
	if g, err := c.asg.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{}); err != nil || len(g.AutoScalingGroups) > 0 {
		c.t.Errorf("auto scaling groups left: %v %v", err, g)
	}
	_, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(awsBucket)})
	if bucketKept && err != nil {
		c.t.Errorf("the bucket was deleted without --force-delete-data: %v", err)
	}
	if !bucketKept && err == nil {
		c.t.Errorf("the bucket is left after --force-delete-data")
	}
	if _, err := os.Stat(filepath.Join(c.dir, ".corral", "demo")); !errors.Is(err, os.ErrNotExist) {
		c.t.Errorf("the state directory is left (%v)", err)
	}
}

// TestAWSDown removes everything tagged with the cluster, keeping the
// bucket without --force-delete-data; with the state directory deleted
// first, down finds it all by tag all the same.
func TestAWSDown(t *testing.T) {
	c := newAWSCluster(t)
	c.up()
	out := c.down(false)
	t.Log(out)
	if !strings.Contains(out, "is kept") || !strings.Contains(out, "--force-delete-data") {
		t.Errorf("down does not say the bucket is kept and how to remove it:\n%s", out)
	}
	c.assertNothingLeft(true)

	c.up()
	if err := os.RemoveAll(filepath.Join(c.dir, ".corral")); err != nil {
		t.Fatal(err)
	}
	c.down(true)
	c.assertNothingLeft(false)
}

// TestAWSBadInput: a wrong file is reported, naming the file and line,
// before any call to AWS.
func TestAWSBadInput(t *testing.T) {
	for _, tc := range []struct {
		name, group, provider, want string
	}{
		{"zone not in region", "desired_capacity = 3", `availability_zones = ["us-east-1a"]`, "not in region"},
		{"overlapping subnets", "desired_capacity = 3", `availability_zones = ["us-west-2a", "us-west-2b"]
  subnets = ["10.1.1.0/24", "10.1.1.128/25"]`, "overlaps"},
		{"min above max", "desired_capacity = 3\n  min_size = 5", "", "min_size"},
		{"bad instance type", "desired_capacity = 3\n  instance_type = \"T3.Small\"", "", "instance_type"},
		{"cloud-config", "desired_capacity = 3\n  userdata = \"cloud-config\"", "", `userdata = "cloud-config" is not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newAWSCluster(t)
			c.writeWith(tc.group, tc.provider)
			var out bytes.Buffer
			err := provision.Up(context.Background(), provision.UpOptions{Options: c.opts(&out), AutoApprove: true, NoWait: true})
			if err == nil {
				t.Fatalf("up succeeded\n%s", out.String())
			}
			msg := out.String() + err.Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "demo.hcl:") {
				t.Errorf("up: %v; the diagnostics do not say %q at demo.hcl:LINE:\n%s", err, tc.want, out.String())
			}
			if calls := c.emu.Calls(); len(calls) > 0 {
				t.Errorf("%d calls to AWS before the file was found wrong: %v", len(calls), calls)
			}
		})
	}
}

// TestAWSThrottled: with 30% of calls throttled, up --no-wait converges.
func TestAWSThrottled(t *testing.T) {
	c := newAWSCluster(t)
	c.emu.SetThrottle(0.3)
	c.up()
	c.emu.SetThrottle(0)
	throttled := 0
	for _, call := range c.emu.Calls() {
		if call.Throttled {
			throttled++
		}
	}
	if throttled == 0 {
		t.Fatal("no call was throttled")
	}
	t.Logf("%d of %d calls throttled", throttled, len(c.emu.Calls()))
	c.checkNodes("core-1", "core-2", "core-3")
	before := len(c.emu.Calls())
	c.up()
	if m := c.mutating(before); len(m) > 0 {
		t.Errorf("up after a throttled up made mutating calls: %v", m)
	}
}

// TestAWSUnclaimedInstances: an instance of the group that no node has
// claimed is claimed by a recorded node that lost its instance's tag
// rather than terminated; one that no node needs (Auto Scaling grown by
// hand) is terminated, shrinking the group back.
func TestAWSUnclaimedInstances(t *testing.T) {
	c := newAWSCluster(t)
	c.up()
	ctx := context.Background()
	core3 := c.running()["core-3"].id
	if _, err := c.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{core3},
		Tags: []ec2types.Tag{{Key: aws.String("corral:node")}}}); err != nil {
		t.Fatal(err)
	}
	before := len(c.emu.Calls())
	c.up()
	m := c.mutating(before)
	if !slices.Equal(m, []string{"ec2:CreateTags"}) {
		t.Errorf("mutating calls %v, want only core-3's claim", m)
	}
	c.checkNodes("core-1", "core-2", "core-3")
	if now := c.running()["core-3"].id; now != core3 {
		t.Errorf("core-3 is %s, was %s", now, core3)
	}

	if _, err := c.asg.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("demo-core"),
		DesiredCapacity: aws.Int32(4)}); err != nil {
		t.Fatal(err)
	}
	stray, ok := c.running()[""]
	if !ok {
		t.Fatal("Auto Scaling launched no fourth instance")
	}
	before = len(c.emu.Calls())
	c.up()
	m = c.mutating(before)
	if n := countOf(m, "autoscaling:TerminateInstanceInAutoScalingGroup"); n != 1 {
		t.Errorf("%d TerminateInstanceInAutoScalingGroup calls, want 1: %v", n, m)
	}
	if i := c.instances()[stray.id]; i.state == "running" || i.state == "pending" {
		t.Errorf("the stray instance %s is %s", stray.id, i.state)
	}
	if d := c.desired(); d != 3 {
		t.Errorf("desired capacity %d, want 3", d)
	}
	c.checkNodes("core-1", "core-2", "core-3")
}
