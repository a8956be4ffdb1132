package provision

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/corral-dev/corral/bootstrap/awsnode"
	"github.com/corral-dev/corral/providers"
	"github.com/corral-dev/corral/providers/aws"
	"github.com/corral-dev/corral/providers/ssh"
	"github.com/corral-dev/corral/provision/config"
	"github.com/corral-dev/corral/provision/state"
)

// awsTarget runs the cluster on EC2: providers/aws builds and converges
// the infrastructure (setup), each node group is an Auto Scaling group
// whose instances all boot the same user data, and a node is the instance
// of its group tagged corral:node=<name>, claimed by Launch among the
// group's untagged ones. Scaling in terminates exactly the node's
// instance, decrementing the group, so Auto Scaling never picks a victim.
type awsTarget struct {
	c       *cluster
	cfg     *config.AWSProvider
	profile string
	sdk     *awsSDK
	log     io.Writer

	stackOpts aws.Options
	// pollEvery is how often Launch looks for its group's new instance.
	pollEvery time.Duration

	// down: the nodes go with their groups in teardown; forceDeleteData:
	// the bucket goes too.
	down, forceDeleteData bool

	accountOnce sync.Once
	bucketName  string
	accountErr  error

	stack   *aws.Stack
	outputs aws.Outputs
	configs map[string]awsGroupConfig

	// claimMu serialises claims, so that two Launches never tag the same
	// instance; it also guards zones.
	claimMu sync.Mutex
	zones   map[string]string // node → its instance's zone, as claimed this run
}

// awsStackOptions tune every Stack; tests shorten its waits and backoff
// (aws_export_test.go).
var awsStackOptions aws.Options

// Tag keys on instances: the cluster and group are the Stack's (propagated
// by the Auto Scaling group), the node is provision's claim.
const (
	tagCluster = "corral:cluster"
	tagGroup   = "corral:group"
	tagNode    = "corral:node"
)

// awsLiveStates are the EC2 states of an instance that still exists.
var awsLiveStates = []string{"pending", "running", "stopping", "stopped"}

func (c *cluster) awsTarget(ctx context.Context) (*awsTarget, error) {
	cfg := c.cfg.Provider.AWS
	for _, g := range c.cfg.NodeGroups {
		if err := checkAWSUserdata(g); err != nil {
			return nil, err
		}
	}
	profile := cmp.Or(c.opts.Profile, cfg.Profile)
	sdk, err := newAWSSDK(ctx, cfg.Region, profile, cfg.Endpoint, awsStackOptions)
	if err != nil {
		return nil, err
	}
	return &awsTarget{c: c, cfg: cfg, profile: profile, sdk: sdk, log: c.opts.Out,
		stackOpts: awsStackOptions, pollEvery: cmp.Or(awsStackOptions.WaitDelay, 2*time.Second)}, nil
}

func (t *awsTarget) describe() string {
	return fmt.Sprintf("aws provider, %s (%d zones), VPC %s", t.cfg.Region, len(t.cfg.Zones), t.cfg.VPCCIDR)
}

func (t *awsTarget) inPlace() bool     { return false }
func (t *awsTarget) overlay() bool     { return true }
func (t *awsTarget) isolation() string { return "" }
func (t *awsTarget) release()          {}
func (t *awsTarget) logHint() string {
	return "read one with: provision ssh FILE NODE -- journalctl -u clusterd"
}

// assign gives a node nothing yet: its address is its instance's, known
// once Launch has claimed one.
func (t *awsTarget) assign(*state.Node, []state.Node) error { return nil }

// machineID is not read from instances: a removed node's subnet is found
// by its address when the cluster prunes it.
func (t *awsTarget) machineID(context.Context, state.Node) (string, error) {
	return "", errors.New("aws: machine ids are not read from instances")
}

// bucket is the cluster's bucket, <cluster>-<account>-<region> as
// providers/aws names it, asking STS for the account once.
func (t *awsTarget) bucket(ctx context.Context) (string, error) {
	t.accountOnce.Do(func() {
		var account string
		if account, t.accountErr = t.sdk.account(ctx); t.accountErr == nil {
			t.bucketName = strings.ToLower(t.c.cfg.Cluster.Name + "-" + account + "-" + t.cfg.Region)
		}
	})
	return t.bucketName, t.accountErr
}

