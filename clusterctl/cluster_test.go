package clusterctl_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/clustertest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The CoreOS walkthrough against a real cluster, through the real binary:
// list-machines, set with a TTL, get, expiry, update || set, members.
func TestClusterctlAgainstACluster(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Metadata: `{ role = "web" }`})

	out, _, code := c.Ctl("list-machines")
	if code != 0 || !strings.Contains(out, "role=web") || strings.Count(out, "...") != 3 {
		t.Fatalf("list-machines (exit %d):\n%s", code, out)
	}
	out, _, _ = c.Ctl("list-machines", "--full")
	if strings.Contains(out, "...") {
		t.Fatalf("--full still truncates ids:\n%s", out)
	}

	// The TTL demo: set --ttl 3; get at once succeeds; once the key expires
	// (awaited by watching it), get fails with v2's message and exit code 4.
	ctx := context.Background()
	cur, err := c.Admin.Get(ctx, "/foo/bar")
	if err != nil {
		t.Fatal(err)
	}
	w := c.Admin.Watch(ctx, "/foo/bar", clientv3.WithRev(cur.Header.Revision+1))
	if out, errOut, code := c.Ctl("set", "/foo/bar", `{ "baz": "quux" }`, "--ttl", "3"); code != 0 {
		t.Fatalf("set: exit %d: %s %s", code, out, errOut)
	}
	if out, _, code := c.Ctl("get", "/foo/bar"); code != 0 || strings.TrimSpace(out) != `{ "baz": "quux" }` {
		t.Fatalf("get right after set: exit %d, %q", code, out)
	}
	deadline := time.After(30 * time.Second)
	for deleted := false; !deleted; {
		select {
		case r := <-w:
			for _, ev := range r.Events {
				deleted = deleted || ev.Type == clientv3.EventTypeDelete
			}
		case <-deadline:
			t.Fatal("the key with --ttl 3 did not expire")
		}
	}
	_, errOut, code := c.Ctl("get", "/foo/bar")
	if code != 4 || !strings.Contains(errOut, "Error: 100: Key not found (/foo/bar)") {
		t.Fatalf("get after expiry: exit %d, stderr %q", code, errOut)
	}

	// update on a missing key fails; the `update || set` idiom works.
	if _, _, code := c.Ctl("update", "/missing", "v"); code == 0 {
		t.Fatal("update of a missing key succeeded")
	}
	script := `"$CTL" ctl update /idiom first || "$CTL" ctl set /idiom first`
	sh := exec.Command("sh", "-c", script)
	sh.Env = append(c.Env(), "CTL="+c.Binary)
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("update || set: %v\n%s", err, out)
	}
	if out, _, _ := c.Ctl("get", "/idiom"); strings.TrimSpace(out) != "first" {
		t.Fatalf("after update || set: %q", out)
	}

	out, _, code = c.Ctl("cluster-health")
	if code != 0 || !strings.Contains(out, "cluster is healthy") || strings.Count(out, "is healthy: got healthy result") != 3 {
		t.Fatalf("cluster-health (exit %d):\n%s", code, out)
	}
	// The reboot semaphore, as locksmithctl showed it.
	if out, _, code := c.Ctl("lock"); code != 0 || !strings.Contains(out, "Available: 1\nMax: 1") {
		t.Fatalf("lock status (exit %d):\n%s", code, out)
	}
	if out, errOut, code := c.Ctl("lock", "set-max", "2"); code != 0 || !strings.Contains(out, "Available: 2\nMax: 2") {
		t.Fatalf("lock set-max 2 (exit %d): %s %s", code, out, errOut)
	}
	for _, h := range []string{"core-1", "core-2"} {
		if _, errOut, code := c.Ctl("lock", "take", h); code != 0 {
			t.Fatalf("lock take %s: exit %d %s", h, code, errOut)
		}
	}
	if _, errOut, code := c.Ctl("lock", "take", "core-3"); code == 0 || !strings.Contains(errOut, "every slot is held") {
		t.Fatalf("a third holder with max 2: exit %d, %q", code, errOut)
	}
	if out, _, _ := c.Ctl("lock"); !strings.Contains(out, "Available: 0") || !strings.Contains(out, "core-1\n  core-2") {
		t.Fatalf("lock status with two holders:\n%s", out)
	}
	if _, errOut, code := c.Ctl("lock", "unlock", "core-1"); code != 0 {
		t.Fatalf("lock unlock core-1: exit %d %s", code, errOut)
	}
	if _, errOut, code := c.Ctl("lock", "set-max", "zero"); code == 0 || !strings.Contains(errOut, "not a number") {
		t.Fatalf("lock set-max zero: exit %d, %q", code, errOut)
	}

	out, _, code = c.Ctl("member", "list")
	if code != 0 || strings.Count(out, "isLeader=true") != 1 || !strings.Contains(out, "name=core-2") {
		t.Fatalf("member list (exit %d):\n%s", code, out)
	}

	// member remove takes core-3 out of etcd; the others carry on.
	var id string
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "name=core-3 ") {
			id, _, _ = strings.Cut(line, ":")
		}
	}
	if out, errOut, code := c.Ctl("member", "remove", id); code != 0 || !strings.Contains(out, "Removed member "+id) {
		t.Fatalf("member remove %s: exit %d %s %s", id, code, out, errOut)
	}
	out, _, _ = c.Ctl("member", "list")
	if strings.Count(out, "name=") != 2 || strings.Contains(out, "name=core-3") {
		t.Fatalf("member list after remove:\n%s", out)
	}
	if _, errOut, code := c.Ctl("member", "remove", "nothex"); code == 0 || !strings.Contains(errOut, "hex id") {
		t.Fatalf("member remove with a bad id: exit %d, %q", code, errOut)
	}
}

// Without settings clusterctl says what to do rather than hang.
func TestClusterctlWithoutSettings(t *testing.T) {
	cmd := exec.Command(clustertest.Binary(t), "ctl", "list-machines")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), `provision env FILE`) {
		t.Fatalf("want a hint to run provision env, got %v:\n%s", err, out)
	}
}

// A user's own etcdctl (v3) works with what `provision env` exports, and
// sees the keys clusterctl writes under the same names.
func TestUsersOwnEtcdctl(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1})
	if _, errOut, code := c.Ctl("set", "/foo/bar", "from-clusterctl"); code != 0 {
		t.Fatalf("set: %s", errOut)
	}
	etcdctl := filepath.Join(t.TempDir(), "etcdctl")
	build := exec.Command("go", "build", "-p", "2", "-o", etcdctl, "go.etcd.io/etcd/etcdctl/v3")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building etcdctl: %v\n%s", err, out)
	}
	cmd := exec.Command(etcdctl, "get", "/foo/bar", "--print-value-only")
	cmd.Env = c.Env()
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "from-clusterctl" {
		t.Fatalf("etcdctl get: %v\n%s", err, out)
	}
	// And without the client certificate, etcdctl gets nothing.
	var noCert []string
	for _, kv := range cmd.Env {
		if !strings.HasPrefix(kv, "ETCDCTL_CERT=") && !strings.HasPrefix(kv, "ETCDCTL_KEY=") {
			noCert = append(noCert, kv)
		}
	}
	bare := exec.Command(etcdctl, "get", "/foo/bar", "--command-timeout=3s", "--dial-timeout=2s")
	bare.Env = noCert
	if out, err := bare.CombinedOutput(); err == nil {
		t.Fatalf("etcdctl without a client certificate read the key:\n%s", out)
	}
}
