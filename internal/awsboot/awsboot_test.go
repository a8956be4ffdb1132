package awsboot

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	s3types "github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/coreos/ignition/v2/config/v3_4/types"
	"github.com/corral-dev/corral/internal/awsboot/guest"
	"github.com/corral-dev/corral/internal/awsemu"
	"github.com/corral-dev/corral/internal/hostnet"
)

// account is an emulated account with one VPC and subnet.
type account struct {
	cfg    aws.Config
	ec2    *ec2.Client
	s3     *s3.Client
	subnet string
}

// newAccount builds the VPC vpc (its first /24 as the subnet) in the
// emulator at url, through the real SDK.
func newAccount(t *testing.T, e *awsemu.Emulator, url string, vpc netip.Prefix) *account {
	t.Helper()
	ctx := context.Background()
	a := &account{cfg: awsemu.TestConfig(url)}
	a.cfg.Region = e.Region()
	a.ec2 = ec2.NewFromConfig(a.cfg)
	a.s3 = s3.NewFromConfig(a.cfg, func(o *s3.Options) { o.UsePathStyle = true })
	v, err := a.ec2.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String(vpc.String())})
	if err != nil {
		t.Fatal(err)
	}
	subnet := netip.PrefixFrom(vpc.Addr(), 24)
	sn, err := a.ec2.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: v.Vpc.VpcId, CidrBlock: aws.String(subnet.String()),
		AvailabilityZone: aws.String(e.Region() + "a")})
	if err != nil {
		t.Fatal(err)
	}
	a.subnet = *sn.Subnet.SubnetId

	// The role whose credentials the instances get from IMDS: "node".
	ic := iam.NewFromConfig(a.cfg)
	trust := `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`
	mustDo(t)(ic.CreateRole(ctx, &iam.CreateRoleInput{RoleName: aws.String("node"), AssumeRolePolicyDocument: &trust}))
	mustDo(t)(ic.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{InstanceProfileName: aws.String("node")}))
	mustDo(t)(ic.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: aws.String("node"), RoleName: aws.String("node")}))
	// The bucket "boot".
	mustDo(t)(a.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("boot"),
		CreateBucketConfiguration: &s3types.CreateBucketConfiguration{LocationConstraint: s3types.BucketLocationConstraint(e.Region())}}))
	return a
}

// put puts an object in the bucket "boot".
func (a *account) put(t *testing.T, key string, data []byte) {
	t.Helper()
	mustDo(t)(a.s3.PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String("boot"), Key: &key, Body: bytes.NewReader(data)}))
}

