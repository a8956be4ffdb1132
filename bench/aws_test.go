package bench

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/awsemu"
	"github.com/corral-dev/corral/providers/aws"
)

// awsSpec is the production stack of the book's chapter 8: three zones,
// one group of three behind a sticky HTTP load balancer, with a volume.
func awsSpec(endpoint string) aws.Spec {
	return aws.Spec{
		Cluster: "bench", Region: "us-west-2", Zones: []string{"us-west-2a", "us-west-2b", "us-west-2c"},
		VPCCIDR:      netip.MustParsePrefix("10.1.0.0/16"),
		AllowSSHFrom: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
		Endpoint:     endpoint,
		Groups: []aws.Group{{
			Name: "core", Desired: 3, Min: 3, Max: 9, InstanceType: "t3.small", Image: "flatcar-stable",
			Volumes:       []aws.Volume{{Path: "/var/lib/docker", SizeGB: 10}},
			LoadBalancers: []aws.LoadBalancer{{Name: "web", Port: 80, TargetPort: 3000, Protocol: "HTTP", Sticky: true}},
			UserData:      []byte("#cloud-config\nhostname: core\n"),
		}},
	}
}

// applyOnce builds the stack in a fresh emulator with the given latency
// per call, then applies it again unchanged; it returns the calls and the
// wall time of each run, and the mutating calls of the second.
func applyOnce(b *testing.B, latency time.Duration) (calls, again, mutatingAgain int, full, rerun time.Duration) {
	b.Helper()
	e := awsemu.New(awsemu.Options{})
	url, err := e.Start()
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	e.SetLatency(latency)
	ctx := context.Background()
	s, err := aws.New(ctx, awsSpec(url), aws.Options{WaitDelay: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	if _, err := s.Apply(ctx); err != nil {
		b.Fatal(err)
	}
	full, calls = time.Since(start), len(e.Calls())
	start = time.Now()
	if _, err := s.Apply(ctx); err != nil {
		b.Fatal(err)
	}
	rerun = time.Since(start)
	for _, c := range e.Calls()[calls:] {
		again++
		if c.Mutating {
			mutatingAgain++
		}
	}
	return calls, again, mutatingAgain, full, rerun
}

// BenchmarkAWSUp measures a full `up` of the AWS stack against the
// emulator with 50 ms injected per API call, and an idempotent re-run. The
// baseline, in the same process, is the time those calls would take one
// after another (calls × 50 ms): the ratio shows what the parallel
// converge (independent resources at once) saves. A re-run must make no
// mutating call.
func BenchmarkAWSUp(b *testing.B) {
	b.Setenv("AWS_ACCESS_KEY_ID", "AKIDBENCH")
	b.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	const latency = 50 * time.Millisecond
	var calls, again, mut int
	var full, rerun time.Duration
	for range b.N {
		calls, again, mut, full, rerun = applyOnce(b, latency)
	}
	if mut != 0 {
		b.Fatalf("the re-run made %d mutating calls", mut)
	}
	serial := time.Duration(calls) * latency
	serialAgain := time.Duration(again) * latency
	b.ReportMetric(float64(calls), "calls/up")
	b.ReportMetric(full.Seconds(), "s/up")
	b.ReportMetric(float64(again), "calls/re-run")
	b.ReportMetric(rerun.Seconds(), "s/re-run")
	fmt.Printf("AWS up, 50 ms per call: %d calls in %v = %.2f× the serial baseline (%v); re-run: %d calls, 0 mutating, in %v = %.2f× serial (%v)\n",
		calls, full.Round(time.Millisecond), full.Seconds()/serial.Seconds(), serial,
		again, rerun.Round(time.Millisecond), rerun.Seconds()/serialAgain.Seconds(), serialAgain)
}
