package clusterctl_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/internal/hostnet"
	"github.com/corral-dev/corral/providers/local"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// examples is the repository's examples/units directory.
func examples(names ...string) []string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "examples", "units")
	var out []string
	for _, n := range names {
		out = append(out, filepath.Join(dir, n))
	}
	return out
}

// activeOn returns the machines reporting the unit active.
func activeOn(s *unitstore.Snapshot, name string) []string {
	var out []string
	if u := s.Units[name]; u != nil {
		for _, st := range u.States {
			if st.Active == "active" {
				out = append(out, st.Machine)
			}
		}
	}
	return out
}

var helloUnits = []string{"hello@1.service", "hello@2.service", "hello@3.service",
	"hello-sidekick@1.service", "hello-sidekick@2.service", "hello-sidekick@3.service"}

func startHello(t *testing.T, c *clustertest.Cluster) *unitstore.Snapshot {
	t.Helper()
	out, errOut, code := c.Ctl(append([]string{"start"}, examples(helloUnits...)...)...)
	if code != 0 || strings.Count(out, " launched on ") != 6 {
		t.Fatalf("start (exit %d):\n%s%s", code, out, errOut)
	}
	return c.WaitUnits("six active units", func(s *unitstore.Snapshot) bool {
		for _, n := range helloUnits {
			if len(activeOn(s, n)) != 1 {
				return false
			}
		}
		return true
	})
}

// The CoreOS in Action workflow: three hellos on three machines, each
// sidekick beside its hello, announcing it in etcd.
func TestHelloWorkflow(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3})
	s := startHello(t, c)
	machines := map[string]bool{}
	for i, n := range helloUnits[:3] {
		m := activeOn(s, n)[0]
		machines[m] = true
		if sk := activeOn(s, helloUnits[3+i])[0]; sk != m {
			t.Fatalf("%s on %s but its sidekick on %s", n, m, sk)
		}
	}
	if len(machines) != 3 {
		t.Fatalf("Conflicts=hello@* not honoured: hellos on %v", machines)
	}
	waitKeys(t, c, "/services/hello/", "the sidekicks' announcements of their hellos", func(kv map[string]string) bool { return len(kv) == 3 })
	out, _, code := c.Ctl("list-units")
	if code != 0 || strings.Count(out, "active   running") != 6 {
		t.Fatalf("list-units:\n%s", out)
	}
	out, _, _ = c.Ctl("status", "hello@1")
	if !strings.Contains(out, "Active: active (running)") || !strings.Contains(out, "Hello from") {
		t.Fatalf("status hello@1:\n%s", out)
	}
	// stop keeps it scheduled; destroy forgets it and the agent stops it.
	if out, _, code := c.Ctl("stop", "hello@3"); code != 0 || !strings.Contains(out, "Unit hello@3.service loaded on") {
		t.Fatalf("stop: %s", out)
	}
	if out, _, code := c.Ctl("destroy", "hello@3"); code != 0 || !strings.Contains(out, "Destroyed hello@3.service") {
		t.Fatalf("destroy: %s", out)
	}
	c.WaitUnits("hello@3 gone", func(s *unitstore.Snapshot) bool { return len(activeOn(s, "hello@3.service")) == 0 })
	// Different content under a submitted name is refused.
	dir := t.TempDir()
	other := filepath.Join(dir, "hello@1.service")
	os.WriteFile(other, []byte("[Service]\nExecStart=/bin/true\n"), 0o644)
	if _, errOut, code := c.Ctl("submit", other); code == 0 || !strings.Contains(errOut, "destroy it first") {
		t.Fatalf("resubmitting other content: exit %d %s", code, errOut)
	}
}