// spec maps the file to the Stack's Spec. A group's desired capacity is
// the file's, or if more, the number of its nodes in the state or of its
// instances live: nodes the file no longer wants, and instances no node
// has, go one by one through Terminate (with decrement), never by Auto
// Scaling choosing whom to terminate. With userData, each group's boot
// config is rendered and checked against EC2's limit.
func (t *awsTarget) spec(ctx context.Context, userData bool) (aws.Spec, error) {
	c, p := t.c, t.cfg
	s := aws.Spec{
		Cluster: c.cfg.Cluster.Name, Region: p.Region, Zones: p.Zones, VPCCIDR: p.VPCCIDR, Subnets: p.Subnets,
		AllowSSHFrom: p.AllowSSHFrom, KeyPair: p.KeyPair, Endpoint: p.Endpoint, Profile: t.profile,
		AWSVPC: p.Overlay == "aws-vpc",
	}
	if b := c.cfg.BackupBucket; b != nil {
		s.BackupExpirationDays = b.ExpirationDays
	}
	if l := c.cfg.LogGroup; l != nil {
		s.LogRetentionDays = l.RetentionDays
	}
	if h := c.cfg.DeployHook; h != nil {
		s.DeployHookPort = h.Port // open to the load balancers
	}
	live := map[string]int{}
	var bucket string
	if userData {
		list, err := t.instances(ctx)
		if err != nil {
			return s, err
		}
		for _, i := range list {
			live[i.group]++
		}
		if bucket, err = t.bucket(ctx); err != nil {
			return s, err
		}
		t.configs = map[string]awsGroupConfig{}
	}
	for _, g := range c.cfg.NodeGroups {
		recorded := 0
		for _, n := range c.state.Nodes {
			if n.Group == g.Name {
				recorded++
			}
		}
		desired := max(g.DesiredCapacity, recorded, live[g.Name])
		maxSize := g.MaxSize
		if maxSize < 0 { // no max_size: the group grows as the file asks
			maxSize = desired
		}
		ag := aws.Group{Name: g.Name, Desired: desired, Min: min(g.MinSize, desired), Max: max(maxSize, desired),
			InstanceType: g.InstanceType, Image: g.Image}
		for _, v := range g.Volumes {
			ag.Volumes = append(ag.Volumes, aws.Volume{Path: v.Path, SizeGB: v.SizeGB})
		}
		for _, lb := range g.LoadBalancers {
			ag.LoadBalancers = append(ag.LoadBalancers, aws.LoadBalancer{Name: lb.Name, Port: lb.Port,
				TargetPort: lb.TargetPort, Protocol: lb.Protocol, Sticky: lb.Sticky})
		}
		if userData {
			gc, err := c.awsUserData(g, bucket)
			if err != nil {
				return s, err
			}
			t.configs[g.Name] = gc
			ag.UserData = gc.userData.Data
		}
		s.Groups = append(s.Groups, ag)
	}
	return s, nil
}

// newStack is the Stack of the file, with user data or without;
// beforeGroups, if not nil, runs in Apply before the groups are touched
// (see aws.Options.BeforeGroups).
func (t *awsTarget) newStack(ctx context.Context, userData bool, beforeGroups func(context.Context) error) (*aws.Stack, error) {
	s, err := t.spec(ctx, userData)
	if err != nil {
		return nil, err
	}
	opts := t.stackOpts
	opts.Log = t.log
	opts.BeforeGroups = beforeGroups
	st, err := aws.New(ctx, s, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: provider \"aws\": %w", t.c.opts.File, err)
	}
	return st, nil
}

// infraChanges is what Stack.Plan says setup would change, resource by
// resource; it makes read calls only.
func (t *awsTarget) infraChanges(ctx context.Context) ([]aws.Change, error) {
	st, err := t.newStack(ctx, true, nil)
	if err != nil {
		return nil, err
	}
	return st.Plan(ctx)
}

