package provision_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/backup"
	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/provision"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var helloUnits = []string{"hello@1.service", "hello@2.service", "hello@3.service"}

// activeHellos maps each active hello to the machine it runs on.
func activeHellos(s *unitstore.Snapshot) map[string]string {
	out := map[string]string{}
	for _, n := range helloUnits {
		if u := s.Units[n]; u != nil {
			for _, st := range u.States {
				if st.Active == "active" {
					out[n] = st.Machine
				}
			}
		}
	}
	return out
}

// leasesByMachine waits until n machines hold an overlay subnet.
func leasesByMachine(t *testing.T, cli *clientv3.Client, n int) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := make(chan map[string]string, 1)
	go subnet.Watch(ctx, cli, func(ls []subnet.Lease) {
		if len(ls) == n {
			m := map[string]string{}
			for _, l := range ls {
				m[l.MachineID] = l.Subnet.String()
			}
			select {
			case got <- m:
			default:
			}
		}
	})
	select {
	case m := <-got:
		return m
	case <-ctx.Done():
		t.Fatalf("%d overlay leases not there within a minute", n)
		return nil
	}
}

// TestBackupRestore: a 3-member cluster with keys, running units and
// overlay leases is snapshotted by its elected machine on schedule and by
// `provision backup`, removed, and restored from the snapshot into a new
// etcd cluster: every key, unit and lease is back, each unit runs again
// on the node (machine id) it ran on, and the cluster id is new.
func TestBackupRestore(t *testing.T) {
	c := clustertest.Prepare(t, clustertest.Options{Nodes: 3, Network: `cidr = "10.231.0.0/16"`})
	dest := t.TempDir()
	f, err := os.OpenFile(c.File, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "backup {\n  schedule    = \"1h\"\n  keep        = 2\n  destination = \"dir:%s\"\n}\n", dest)
	f.Close()
	c.Up()
	ctx := context.Background()

	keys := map[string]string{}
	for i := range 50 {
		k, v := fmt.Sprintf("/app/config/k%02d", i), fmt.Sprintf("value %d", i)
		keys[k] = v
		if _, err := c.Admin.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	_, file, _, _ := runtime.Caller(0)
	units := filepath.Join(filepath.Dir(file), "..", "examples", "units")
	args := []string{"start"}
	for _, n := range helloUnits {
		args = append(args, filepath.Join(units, n))
	}
	if out, errOut, code := c.Ctl(args...); code != 0 {
		t.Fatalf("start (exit %d): %s%s", code, out, errOut)
	}
	before := activeHellos(c.WaitUnits("three hellos active", func(s *unitstore.Snapshot) bool { return len(activeHellos(s)) == 3 }))
	subnets := leasesByMachine(t, c.Admin, 3)
	oldCluster := clusterID(t, c.Admin)

	// The elected machine took the first scheduled snapshot as soon as
	// the backup block arrived.
	last := waitRecord(t, c.Admin)
	if !strings.HasPrefix(last.Location, dest+"/"+c.Name+"-") || last.Machine == "" {
		t.Errorf("scheduled snapshot record %+v: want a file in %s taken by a machine", last, dest)
	}
	if _, err := backup.Verify(last.Location); err != nil {
		t.Errorf("the scheduled snapshot does not verify: %v", err)
	}

	// provision backup, to the block's destination and to a file.
	out := runProvision(t, c, "backup", c.File)
	if !strings.Contains(out, "sha256 ") || !strings.Contains(out, dest+"/") {
		t.Errorf("backup printed:\n%s", out)
	}
	snap := filepath.Join(t.TempDir(), "snap.db")
	out = runProvision(t, c, "backup", c.File, "--to", snap)
	info, err := backup.Verify(snap)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, snap) || !strings.Contains(out, info.SHA256) || !strings.Contains(out, fmt.Sprintf("revision %d", info.Revision)) {
		t.Errorf("backup --to printed:\n%s\nwant %s, its sha256 %s and revision %d", out, snap, info.SHA256, info.Revision)
	}
	if names, _ := backup.DirDestination(dest).List(ctx); len(names) != 2 {
		t.Errorf("keep = 2, but %s holds %v", dest, names)
	}
	last = waitRecord(t, c.Admin)
	if out := runProvision(t, c, "status", c.File); !strings.Contains(out, fmt.Sprintf("backup       last snapshot %s", last.Time.Format(time.RFC3339))) ||
		!strings.Contains(out, last.Location) {
		t.Errorf("status does not show the last snapshot (%s at %s):\n%s", last.Location, last.Time.Format(time.RFC3339), out)
	}

	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	ropts := provision.RestoreOptions{
		UpOptions: provision.UpOptions{Options: provision.Options{File: c.File, Out: &log, Err: &log, Binary: c.Binary}, Timeout: time.Minute},
		From:      snap,
	}
	start := time.Now()
	if err := provision.Restore(ctx, ropts); err != nil {
		t.Fatalf("restore: %v\n%s", err, log.String())
	}
	t.Logf("restored in %.1fs:\n%s", time.Since(start).Seconds(), log.String())
	if err := provision.Restore(ctx, ropts); err == nil || !strings.Contains(err.Error(), "provision down") {
		t.Errorf("a second restore onto the running cluster: %v; want a refusal that says to run provision down", err)
	}
	c.Up() // converges nothing; connects the test's admin client

	resp, err := c.Admin.Get(ctx, "/app/config/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != len(keys) {
		t.Errorf("%d keys back, want %d", len(resp.Kvs), len(keys))
	}
	for _, kv := range resp.Kvs {
		if keys[string(kv.Key)] != string(kv.Value) {
			t.Errorf("%s = %q, want %q", kv.Key, kv.Value, keys[string(kv.Key)])
		}
	}
	if id := clusterID(t, c.Admin); id == oldCluster {
		t.Errorf("the restored cluster kept the old cluster id %x", id)
	}
	if ms, err := c.Admin.MemberList(ctx); err != nil || len(ms.Members) != 3 {
		t.Errorf("members after restore: %v, %v; want 3", ms, err)
	}
	// The nodes took back their machine ids, so the units' machines are
	// the same three; which runs where may change, as a node that joins
	// later than the engine's grace period has its units moved.
	after := activeHellos(c.WaitUnits("three hellos active again on three of the nodes", func(s *unitstore.Snapshot) bool {
		a := activeHellos(s)
		on := map[string]bool{}
		for _, m := range a {
			if _, ok := subnets[m]; ok {
				on[m] = true
			}
		}
		return len(on) == 3
	}))
	t.Logf("units before %v, after %v", before, after)
	if got := leasesByMachine(t, c.Admin, 3); fmt.Sprint(got) != fmt.Sprint(subnets) {
		t.Errorf("overlay leases after restore %v, want the same machines and subnets as before, %v", got, subnets)
	}
}