// Kill the machine running hello@2: with a 4th machine free, it and its
// sidekick move there; two copies never run at once.
func TestUnitsMoveOffADeadMachine(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 4, TTL: 4 * time.Second})
	s := startHello(t, c)
	victim := activeOn(s, "hello@2.service")[0]
	var victimNode string
	for _, n := range c.Nodes() {
		if id, err := os.ReadFile(filepath.Join(c.Dir().NodeDir(n.Name), "machine-id")); err == nil && strings.TrimSpace(string(id)) == victim {
			victimNode = n.Name
		}
	}
	// Record every state the agents report for hello@2 from now on.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	overlap := make(chan string, 1)
	go func() {
		running := map[string]bool{}
		for r := range c.Admin.Watch(ctx, unitstore.StatePrefix, clientv3.WithPrefix(), clientv3.WithRev(s.Revision+1)) {
			for _, ev := range r.Events {
				key := string(ev.Kv.Key)
				if !strings.HasSuffix(key, "/hello@2.service") {
					continue
				}
				var st unitstore.UnitState
				json.Unmarshal(ev.Kv.Value, &st)
				m := strings.Split(strings.TrimPrefix(key, unitstore.StatePrefix), "/")[0]
				running[m] = ev.Type == clientv3.EventTypePut && st.Active == "active"
				n := 0
				for _, on := range running {
					if on {
						n++
					}
				}
				if n > 1 {
					select {
					case overlap <- key:
					default:
					}
				}
			}
		}
	}()
	c.Kill(victimNode)
	s = c.WaitUnits("hello@2 and its sidekick running elsewhere", func(s *unitstore.Snapshot) bool {
		a, b := activeOn(s, "hello@2.service"), activeOn(s, "hello-sidekick@2.service")
		return len(a) == 1 && a[0] != victim && len(b) == 1 && b[0] == a[0]
	})
	select {
	case key := <-overlap:
		t.Fatalf("two copies of hello@2 reported active at once (%s)", key)
	default:
	}
}

// With no free machine, a unit whose machine died is reported unscheduled
// with the constraint that keeps it off the others.
func TestUnschedulableUnitSaysWhy(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, TTL: 4 * time.Second})
	s := startHello(t, c)
	victim := activeOn(s, "hello@2.service")[0]
	for _, n := range c.Nodes() {
		if id, _ := os.ReadFile(filepath.Join(c.Dir().NodeDir(n.Name), "machine-id")); strings.TrimSpace(string(id)) == victim {
			c.Kill(n.Name)
		}
	}
	c.WaitUnits("hello@2 unscheduled", func(s *unitstore.Snapshot) bool {
		u := s.Units["hello@2.service"]
		return u.Placement != nil && strings.Contains(u.Placement.Reason, "Conflicts=hello@*")
	})
	out, _, _ := c.Ctl("list-unit-files")
	if !strings.Contains(out, "unscheduled: no machine fits: Conflicts=hello@*") {
		t.Fatalf("list-unit-files:\n%s", out)
	}
}

// Global units run on every machine whose metadata matches, including one
// added later by scaling the node group.
func TestGlobalUnitFollowsTheGroup(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 2, Metadata: `{ role = "database" }`})
	dir := t.TempDir()
	path := filepath.Join(dir, "db-monitor.service")
	os.WriteFile(path, []byte("[Service]\nExecStart=/bin/sleep 100000\n[X-Fleet]\nGlobal=true\nMachineMetadata=role=database\n"), 0o644)
	if out, errOut, code := c.Ctl("start", "--no-block", path); code != 0 {
		t.Fatalf("start: %s%s", out, errOut)
	}
	c.WaitUnits("the global unit on 2 machines", func(s *unitstore.Snapshot) bool { return len(activeOn(s, "db-monitor.service")) == 2 })
	c.Scale(3)
	c.WaitUnits("the global unit on the new machine too", func(s *unitstore.Snapshot) bool { return len(activeOn(s, "db-monitor.service")) == 3 })
}

// Bad unit files are refused at submit, naming the file and the line.
func TestBadUnitFilesAreRefused(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1})
	dir := t.TempDir()
	cases := []struct{ name, src, want string }{
		{"noservice.service", "[Unit]\nDescription=x\n", "noservice.service:"},
		{"badkey.service", "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineOff=x.service\n", "badkey.service:4"},
		{"both.service", "[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\nMachineOf=x.service\n", "both.service:"},
	}
	for _, tc := range cases {
		path := filepath.Join(dir, tc.name)
		os.WriteFile(path, []byte(tc.src), 0o644)
		if _, errOut, code := c.Ctl("submit", path); code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: exit %d, %q (want %q)", tc.name, code, errOut, tc.want)
		}
	}
	tpl := examples("hello@.service")[0]
	if _, errOut, code := c.Ctl("start", tpl); code == 0 || !strings.Contains(errOut, "template") {
		t.Errorf("starting a template: exit %d, %q", code, errOut)
	}
}