// setup converges the infrastructure and puts in the bucket what
// instances read at boot: the bootstrap material awsnode expects (the CA
// certificate and key, the join token), the corral binary, and the full
// configs that user data points to. They are uploaded once the bucket
// exists and before any group is made or changed: Ignition fails a boot
// whose files are missing, it does not wait for them. Unchanged objects
// are not uploaded again.
func (t *awsTarget) setup(ctx context.Context) error {
	st, err := t.newStack(ctx, true, t.uploadBootstrap)
	if err != nil {
		return err
	}
	t.stack = st
	if t.outputs, err = st.Apply(ctx); err != nil {
		return err
	}
	if t.outputs.Bucket != t.bucketName {
		return fmt.Errorf("aws: the stack's bucket is %q, but the user data names %q: providers/aws and provision disagree on the bucket's name", t.outputs.Bucket, t.bucketName)
	}
	return nil
}

// uploadBootstrap uploads what instances fetch from the bucket.
func (t *awsTarget) uploadBootstrap(ctx context.Context) error {
	bucket, name := t.bucketName, t.c.cfg.Cluster.Name
	bin, err := t.c.binary()
	if err != nil {
		return err
	}
	objects := map[string]func() (io.ReadSeekCloser, error){
		awsBootstrap(name) + "/" + awsnode.KeyCACert: fileObject(t.c.adminFiles().CA),
		awsBootstrap(name) + "/" + awsnode.KeyCAKey:  fileObject(t.c.caKeyFile()),
		awsBootstrap(name) + "/" + awsnode.KeyToken:  fileObject(t.c.tokenFile()),
		awsBinaryKey(name):                           fileObject(bin),
	}
	for group, gc := range t.configs {
		if gc.userData.URL != "" {
			objects[awsConfigKey(name, group)] = bytesObject(gc.full)
		}
	}
	for _, key := range slices.Sorted(maps.Keys(objects)) {
		wrote, err := t.sdk.upload(ctx, bucket, key, objects[key])
		if err != nil {
			return err
		}
		if wrote {
			fmt.Fprintf(t.log, "uploaded s3://%s/%s\n", bucket, key)
		}
	}
	return nil
}

// awsInstance is one instance of the cluster as EC2 lists it.
type awsInstance struct {
	id, group, node, state, zone string
	ip                           netip.Addr
	public                       string // its public IPv4 address, if any
	launched                     time.Time
}

// name is the node the instance is, or "<group>/<id>" when unclaimed.
func (i awsInstance) name() string {
	if i.node != "" {
		return i.node
	}
	return i.group + "/" + i.id
}

// instances lists the cluster's instances that still exist, by tag; more
// filters narrow it (a group, a node).
func (t *awsTarget) instances(ctx context.Context, filters ...ec2types.Filter) ([]awsInstance, error) {
	in := &ec2.DescribeInstancesInput{Filters: append([]ec2types.Filter{
		{Name: awssdk.String("tag:" + tagCluster), Values: []string{t.c.cfg.Cluster.Name}},
		{Name: awssdk.String("instance-state-name"), Values: awsLiveStates},
	}, filters...)}
	var out []awsInstance
	p := ec2.NewDescribeInstancesPaginator(t.sdk.ec2, in)
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("aws: listing the instances of cluster %q: %w", t.c.cfg.Cluster.Name, err)
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				ai := awsInstance{id: awssdk.ToString(i.InstanceId), launched: awssdk.ToTime(i.LaunchTime)}
				if i.State != nil {
					ai.state = string(i.State.Name)
				}
				if i.Placement != nil {
					ai.zone = awssdk.ToString(i.Placement.AvailabilityZone)
				}
				ai.ip, _ = netip.ParseAddr(awssdk.ToString(i.PrivateIpAddress))
				ai.public = awssdk.ToString(i.PublicIpAddress)
				for _, tag := range i.Tags {
					switch awssdk.ToString(tag.Key) {
					case tagGroup:
						ai.group = awssdk.ToString(tag.Value)
					case tagNode:
						ai.node = awssdk.ToString(tag.Value)
					}
				}
				out = append(out, ai)
			}
		}
	}
	slices.SortFunc(out, func(a, b awsInstance) int {
		return cmp.Or(a.launched.Compare(b.launched), cmp.Compare(a.id, b.id))
	})
	return out, nil
}