// run launches one instance with the role "node" and the user data (an
// Ignition config), and returns its id once it is booting.
func (a *account) run(t *testing.T, e *awsemu.Emulator, cfg types.Config) string {
	t.Helper()
	cfg.Ignition.Version = "3.4.0"
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	in := &ec2.RunInstancesInput{ImageId: aws.String("ami-0123456789abcdef0"), MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SubnetId: &a.subnet, UserData: aws.String(base64.StdEncoding.EncodeToString(data)),
		IamInstanceProfile: &ec2types.IamInstanceProfileSpecification{Name: aws.String("node")}}
	out, err := a.ec2.RunInstances(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	e.WaitHooks()
	return *out.Instances[0].InstanceId
}

// userData is the Ignition config every instance of the group gets: a file
// in a data: URL, a file from S3, and a service that copies both into
// /var/lib/hello/out with the region its environment gives.
func userData(t *testing.T, hello, s3URL string) string {
	t.Helper()
	mode := 0o644
	enabled := true
	unit := `[Unit]
Description=hello

[Service]
ExecStartPre=/bin/mkdir -p /var/lib/hello
ExecStart=/bin/sh -c 'cat ` + hello + ` /etc/corral/from-s3 > /var/lib/hello/out.tmp && echo "region=${AWS_REGION}" >> /var/lib/hello/out.tmp && mv /var/lib/hello/out.tmp /var/lib/hello/out && echo hello is up && exec sleep 100000'
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
`
	cfg := types.Config{
		Ignition: types.Ignition{Version: "3.4.0"},
		Storage: types.Storage{Files: []types.File{
			{Node: types.Node{Path: hello}, FileEmbedded1: types.FileEmbedded1{Mode: &mode,
				Contents: types.Resource{Source: aws.String("data:,hello%20from%20data%0A")}}},
			{Node: types.Node{Path: "/etc/corral/from-s3"}, FileEmbedded1: types.FileEmbedded1{Mode: &mode,
				Contents: types.Resource{Source: aws.String(s3URL)}}},
		}},
		Systemd: types.Systemd{Units: []types.Unit{{Name: "hello.service", Enabled: &enabled, Contents: &unit}}},
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestBootAutoScalingGroup boots the two instances of an Auto Scaling
// group from Ignition user data, scales in to one, and checks that nothing
// is left on the host afterwards.
func TestBootAutoScalingGroup(t *testing.T) {
	vpc := FreeVPC(t)
	var prefix, bridge string
	seen := map[int]string{} // every process the instances ran: its start time
	t.Run("boot", func(t *testing.T) {
		ctx := context.Background()
		b, e, url := Start(t, Options{VPC: vpc}, awsemu.Options{})
		prefix, bridge = b.NamespacePrefix(), b.Bridge()
		a := newAccount(t, e, url, vpc)

		a.put(t, "files/from-s3", []byte("from s3\n"))

		// A file name of this run's own: the host must not get it.
		hello := "/etc/corral/awsboot-hello-" + b.id
		mustDo(t)(a.ec2.CreateLaunchTemplate(ctx, &ec2.CreateLaunchTemplateInput{LaunchTemplateName: aws.String("nodes"),
			LaunchTemplateData: &ec2types.RequestLaunchTemplateData{ImageId: aws.String("ami-0123456789abcdef0"),
				InstanceType:       ec2types.InstanceTypeT3Small,
				IamInstanceProfile: &ec2types.LaunchTemplateIamInstanceProfileSpecificationRequest{Name: aws.String("node")},
				UserData:           aws.String(base64.StdEncoding.EncodeToString([]byte(userData(t, hello, "s3://boot/files/from-s3"))))}}))
		as := autoscaling.NewFromConfig(a.cfg)
		mustDo(t)(as.CreateAutoScalingGroup(ctx, &autoscaling.CreateAutoScalingGroupInput{AutoScalingGroupName: aws.String("nodes"),
			LaunchTemplate: &astypes.LaunchTemplateSpecification{LaunchTemplateName: aws.String("nodes"), Version: aws.String("$Latest")},
			MinSize:        aws.Int32(0), MaxSize: aws.Int32(3), DesiredCapacity: aws.Int32(2), VPCZoneIdentifier: &a.subnet}))
		e.WaitHooks()

		running := b.Running()
		if len(running) != 2 {
			t.Fatalf("%d instances running after desired capacity 2: %+v", len(running), b.Instances())
		}
		if running[0].IP == running[1].IP {
			t.Fatalf("both instances have the IP %s", running[0].IP)
		}
		want := "hello from data\nfrom s3\nregion=" + e.Region() + "\n"
		for _, in := range running {
			st := b.WaitBooted(in.ID, 60*time.Second)
			if st.Instance != in.ID || st.IP != in.IP.String() {
				t.Errorf("instance %s (%s) says it is %s (%s)", in.ID, in.IP, st.Instance, st.IP)
			}
			if u := st.Units["hello.service"]; u.Active != "active" || u.Sub != "running" {
				t.Errorf("%s: hello.service is %+v, want active/running", in.ID, u)
			}
			got := waitFile(t, b, in.ID, "/var/lib/hello/out", 20*time.Second)
			if got != want {
				t.Errorf("%s: /var/lib/hello/out = %q, want %q", in.ID, got, want)
			}
			// The instance's files are in its overlay, not on the host.
			if _, err := os.Stat(hello); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the host has the instance's %s (stat: %v)", hello, err)
			}
			upper := filepath.Join(in.Dir, "overlay", "etc", "upper", strings.TrimPrefix(hello, "/etc/"))
			if data, err := os.ReadFile(upper); err != nil || string(data) != "hello from data\n" {
				t.Errorf("%s: %s = %q, %v; want the data: URL's content", in.ID, upper, data, err)
			}
			// Units' output reaches the console.
			poll(t, 10*time.Second, in.ID+"'s console showing hello.service's output", func() bool {
				return strings.Contains(b.Console(in.ID), "hello.service: ") && strings.Contains(b.Console(in.ID), "hello is up")
			})
		}
		// The instances reach each other on their private IPs.
		for i, from := range running {
			to := running[1-i]
			st, err := b.StatusFrom(ctx, from.ID, to.ID)
			if err != nil || st.Instance != to.ID {
				t.Errorf("from %s (%s), %s's status: %+v, %v", from.ID, from.IP, to.ID, st, err)
			}
		}

		// Scale in: one instance goes, with all its processes.
		for _, in := range running {
			pids, err := hostnet.PIDs(in.Namespace)
			if err != nil || len(pids) < 2 {
				t.Fatalf("%s: processes %v, %v: want the boot program and its unit", in.ID, pids, err)
			}
			for _, pid := range pids {
				seen[pid] = startTime(pid)
			}
		}
		mustDo(t)(as.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String("nodes"),
			DesiredCapacity: aws.Int32(1)}))
		e.WaitHooks()
		left := b.Running()
		if len(left) != 1 {
			t.Fatalf("%d instances running after desired capacity 1: %+v", len(left), b.Instances())
		}
		for _, in := range b.Instances() {
			if in.ID == left[0].ID {
				continue
			}
			if !in.Terminated || hostnet.Exists(in.Namespace) || linkExists(in.HostVeth) {
				t.Errorf("terminated %s: Terminated=%v, namespace %s exists=%v, veth %s exists=%v",
					in.ID, in.Terminated, in.Namespace, hostnet.Exists(in.Namespace), in.HostVeth, linkExists(in.HostVeth))
			}
			if err := syscall.Kill(in.PID, 0); !errors.Is(err, syscall.ESRCH) {
				t.Errorf("terminated %s: its boot program (pid %d) is alive (%v)", in.ID, in.PID, err)
			}
		}
		if st := b.WaitBooted(left[0].ID, 10*time.Second); st.Instance != left[0].ID {
			t.Errorf("the instance left is %+v", st)
		}
	})

	// The subtest's cleanup has run: nothing of it is left.
	if nss, err := hostnet.Namespaces(prefix); err != nil || len(nss) > 0 {
		t.Errorf("namespaces left: %v, %v", nss, err)
	}
	if linkExists(bridge) {
		t.Errorf("bridge %s left", bridge)
	}
	for pid, start := range seen {
		if start != "" && startTime(pid) == start {
			t.Errorf("process %d of an instance is alive", pid)
		}
	}
}

