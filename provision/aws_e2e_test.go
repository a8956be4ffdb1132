package provision_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/corral-dev/corral/clusterd/rebootlock"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/internal/awsboot"
	"github.com/corral-dev/corral/internal/awsemu"
	"github.com/corral-dev/corral/internal/corralbin"
	awsprov "github.com/corral-dev/corral/providers/aws"
	"github.com/corral-dev/corral/provision"
	"github.com/corral-dev/corral/provision/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// awsE2E is a cluster whose instances boot for real (internal/awsboot):
// provision's user data runs in a network namespace per instance, on a
// bridge that plays the VPC, and clusterd elects its etcd role through
// the emulated S3. It embeds the awsCluster helpers of aws_test.go.
type awsE2E struct {
	*awsCluster
	boot *awsboot.Booter
	vpc  netip.Prefix

	mu    sync.Mutex
	terms []termination // every TerminateInstanceInAutoScalingGroup, in order
}

// termination is what the cluster looked like when provision asked Auto
// Scaling to terminate an instance, seen before the call is served.
type termination struct {
	instance   string
	registered []string // machine names (instance ids) in the registry
	slots      []string // reboot semaphore holders
}

// newAWSE2E starts the emulator with its instances booted by awsboot,
// served to provision through a proxy that records the cluster's
// registry at each termination: the order of leaving and terminating is
// checked on the request itself, not on timing.
func newAWSE2E(t *testing.T) *awsE2E {
	t.Helper()
	awsemu.SetTestEnv(t)
	provision.SetAWSStackOptions(t, awsprov.Options{WaitDelay: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, ProfileWait: 30 * time.Second})
	vpc := awsboot.FreeVPC(t)
	b := awsboot.New(t, awsboot.Options{VPC: vpc, StopGrace: 3 * time.Second})
	e := awsemu.New(awsemu.Options{StateDelay: 50 * time.Millisecond, OnLaunch: b.OnLaunch, OnTerminate: b.OnTerminate})
	c := &awsE2E{boot: b, vpc: vpc}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Query APIs (Auto Scaling's among them) send a form; reading it
		// here leaves it parsed for the emulator (other bodies are not read).
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") &&
			r.ParseForm() == nil && r.PostForm.Get("Action") == "TerminateInstanceInAutoScalingGroup" {
			c.recordTermination(r.PostForm.Get("InstanceId"))
		}
		e.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		srv.Close()
		e.Close() // before the Booter's cleanup: no launch comes after it
	})
	b.Attach(e)
	dir := t.TempDir()
	cfg := awsemu.TestConfig(srv.URL)
	c.awsCluster = &awsCluster{t: t, emu: e, url: srv.URL, dir: dir, file: filepath.Join(dir, "demo.hcl"), bin: corralbin.Path(t),
		ec2: ec2.NewFromConfig(cfg), asg: autoscaling.NewFromConfig(cfg),
		s3: s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })}
	c.writeE2E(3, "")
	return c
}

// writeE2E writes the cluster's file: the core group at desired, with
// extra lines in the group.
func (c *awsE2E) writeE2E(desired int, group string) {
	c.t.Helper()
	hcl := fmt.Sprintf(`cluster "demo" {
  etcd_members = 3
}
provider "aws" {
  region   = "us-west-2"
  endpoint = %q
  vpc_cidr = %q
}
node_group "core" {
  desired_capacity = %d
  min_size         = 1
  max_size         = 6
  instance_type    = "t3.small"
  %s
}
`, c.url, c.vpc, desired, group)
	if err := os.WriteFile(c.file, []byte(hcl), 0o600); err != nil {
		c.t.Fatal(err)
	}
}

// upWait runs `provision up --auto-approve` (waiting for the nodes to
// join) in this process and returns its output.
func (c *awsE2E) upWait() string {
	c.t.Helper()
	var out bytes.Buffer
	start := time.Now()
	err := provision.Up(context.Background(), provision.UpOptions{Options: c.opts(&out), AutoApprove: true, Timeout: 90 * time.Second})
	if err != nil {
		c.t.Fatalf("up: %v\n%s", err, out.String())
	}
	c.t.Logf("up took %s", time.Since(start).Round(time.Millisecond))
	return out.String()
}