func byTag(key, value string) ec2types.Filter {
	return ec2types.Filter{Name: awssdk.String("tag:" + key), Values: []string{value}}
}

// Inventory lists the cluster's instances, found by tag with or without a
// state: a claimed one as its node, an unclaimed one as "<group>/<id>".
func (t *awsTarget) Inventory(ctx context.Context) ([]providers.Instance, error) {
	list, err := t.instances(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]providers.Instance, 0, len(list))
	for _, i := range list {
		out = append(out, providers.Instance{Name: i.name(), Running: i.state == "running",
			Detail: fmt.Sprintf("%s %s %s in %s", i.id, i.state, i.ip, i.zone)})
	}
	return out, nil
}

// Launch makes the node's instance exist: the group's instance tagged
// with the node, else one of the group's untagged instances, claimed by
// tagging it, once Auto Scaling has launched one (bounded by ctx). The
// instance and its address are recorded in the node's state.
func (t *awsTarget) Launch(ctx context.Context, spec providers.NodeSpec) error {
	n := t.c.state.Node(spec.Name)
	if n == nil {
		return fmt.Errorf("aws: node %s is not in the state", spec.Name)
	}
	group := n.Group
	for grown := false; ; {
		inst, err := t.claim(ctx, spec.Name, group)
		if err != nil {
			return err
		}
		if inst == nil && !grown {
			// A node recorded after setup sized the group (a replacement,
			// made beside the node it replaces) needs the group to grow.
			if err := t.grow(ctx, group); err != nil {
				return err
			}
			grown = true
		}
		if inst != nil {
			t.claimMu.Lock()
			if t.zones == nil {
				t.zones = map[string]string{}
			}
			t.zones[spec.Name] = inst.zone
			t.claimMu.Unlock()
			t.record(spec.Name, *inst)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("aws: no instance of group %q for node %s: the Auto Scaling group %s-%s has launched none free (%w); check its activity in the EC2 console",
				group, spec.Name, t.c.cfg.Cluster.Name, group, ctx.Err())
		case <-time.After(t.pollEvery):
		}
	}
}

// grow makes the group want as many instances as the state has nodes in
// it; it changes nothing when it already does.
func (t *awsTarget) grow(ctx context.Context, group string) error {
	t.claimMu.Lock()
	defer t.claimMu.Unlock()
	if t.stack == nil {
		return fmt.Errorf("aws: growing group %q before the infrastructure was set up", group)
	}
	t.c.keysMu.Lock()
	nodes := 0
	for _, n := range t.c.state.Nodes {
		if n.Group == group {
			nodes++
		}
	}
	t.c.keysMu.Unlock()
	if _, err := t.stack.Grow(ctx, group, nodes); err != nil {
		return fmt.Errorf("aws: %w", err)
	}
	return nil
}

// claim returns the node's instance, tagging a free one of its group if
// it has none yet; nil when the group has no free instance (yet).
func (t *awsTarget) claim(ctx context.Context, node, group string) (*awsInstance, error) {
	t.claimMu.Lock()
	defer t.claimMu.Unlock()
	list, err := t.instances(ctx, byTag(tagGroup, group))
	if err != nil {
		return nil, err
	}
	var free *awsInstance
	for i := range list {
		switch {
		case list[i].node == node:
			return &list[i], nil
		case list[i].node == "" && free == nil && (list[i].state == "running" || list[i].state == "pending"):
			free = &list[i]
		}
	}
	if free == nil {
		return nil, nil
	}
	_, err = t.sdk.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{free.id},
		Tags: []ec2types.Tag{{Key: awssdk.String(tagNode), Value: awssdk.String(node)}}})
	if err != nil {
		return nil, fmt.Errorf("aws: tagging instance %s as node %s: %w", free.id, node, err)
	}
	// Not printed here: Launches run at once, and Out is not safe for
	// concurrent writes; up's outputs list every node's instance.
	free.node = node
	return free, nil
}

// record keeps the node's instance and address in the state, and saves it
// when they changed (Launches run at once: the save is guarded).
func (t *awsTarget) record(node string, inst awsInstance) {
	c := t.c
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	n := c.state.Node(node)
	if n == nil || (n.Instance == inst.id && n.IP == inst.ip) {
		return
	}
	n.Instance, n.IP = inst.id, inst.ip
	if err := c.dir.Save(c.state); err != nil {
		fmt.Fprintf(c.opts.Err, "warning: saving node %s's instance %s in the state: %v\n", node, inst.id, err)
	}
}