// TestBootErrors: an instance that can't boot says why in its status: user
// data that is not Ignition, or an s3:// source without an instance
// profile to read it with.
func TestBootErrors(t *testing.T) {
	vpc := FreeVPC(t)
	b, e, url := Start(t, Options{VPC: vpc}, awsemu.Options{})
	a := newAccount(t, e, url, vpc)
	a.put(t, "files/from-s3", []byte("from s3\n"))
	for _, tc := range []struct {
		name     string
		userData string
		want     []string
	}{
		{"cloud-config", "#cloud-config\nhostname: x\n", []string{"user data", "cloud-config", "Ignition"}},
		{"a path outside the overlays", `{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/awsboot-nowhere/x","contents":{"source":"data:,x"}}]}}`,
			[]string{"/awsboot-nowhere/x", "would change the host"}},
		{"s3 without a role", userData(t, "/etc/corral/x", "s3://boot/files/from-s3"),
			[]string{"/etc/corral/from-s3", "s3://boot/files/from-s3", "instance profile"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := a.ec2.RunInstances(context.Background(), &ec2.RunInstancesInput{ImageId: aws.String("ami-0123456789abcdef0"),
				MinCount: aws.Int32(1), MaxCount: aws.Int32(1), SubnetId: &a.subnet,
				UserData: aws.String(base64.StdEncoding.EncodeToString([]byte(tc.userData)))})
			if err != nil {
				t.Fatal(err)
			}
			e.WaitHooks()
			id := *out.Instances[0].InstanceId
			var st guest.Status
			poll(t, 30*time.Second, id+" reporting its boot error", func() bool {
				st, err = b.Status(context.Background(), id)
				return err == nil && st.Phase == guest.PhaseError
			})
			t.Logf("boot error: %s", st.Error)
			for _, w := range tc.want {
				if !strings.Contains(st.Error, w) {
					t.Errorf("boot error %q: want it to name %q", st.Error, w)
				}
			}
			if !strings.Contains(b.Console(id), st.Error) {
				t.Errorf("the console does not show the error %q:\n%s", st.Error, b.Console(id))
			}
		})
	}
}

