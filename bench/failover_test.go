package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/scheduler"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/clustertest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	// failoverRuns is how many machine failures each b.N iteration times.
	failoverRuns = 10
	// failoverTTL is the cluster's machine_ttl: a few seconds, as the unit
	// tests use.
	failoverTTL = 4 * time.Second
	// failoverLimit bounds each wait, so a unit that never moves fails the
	// benchmark instead of hanging it. It is a limit, not a wait.
	failoverLimit = 2 * time.Minute
)

// BenchmarkFailover times what a machine failure costs a unit: on a real
// 4-node cluster, the machine running the unit is killed (SIGKILL of every
// process in its namespace), and the clock runs until an agent on another
// machine reports the unit active (running). The figures are printed beside
// the cluster's machine TTL (the dead machine's record must expire) plus the
// engine's reschedule grace (clusterd's default: provision does not change
// it), which is what a failover should cost: a run can come in a little
// under it, since the machine's lease was last renewed up to TTL/3 before
// the kill. One cluster serves every run: the killed node is brought back
// with `provision up` before the next.
func BenchmarkFailover(b *testing.B) {
	c := clustertest.Start(b, clustertest.Options{Nodes: 4, TTL: failoverTTL})
	floor := failoverTTL + scheduler.DefaultGrace // what a failover should cost
	dir := b.TempDir()
	path := filepath.Join(dir, "failover.service")
	if err := os.WriteFile(path, []byte("[Unit]\nDescription=failover benchmark\n[Service]\nExecStart=/bin/sleep 1000000\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	const name = "failover.service"
	if out, errOut, code := c.Ctl("start", path); code != 0 {
		b.Fatalf("start (exit %d): %s%s", code, out, errOut)
	}
	// nodeOf maps a machine id to the node it is, from the nodes' data.
	nodeOf := func(machine string) string {
		for _, n := range c.Nodes() {
			if id, err := os.ReadFile(filepath.Join(c.Dir().NodeDir(n.Name), "machine-id")); err == nil && strings.TrimSpace(string(id)) == machine {
				return n.Name
			}
		}
		b.Fatalf("no node has machine id %s", machine)
		return ""
	}

	var (
		times []time.Duration
		runs  []string
	)
	for range b.N {
		for run := range failoverRuns {
			on, rev := runningOn(b, c.Admin, name, "")
			victim := nodeOf(on)
			start := time.Now()
			c.Kill(victim)
			moved, _ := runningOn(b, c.Admin, name, on, rev)
			took := time.Since(start)
			times = append(times, took)
			runs = append(runs, fmt.Sprintf("%d: %s→%s %.2fs", run+1, victim, nodeOf(moved), took.Seconds()))
			// Bring the node back for the next run, and wait until it is
			// registered again, so every run starts from 4 machines.
			c.Restart(victim)
			c.WaitMachines(failoverLimit, "4 machines", func(ms []registry.Machine) bool { return len(ms) == 4 })
		}
	}
	slices.Sort(times)
	median := times[len(times)/2]
	if len(times)%2 == 0 {
		median = (times[len(times)/2-1] + times[len(times)/2]) / 2
	}
	worst := times[len(times)-1]
	b.ReportMetric(median.Seconds(), "s-median")
	b.ReportMetric(worst.Seconds(), "s-worst")
	b.ReportMetric(floor.Seconds(), "s-ttl+grace")
	b.ReportMetric(median.Seconds()/floor.Seconds(), "median/(ttl+grace)")
	b.ReportMetric(worst.Seconds()/floor.Seconds(), "worst/(ttl+grace)")
	b.Logf("runs (killed→new machine, time): %s", strings.Join(runs, ", "))
	b.Logf("a unit back up after its machine dies: median %.2fs, worst %.2fs over %d runs; TTL+grace is %v+%v = %v (median %.2f×, worst %.2f×)",
		median.Seconds(), worst.Seconds(), len(times), failoverTTL, scheduler.DefaultGrace, floor, median.Seconds()/floor.Seconds(), worst.Seconds()/floor.Seconds())
}

// runningOn waits, watching the agents' state records, until a machine
// other than not reports the unit active (running), and returns that machine
// and the revision it saw it at. With a revision (from an earlier call) it
// watches from there on, so that no report is missed in between.
func runningOn(b *testing.B, c *clientv3.Client, name, not string, from ...int64) (string, int64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), failoverLimit)
	defer cancel()
	var rev int64
	if len(from) > 0 {
		rev = from[0]
	} else {
		resp, err := c.Get(ctx, unitstore.StatePrefix, clientv3.WithPrefix())
		if err != nil {
			b.Fatal(err)
		}
		for _, kv := range resp.Kvs {
			if m, ok := running(kv.Key, kv.Value, name); ok && m != not {
				return m, resp.Header.Revision
			}
		}
		rev = resp.Header.Revision
	}
	for r := range c.Watch(ctx, unitstore.StatePrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := r.Err(); err != nil {
			b.Fatal(err)
		}
		for _, ev := range r.Events {
			if ev.Type != clientv3.EventTypePut {
				continue
			}
			if m, ok := running(ev.Kv.Key, ev.Kv.Value, name); ok && m != not {
				return m, ev.Kv.ModRevision
			}
		}
	}
	b.Fatalf("%s not running on a machine other than %q within %v", name, not, failoverLimit)
	return "", 0
}

// running reports the machine of a state record that says the unit is
// active (running).
func running(key, value []byte, name string) (string, bool) {
	m, unitName, _ := strings.Cut(strings.TrimPrefix(string(key), unitstore.StatePrefix), "/")
	var st unitstore.UnitState
	if unitName != name || json.Unmarshal(value, &st) != nil {
		return "", false
	}
	return m, st.Active == "active" && st.Sub == "running"
}