// Terminate terminates exactly the node's instance and shrinks its group
// by one. An unclaimed instance ("<group>/<id>") that a Launch has claimed
// meanwhile is kept. During down, nothing is done here: teardown deletes
// the groups with all their instances.
func (t *awsTarget) Terminate(ctx context.Context, name string) error {
	if t.down {
		return nil
	}
	var filter ec2types.Filter
	if group, id, ok := strings.Cut(name, "/"); ok {
		filter = ec2types.Filter{Name: awssdk.String("instance-id"), Values: []string{id}}
		list, err := t.instances(ctx, filter, byTag(tagGroup, group))
		if err != nil {
			return err
		}
		if len(list) == 0 || list[0].node != "" {
			return nil // gone, or claimed by a node since the plan
		}
		return t.terminate(ctx, list[0])
	}
	list, err := t.instances(ctx, byTag(tagNode, name))
	if err != nil {
		return err
	}
	for _, i := range list {
		if err := t.terminate(ctx, i); err != nil {
			return err
		}
	}
	return nil
}

func (t *awsTarget) terminate(ctx context.Context, i awsInstance) error {
	if t.stack == nil {
		st, err := t.newStack(ctx, false, nil)
		if err != nil {
			return err
		}
		t.stack = st
	}
	if err := t.stack.TerminateInstance(ctx, i.id, true); err != nil {
		return fmt.Errorf("aws: node %s: %w", i.name(), err)
	}
	fmt.Fprintf(t.log, "terminated instance %s (%s); group %s shrinks by one\n", i.id, i.name(), i.group)
	return nil
}

// teardown deletes everything tagged with the cluster (found by tag: no
// state is needed), the bucket only with forceDeleteData.
func (t *awsTarget) teardown(ctx context.Context) error {
	st, err := t.newStack(ctx, false, nil)
	if err != nil {
		return err
	}
	if err := st.Destroy(ctx, t.forceDeleteData); err != nil {
		return err
	}
	bucket, err := t.bucket(ctx)
	if err != nil {
		return err
	}
	if t.forceDeleteData {
		fmt.Fprintf(t.log, "bucket %s deleted with its etcd snapshots\n", bucket)
	} else {
		fmt.Fprintf(t.log, "bucket %s is kept: it holds the cluster's etcd snapshots; remove it with: provision down %s --force-delete-data\n",
			bucket, fileArgs(t.c.opts))
	}
	return nil
}

// awsOutputs is what up made on AWS, kept beside the state for
// `provision output`: the load balancers' DNS names, the etcd load
// balancer's, the bucket, the log group, and each node's zone (its
// instance and address are in the state).
type awsOutputs struct {
	LoadBalancers map[string]string `json:"load_balancers"`
	EtcdDNS       string            `json:"etcd_load_balancer"`
	Bucket        string            `json:"bucket"`
	LogGroup      string            `json:"log_group"`
	Zones         map[string]string `json:"zones"`
}

// awsOutputsFile is where up keeps them.
func (c *cluster) awsOutputsFile() string { return filepath.Join(c.dir.Path, "aws-outputs.json") }

// writeOutputs prints what up made and keeps it for `provision output`.
func (t *awsTarget) writeOutputs(w io.Writer) {
	t.claimMu.Lock()
	o := awsOutputs{LoadBalancers: t.outputs.LoadBalancers, EtcdDNS: t.outputs.EtcdDNS, Bucket: t.outputs.Bucket,
		LogGroup: t.outputs.LogGroup, Zones: maps.Clone(t.zones)}
	t.claimMu.Unlock()
	if b, err := json.MarshalIndent(o, "", "  "); err == nil {
		if err := state.WriteFile(t.c.awsOutputsFile(), append(b, '\n')); err != nil {
			fmt.Fprintf(t.c.opts.Err, "warning: keeping the outputs for provision output: %v\n", err)
		}
	}
	t.c.printAWSOutputs(w, o)
}