// The engine's machine dies: another engine takes over and schedules.
func TestEngineFailover(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, TTL: 4 * time.Second})
	resp, err := c.Admin.Get(context.Background(), "/corral/engine/leader", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("no engine elected: %v", err)
	}
	leader := string(resp.Kvs[0].Value)
	for _, n := range c.Nodes() {
		if id, _ := os.ReadFile(filepath.Join(c.Dir().NodeDir(n.Name), "machine-id")); strings.TrimSpace(string(id)) == leader {
			c.Kill(n.Name)
		}
	}
	c.WaitMachines(30*time.Second, "2 machines", func(ms []machine) bool { return len(ms) == 2 })
	out, errOut, code := c.Ctl(append([]string{"start"}, examples("hello@1.service")...)...)
	if code != 0 || !strings.Contains(out, "launched on") {
		t.Fatalf("start after the engine died (exit %d): %s%s", code, out, errOut)
	}
}

// clusterd restarts; the units it ran keep running (the exec driver
// re-adopts them), the same processes.
func TestUnitsSurviveClusterdRestart(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1})
	if _, errOut, code := c.Ctl(append([]string{"start"}, examples("hello@1.service")...)...); code != 0 {
		t.Fatal(errOut)
	}
	ns := (&local.Provider{Cluster: c.Name}).Namespace("core-1")
	pidFile := filepath.Join(c.Dir().NodeDir("core-1"), "pid")
	raw, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	clusterd := strings.TrimSpace(string(raw))
	before, err := hostnet.PIDs(ns)
	if err != nil {
		t.Fatal(err)
	}
	var units []int // the unit's main process: the shell loop (its sleeps come and go)
	for _, p := range before {
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/cmdline")
		if p != atoi(clusterd) && strings.Contains(string(cmdline), "Hello from") {
			units = append(units, p)
		}
	}
	if len(units) == 0 {
		t.Fatal("no unit processes in the node")
	}
	// The cluster has one node: etcd goes with clusterd, so wait for the
	// process itself to end.
	fd, err := unix.PidfdOpen(atoi(clusterd), 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.Kill(atoi(clusterd), syscall.SIGTERM)
	if n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 30000); n != 1 || err != nil {
		t.Fatalf("clusterd did not stop on SIGTERM: %v", err)
	}
	unix.Close(fd)
	c.Restart("core-1")
	c.WaitUnits("hello@1 active again", func(s *unitstore.Snapshot) bool { return len(activeOn(s, "hello@1.service")) == 1 })
	for _, p := range units {
		if syscall.Kill(p, 0) != nil {
			t.Fatalf("unit process %d did not survive clusterd's restart", p)
		}
	}
}

type machine = registry.Machine

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// Partition the machine of hello@2 for longer than its TTL: the unit is
// re-placed; when the partition heals, the old copy is stopped.
func TestPartitionedMachineStopsItsOldCopy(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 4, TTL: 4 * time.Second})
	s := startHello(t, c)
	victim := activeOn(s, "hello@2.service")[0]
	var node string
	for _, n := range c.Nodes() {
		if id, _ := os.ReadFile(filepath.Join(c.Dir().NodeDir(n.Name), "machine-id")); strings.TrimSpace(string(id)) == victim {
			node = n.Name
		}
	}
	pids, err := hostnet.PIDs((&local.Provider{Cluster: c.Name}).Namespace(node))
	if err != nil {
		t.Fatal(err)
	}
	old := 0
	for _, p := range pids {
		if cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(p) + "/cmdline"); strings.Contains(string(cmdline), "instance 2") {
			old = p
		}
	}
	if old == 0 {
		t.Fatal("hello@2's process not found on its machine")
	}
	fd, err := unix.PidfdOpen(old, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	c.Partition(node)
	c.WaitUnits("hello@2 re-placed", func(s *unitstore.Snapshot) bool {
		a := activeOn(s, "hello@2.service")
		return len(a) == 1 && a[0] != victim
	})
	c.Heal(node)
	// The healed agent sees hello@2 is no longer its own and stops it.
	if n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 60000); n != 1 || err != nil {
		t.Fatalf("the old copy of hello@2 still runs on %s after the partition healed (%v)", node, err)
	}
}
