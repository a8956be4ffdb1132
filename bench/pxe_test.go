package bench

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/providers/pxe"
	"github.com/corral-dev/corral/templates"
)

const (
	// pxeMachines is how many machines network-boot at once: a rack row
	// powered on together.
	pxeMachines = 1000
	// pxeRounds is how many times each machine asks /ipxe then /ignition
	// in one run (as iPXE and the initramfs do on each boot), for enough
	// requests to read a p99 from.
	pxeRounds = 10
)

// pxeResult is one run of every machine's requests against one server.
type pxeResult struct {
	requests  int
	elapsed   time.Duration
	latencies []time.Duration // sorted
}

func (r pxeResult) perSecond() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r pxeResult) p99() time.Duration {
	return r.latencies[min(len(r.latencies)-1, len(r.latencies)*99/100)]
}

// BenchmarkPXE measures the boot server under a thousand machines booting at
// once: each asks /ipxe for its boot script, then /ignition for its config
// (rendered by package templates, a few kilobytes), over real HTTP on
// loopback, each on a connection of its own, opened before the clock
// starts. The baseline is a handler writing a fixed small body, asked the
// same way by the same client at the same concurrency: the cost of HTTP
// itself on this machine. Requests per second and p99 latency are reported
// as ratios against it.
func BenchmarkPXE(b *testing.B) {
	srv, macs := pxeServer(b)
	fixed := []byte("#!ipxe\nexit\n")
	baseline := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(fixed)
	})
	var base, target pxeResult
	for range b.N {
		base = runPXE(b, baseline, macs, false)
		target = runPXE(b, srv, macs, true)
	}
	for _, r := range []struct {
		tag string
		pxeResult
	}{{"baseline", base}, {"pxe", target}} {
		b.ReportMetric(r.perSecond(), "req/s-"+r.tag)
		b.ReportMetric(float64(r.p99().Microseconds())/1000, "ms-p99-"+r.tag)
		b.Logf("%-8s %d machines × %d boots × 2 requests: %d requests in %.2fs = %.0f req/s, p50 %v, p99 %v",
			r.tag, pxeMachines, pxeRounds, r.requests, r.elapsed.Seconds(), r.perSecond(),
			r.latencies[len(r.latencies)/2].Round(time.Microsecond), r.p99().Round(time.Microsecond))
	}
	rps := target.perSecond() / base.perSecond()
	p99 := float64(target.p99()) / float64(base.p99())
	b.ReportMetric(rps, "req/s-pxe/baseline")
	b.ReportMetric(p99, "p99-pxe/baseline")
	b.Logf("boot server vs a fixed small body, %d concurrent machines: %.2f× the requests per second, %.2f× the p99 latency", pxeMachines, rps, p99)
}

// pxeServer is a boot server with pxeMachines machines, each with its own
// rendered Ignition config; it returns their MACs.
func pxeServer(b *testing.B) (*pxe.Server, []string) {
	b.Helper()
	srv := &pxe.Server{BaseURL: "http://10.0.0.1:8080", Log: slog.New(slog.DiscardHandler)}
	profile := pxe.Profile{Kernel: "vmlinuz", Initrds: []string{"corral-initrd.img"}, Args: []string{"console=ttyS0,115200n8"}}
	macs := make([]string, pxeMachines)
	for i := range macs {
		name := fmt.Sprintf("metal-%d", i+1)
		node := templates.Node{
			Hostname: name, Cluster: "bench",
			Clusterd: templates.Clusterd{
				Mode:    templates.ModeClient,
				Token:   "CRL1::sha256:" + strings.Repeat("ab", 32) + "::" + strings.Repeat("5", 64),
				Servers: []string{"10.0.0.11", "10.0.0.12", "10.0.0.13"},
			},
			Binary: templates.Binary{URL: "http://10.0.0.1:8080/assets/clusterd", SHA512: strings.Repeat("0f", 64)},
		}
		ign, err := templates.Render(node, templates.FormatIgnition)
		if err != nil {
			b.Fatal(err)
		}
		macs[i] = fmt.Sprintf("02:c0:00:00:%02x:%02x", i>>8, i&0xff)
		if err := srv.Set(pxe.Machine{Name: name, MAC: macs[i], Profile: profile, Ignition: ign}); err != nil {
			b.Fatal(err)
		}
	}
	return srv, macs
}

// runPXE has every machine boot pxeRounds times against h, all at once, and
// times each request. check makes sure each answer is the machine's own.
func runPXE(b *testing.B, h http.Handler, macs []string, check bool) pxeResult {
	b.Helper()
	ts := httptest.NewServer(h)
	defer ts.Close()
	tr := &http.Transport{MaxIdleConns: 2 * pxeMachines, MaxIdleConnsPerHost: 2 * pxeMachines, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}

	get := func(url string) (string, error) {
		resp, err := client.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return string(body), err
	}

	lat := make([][]time.Duration, len(macs))
	errs := make(chan error, len(macs))
	start := make(chan struct{})
	var wg, warm sync.WaitGroup
	for i, mac := range macs {
		wg.Add(1)
		warm.Add(1)
		go func() {
			defer wg.Done()
			hyp := strings.ReplaceAll(mac, ":", "-")
			l := make([]time.Duration, 0, 2*pxeRounds)
			// One untimed request first: every machine's connection is
			// open, and the goroutines' stacks grown, before the clock
			// starts, so both handlers are timed on the same footing.
			_, err := get(ts.URL + "/ipxe?mac=" + hyp + "&uuid=")
			warm.Done()
			if err != nil {
				errs <- err
				return
			}
			<-start
			for range pxeRounds {
				t0 := time.Now()
				script, err := get(ts.URL + "/ipxe?mac=" + hyp + "&uuid=")
				t1 := time.Now()
				if err == nil {
					var ign string
					ign, err = get(ts.URL + "/ignition?mac=" + mac)
					if err == nil && check && (!strings.Contains(script, "corral.config=http://10.0.0.1:8080/ignition?mac="+mac+" ") || !strings.Contains(ign, fmt.Sprintf("metal-%d", i+1))) {
						err = fmt.Errorf("machine %s got another's answer:\n%s", mac, script)
					}
				}
				if err != nil {
					errs <- err
					return
				}
				l = append(l, t1.Sub(t0), time.Since(t1))
			}
			lat[i] = l
		}()
	}
	warm.Wait()
	t0 := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(t0)
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	return pxeResult{requests: len(all), elapsed: elapsed, latencies: all}
}
