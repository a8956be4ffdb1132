package provision

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/corral-dev/corral/clusterd/metrics"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/provision/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// printClusterMetrics prints the numbers clusterd's /metrics shows, read
// and counted by the same code (metrics.Read, metrics.Health); the
// scheduling latency, which only the engines know, comes from the nodes'
// /metrics pages, summed.
func printClusterMetrics(ctx context.Context, out io.Writer, cli *clientv3.Client, nodes, members []state.Node) {
	if cli == nil {
		return
	}
	c, err := metrics.Read(ctx, cli)
	if err != nil {
		fmt.Fprintf(out, "\ncluster metrics unavailable: %v\n", err)
		return
	}
	healthy := 0
	for _, m := range members {
		if metrics.Health(ctx, cli, store.ClientURL(m.IP.AsSlice(), 0)) == nil {
			healthy++
		}
	}
	lat, failovers, scraped := scrapeNodes(ctx, nodes)
	fmt.Fprintln(out)
	fmt.Fprintf(out, "machines     %d\n", c.MachineCount())
	fmt.Fprintf(out, "units        %d launched, %d loaded, %d inactive, %d unscheduled\n",
		c.UnitsIn(unitstore.Launched), c.UnitsIn(unitstore.Loaded), c.UnitsIn(unitstore.Inactive), c.UnitsIn(metrics.Unscheduled))
	fmt.Fprintf(out, "etcd         %d members (%d voters), %d of %d healthy\n", c.EtcdMembers, c.EtcdVoters, healthy, len(members))
	fmt.Fprintf(out, "overlay      %d leases\n", c.OverlayLeases)
	switch {
	case scraped == 0:
		fmt.Fprintf(out, "scheduling   unknown (no node's /metrics answered on port %d)\n", metrics.DefaultPort)
	case lat.Count == 0:
		fmt.Fprintf(out, "scheduling   no placements yet; %d failovers\n", failovers)
	default:
		fmt.Fprintf(out, "scheduling   p50 %s, p99 %s over %d placements; %d failovers\n",
			seconds(lat.Quantile(0.5)), seconds(lat.Quantile(0.99)), lat.Count, failovers)
	}
}

// scrapeNodes reads every node's /metrics at once, and sums the engines'
// scheduling histograms and failover counters.
func scrapeNodes(ctx context.Context, nodes []state.Node) (lat metrics.Histogram, failovers int, scraped int) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	client := &http.Client{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			fams, err := metrics.Scrape(ctx, client, metrics.URL(n.IP.AsSlice()))
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			scraped++
			lat.AddHistogram(fams, metrics.SchedulingLatency)
			failovers += int(metrics.Gauge(fams, metrics.Failovers, nil))
		})
	}
	wg.Wait()
	return lat, failovers, scraped
}

// seconds prints a latency estimate in a readable unit.
func seconds(s float64) string {
	if math.IsNaN(s) {
		return "-"
	}
	return time.Duration(s * float64(time.Second)).Round(100 * time.Microsecond).String()
}
