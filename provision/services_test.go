package provision_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/clustertest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// active lists the units of the snapshot that some machine reports active.
func active(s *unitstore.Snapshot) []string {
	var out []string
	for name, u := range s.Units {
		for _, st := range u.States {
			if st.Active == "active" {
				out = append(out, name)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// revisions records the ModRevision of every unit file and reported state:
// a unit left alone keeps them, a restarted or resubmitted one does not.
func revisions(t *testing.T, c *clustertest.Cluster, names ...string) map[string]int64 {
	t.Helper()
	resp, err := c.Admin.Get(context.Background(), unitstore.Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, kv := range resp.Kvs {
		key := string(kv.Key)
		for _, n := range names {
			if strings.HasPrefix(key, unitstore.FilesPrefix) && strings.HasSuffix(key, "/"+n) ||
				strings.HasPrefix(key, unitstore.StatePrefix) && strings.HasSuffix(key, "/"+n) {
				out[key] = kv.ModRevision
			}
		}
	}
	return out
}

// since returns what provision printed after mark.
func since(c *clustertest.Cluster, mark int) string { return c.Output()[mark:] }

// progress picks the services' progress lines out of up's output.
var progress = regexp.MustCompile(`(?m)^  ([+~-]) (web@\d\.service|byhand\.service) `)

func lines(out string) []string {
	var got []string
	for _, m := range progress.FindAllStringSubmatch(out, -1) {
		got = append(got, m[1]+" "+m[2])
	}
	return got
}

// Services declared in the file converge like the nodes: scaling out
// starts only the new instances, new content replaces the instances one at
// a time, and a removed block destroys its units; a unit started by hand
// is never touched.
func TestServicesConverge(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, TTL: 4 * time.Second})
	dir := filepath.Dir(c.File)
	write := func(path, src string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	unitFile := func(version string) string {
		return "[Unit]\nDescription=web %i\n\n[Service]\nExecStart=/bin/sh -c 'echo web %i " + version + "; exec sleep 100000'\n"
	}

	// A unit of the user's, started by hand before any service.
	byHand := filepath.Join(dir, "byhand.service")
	write(byHand, "[Service]\nExecStart=/bin/sh -c 'exec sleep 100000'\n")
	if out, errOut, code := c.Ctl("start", byHand); code != 0 {
		t.Fatalf("clusterctl start: exit %d\n%s%s", code, out, errOut)
	}
	c.WaitUnits("byhand active", func(s *unitstore.Snapshot) bool { return slices.Contains(active(s), "byhand.service") })
	handRevs := revisions(t, c, "byhand.service")
	checkHand := func(step string) {
		t.Helper()
		if got := revisions(t, c, "byhand.service"); len(got) != 2 || !maps.Equal(got, handRevs) {
			t.Errorf("%s: the hand-started unit was touched: %v -> %v", step, handRevs, got)
		}
	}

	base, err := os.ReadFile(c.File)
	if err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(dir, "units", "web@.service"), unitFile("v1"))
	write(c.File, string(base)+"service \"web@.service\" {\n  source    = \"units/web@.service\"\n  instances = 3\n}\n")

	// Up with three instances: three active.
	mark := len(c.Output())
	c.Up()
	web3 := []string{"web@1.service", "web@2.service", "web@3.service"}
	snap, _ := unitstore.Read(context.Background(), c.Admin)
	if got := active(snap); !slices.Equal(got, append([]string{"byhand.service"}, web3...)) {
		t.Fatalf("after up: active %v\n%s", got, since(c, mark))
	}
	// New units start together and are reported as each becomes active,
	// in no set order.
	if got := sorted(lines(since(c, mark))); !slices.Equal(got, []string{"+ web@1.service", "+ web@2.service", "+ web@3.service"}) {
		t.Errorf("first up printed %v:\n%s", got, since(c, mark))
	}
	checkHand("first up")

	// Five instances: exactly @4 and @5 start, @1-3 are left alone.
	before := revisions(t, c, web3...)
	c.Edit("instances = 3", "instances = 5")
	mark = len(c.Output())
	c.Up()
	if got := sorted(lines(since(c, mark))); !slices.Equal(got, []string{"+ web@4.service", "+ web@5.service"}) {
		t.Errorf("scaling to 5 printed %v:\n%s", got, since(c, mark))
	}
	if after := revisions(t, c, web3...); len(after) != 6 || !maps.Equal(before, after) {
		t.Errorf("scaling to 5 touched @1-3: %v -> %v", before, after)
	}
	web5 := append(slices.Clone(web3), "web@4.service", "web@5.service")
	snap, _ = unitstore.Read(context.Background(), c.Admin)
	if got := active(snap); !slices.Equal(got, append([]string{"byhand.service"}, web5...)) {
		t.Fatalf("after scaling to 5: active %v", got)
	}
	checkHand("scaling out")

	// New content: each instance is replaced in turn, and a watcher sees
	// at most one of them down at any moment.
	oldHash := snap.Units["web@1.service"].File.Hash
	var mu sync.Mutex
	minActive := len(web5)
	wctx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		up := map[string]bool{}
		for _, n := range web5 {
			up[n] = true
		}
		for resp := range c.Admin.Watch(wctx, unitstore.StatePrefix, clientv3.WithPrefix(), clientv3.WithRev(snap.Revision+1)) {
			for _, ev := range resp.Events {
				name := filepath.Base(string(ev.Kv.Key))
				if !strings.HasPrefix(name, "web@") {
					continue
				}
				up[name] = ev.Type == clientv3.EventTypePut && strings.Contains(string(ev.Kv.Value), `"active":"active"`)
			}
			n := 0
			for _, ok := range up {
				if ok {
					n++
				}
			}
			mu.Lock()
			minActive = min(minActive, n)
			mu.Unlock()
		}
	}()
	write(filepath.Join(dir, "units", "web@.service"), unitFile("v2"))
	mark = len(c.Output())
	c.Up()
	stopWatch()
	<-watching
	want := []string{"~ web@1.service", "~ web@2.service", "~ web@3.service", "~ web@4.service", "~ web@5.service"}
	if got := lines(since(c, mark)); !slices.Equal(got, want) {
		t.Errorf("new content printed %v, want %v:\n%s", got, want, since(c, mark))
	}
	if minActive != len(web5)-1 {
		t.Errorf("during the replace, as few as %d of 5 instances were active; want 4 (one at a time)", minActive)
	}
	snap, _ = unitstore.Read(context.Background(), c.Admin)
	for _, n := range web5 {
		if u := snap.Units[n]; u == nil || u.File.Hash == oldHash || !slices.Contains(active(snap), n) {
			t.Errorf("%s after the replace: %+v", n, u)
		}
	}
	checkHand("replacing")

	// The block removed: its units are destroyed, newest first.
	write(c.File, string(base))
	mark = len(c.Output())
	c.Up()
	want = []string{"- web@5.service", "- web@4.service", "- web@3.service", "- web@2.service", "- web@1.service"}
	if got := lines(since(c, mark)); !slices.Equal(got, want) {
		t.Errorf("removing the block printed %v, want %v:\n%s", got, want, since(c, mark))
	}
	c.WaitUnits("only byhand left", func(s *unitstore.Snapshot) bool {
		return slices.Equal(active(s), []string{"byhand.service"}) && len(s.Units) == 1
	})
	checkHand("removing the block")

	// A service may not take over the user's unit by naming it.
	write(c.File, string(base)+"service \"byhand.service\" {\n  content = \"[Service]\\nExecStart=/bin/true\\n\"\n}\n")
	if err := c.TryUp(); err == nil || !strings.Contains(err.Error(), "unit byhand.service was submitted outside provision") {
		t.Errorf("up with a service named like the hand-started unit: %v", err)
	}
	checkHand("a service of the same name")
}

func sorted(s []string) []string { return slices.Sorted(slices.Values(s)) }
