package awsnode_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/corral-dev/corral/bootstrap/awsnode"
	"github.com/corral-dev/corral/bootstrap/awsnode/awsnodetest"
	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/store"
)

const prefix = "corral/test/bootstrap/"

func options(c *awsnodetest.Cloud, in awsnodetest.Instance, dir string) awsnode.Options {
	return awsnode.Options{Bucket: c.Bucket, Prefix: prefix, EtcdMembers: 3, DataDir: dir, AWS: &c.Config, IMDSEndpoint: in.IMDS}
}

// discoverAll runs Discover for every instance at once.
func discoverAll(t *testing.T, c *awsnodetest.Cloud, ins []awsnodetest.Instance, dirs []string) []awsnode.Identity {
	t.Helper()
	ids := make([]awsnode.Identity, len(ins))
	errs := make([]error, len(ins))
	var wg sync.WaitGroup
	for i, in := range ins {
		wg.Go(func() { ids[i], errs[i] = awsnode.Discover(context.Background(), options(c, in, dirs[i])) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestDiscoverElectsOneClusterFromConcurrentBoots(t *testing.T) {
	c := awsnodetest.New(t)
	ca, tok := c.Upload(t, prefix)
	ins := c.Launch(t, 6)
	dirs := make([]string, len(ins))
	for i := range dirs {
		dirs[i] = t.TempDir()
	}
	ids := discoverAll(t, c, ins, dirs)

	byMode := map[store.Mode][]awsnode.Identity{}
	var voters []string
	for i, id := range ids {
		if id.Name != ins[i].ID || id.IP.String() != ins[i].IP || id.Region != c.Emu.Region() || id.Zone != ins[i].Zone {
			t.Errorf("instance %s (%s) discovered itself as %s (%s) in %s/%s", ins[i].ID, ins[i].IP, id.Name, id.IP, id.Region, id.Zone)
		}
		if id.Token != tok {
			t.Errorf("%s: token %v, want %v", id.Name, id.Token, tok)
		}
		byMode[id.Mode] = append(byMode[id.Mode], id)
		if id.Mode != store.ModeClient {
			voters = append(voters, id.IP.String())
		}
	}
	if len(byMode[store.ModeInit]) != 1 || len(byMode[store.ModeJoin]) != 2 || len(byMode[store.ModeClient]) != 3 {
		t.Fatalf("roles: %d init, %d join, %d client; want 1, 2, 3", len(byMode[store.ModeInit]), len(byMode[store.ModeJoin]), len(byMode[store.ModeClient]))
	}
	init := byMode[store.ModeInit][0]
	if init.Slot != 0 || len(init.Servers) > 2 {
		t.Errorf("init: slot %d, servers %v", init.Slot, init.Servers)
	}
	b, err := os.ReadFile(init.CAFiles.CA)
	if err != nil {
		t.Fatal(err)
	}
	if h, _ := pki.HashPEM(b); h != ca.Hash() || !strings.HasPrefix(init.CAFiles.Key, dirs[slices.Index(ins, instanceOf(ins, init.Name))]) {
		t.Errorf("init's CA files %+v hold %s, want %s in its data dir", init.CAFiles, h, ca.Hash())
	}
	for _, id := range byMode[store.ModeJoin] {
		// A joiner joins through the voters that took their slots before
		// it, the initial member first.
		if id.Slot < 1 || len(id.Servers) < 1 || id.Servers[0] != init.IP.String() || slices.Contains(id.Servers, id.IP.String()) {
			t.Errorf("joiner %s: slot %d, servers %v; want the init %s first and not itself", id.Name, id.Slot, id.Servers, init.IP)
		}
		if id.CAFiles != (pki.Files{}) {
			t.Errorf("joiner %s got the CA key: %+v", id.Name, id.CAFiles)
		}
	}
	for _, id := range byMode[store.ModeClient] {
		if id.Slot != -1 || !sameSet(id.Servers, voters) {
			t.Errorf("client %s: slot %d, servers %v; want the voters %v", id.Name, id.Slot, id.Servers, voters)
		}
	}

	// Restarted (data dirs lost), every instance keeps its role and slot.
	again := discoverAll(t, c, ins, dirs)
	for i := range ids {
		if again[i].Mode != ids[i].Mode || again[i].Slot != ids[i].Slot {
			t.Errorf("%s restarted as %s slot %d, was %s slot %d", ins[i].ID, again[i].Mode, again[i].Slot, ids[i].Mode, ids[i].Slot)
		}
		if ids[i].Mode == store.ModeInit {
			continue
		}
		if mine := slices.Concat(again[i].Servers, []string{again[i].IP.String()}); ids[i].Mode == store.ModeJoin && !sameSet(mine, voters) {
			t.Errorf("restarted joiner %s: servers %v", ins[i].ID, again[i].Servers)
		}
	}
}

func TestDiscoverReclaimsTheSlotOfATerminatedVoterOnce(t *testing.T) {
	c := awsnodetest.New(t)
	c.Upload(t, prefix)
	first := c.Launch(t, 3)
	ids := discoverAll(t, c, first, []string{t.TempDir(), t.TempDir(), t.TempDir()})
	var gone, init awsnode.Identity
	for _, id := range ids {
		switch id.Slot {
		case 1:
			gone = id
		case 0:
			init = id
		}
	}
	c.Terminate(t, gone.Name)

	// Two replacements boot at once: one takes slot 1 and joins, the
	// other is a client; neither is told to reach the terminated voter.
	repl := c.Launch(t, 2)
	got := discoverAll(t, c, repl, []string{t.TempDir(), t.TempDir()})
	slices.SortFunc(got, func(a, b awsnode.Identity) int { return a.Slot - b.Slot })
	if got[0].Slot != -1 || got[0].Mode != store.ModeClient || got[1].Slot != 1 || got[1].Mode != store.ModeJoin {
		t.Fatalf("replacements: %s slot %d and %s slot %d; want a client and a joiner in slot 1", got[0].Mode, got[0].Slot, got[1].Mode, got[1].Slot)
	}
	// (EC2 may give a replacement the terminated one's address, so the
	// servers are checked against the live instances' addresses.)
	var live []string
	for _, in := range slices.Concat(first, repl) {
		if in.ID != gone.Name {
			live = append(live, in.IP)
		}
	}
	for _, id := range got {
		if !slices.Contains(id.Servers, init.IP.String()) || slices.ContainsFunc(id.Servers, func(ip string) bool { return !slices.Contains(live, ip) }) {
			t.Errorf("%s %s: servers %v; want the init %s and only live instances %v", id.Mode, id.Name, id.Servers, init.IP, live)
		}
	}

	// The initial member's replacement joins the existing cluster: only
	// the instance that created slot 0 starts a new one.
	c.Terminate(t, init.Name)
	next := c.Launch(t, 1)
	id, err := awsnode.Discover(context.Background(), options(c, next[0], t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if id.Slot != 0 || id.Mode != store.ModeJoin || id.CAFiles != (pki.Files{}) {
		t.Errorf("slot 0's replacement: %s slot %d, CA %+v; want join in slot 0 without the CA", id.Mode, id.Slot, id.CAFiles)
	}
}

func TestDiscoverErrors(t *testing.T) {
	c := awsnodetest.New(t)
	in := c.Launch(t, 1)[0]
	_, err := awsnode.Discover(context.Background(), options(c, in, t.TempDir()))
	if err == nil || !strings.Contains(err.Error(), "s3://test-bucket/"+prefix+"token does not exist") {
		t.Errorf("no bootstrap material: %v", err)
	}
	opts := options(c, in, t.TempDir())
	opts.IMDSEndpoint = "http://127.0.0.1:1"
	if _, err := awsnode.Discover(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "metadata service") {
		t.Errorf("no metadata service: %v", err)
	}
}

func TestIdentitySaveLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "identity.json")
	if _, err := awsnode.Load(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("load before save: %v", err)
	}
	c := awsnodetest.New(t)
	c.Upload(t, prefix)
	in := c.Launch(t, 1)[0]
	id, err := awsnode.Discover(context.Background(), options(c, in, t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := awsnode.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Name != id.Name || !back.IP.Equal(id.IP) || back.Mode != id.Mode || back.Token != id.Token || back.CAFiles != id.CAFiles || back.Slot != id.Slot {
		t.Errorf("loaded %+v, saved %+v", back, id)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("identity file mode %v, want 0600 (it holds the token)", st.Mode().Perm())
	}
}

func TestDisableSourceDestCheck(t *testing.T) {
	c := awsnodetest.New(t)
	in := c.Launch(t, 1)[0]
	if err := awsnode.DisableSourceDestCheck(context.Background(), c.EC2, in.ID); err != nil {
		t.Fatal(err)
	}
	out, err := c.EC2.DescribeInstanceAttribute(context.Background(), &ec2.DescribeInstanceAttributeInput{
		InstanceId: &in.ID, Attribute: "sourceDestCheck"})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToBool(out.SourceDestCheck.Value) {
		t.Error("source/destination check still on")
	}
	if err := awsnode.DisableSourceDestCheck(context.Background(), c.EC2, "i-0000000000000000"); err == nil || !strings.Contains(err.Error(), "i-0000000000000000") {
		t.Errorf("unknown instance: %v", err)
	}
}

func instanceOf(ins []awsnodetest.Instance, id string) awsnodetest.Instance {
	for _, in := range ins {
		if in.ID == id {
			return in
		}
	}
	return awsnodetest.Instance{}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
