// Package bench measures Corral's own speed. Figures are reported as ratios
// against a baseline measured in the same run, so they compare across
// machines; absolute seconds are printed alongside for this machine.
package bench

import (
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/clustertest"
)

// BenchmarkUp times `provision up` from nothing to every machine listed, for
// the default 3-node cluster against a 1-node baseline (a lone etcd member:
// the fixed cost of a process, its certificate and an etcd start), and the
// `down` that follows.
func BenchmarkUp(b *testing.B) {
	measure := func(nodes int) (up, down time.Duration) {
		for range b.N {
			start := time.Now()
			c := clustertest.Start(b, clustertest.Options{Nodes: nodes})
			up += time.Since(start)
			start = time.Now()
			if err := c.Down(); err != nil {
				b.Fatal(err)
			}
			down += time.Since(start)
		}
		return up / time.Duration(b.N), down / time.Duration(b.N)
	}
	up1, _ := measure(1)
	up3, down3 := measure(3)
	b.ReportMetric(up1.Seconds(), "s/up-1node")
	b.ReportMetric(up3.Seconds(), "s/up-3nodes")
	b.ReportMetric(down3.Seconds(), "s/down-3nodes")
	b.ReportMetric(up3.Seconds()/up1.Seconds(), "up-3nodes/up-1node")
	b.Logf("up 3 nodes: %.2fs = %.2f× the 1-node baseline (%.2fs); down: %.2fs", up3.Seconds(), up3.Seconds()/up1.Seconds(), up1.Seconds(), down3.Seconds())
}
