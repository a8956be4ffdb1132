// Package clusterctl is the cluster's command line: fleetctl's machine and
// unit verbs and etcdctl v2's key verbs, over the cluster's etcd with the
// cluster's certificates. It works from a workstation (with the settings
// `provision env` prints) and on any node (from the node's own settings).
package clusterctl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// connection holds the flags that say where the cluster is.
type connection struct {
	endpoints []string
	files     pki.Files
	timeout   time.Duration
}

// NodeEnvFile is where clusterd leaves a node's settings; clusterctl reads
// it when neither flags nor environment say where the cluster is.
var NodeEnvFile = "/var/lib/clusterd/clusterctl.env"

// Command is `clusterctl`.
func Command() *cobra.Command {
	conn := &connection{}
	root := &cobra.Command{
		Use:   "clusterctl",
		Short: "Control a Corral cluster: machines, keys, members",
		Long: `clusterctl talks to a Corral cluster's etcd with mutual TLS.

Where the cluster is comes from flags, else from the environment that
'provision env FILE' prints (ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT,
ETCDCTL_KEY), else on a node from ` + NodeEnvFile + `.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	f := root.PersistentFlags()
	f.StringSliceVar(&conn.endpoints, "endpoints", nil, "etcd client URLs (default $ETCDCTL_ENDPOINTS)")
	f.StringVar(&conn.files.CA, "cacert", "", "cluster CA certificate (default $ETCDCTL_CACERT)")
	f.StringVar(&conn.files.Cert, "cert", "", "client certificate (default $ETCDCTL_CERT)")
	f.StringVar(&conn.files.Key, "key", "", "client key (default $ETCDCTL_KEY)")
	f.DurationVar(&conn.timeout, "dial-timeout", 5*time.Second, "how long to wait for the cluster to answer")
	root.AddCommand(machinesCommand(conn.connect), healthCommand(conn.connect), memberCommand(conn.connect), netCommand(conn))
	root.AddCommand(KVCommands(conn.connect)...)
	root.AddCommand(unitCommands(conn)...)
	root.AddCommand(sshCommand(conn))
	root.AddCommand(machineCommand(conn.connect))
	root.AddCommand(lockCommand(conn.connect))
	return root
}

// connect fills unset settings from the environment or the node's file and
// returns a client.
func (c *connection) connect(ctx context.Context) (*clientv3.Client, error) {
	env := func(k string) string { return os.Getenv(k) }
	if os.Getenv("ETCDCTL_ENDPOINTS") == "" {
		nodeEnv := NodeEnvFile
		if dir := os.Getenv("CLUSTERD_DATA_DIR"); dir != "" {
			nodeEnv = filepath.Join(dir, "clusterctl.env")
		}
		if fileEnv, err := readEnvFile(nodeEnv); err == nil {
			env = func(k string) string { return fileEnv[k] }
		}
	}
	if len(c.endpoints) == 0 && env("ETCDCTL_ENDPOINTS") != "" {
		c.endpoints = strings.Split(env("ETCDCTL_ENDPOINTS"), ",")
	}
	for _, s := range []struct {
		v   *string
		key string
	}{{&c.files.CA, "ETCDCTL_CACERT"}, {&c.files.Cert, "ETCDCTL_CERT"}, {&c.files.Key, "ETCDCTL_KEY"}} {
		if *s.v == "" {
			*s.v = env(s.key)
		}
	}
	if len(c.endpoints) == 0 || c.files.CA == "" || c.files.Cert == "" || c.files.Key == "" {
		return nil, errors.New(`no cluster to talk to: run eval "$(provision env FILE)" first, or give --endpoints, --cacert, --cert and --key`)
	}
	cli, err := store.Connect(ctx, c.files, c.endpoints)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", strings.Join(c.endpoints, ","), err)
	}
	// Best effort: move off members that are still learners. A cluster
	// that doesn't answer in time is left to the command to report (so
	// cluster-health can still say which members are down).
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	store.Ready(rctx, cli)
	return cli, nil
}

// httpClient talks to clusterd's API on the machines with the same
// certificate as the etcd client (call it after connect).
func (c *connection) httpClient() (*http.Client, error) {
	caPEM, certPEM, keyPEM, err := c.files.Read()
	if err != nil {
		return nil, err
	}
	tlsConf, err := pki.ClientTLS(caPEM, certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}, nil
}

// connectFunc gives a ready client; the root command owns flags and certs.
type connectFunc func(ctx context.Context) (*clientv3.Client, error)

// withClient adapts fn to cobra's RunE: it bounds the command by timeout
// (if not zero), connects, and closes the client afterwards.
func withClient(connect connectFunc, timeout time.Duration, fn func(ctx context.Context, c *clientv3.Client, cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		ctx := cmd.Context()
		if timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, timeout)
			defer cancel()
		}
		c, err := connect(ctx)
		if err != nil {
			return err
		}
		defer c.Close()
		return fn(ctx, c, cmd, args)
	}
}

// readEnvFile reads KEY=VALUE lines.
func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(filepath.Clean(path))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && !strings.HasPrefix(k, "#") {
			out[k] = v
		}
	}
	return out, sc.Err()
}

// Main runs clusterctl with args and returns the process exit code.
func Main(ctx context.Context, args []string) int {
	cmd := Command()
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if !errors.Is(err, errRemoteStatus) { // ssh: the status says it
			fmt.Fprintln(cmd.ErrOrStderr(), err.Error())
		}
		return ee.Code
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "Error:", err.Error())
	return 1
}