// TestBootCorralFromS3 installs the corral binary under test from S3, as
// provision's AWS user data does (s3:// source, sha512 verification,
// /opt/bin), behind a pointer config (ignition.config.replace, as
// provision's user data is when the config is over 16 KiB), and runs it
// from a unit.
func TestBootCorralFromS3(t *testing.T) {
	vpc := FreeVPC(t)
	b, e, url := Start(t, Options{VPC: vpc}, awsemu.Options{})
	a := newAccount(t, e, url, vpc)
	bin, err := os.ReadFile(b.opts.Binary)
	if err != nil {
		t.Fatal(err)
	}
	a.put(t, "assets/clusterd", bin)
	sum := sha512.Sum512(bin)
	mode, yes := 0o755, true
	unit := "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/opt/bin/clusterd --help\n"
	full, err := json.Marshal(types.Config{Ignition: types.Ignition{Version: "3.4.0"},
		Storage: types.Storage{Files: []types.File{{Node: types.Node{Path: "/opt/bin/clusterd"}, FileEmbedded1: types.FileEmbedded1{Mode: &mode,
			Contents: types.Resource{Source: aws.String("s3://boot/assets/clusterd"),
				Verification: types.Verification{Hash: aws.String("sha512-" + hex.EncodeToString(sum[:]))}}}}}},
		Systemd: types.Systemd{Units: []types.Unit{{Name: "corral-check.service", Enabled: &yes, Contents: &unit}}}})
	if err != nil {
		t.Fatal(err)
	}
	a.put(t, "userdata/core.ign", full)
	fullSum := sha512.Sum512(full)
	start := time.Now()
	id := a.run(t, e, types.Config{Ignition: types.Ignition{Config: types.IgnitionConfig{Replace: types.Resource{
		Source:       aws.String("s3://boot/userdata/core.ign"),
		Verification: types.Verification{Hash: aws.String("sha512-" + hex.EncodeToString(fullSum[:]))}}}}})
	st := b.WaitBooted(id, 60*time.Second)
	t.Logf("booted with a %d MiB binary from S3 in %s", len(bin)>>20, time.Since(start).Round(time.Millisecond))
	if u := st.Units["corral-check.service"]; u.Active != "active" || u.Sub != "exited" {
		t.Errorf("corral-check.service is %+v, want active/exited", u)
	}
	poll(t, 10*time.Second, "clusterd's help on the console", func() bool {
		return strings.Contains(b.Console(id), "corral-check.service: ") && strings.Contains(b.Console(id), "clusterd runs on every machine")
	})
	if _, err := os.Stat("/opt/bin/clusterd"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the host has the instance's /opt/bin/clusterd (stat: %v)", err)
	}
}

// waitFile polls for the instance's file p to exist, up to timeout.
func waitFile(t *testing.T, b *Booter, id, p string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		data, err := b.ReadFile(id, p)
		if err == nil {
			return string(data)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s: %v after %s\n%s", id, p, err, timeout, b.Console(id))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// poll waits up to timeout for cond, checked every 100ms.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startTime is the start time of process pid (field 22 of its stat), ""
// if there is no such process: a pid and its start time name a process
// even when pids are reused.
func startTime(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command (field 2) may hold spaces; fields after its ')' don't.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

func linkExists(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// mustDo fails the test if an SDK call failed.
func mustDo(t *testing.T) func(any, error) {
	return func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}
