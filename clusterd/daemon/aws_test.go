package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/corral-dev/corral/bootstrap/awsnode/awsnodetest"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/spf13/cobra"
)

// An instance started with only --aws-bootstrap forms a one-member cluster
// named after its instance id, and a restart takes its saved identity
// without asking S3 again.
func TestAWSBootstrapFormsAOneNodeCluster(t *testing.T) {
	c := awsnodetest.New(t)
	const prefix = "corral/test/bootstrap/"
	c.Upload(t, prefix)
	in := c.Launch(t, 1)[0]
	// etcd must listen on the instance's address: a loopback address of
	// its own (all of 127/8 reaches lo) keeps the ports clear of other
	// tests on this machine.
	in.IP = fmt.Sprintf("127.%d.%d.%d", 10+rand.IntN(200), rand.IntN(250), 2+rand.IntN(250))
	in.IMDS = c.ServeIMDS(t, in)

	dir := t.TempDir()
	cfg := Config{DataDir: dir, NoOverlay: true, Driver: "exec",
		AWS: AWSConfig{Bootstrap: "s3://" + c.Bucket + "/" + prefix, EtcdMembers: 1, SDK: &c.Config, IMDSEndpoint: in.IMDS}}
	n, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	if n.cfg.Name != in.ID || n.cfg.IP.String() != in.IP || n.cfg.Mode != store.ModeInit || !n.Store.IsMember() {
		t.Errorf("started as %s %s mode %s member %v; want %s %s init member", n.cfg.Name, n.cfg.IP, n.cfg.Mode, n.Store.IsMember(), in.ID, in.IP)
	}
	if n.cfg.Overlay.AWSVPC == nil || n.cfg.Overlay.AWSVPC.InstanceID != in.ID {
		t.Fatalf("the aws-vpc backend is not configured for %s: %+v", in.ID, n.cfg.Overlay.AWSVPC)
	}
	// What the aws-vpc backend runs first: the instance's source/destination
	// check goes off.
	if err := n.cfg.Overlay.AWSVPC.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	attr, err := c.EC2.DescribeInstanceAttribute(context.Background(), &ec2.DescribeInstanceAttributeInput{InstanceId: &in.ID, Attribute: "sourceDestCheck"})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToBool(attr.SourceDestCheck.Value) {
		t.Error("the aws-vpc backend's Prepare left the source/destination check on")
	}
	resp, err := n.Store.Client.MemberList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Members) != 1 || resp.Members[0].Name != in.ID {
		t.Errorf("members %v, want the one member %s", resp.Members, in.ID)
	}

	// A restart takes the saved identity. (Checked on the configuration:
	// a second Start in this process would find the first one's exec
	// driver still holding its lock, which Node.Close leaves to process
	// exit.)
	before := len(c.Emu.Calls())
	again := cfg
	again.Log = slog.Default()
	if err := again.awsBootstrap(context.Background()); err != nil {
		t.Fatal(err)
	}
	if again.Name != in.ID || again.Mode != store.ModeInit || again.IP.String() != in.IP || again.Token != n.cfg.Token {
		t.Errorf("restarted as %s %s mode %s", again.Name, again.IP, again.Mode)
	}
	for _, call := range c.Emu.Calls()[before:] {
		if call.Service == "s3" {
			t.Errorf("the restart asked S3 again (%s): the saved identity should do", call.Action)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, awsIdentityFile)); err != nil {
		t.Error(err)
	}
}

func TestAWSBootstrapFlagConflicts(t *testing.T) {
	cmd := Command("test")
	cmd.SetArgs([]string{"--aws-bootstrap", "s3://b/p", "--name", "core-1"})
	cmd.SetOut(new(strings.Builder))
	cmd.SetErr(new(strings.Builder))
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error { return nil }
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "--name: --aws-bootstrap discovers it") {
		t.Errorf("--name with --aws-bootstrap: %v", err)
	}
	cfg := Config{DataDir: t.TempDir(), AWS: AWSConfig{Bootstrap: "s3:/nobucket"}}
	if _, err := Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), `--aws-bootstrap "s3:/nobucket": want s3://<bucket>/<prefix>`) {
		t.Errorf("bad --aws-bootstrap: %v", err)
	}
}
