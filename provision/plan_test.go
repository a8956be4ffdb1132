package provision_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/provision"
)

var update = flag.Bool("update", false, "rewrite the golden files of the plan tests")

// golden compares got with testdata/plan/NAME.golden (or rewrites it with
// -update). The cluster's random name is replaced by NAME first.
func golden(t *testing.T, name, cluster, got string) {
	t.Helper()
	if cluster != "" {
		got = strings.ReplaceAll(got, cluster, "NAME")
	}
	path := filepath.Join("testdata", "plan", name+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("plan %s differs from %s:\n--- got\n%s--- want\n%s", name, path, got, want)
	}
}

// planOf runs `provision plan FILE --detailed-exitcode` as the command
// line does, and returns its output and exit status.
func planOf(t *testing.T, file string, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	cmd := provision.Command()
	cmd.SetArgs(append([]string{"plan", file, "--detailed-exitcode"}, args...))
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	err := cmd.ExecuteContext(context.Background())
	var code provision.ExitCode
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &code):
		return out.String(), int(code)
	}
	t.Fatalf("plan: %v\n%s", err, out.String())
	return "", 1
}

// The first plan of a file creates the cluster, every node, the network
// and the services, and says so with exit status 2.
func TestPlanFirstUp(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"first.hcl", "hello@.service"} {
		b, err := os.ReadFile(filepath.Join("testdata", "plan", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, f), b, 0o600)
	}
	out, code := planOf(t, filepath.Join(dir, "first.hcl"))
	if code != 2 {
		t.Errorf("exit status %d, want 2 (changes)", code)
	}
	golden(t, "first-up", "", out)

	js, _ := planOf(t, filepath.Join(dir, "first.hcl"), "--output", "json")
	var p struct {
		Cluster string
		Changes []struct{ Kind, Name, Action string }
		Summary map[string]int
	}
	if err := json.Unmarshal([]byte(js), &p); err != nil {
		t.Fatalf("--output json: %v\n%s", err, js)
	}
	if p.Cluster != "golden" || len(p.Changes) != 9 || p.Summary["create"] != 9 {
		t.Errorf("--output json: %+v", p)
	}
	if _, err := os.Stat(filepath.Join(dir, ".corral")); err == nil {
		t.Error("plan wrote a state directory")
	}
}

// Plans against a running cluster: no change, 3→5, 5→3 and a changed boot
// config, each pinned by a golden file; then up carries out the rolling
// replacement one node at a time.
func TestPlanChanges(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3})
	out, code := planOf(t, c.File)
	if code != 0 {
		t.Errorf("no change: exit status %d, want 0", code)
	}
	golden(t, "no-change", c.Name, out)

	c.Edit("desired_capacity = 3", "desired_capacity = 5")
	out, code = planOf(t, c.File)
	if code != 2 {
		t.Errorf("3→5: exit status %d, want 2", code)
	}
	golden(t, "scale-out", c.Name, out)
	c.Edit("desired_capacity = 5", "desired_capacity = 3")
	c.Scale(5)

	c.Edit("desired_capacity = 5", "desired_capacity = 3")
	out, _ = planOf(t, c.File)
	golden(t, "scale-in", c.Name, out)
	c.Edit("desired_capacity = 3", "desired_capacity = 5")
	c.Scale(3)

	c.Edit(`node_group "core" {`, `node_group "core" {
  file "/etc/motd" { content = "managed by corral\n" }`)
	out, _ = planOf(t, c.File)
	golden(t, "boot-change", c.Name, out)

	// The replacements take the cluster's reboot semaphore: while another
	// holder has its only slot, up waits and replaces nothing.
	if _, errOut, code := c.Ctl("lock", "take", "someone-else"); code != 0 {
		t.Fatalf("lock take: %s", errOut)
	}
	mark := len(c.Output())
	upDone := make(chan error, 1)
	go func() { upDone <- c.TryUp() }()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(c.Output()[mark:], "for a reboot slot, held by someone-else"); {
		if time.Now().After(deadline) {
			t.Fatalf("up did not wait for the reboot slot:\n%s", c.Output()[mark:])
		}
		time.Sleep(50 * time.Millisecond) // polling provision's output: it has no event to wait on
	}
	if regexp.MustCompile(`node core-4 +(waiting|creating)`).MatchString(c.Output()[mark:]) {
		t.Fatalf("up made a replacement while the reboot slot was held:\n%s", c.Output()[mark:])
	}
	if _, errOut, code := c.Ctl("lock", "unlock", "someone-else"); code != 0 {
		t.Fatalf("lock unlock: %s", errOut)
	}
	if err := <-upDone; err != nil {
		t.Fatalf("up after the slot was given back: %v\n%s", err, c.Output()[mark:])
	}
	if out, _, _ := c.Ctl("lock"); !strings.Contains(out, "Available: 1") || strings.Contains(out, "holding") {
		t.Errorf("after the replacements, the reboot semaphore is:\n%s", out)
	}
	log := c.Output()[mark:]
	// Each replacement joins (and its etcd member is healthy) before the
	// node it replaces goes, and the next one starts after that.
	order := []string{
		"node core-4 +joined", "node core-4 +healthy", "node core-1 +deleted",
		"node core-5 +creating", "node core-5 +healthy", "node core-2 +deleted",
		"node core-6 +creating", "node core-6 +healthy", "node core-3 +deleted",
	}
	at := 0
	for _, step := range order {
		loc := regexp.MustCompile(step).FindStringIndex(log[at:])
		if loc == nil {
			t.Fatalf("%q not after position %d of up's output:\n%s", step, at, log)
		}
		at += loc[1]
	}
	ms := c.WaitMachines(30*time.Second, "the replacements", count(3))
	names := clustertest.MachineNames(ms)
	slices.Sort(names)
	if !slices.Equal(names, []string{"core-4", "core-5", "core-6"}) || members(ms) != 3 {
		t.Fatalf("after the rolling replacement: machines %v, %d members", names, members(ms))
	}
	if out, code := planOf(t, c.File); code != 0 {
		t.Errorf("plan after up is not empty:\n%s", out)
	}
}
