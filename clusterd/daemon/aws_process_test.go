package daemon_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/bootstrap/awsnode/awsnodetest"
	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/internal/corralbin"
	"github.com/corral-dev/corral/internal/syncbuf"
)

// A clusterd process given only --aws-bootstrap and --etcd-members (the
// user data of every instance of an Auto Scaling group) on an "instance"
// of the emulated account forms a one-member cluster and registers itself
// under its instance id. The region comes from the metadata service, the
// endpoint and credentials from the standard environment variables.
func TestAWSBootstrapProcess(t *testing.T) {
	c := awsnodetest.New(t)
	c.Upload(t, awsPrefix)
	in := awsInstances(t, c, 1)[0]
	exited := startAWSClusterd(t, c, in, 1)
	waitAWSMachines(t, exited, in, []awsnodetest.Instance{in}, 1, 1)
}

// Four instances with the same user data boot at once: one cluster forms,
// with three voting members and one client.
func TestAWSBootstrapProcessesFormOneCluster(t *testing.T) {
	c := awsnodetest.New(t)
	c.Upload(t, awsPrefix)
	ins := awsInstances(t, c, 4)
	exited := make(chan error, len(ins))
	for _, in := range ins {
		go func() { exited <- <-startAWSClusterd(t, c, in, 3) }()
	}
	// Any node's view will do: each one's own certificate reads the registry.
	waitAWSMachines(t, exited, ins[0], ins, 4, 3)
}

const awsPrefix = "corral/test/bootstrap/"

// awsInstances launches n instances, each with a loopback address of its
// own (all of 127/8 reaches lo), which keeps etcd's ports clear of other
// tests on this machine, and its own metadata service.
func awsInstances(t *testing.T, c *awsnodetest.Cloud, n int) []awsnodetest.Instance {
	ins := c.Launch(t, n)
	base := fmt.Sprintf("127.%d.%d.", 10+rand.IntN(200), rand.IntN(250))
	for i := range ins {
		ins[i].IP = base + fmt.Sprint(10+i)
		ins[i].IMDS = c.ServeIMDS(t, ins[i])
	}
	return ins
}

// startAWSClusterd runs clusterd for in as its user data would, in a data
// dir of its own; the channel yields its exit. t.Cleanup stops it.
func startAWSClusterd(t *testing.T, c *awsnodetest.Cloud, in awsnodetest.Instance, members int) <-chan error {
	dir := filepath.Join(t.TempDir(), in.ID)
	cmd := exec.Command(corralbin.Path(t), "clusterd", "--aws-bootstrap", "s3://"+c.Bucket+"/"+awsPrefix,
		"--etcd-members", fmt.Sprint(members), "--data-dir", dir, "--no-overlay", "--driver", "exec")
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "AWS_") })
	cmd.Env = append(cmd.Env, "AWS_ENDPOINT_URL="+c.URL, "AWS_ACCESS_KEY_ID=AKIDTEST", "AWS_SECRET_ACCESS_KEY=SECRETTEST",
		"AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_EC2_METADATA_SERVICE_ENDPOINT="+in.IMDS)
	out := new(syncbuf.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var werr error
	go func() { werr = cmd.Wait(); close(done) }()
	exited := make(chan error, 1)
	go func() { <-done; exited <- fmt.Errorf("clusterd of %s exited: %v", in.ID, werr) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("clusterd of %s (%s):\n%s", in.ID, in.IP, out.String())
		}
	})
	return exited
}

// waitAWSMachines waits (60s at most) until the registry, read through
// in's certificate from the etcd of any of all (in may have become a
// client, which runs none: the election decides), lists n machines named
// by instance id, members of them voters; any clusterd exiting fails the
// test.
func waitAWSMachines(t *testing.T, exited <-chan error, in awsnodetest.Instance, all []awsnodetest.Instance, n, voters int) {
	t.Helper()
	dir := filepath.Join(filepath.Dir(t.TempDir()), "*", in.ID)
	deadline := time.Now().Add(60 * time.Second)
	var last []registry.Machine
	for {
		select {
		case err := <-exited:
			t.Fatal(err)
		default:
		}
		if dirs, _ := filepath.Glob(dir); len(dirs) == 1 {
			files := pki.Files{CA: filepath.Join(dirs[0], "pki", "ca.crt"), Cert: filepath.Join(dirs[0], "pki", "node.crt"), Key: filepath.Join(dirs[0], "pki", "node.key")}
			var endpoints []string
			for _, o := range all {
				endpoints = append(endpoints, store.ClientURL(net.ParseIP(o.IP), 0))
			}
			if ms, err := machines(files, endpoints); err == nil {
				last = ms
				members := 0
				for _, m := range ms {
					if m.Member {
						members++
					}
				}
				if len(ms) == n && members == voters && slices.ContainsFunc(ms, func(m registry.Machine) bool { return m.Name == in.ID && m.IP == in.IP }) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("within 60s, no %d machines with %d members; last seen: %+v", n, voters, last)
		}
		time.Sleep(200 * time.Millisecond) // polling a condition, with the deadline above
	}
}

// machines lists the registry through the node's own certificate.
func machines(files pki.Files, endpoints []string) ([]registry.Machine, error) {
	if _, _, _, err := files.Read(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cli, err := store.Connect(ctx, files, endpoints)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	ms, _, err := registry.List(ctx, cli)
	return ms, err
}
