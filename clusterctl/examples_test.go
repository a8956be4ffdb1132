package clusterctl_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/clustertest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// The remaining examples of examples/units, each checked for what its
// comments claim, on one cluster: three machines with role=web and one,
// in a second node group, with role=database.
func TestExamples(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, TTL: 4 * time.Second, Metadata: `{ role = "web" }`})
	addGroup(t, c, "db", 1, `{ role = "database" }`)
	ms := c.WaitMachines(time.Minute, "4 machines", func(ms []machine) bool { return len(ms) == 4 })
	byID := machinesByID(ms)

	t.Run("GlobalUnit", func(t *testing.T) {
		if out, errOut, code := c.Ctl(append([]string{"start"}, examples("machine-announce.service")...)...); code != 0 {
			t.Fatalf("start (exit %d): %s%s", code, out, errOut)
		}
		c.WaitUnits("machine-announce on all 4 machines", func(s *unitstore.Snapshot) bool {
			return len(activeOn(s, "machine-announce.service")) == 4
		})
		// Each copy announces its own machine, with its own id and hostname.
		waitKeys(t, c, "/machines/", "an announcement for every machine", func(kv map[string]string) bool {
			for _, m := range ms {
				v := kv["/machines/"+m.ID]
				if !strings.Contains(v, `"machine": "`+m.ID+`"`) || !strings.Contains(v, `"hostname": "`+m.Hostname+`"`) {
					return false
				}
			}
			return len(kv) == len(ms)
		})
	})

	t.Run("MachineMetadata", func(t *testing.T) {
		dbs := []string{"database@1.service", "database@2.service"}
		if out, errOut, code := c.Ctl(append([]string{"start", "--no-block"}, examples(dbs...)...)...); code != 0 {
			t.Fatalf("start (exit %d): %s%s", code, out, errOut)
		}
		// One machine has role=database and Conflicts=database@* allows one
		// instance on it: one instance runs there, the other fits nowhere
		// and says why (which of the two got the machine is the engine's
		// choice).
		var running, waiting string
		s := c.WaitUnits("one database running, the other unscheduled", func(s *unitstore.Snapshot) bool {
			running, waiting = "", ""
			for _, n := range dbs {
				if len(activeOn(s, n)) == 1 {
					running = n
				} else if u := s.Units[n]; u != nil && u.Placement != nil && u.Placement.Reason != "" {
					waiting = n
				}
			}
			return running != "" && waiting != ""
		})
		if m := byID[activeOn(s, running)[0]]; m.Metadata["role"] != "database" {
			t.Fatalf("%s runs on %s, whose metadata is %v", running, m.Name, m.Metadata)
		}
		reason := s.Units[waiting].Placement.Reason
		for _, want := range []string{"MachineMetadata role=database (3 of 4 machines)", "Conflicts=database@*"} {
			if !strings.Contains(reason, want) {
				t.Errorf("%s unscheduled because %q; want it to name %q", waiting, reason, want)
			}
		}
	})

	t.Run("LoadBalancer", func(t *testing.T) {
		startHello(t, c)
		waitKeys(t, c, "/services/hello/", "the three hellos announced", func(kv map[string]string) bool { return len(kv) == 3 })
		if out, errOut, code := c.Ctl(append([]string{"start"}, examples("hello-lb.service")...)...); code != 0 {
			t.Fatalf("start hello-lb (exit %d): %s%s", code, out, errOut)
		}
		// Active means ExecStartPre, the first render, is done: the file's
		// directory exists, and the watch is starting.
		s := c.WaitUnits("hello-lb active", func(s *unitstore.Snapshot) bool { return len(activeOn(s, "hello-lb.service")) == 1 })
		lb := byID[activeOn(s, "hello-lb.service")[0]]
		conf := filepath.Join(c.Dir().NodeDir(lb.Name), "hello-lb", "upstreams.conf")
		upstream := func(i int) string {
			m := byID[activeOn(s, fmt.Sprintf("hello@%d.service", i))[0]]
			return fmt.Sprintf("    server %s:8080;  # hello@%d\n", m.IP, i)
		}
		waitFile(t, conf, "the three hellos in the upstream block", func(text string) bool {
			return strings.Contains(text, "upstream hello {\n") &&
				strings.Contains(text, upstream(1)) && strings.Contains(text, upstream(2)) && strings.Contains(text, upstream(3))
		})

		// Stopping hello@1 stops its sidekick (BindsTo), which withdraws the
		// announcement; exec-watch renders again without it.
		if out, errOut, code := c.Ctl("stop", "hello@1"); code != 0 {
			t.Fatalf("stop hello@1 (exit %d): %s%s", code, out, errOut)
		}
		text := waitFile(t, conf, "hello@1 gone from the upstream block", func(text string) bool {
			return !strings.Contains(text, "# hello@1\n") && strings.Contains(text, upstream(2)) && strings.Contains(text, upstream(3))
		})
		if strings.Count(text, "server ") != 2 || strings.Contains(text, " down;") {
			t.Fatalf("after stopping hello@1:\n%s", text)
		}
		// The unit says what it wrote in its journal, as its comments claim.
		out, _, _ := c.Ctl("journal", "--lines", "40", "hello-lb")
		if !strings.Contains(out, "hello-lb: 2 hello instances in "+conf) {
			t.Fatalf("journal of hello-lb lacks the render's line:\n%s", out)
		}
	})
}

// addGroup appends a node group to the cluster's file and brings its nodes
// up, as a user would; clustertest.Options describe one group only.
func addGroup(t *testing.T, c *clustertest.Cluster, name string, n int, metadata string) {
	t.Helper()
	f, err := os.OpenFile(c.File, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "node_group %q {\n  desired_capacity = %d\n  metadata = %s\n}\n", name, n, metadata)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	c.Up()
}

func machinesByID(ms []registry.Machine) map[string]registry.Machine {
	out := map[string]registry.Machine{}
	for _, m := range ms {
		out[m.ID] = m
	}
	return out
}

// waitKeys watches the keys under prefix until cond holds of them (key to
// value), and returns them.
func waitKeys(t *testing.T, c *clustertest.Cluster, prefix, what string, cond func(map[string]string) bool) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		resp, err := c.Admin.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		kv := map[string]string{}
		for _, e := range resp.Kvs {
			kv[string(e.Key)] = string(e.Value)
		}
		if cond(kv) {
			return kv
		}
		select {
		case <-c.Admin.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)):
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v; keys under %s now: %v", what, ctx.Err(), prefix, kv)
		}
	}
}

// waitFile waits until the text of the file at path satisfies cond, and
// returns it. It wakes on inotify events in the file's directory (which must
// exist), where a file is created or renamed into place, rather than
// polling.
func waitFile(t *testing.T, path, what string, cond func(string) bool) string {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// Watch first, then read: a change between the two still wakes us.
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO|unix.IN_CREATE); err != nil {
		t.Fatalf("waiting for %s: watching %s: %v", what, filepath.Dir(path), err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	buf := make([]byte, 64<<10)
	for {
		text, _ := os.ReadFile(path)
		if cond(string(text)) {
			return string(text)
		}
		left := time.Until(deadline)
		if left <= 0 {
			t.Fatalf("waiting for %s: timed out; %s now:\n%s", what, path, text)
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		// The events only say to look again; drain them.
		for {
			if n, err := unix.Read(fd, buf); n <= 0 || err != nil {
				break
			}
		}
	}
}
