package daemon

import (
	"context"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/deployhook"
	"github.com/corral-dev/corral/clusterd/metrics"
	"github.com/corral-dev/corral/clusterd/store"
)

// startMetrics makes the node's metrics, which the engine reports to, and
// serves them on --metrics-addr (plain HTTP, for Prometheus) unless that
// is empty. They stop with Close.
func (n *Node) startMetrics() error {
	opts := metrics.Options{
		Client:    n.Store.Client,
		MachineID: n.Machine.ID,
		LocalMember: func() string {
			if n.Store.IsMember() { // a promoted client's changes too
				return store.ClientURL(n.cfg.IP, 0)
			}
			return ""
		},
		Log: n.cfg.Log,
	}
	if n.Overlay != nil {
		opts.OverlayUp = func() bool { return n.Overlay.State() != nil }
	}
	n.metrics = metrics.New(opts)
	if n.cfg.MetricsAddr == "" {
		return nil
	}
	addr, err := metrics.Addr(n.cfg.MetricsAddr, n.cfg.IP)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := n.metrics.Serve(ctx, addr); err != nil {
		cancel()
		return err
	}
	n.stopMetrics = cancel
	return nil
}

// runDeployHook serves the deploy hook on this machine's IP, with its
// certificate from the cluster CA, whenever provision has written a
// deploy_hook block. Every machine serves it, so any node's address works
// for a CI system.
func (n *Node) runDeployHook(ctx context.Context) {
	caPEM, certPEM, keyPEM, err := n.cfg.nodeFiles().Read()
	if err != nil {
		n.cfg.Log.Error("deploy hook not served: reading the node's certificate", "err", err)
		return
	}
	conf, err := pki.ServerTLS(caPEM, certPEM, keyPEM, false)
	if err != nil {
		n.cfg.Log.Error("deploy hook not served", "err", err)
		return
	}
	s := &deployhook.Server{Client: n.Store.Client, IP: n.cfg.IP, TLS: conf, Log: n.cfg.Log.With("component", "deployhook")}
	s.Run(ctx)
}
