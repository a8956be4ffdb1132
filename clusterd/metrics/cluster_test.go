package metrics_test

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/metrics"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/provision"
	dto "github.com/prometheus/client_model/go"
)

func example(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, filepath.Join("..", "..", "examples", "units", n))
	}
	return out
}

// listed counts units as clusterctl lists them: STATE from list-unit-files
// (unscheduled when its target says so), ACTIVE from list-units (active
// when every row says so, else the first other value; none without rows).
func listed(t *testing.T, c *clustertest.Cluster) map[string]int {
	t.Helper()
	files, errOut, code := c.Ctl("list-unit-files")
	if code != 0 {
		t.Fatalf("list-unit-files (exit %d): %s", code, errOut)
	}
	units, errOut, code := c.Ctl("list-units")
	if code != 0 {
		t.Fatalf("list-units (exit %d): %s", code, errOut)
	}
	actives := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(units), "\n")[1:] {
		f := strings.Fields(line)
		if f[2] != "active" {
			actives[f[0]] = append(actives[f[0]], f[2])
		} else if actives[f[0]] == nil {
			actives[f[0]] = []string{}
		}
	}
	out := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(files), "\n")[1:] {
		f := strings.Fields(line)
		state := f[3]
		if strings.HasPrefix(strings.Join(f[4:], " "), "unscheduled") {
			state = metrics.Unscheduled
		}
		active, ok := actives[f[0]]
		switch {
		case !ok:
			out[state+"/"+metrics.NoState]++
		case len(active) == 0:
			out[state+"/active"]++
		default:
			slices.Sort(active)
			out[state+"/"+active[0]]++
		}
	}
	return out
}

// scraped reads corral_units back from one node's page.
func scraped(fams map[string]*dto.MetricFamily) map[string]int {
	out := map[string]int{}
	for _, m := range fams["corral_units"].GetMetric() {
		l := map[string]string{}
		for _, p := range m.GetLabel() {
			l[p.GetName()] = p.GetValue()
		}
		out[l["state"]+"/"+l["active"]] += int(m.GetGauge().GetValue())
	}
	return out
}

// TestMetricsOnCluster starts units on a real three-machine cluster and
// checks each node's /metrics against what clusterctl lists, and
// provision status against both.
func TestMetricsOnCluster(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, Network: `cidr = "10.219.0.0/16"`})
	c.WaitMachines(time.Minute, "3 machines", func(ms []registry.Machine) bool { return len(ms) == 3 })

	// Three hello instances take the three machines; a fourth conflicts
	// with them everywhere (unscheduled); a submitted unit stays inactive.
	if out, errOut, code := c.Ctl(append([]string{"start"}, example("hello@1.service", "hello@2.service", "hello@3.service")...)...); code != 0 {
		t.Fatalf("start (exit %d): %s%s", code, out, errOut)
	}
	if out, errOut, code := c.Ctl(append([]string{"start", "--no-block"}, example("hello@4.service")...)...); code != 0 {
		t.Fatalf("start hello@4 (exit %d): %s%s", code, out, errOut)
	}
	if out, errOut, code := c.Ctl(append([]string{"submit"}, example("machine-announce.service")...)...); code != 0 {
		t.Fatalf("submit (exit %d): %s%s", code, out, errOut)
	}
	c.WaitUnits("hello@4 unscheduled", func(s *unitstore.Snapshot) bool {
		u := s.Units["hello@4.service"]
		return u != nil && u.Placement != nil && u.Placement.Reason != ""
	})

	client := &http.Client{Timeout: 10 * time.Second}
	var want, got map[string]int
	var latency metrics.Histogram
	deadline := time.Now().Add(time.Minute)
	for _, n := range c.Nodes() {
		url := metrics.URL(n.IP.AsSlice())
		for {
			// Listed and scraped a moment apart: equal once the
			// cluster has settled, which polling waits for.
			want = listed(t, c)
			fams, err := metrics.Scrape(context.Background(), client, url)
			if err != nil {
				t.Fatalf("scraping %s: %v", url, err)
			}
			got = scraped(fams)
			var wrong []string
			for name, v := range map[string]float64{"corral_machines": 3, "corral_etcd_healthy": 1,
				"corral_etcd_members": 3, "corral_etcd_voters": 3, "corral_overlay_leases": 3, "corral_overlay_peers": 2} {
				if g := metrics.Gauge(fams, name, nil); g != v {
					wrong = append(wrong, fmt.Sprintf("%s = %v, want %v", name, g, v))
				}
			}
			if maps.Equal(want, got) && len(wrong) == 0 {
				latency.AddHistogram(fams, metrics.SchedulingLatency)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: corral_units %v, clusterctl lists %v; %s", n.Name, got, want, strings.Join(wrong, "; "))
			}
			time.Sleep(200 * time.Millisecond) // a scrape is a poll: no event says the numbers moved
		}
	}
	if want["launched/active"] != 3 || want["unscheduled/none"] != 1 || want["inactive/none"] != 1 {
		t.Fatalf("clusterctl lists %v; want 3 launched/active, 1 unscheduled, 1 inactive", want)
	}
	// The engine, on one of the machines, placed the three instances.
	if latency.Count < 3 {
		t.Errorf("%s counts %d placements over all nodes, want at least 3", metrics.SchedulingLatency, latency.Count)
	}

	var out bytes.Buffer
	if err := provision.Status(context.Background(), provision.Options{File: c.File, Out: &out, Err: &out}); err != nil {
		t.Fatal(err)
	}
	t.Logf("provision status:\n%s", out.String())
	for _, line := range []string{
		"machines     3",
		"units        3 launched, 0 loaded, 1 inactive, 1 unscheduled",
		"etcd         3 members (3 voters), 3 of 3 healthy",
		"overlay      3 leases",
		"scheduling   p50 ",
		fmt.Sprintf("over %d placements", latency.Count),
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("provision status lacks %q:\n%s", line, out.String())
		}
	}

	// A machine is lost: its unit moves, and the engine (wherever it is
	// then) counts a failover.
	if out, errOut, code := c.Ctl(append([]string{"start"}, example("deploy-app.service")...)...); code != 0 {
		t.Fatalf("start deploy-app (exit %d): %s%s", code, out, errOut)
	}
	snap := c.WaitUnits("deploy-app placed", func(s *unitstore.Snapshot) bool {
		u := s.Units["deploy-app.service"]
		return u != nil && u.Placement != nil && u.Placement.Machine != ""
	})
	lostID := snap.Units["deploy-app.service"].Placement.Machine
	var lost string
	for _, m := range c.WaitMachines(time.Minute, "3 machines", func(ms []registry.Machine) bool { return len(ms) == 3 }) {
		if m.ID == lostID {
			lost = m.Name
		}
	}
	c.Kill(lost)
	c.WaitUnits("deploy-app moved off "+lost, func(s *unitstore.Snapshot) bool {
		u := s.Units["deploy-app.service"]
		return u != nil && u.Placement != nil && u.Placement.Machine != "" && u.Placement.Machine != lostID
	})
	failovers := 0.0
	for _, n := range c.Nodes() {
		if n.Name == lost {
			continue
		}
		fams, err := metrics.Scrape(context.Background(), client, metrics.URL(n.IP.AsSlice()))
		if err != nil {
			t.Fatalf("scraping %s: %v", n.Name, err)
		}
		failovers += metrics.Gauge(fams, metrics.Failovers, nil)
	}
	if failovers != 1 {
		t.Errorf("%s summed over the live machines = %v, want 1", metrics.Failovers, failovers)
	}
}
