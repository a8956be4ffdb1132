package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// DefaultPort is where clusterd serves /metrics unless --metrics-addr says
// otherwise: plain HTTP, as Prometheus scrapes it.
const DefaultPort = 9479

// Metric names, shared with provision status, which reads them back.
const (
	SchedulingLatency = "corral_scheduling_latency_seconds"
	Failovers         = "corral_failovers_total"
)

// scrapeTimeout bounds the etcd reads one scrape makes: a scrape of a node
// cut off from etcd answers (etcd unhealthy) rather than hanging.
const scrapeTimeout = 3 * time.Second

// Options say where the node-local numbers come from.
type Options struct {
	Client *clientv3.Client
	// LocalMember returns this node's own etcd client URL while it runs a
	// member, "" on a client; the health check asks that member, so each
	// member's corral_etcd_healthy speaks for itself.
	LocalMember func() string
	// MachineID is this machine's id, to tell its overlay peers from it.
	MachineID string
	// OverlayUp reports whether this machine's overlay is up; nil means
	// the machine takes no part in the overlay.
	OverlayUp func() bool
	Log       *slog.Logger
}

// Metrics is one clusterd's metrics, in a registry of its own: etcd's
// server metrics (which the embedded member puts in Prometheus' default
// registry) stay out, so /metrics shows Corral's view only, plus the Go
// runtime and process collectors.
type Metrics struct {
	opts       Options
	reg        *prometheus.Registry
	scheduling prometheus.Histogram
	failovers  prometheus.Counter
}

// New makes the registry and its metrics.
func New(opts Options) *Metrics {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	m := &Metrics{
		opts: opts,
		reg:  prometheus.NewRegistry(),
		scheduling: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: SchedulingLatency,
			Help: "Time from a unit wanting a machine (as the elected engine saw it) to its assignment being written.",
			// 1ms to about 33s: a pass takes milliseconds; a unit that
			// waits for a machine to appear takes seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: Failovers,
			Help: "Units this machine's engine moved off machines that were lost.",
		}),
	}
	m.reg.MustRegister(m.scheduling, m.failovers, &state{m: m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Placed records one unit's scheduling latency (scheduler.Observer).
func (m *Metrics) Placed(latency time.Duration) { m.scheduling.Observe(latency.Seconds()) }

// FailedOver counts units moved off lost machines (scheduler.Observer).
func (m *Metrics) FailedOver(units int) { m.failovers.Add(float64(units)) }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(m.opts.Log.Handler(), slog.LevelWarn)})
}

// Addr resolves --metrics-addr: an address without a host (":9479") binds
// the node's own IP, so nodes sharing a network namespace (the local
// provider's loopback mode) don't collide.
func Addr(flag string, ip net.IP) (string, error) {
	host, port, err := net.SplitHostPort(flag)
	if err != nil {
		return "", fmt.Errorf("--metrics-addr %q: want host:port or :port, e.g. :%d (%v)", flag, DefaultPort, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", fmt.Errorf("--metrics-addr %q: port %q is not a number from 0 to 65535", flag, port)
	}
	if host == "" {
		host = ip.String()
	}
	return net.JoinHostPort(host, port), nil
}

// Serve serves /metrics on addr until ctx ends. The listener is opened
// before Serve returns, so a port in use is an error at start.
func (m *Metrics) Serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("clusterd: metrics: %w (choose another with --metrics-addr, or --metrics-addr='' for none)", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(m.opts.Log.Handler(), slog.LevelDebug)}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.opts.Log.Error("metrics server stopped", "err", err)
		}
	}()
	m.opts.Log.Info("serving metrics", "addr", "http://"+ln.Addr().String()+"/metrics")
	return nil
}