// client is a new admin client of the cluster, at the members the state
// has now (replacements change them); nil, with the test failed, if it
// can't connect. The caller closes it.
func (c *awsE2E) client() *clientv3.Client {
	dir := state.For(c.file, "demo")
	st, err := dir.Load()
	if err != nil {
		c.t.Errorf("reading the state: %v", err)
		return nil
	}
	var eps []string
	for _, n := range st.Members() {
		eps = append(eps, store.ClientURL(n.IP.AsSlice(), 0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := store.Connect(ctx, dir.AdminFiles(), eps)
	if err != nil {
		c.t.Errorf("connecting to the cluster at %v: %v", eps, err)
		return nil
	}
	return cli
}

// recordTermination notes the registry and the reboot semaphore as they
// are when provision asks for instance's termination.
func (c *awsE2E) recordTermination(instance string) {
	term := termination{instance: instance}
	if cli := c.client(); cli != nil {
		defer cli.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ms, _, err := registry.List(ctx, cli)
		if err != nil {
			c.t.Errorf("listing the registry at the termination of %s: %v", instance, err)
		}
		for _, m := range ms {
			term.registered = append(term.registered, m.Name)
		}
		if s, err := rebootlock.Get(ctx, cli); err == nil {
			term.slots = s.Holders
		}
	}
	c.mu.Lock()
	c.terms = append(c.terms, term)
	c.mu.Unlock()
}

// terminations returns the terminations recorded since the first skip.
func (c *awsE2E) terminations(skip int) []termination {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.terms[skip:])
}

// machines lists the registry's machine names, sorted.
func (c *awsE2E) machines() []string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli := c.client()
	if cli == nil {
		c.t.FailNow()
	}
	defer cli.Close()
	ms, _, err := registry.List(ctx, cli)
	if err != nil {
		c.t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	slices.Sort(out)
	return out
}

// voters lists the etcd voters' peer addresses' hosts (the instances' IPs).
func (c *awsE2E) voters() []string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli := c.client()
	if cli == nil {
		c.t.FailNow()
	}
	defer cli.Close()
	list, err := cli.MemberList(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	var out []string
	for _, m := range list.Members {
		if !m.IsLearner {
			out = append(out, m.Name)
		}
	}
	slices.Sort(out)
	return out
}

// nodeInstances maps the state's nodes to their instances.
func (c *awsE2E) nodeInstances() map[string]string {
	out := map[string]string{}
	for _, n := range c.state().Nodes {
		out[n.Name] = n.Instance
	}
	return out
}

// instanceIDs is the sorted instance ids of the state's nodes.
func (c *awsE2E) instanceIDs() []string {
	var out []string
	for _, id := range c.nodeInstances() {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// status runs `provision status` and returns the rows that show a
// registered machine.
func (c *awsE2E) status() (string, int) {
	c.t.Helper()
	var out bytes.Buffer
	if err := provision.Status(context.Background(), c.opts(&out)); err != nil {
		c.t.Fatalf("status: %v\n%s", err, out.String())
	}
	joined := 0
	for _, line := range strings.Split(out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], "core-") && strings.Contains(line, "…") {
			joined++
		}
	}
	return out.String(), joined
}

// TestAWSBootEndToEnd runs provision's real AWS user data on booted
// instances: up (waiting) makes a three-voter cluster elected through S3;
// scaling out adds a client with one UpdateAutoScalingGroup, scaling in
// takes the newest node out of the cluster before its instance goes; a
// changed user data replaces the nodes one at a time, each holding a
// reboot slot, each replacement joined before its node goes.
func TestAWSBootEndToEnd(t *testing.T) {
	c := newAWSE2E(t)

	// 1. Three instances with identical user data form the cluster.
	out := c.upWait()
	t.Log(out)
	c.checkNodes("core-1", "core-2", "core-3")
	ids := c.instanceIDs()
	if got := c.machines(); !slices.Equal(got, ids) {
		t.Fatalf("machines %v, want the nodes' instances %v", got, ids)
	}
	if v := c.voters(); len(v) != 3 {
		t.Errorf("etcd voters %v, want 3", v)
	}
	if st, n := c.status(); n != 3 {
		t.Errorf("status shows %d joined machines, want 3:\n%s", n, st)
	}
	var userData string
	for i, in := range c.boot.Running() {
		ud, err := c.boot.ReadFile(in.ID, "/etc/systemd/system/clusterd.service")
		if err != nil {
			t.Fatalf("%s: clusterd.service: %v", in.ID, err)
		}
		if i > 0 && string(ud) != userData {
			t.Errorf("%s's clusterd.service differs from the first instance's", in.ID)
		}
		userData = string(ud)
	}

	// 2. Scale out: one UpdateAutoScalingGroup, core-4 joins as a client.
	c.writeE2E(4, "")
	mark := len(c.emu.Calls())
	c.upWait()
	if n := countOf(c.mutating(mark), "autoscaling:UpdateAutoScalingGroup"); n != 1 {
		t.Errorf("scale-out made %d UpdateAutoScalingGroup calls, want 1: %v", n, c.mutating(mark))
	}
	c.checkNodes("core-1", "core-2", "core-3", "core-4")
	core4 := c.nodeInstances()["core-4"]
	if got := c.machines(); !slices.Contains(got, core4) || len(got) != 4 {
		t.Fatalf("machines %v, want 4 with core-4's %s", got, core4)
	}
	if v := c.voters(); len(v) != 3 || slices.Contains(v, core4) {
		t.Errorf("etcd voters %v: want 3, core-4 (%s) a client", v, core4)
	}
	if st, n := c.status(); n != 4 {
		t.Errorf("status shows %d joined machines after scaling out, want 4:\n%s", n, st)
	}

	// Scale in: core-4 leaves the cluster, then exactly its instance goes.
	c.writeE2E(3, "")
	skip := len(c.terminations(0))
	c.upWait()
	c.checkNodes("core-1", "core-2", "core-3")
	terms := c.terminations(skip)
	if len(terms) != 1 || terms[0].instance != core4 {
		t.Fatalf("scale-in terminated %+v, want only core-4's %s", terms, core4)
	}
	if slices.Contains(terms[0].registered, core4) {
		t.Errorf("core-4's instance %s was terminated while still registered: %v", core4, terms[0].registered)
	}
	if got := c.machines(); !slices.Equal(got, ids) {
		t.Errorf("machines after scale-in %v, want %v", got, ids)
	}

	// 3. New user data: the nodes are replaced one at a time.
	c.writeE2E(3, `file "/etc/corral/e2e-marker" {
    content = "v2"
  }`)
	skip = len(c.terminations(0))
	out = c.upWait()
	t.Log(out)
	terms = c.terminations(skip)
	if len(terms) != 3 {
		t.Errorf("the replacement terminated %d instances, want 3: %+v", len(terms), terms)
	}
	for _, term := range terms {
		if !slices.ContainsFunc(ids, func(id string) bool { return id == term.instance }) {
			t.Errorf("terminated %s, not one of the replaced nodes' instances %v", term.instance, ids)
		}
		if slices.Contains(term.registered, term.instance) || len(term.registered) != 3 {
			t.Errorf("at the termination of %s the registry had %v: want it gone and its replacement joined (3 machines)", term.instance, term.registered)
		}
		if len(term.slots) != 1 || !strings.HasPrefix(term.slots[0], "provision/core-") {
			t.Errorf("at the termination of %s the reboot slots were held by %v, want one replacement's", term.instance, term.slots)
		}
	}
	if got := c.machines(); len(got) != 3 {
		t.Errorf("machines after the replacement: %v, want 3", got)
	}
	// The state's members are the voters: a replacement that joined as a
	// client and was promoted in its node's place is recorded as one.
	var members []string
	for _, n := range c.state().Members() {
		members = append(members, n.Instance)
	}
	slices.Sort(members)
	if v := c.voters(); len(v) != 3 || !slices.Equal(v, members) {
		t.Errorf("etcd voters after the replacement: %v, want 3, the state's members %v", v, members)
	}
	lt, err := c.ec2.DescribeLaunchTemplates(context.Background(), &ec2.DescribeLaunchTemplatesInput{LaunchTemplateNames: []string{"demo-core"}})
	if err != nil || len(lt.LaunchTemplates) != 1 || *lt.LaunchTemplates[0].LatestVersionNumber != 2 {
		t.Errorf("launch template demo-core: %v, %+v; want version 2", err, lt)
	}
	if st, n := c.status(); n != 3 {
		t.Errorf("status shows %d joined machines after the replacement, want 3:\n%s", n, st)
	}
	c.emu.WaitHooks() // the last terminated instance is stopped
	running := c.boot.Running()
	if len(running) != 3 {
		t.Errorf("%d instances running after the replacement, want 3", len(running))
	}
	for _, in := range running {
		if b, err := c.boot.ReadFile(in.ID, "/etc/corral/e2e-marker"); err != nil || string(b) != "v2" {
			t.Errorf("%s does not boot the new user data: e2e-marker %q, %v", in.ID, b, err)
		}
	}
}

// TestAWSBootKilledUpConverges kills `provision up` (the binary) while the
// instances boot, runs it again, and finds the same three-node cluster an
// unbroken run makes; down then removes everything tagged with it.
func TestAWSBootKilledUpConverges(t *testing.T) {
	c := newAWSE2E(t)
	lines := upKilledWhen(t, c.bin, c.file, func(line string) bool { return strings.Contains(line, "booting") })
	t.Logf("killed at %q", lines[len(lines)-1])
	out := strings.Join(upKilledWhen(t, c.bin, c.file, nil), "\n")
	c.checkNodes("core-1", "core-2", "core-3")
	if got, want := c.machines(), c.instanceIDs(); !slices.Equal(got, want) {
		t.Errorf("machines %v, want the nodes' instances %v\n%s", got, want, out)
	}
	if v := c.voters(); len(v) != 3 {
		t.Errorf("etcd voters %v, want 3", v)
	}
	t.Log(c.down(false))
	c.emu.WaitHooks()
	c.assertNothingLeft(true)
	if running := c.boot.Running(); len(running) > 0 {
		t.Errorf("instances still booted after down: %+v", running)
	}
}
