package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/metrics"
	"github.com/corral-dev/corral/clusterd/overlay"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/scheduler"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/spf13/cobra"
)

// Command is `clusterd`, the node daemon's command line.
func Command(version string) *cobra.Command {
	var (
		cfg       = Config{Version: version}
		ip, mode  string
		token     string
		tokenFile string
		metadata  []string
	)
	cmd := &cobra.Command{
		Use:   "clusterd",
		Short: "The Corral node daemon: embedded etcd, machine registry, join endpoint",
		Long: `clusterd runs on every machine of a Corral cluster. The first node (--mode init)
starts a new etcd cluster with the CA that provision made; the next voting
members (--mode join) join it through --servers with the join token; the rest
(--mode client) use the members' etcd without running one.

A node restarted with its --data-dir comes back as the same machine and member.`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if cfg.Metadata, err = ParseMetadata(metadata); err != nil {
				return err
			}
			if cfg.AWS.Bootstrap != "" {
				// Name, IP, mode, servers and token are discovered (aws.go).
				if err := awsFlagConflicts(cmd); err != nil {
					return err
				}
			} else {
				if cfg.IP = net.ParseIP(ip); cfg.IP == nil {
					return fmt.Errorf("--ip %q is not an IP address", ip)
				}
				if cfg.Mode, err = store.ParseMode(mode); err != nil {
					return err
				}
				if tokenFile != "" {
					b, err := os.ReadFile(tokenFile)
					if err != nil {
						return err
					}
					token = string(b)
				}
				if token == "" {
					token = os.Getenv("CORRAL_TOKEN")
				}
				if token == "" {
					return errors.New("no join token: give --token-file, --token or CORRAL_TOKEN")
				}
				if cfg.Token, err = pki.ParseToken(token); err != nil {
					return err
				}
			}
			cfg.Log = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)).With("node", cfg.Name)
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return run(ctx, cfg)
		},
	}
	awsFlags(cmd, &cfg.AWS)
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "node name, e.g. core-1 (also its etcd member name)")
	f.StringVar(&cfg.DataDir, "data-dir", "/var/lib/clusterd", "state directory: etcd data, certificates, machine id")
	f.StringVar(&ip, "ip", "", "this machine's address on the cluster network")
	f.StringVar(&mode, "mode", "client", "init, join or client (ignored once the data dir holds a member)")
	f.StringSliceVar(&cfg.Servers, "servers", nil, "addresses of the etcd members (comma-separated)")
	f.StringVar(&tokenFile, "token-file", "", "file holding the cluster's join token")
	f.StringVar(&token, "token", "", "the cluster's join token (prefer --token-file)")
	f.StringVar(&cfg.CAFiles.CA, "ca-cert", "", "init only: the cluster CA certificate")
	f.StringVar(&cfg.CAFiles.Key, "ca-key", "", "init only: the cluster CA key")
	f.StringVar(&cfg.RestoreFrom, "restore-from", "", "init only: start the new cluster from this etcd snapshot (ignored once the data dir holds a member)")
	f.StringSliceVar(&metadata, "metadata", nil, "machine metadata as key=value pairs (comma-separated)")
	f.DurationVar(&cfg.TTL, "machine-ttl", registry.DefaultTTL, "how long the machine outlives its last heartbeat")
	f.Int64Var(&cfg.Quota, "quota-bytes", store.DefaultQuota, "etcd backend quota in bytes")
	f.IntVar(&cfg.APIPort, "api-port", DefaultAPIPort, "clusterd's HTTPS port (join endpoint, overlay self-test)")
	f.BoolVar(&cfg.NoOverlay, "no-overlay", false, "don't take part in the overlay network")
	f.StringVar(&cfg.Overlay.Bridge, "bridge", overlay.DefaultBridge, "the bridge that holds this machine's overlay subnet (docker0-style)")
	f.StringVar(&cfg.Overlay.SubnetFile, "subnet-file", overlay.DefaultSubnetFile, "where to write flannel's subnet.env")
	f.BoolVar(&cfg.Overlay.IPMasq, "ip-masq", true, "masquerade traffic leaving the overlay")
	f.BoolVar(&cfg.Overlay.Cleanup, "cleanup", false, "on exit, remove the overlay's devices, routes and rules")
	f.StringVar(&cfg.Driver, "driver", "auto", "unit driver: exec, systemd, or auto (systemd when PID 1 is systemd)")
	f.DurationVar(&cfg.Grace, "reschedule-grace", scheduler.DefaultGrace, "how long a lost machine's units wait before they move")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", fmt.Sprintf(":%d", metrics.DefaultPort), "serve Prometheus /metrics (plain HTTP) here; no host means this machine's --ip; '' for none")
	return cmd
}

func run(ctx context.Context, cfg Config) error {
	n, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Run(ctx)
}

// ParseMetadata reads key=value pairs, as fleet's --metadata did.
func ParseMetadata(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" || v == "" {
			return nil, fmt.Errorf("metadata %q: want key=value", p)
		}
		out[k] = v
	}
	return out, nil
}
