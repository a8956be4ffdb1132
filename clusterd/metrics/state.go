package metrics

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	machinesDesc = prometheus.NewDesc("corral_machines", "Machines registered, by the role in their metadata.", []string{"role"}, nil)
	unitsDesc    = prometheus.NewDesc("corral_units",
		"Submitted units, by state (as clusterctl list-unit-files shows it, or unscheduled) and active (as list-units shows it, or none).",
		[]string{"state", "active"}, nil)
	healthyDesc = prometheus.NewDesc("corral_etcd_healthy",
		"1 when this machine's store answers (its own member, or the cluster through its client), else 0.", nil, nil)
	membersDesc = prometheus.NewDesc("corral_etcd_members", "etcd members, learners included.", nil, nil)
	votersDesc  = prometheus.NewDesc("corral_etcd_voters", "etcd members that vote (not learners).", nil, nil)
	leasesDesc  = prometheus.NewDesc("corral_overlay_leases", "Subnet leases in the overlay network.", nil, nil)
	peersDesc   = prometheus.NewDesc("corral_overlay_peers",
		"Other machines this machine's overlay routes to (0 while its overlay is down).", nil, nil)
)

// state collects the cluster's state from etcd at each scrape, so the
// numbers are never older than the scrape.
type state struct{ m *Metrics }

func (s *state) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{machinesDesc, unitsDesc, healthyDesc, membersDesc, votersDesc, leasesDesc, peersDesc} {
		ch <- d
	}
}

func (s *state) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	opts := s.m.opts
	healthy := 0.0
	if err := Health(ctx, opts.Client, opts.LocalMember()); err == nil {
		healthy = 1
	} else {
		opts.Log.Debug("etcd health check failed", "err", err)
	}
	ch <- prometheus.MustNewConstMetric(healthyDesc, prometheus.GaugeValue, healthy)
	if healthy == 0 {
		return // the reads below would each wait out the timeout
	}
	c, err := Read(ctx, opts.Client)
	if err != nil {
		// A missing series says "unknown" better than a zero would.
		opts.Log.Warn("reading the cluster's state for /metrics", "err", err)
		return
	}
	for role, n := range c.Machines {
		ch <- prometheus.MustNewConstMetric(machinesDesc, prometheus.GaugeValue, float64(n), role)
	}
	for k, n := range c.Units {
		ch <- prometheus.MustNewConstMetric(unitsDesc, prometheus.GaugeValue, float64(n), k.State, k.Active)
	}
	ch <- prometheus.MustNewConstMetric(membersDesc, prometheus.GaugeValue, float64(c.EtcdMembers))
	ch <- prometheus.MustNewConstMetric(votersDesc, prometheus.GaugeValue, float64(c.EtcdVoters))
	ch <- prometheus.MustNewConstMetric(leasesDesc, prometheus.GaugeValue, float64(c.OverlayLeases))
	ch <- prometheus.MustNewConstMetric(peersDesc, prometheus.GaugeValue, float64(s.peers(c)))
}

// peers counts the leases of other machines, as the overlay's sync does,
// once this machine's overlay is up.
func (s *state) peers(c *Cluster) int {
	if up := s.m.opts.OverlayUp; up == nil || !up() {
		return 0
	}
	n := 0
	for _, owner := range c.LeaseOwners {
		if owner != s.m.opts.MachineID {
			n++
		}
	}
	return n
}

// Health checks the store: with member (an etcd client URL) that member's
// status, which must know a leader; without, a quorum read through the
// client, as etcdctl endpoint health does.
func Health(ctx context.Context, cli *clientv3.Client, member string) error {
	if member != "" {
		st, err := cli.Status(ctx, member)
		if err != nil {
			return err
		}
		if st.Leader == 0 {
			return errors.New("the member knows no leader")
		}
		if len(st.Errors) > 0 {
			return errors.New(st.Errors[0])
		}
		return nil
	}
	_, err := cli.Get(ctx, "health")
	return err
}
