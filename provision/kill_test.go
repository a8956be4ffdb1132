package provision_test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/clustertest"
)

// upKilledAt runs `provision up` as a process and SIGKILLs it when it has
// printed line number kill (counting from 1), or lets it finish when kill
// is 0. It returns the lines it printed.
func upKilledAt(t *testing.T, c *clustertest.Cluster, kill int) []string {
	t.Helper()
	if kill == 0 {
		return upKilledWhen(t, c.Binary, c.File, nil)
	}
	n := 0
	return upKilledWhen(t, c.Binary, c.File, func(string) bool { n++; return n == kill })
}

// upKilledWhen runs `bin up file` as a process and SIGKILLs it at the
// first line it prints for which kill is true, or lets it finish when kill
// is nil. It returns the lines it printed.
func upKilledWhen(t *testing.T, bin, file string, kill func(line string) bool) []string {
	t.Helper()
	cmd := exec.Command(bin, "up", file, "--auto-approve", "--timeout", "1m")
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if kill != nil && kill(sc.Text()) {
			cmd.Process.Kill()
			killed = true
			break
		}
	}
	err = cmd.Wait()
	if kill == nil && err != nil {
		t.Fatalf("up: %v\n%s", err, strings.Join(lines, "\n"))
	}
	if kill != nil && !killed {
		t.Fatalf("up ended after %d lines, before the line it was to be killed at (%v):\n%s", len(lines), err, strings.Join(lines, "\n"))
	}
	return lines
}

// clusterProcs finds the processes that run a node of the cluster: those
// whose command line names the cluster's state directory.
func clusterProcs(c *clustertest.Cluster) map[string][]int {
	out := map[string][]int{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(b), c.Dir().Path) {
			continue
		}
		out["pid "+d.Name()] = append(out["pid "+d.Name()], pid)
	}
	return out
}

// nodesOf is the state's nodes as "name ip role", sorted.
func nodesOf(t *testing.T, c *clustertest.Cluster) []string {
	t.Helper()
	st, err := c.Dir().Load()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, n := range st.Nodes {
		out = append(out, n.Name+" "+n.IP.String()+" "+string(n.Role))
	}
	slices.Sort(out)
	return out
}

// A `provision up` killed at any of 10 points of its run leaves a cluster
// that the next up finishes into the same cluster an unbroken run makes,
// and that down removes completely.
func TestUpKilledAnywhereConverges(t *testing.T) {
	c := clustertest.Prepare(t, clustertest.Options{Nodes: 3, Network: `cidr = "10.216.0.0/16"`})
	full := upKilledAt(t, c, 0)
	want := nodesOf(t, c)
	if len(want) != 3 {
		t.Fatalf("an unbroken up made %v", want)
	}
	down := func() {
		t.Helper()
		procs := clusterProcs(c)
		if err := c.Down(); err != nil {
			t.Fatalf("down: %v\n%s", err, c.Output())
		}
		assertGone(t, c, procs)
		if t.Failed() {
			t.FailNow()
		}
	}
	down()

	// Ten kill points spread over the run's work as its output shows it:
	// the plan, nodes recorded, launched, joined, the network; up to the
	// line that says the cluster is up.
	n := slices.IndexFunc(full, func(l string) bool { return strings.Contains(l, "is up:") })
	if n < 10 {
		t.Fatalf("an unbroken up printed only %d lines:\n%s", len(full), strings.Join(full, "\n"))
	}
	for i := range 10 {
		kill := 1 + i*(n-1)/9
		if at := os.Getenv("CORRAL_KILL_AT"); at != "" { // to repeat one kill point
			kill, _ = strconv.Atoi(at)
		}
		t.Logf("kill at line %d of %d: %q", kill, len(full), full[kill-1])
		upKilledAt(t, c, kill)
		start, mark := time.Now(), len(c.Output())
		c.Up()
		// The killed run held the state's lock: the next one says it
		// found it abandoned.
		if !strings.Contains(c.Output()[mark:], "ended without finishing") {
			t.Errorf("killed at line %d: the next up did not notice the abandoned lock:\n%s", kill, c.Output()[mark:])
		}
		if got := nodesOf(t, c); !slices.Equal(got, want) {
			t.Fatalf("killed at line %d, the next up made %v, want %v\n%s", kill, got, want, c.Output())
		}
		c.WaitMachines(30*time.Second, "3 machines", count(3))
		t.Logf("  converged in %.1fs", time.Since(start).Seconds())
		down()
	}
}