func clusterID(t *testing.T, cli *clientv3.Client) uint64 {
	t.Helper()
	resp, err := cli.MemberList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.ClusterId
}

// waitRecord watches for the first scheduled snapshot's record.
func waitRecord(t *testing.T, cli *clientv3.Client) *backup.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for {
		resp, err := cli.Get(ctx, backup.LastKey)
		if err != nil {
			t.Fatalf("waiting for %s: %v", backup.LastKey, err)
		}
		if last, _, err := backup.ReadRecords(ctx, cli); err == nil && last != nil {
			return last
		}
		select {
		case <-cli.Watch(ctx, backup.LastKey, clientv3.WithRev(resp.Header.Revision+1)):
		case <-ctx.Done():
			t.Fatalf("no scheduled snapshot recorded at %s within a minute", backup.LastKey)
		}
	}
}

// runProvision runs the binary as a user would and returns its output.
func runProvision(t *testing.T, c *clustertest.Cluster, args ...string) string {
	t.Helper()
	out, err := exec.Command(c.Binary, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("provision %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRestoreFewerNodes restores a 3-node cluster whose units come from a
// service block into a file that asks for 2 nodes: up adopts the
// snapshot's units as its own, the two nodes keep their machines and
// subnets, the third machine's subnet is released, and the service runs.
func TestRestoreFewerNodes(t *testing.T) {
	c := clustertest.Prepare(t, clustertest.Options{Nodes: 3, Network: `cidr = "10.232.0.0/16"`})
	_, file, _, _ := runtime.Caller(0)
	unit, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "examples", "units", "hello@.service"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(c.File), "hello@.service"), unit, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(c.File, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "service \"hello@.service\" {\n  source    = \"hello@.service\"\n  instances = 2\n}\n")
	f.Close()
	c.Up()
	subnets := leasesByMachine(t, c.Admin, 3)
	ids := map[string]string{}
	ms, err := c.Admin.Get(context.Background(), "/corral/machines/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil || len(ms.Kvs) != 3 {
		t.Fatalf("machines: %v %v", ms, err)
	}
	for _, n := range c.Nodes() {
		id, err := os.ReadFile(filepath.Join(c.Dir().NodeDir(n.Name), "machine-id"))
		if err != nil {
			t.Fatal(err)
		}
		ids[n.Name] = strings.TrimSpace(string(id))
	}
	snap := filepath.Join(t.TempDir(), "snap.db")
	runProvision(t, c, "backup", c.File, "--to", snap)
	if err := c.Down(); err != nil {
		t.Fatal(err)
	}
	c.Edit("desired_capacity = 3", "desired_capacity = 2")
	var log bytes.Buffer
	err = provision.Restore(context.Background(), provision.RestoreOptions{
		UpOptions: provision.UpOptions{Options: provision.Options{File: c.File, Out: &log, Err: &log, Binary: c.Binary}, Timeout: time.Minute},
		From:      snap,
	})
	if err != nil {
		t.Fatalf("restore: %v\n%s", err, log.String())
	}
	c.Up()
	gone := ids["core-3"]
	if !strings.Contains(log.String(), fmt.Sprintf("subnet %s released (machine %.8s", subnets[gone], gone)) {
		t.Errorf("restore did not report releasing core-3's subnet %s:\n%s", subnets[gone], log.String())
	}
	got := leasesByMachine(t, c.Admin, 2)
	for _, n := range []string{"core-1", "core-2"} {
		if got[ids[n]] != subnets[ids[n]] {
			t.Errorf("%s (machine %s) holds %q after restore, want its subnet %s", n, ids[n], got[ids[n]], subnets[ids[n]])
		}
	}
	c.WaitUnits("hello@1 and hello@2 active on the two nodes", func(s *unitstore.Snapshot) bool {
		a := activeHellos(s)
		return len(a) == 2 && a["hello@1.service"] != a["hello@2.service"] &&
			(a["hello@1.service"] == ids["core-1"] || a["hello@1.service"] == ids["core-2"]) &&
			(a["hello@2.service"] == ids["core-1"] || a["hello@2.service"] == ids["core-2"])
	})
}