// writeProviderOutputs prints what the last up made on the provider, if
// it kept anything (aws); `provision output` shows it after the file's
// outputs.
func (c *cluster) writeProviderOutputs(w io.Writer) error {
	b, err := os.ReadFile(c.awsOutputsFile())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var o awsOutputs
	if err := json.Unmarshal(b, &o); err != nil {
		return fmt.Errorf("%s: %w (run provision up again to rewrite it)", c.awsOutputsFile(), err)
	}
	c.printAWSOutputs(w, o)
	return nil
}

// printAWSOutputs prints o and the state's nodes with their instances.
func (c *cluster) printAWSOutputs(w io.Writer, o awsOutputs) {
	fmt.Fprintln(w, "Outputs:")
	for _, name := range slices.Sorted(maps.Keys(o.LoadBalancers)) {
		fmt.Fprintf(w, "  load balancer %-10s %s\n", name, o.LoadBalancers[name])
	}
	fmt.Fprintf(w, "  etcd load balancer       %s\n", o.EtcdDNS)
	fmt.Fprintf(w, "  bucket                   %s\n", o.Bucket)
	fmt.Fprintf(w, "  log group                %s\n", o.LogGroup)
	fmt.Fprintln(w, "  nodes:")
	for _, n := range c.state.Nodes {
		fmt.Fprintf(w, "    %-12s %-20s %-15s %s\n", n.Name, n.Instance, n.IP, o.Zones[n.Name])
	}
}

// writeInfraPlan writes what Stack.Plan says up would change in the
// infrastructure, one line per resource: create, update and drift lines,
// and resources kept as they are only with verbose (else counted). It
// makes read calls only.
func (t *awsTarget) writeInfraPlan(ctx context.Context, w io.Writer, verbose bool) (bool, error) {
	changes, err := t.infraChanges(ctx)
	if err != nil {
		return false, err
	}
	count := map[aws.Action]int{}
	fmt.Fprintln(w, "\nInfrastructure (aws):")
	for _, ch := range changes {
		count[ch.Action]++
		sign := map[aws.Action]string{aws.Create: "+", aws.Update: "~", aws.Drift: "!", aws.Keep: " "}[ch.Action]
		if ch.Action != aws.Keep || verbose {
			fmt.Fprintf(w, "  %s %s\n", sign, ch)
		}
	}
	fmt.Fprintf(w, "Infrastructure: %d to create, %d to update, %d drifted, %d unchanged.\n",
		count[aws.Create], count[aws.Update], count[aws.Drift], count[aws.Keep])
	return len(changes) > count[aws.Keep], nil
}

// machineName is the name the node's clusterd registers its machine
// under: its instance id (see awsnode.Identity), as Launch recorded it.
func (t *awsTarget) machineName(node string) string {
	t.c.keysMu.Lock()
	defer t.c.keysMu.Unlock()
	if n := t.c.state.Node(node); n != nil && n.Instance != "" {
		return n.Instance
	}
	return node
}

var _ providers.Sheller = (*awsTarget)(nil)

// Shell reaches a node over SSH at its instance's public address (its
// private one when it has none), as user core with the agent's keys (the
// cluster's ssh_authorized_keys, or the provider's key_pair); host keys
// are trusted on first use and recorded. The provider's allow_ssh_from
// must let this host in.
func (t *awsTarget) Shell(ctx context.Context, node, command string, in io.Reader, out, errOut io.Writer) (int, error) {
	list, err := t.instances(ctx, byTag(tagNode, node))
	if err != nil {
		return 0, err
	}
	if len(list) == 0 {
		return 0, fmt.Errorf("aws: node %s has no instance (none is tagged %s=%s); run provision up", node, tagNode, node)
	}
	addr := cmp.Or(list[0].public, list[0].ip.String())
	p := &ssh.Provider{Hosts: map[string]string{node: addr}, HostKeys: maps.Clone(t.c.state.HostKeys), OnNewHostKey: t.c.recordHostKey}
	code, err := p.Shell(ctx, node, command, in, out, errOut)
	if err != nil && errors.Is(err, syscall.ETIMEDOUT) {
		err = fmt.Errorf("%w (does the aws provider's allow_ssh_from include this host's address?)", err)
	}
	return code, err
}
