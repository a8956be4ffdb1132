package provision

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/deployhook"
	"github.com/corral-dev/corral/provision/state"
	"github.com/spf13/cobra"
)

// deployHookSetting is the deploy_hook block as a cluster-wide setting;
// its marker keeps the settings without the secret.
var deployHookSetting = setting{
	key:     deployhook.SettingsKey,
	marker:  "deploy_hook.json",
	off:     "the deploy hook",
	offNote: "deploy hook: off (no deploy_hook block)",
}

// deployHookSecretFile, in the state's pki directory, keeps the secret
// provision generated for a deploy_hook block that sets none.
const deployHookSecretFile = "deploy-hook.secret"

// deployHookSettings are the file's deploy_hook block as clusterd reads
// it, with the secret from the file, else the one generated earlier, else
// (when generate) a new one, kept in the state. generated reports a
// secret made now.
func (c *cluster) deployHookSettings(generate bool) (s *deployhook.Settings, generated bool, err error) {
	h := c.cfg.DeployHook
	if h == nil {
		return nil, false, fmt.Errorf("%s has no deploy_hook block; add `deploy_hook {}` and run `provision up %s`", c.opts.File, c.opts.File)
	}
	s = &deployhook.Settings{Key: h.Key, Port: h.Port, Secret: h.Secret}
	if s.Secret != "" {
		return s, false, nil
	}
	path := c.dir.PKI(deployHookSecretFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		s.Secret = strings.TrimSpace(string(b))
		return s, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, err
	case !generate:
		return nil, false, fmt.Errorf("the deploy hook has no secret yet: run `provision up %s` (it generates one), or set secret in the deploy_hook block", c.opts.File)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, false, err
	}
	s.Secret = hex.EncodeToString(raw[:])
	return s, true, state.WriteFile(path, []byte(s.Secret+"\n"))
}

// ensureDeployHook writes the deploy_hook block where every clusterd
// watches it (deployhook.SettingsKey), or removes it when the file no
// longer has one, so the hook starts, changes or stops on the running
// machines without restarting them.
func (c *cluster) ensureDeployHook(ctx context.Context, timeout time.Duration) error {
	var value func() (settingValue, error)
	var s *deployhook.Settings
	var generated bool
	if c.cfg.DeployHook != nil {
		value = func() (settingValue, error) {
			var err error
			if s, generated, err = c.deployHookSettings(true); err != nil {
				return settingValue{}, err
			}
			public := deployhook.Settings{Key: s.Key, Port: s.Port}
			return settingValue{put: s, record: public, name: "deploy_hook"}, nil
		}
	}
	written, err := c.ensureSetting(ctx, timeout, deployHookSetting, false, value)
	if written {
		fmt.Fprintf(c.opts.Out, "deploy hook: POST https://<any node>:%d%s writes %s; send one with `provision deploy %s JSON`\n",
			s.Port, deployhook.Path, s.Key, c.opts.File)
		if generated {
			fmt.Fprintf(c.opts.Out, "deploy hook: generated its secret; `provision deploy %s --show-secret` prints it\n", c.opts.File)
		}
	}
	return err
}

// DeployOptions are `provision deploy`'s.
type DeployOptions struct {
	Options
	Body string // the JSON to deploy
	Node string // the node to send to; "" tries each in turn
	// ShowSecret prints the hook's secret (for a CI system to sign with)
	// instead of deploying.
	ShowSecret bool
}

// Deploy signs Body with the deploy hook's secret and POSTs it to a node's
// hook, as a CI system would; it prints the key and the revision written.
func Deploy(ctx context.Context, opts DeployOptions) error {
	c, err := open(opts.Options)
	if err != nil {
		return err
	}
	s, _, err := c.deployHookSettings(false)
	if err != nil {
		return err
	}
	if opts.ShowSecret {
		fmt.Fprintln(c.opts.Out, s.Secret)
		return nil
	}
	body := []byte(opts.Body)
	if !json.Valid(body) {
		return fmt.Errorf("the deploy body %q is not JSON; quote it for the shell, e.g. '{\"image\":\"v2\"}'", opts.Body)
	}
	nodes := c.state.Nodes
	if opts.Node != "" {
		n := c.state.Node(opts.Node)
		if n == nil {
			return fmt.Errorf("cluster %q has no node %s; `provision status %s` lists them", c.cfg.Cluster.Name, opts.Node, opts.File)
		}
		nodes = []state.Node{*n}
	}
	if len(nodes) == 0 {
		return fmt.Errorf("cluster %q has no nodes; run `provision up %s`", c.cfg.Cluster.Name, opts.File)
	}
	client, err := c.hookClient()
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range nodes {
		url := "https://" + net.JoinHostPort(n.IP.String(), strconv.Itoa(s.Port)) + deployhook.Path
		req, err := deployhook.NewRequest(ctx, url, s.Secret, body, time.Now())
		if err != nil {
			return err
		}
		res, err := deployhook.Do(client, req)
		if err == nil {
			fmt.Fprintf(c.opts.Out, "deployed: %s = %s (revision %d, via %s)\n", res.Key, bytes.TrimSpace(body), res.Revision, n.Name)
			return nil
		}
		var netErr net.Error
		if !errors.As(err, &netErr) {
			return fmt.Errorf("deploy via %s: %w", n.Name, err) // refused: another node would refuse too
		}
		errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
	}
	return fmt.Errorf("no node's deploy hook answered (is the deploy_hook block applied? run `provision up %s`): %w", opts.File, errors.Join(errs...))
}

// hookClient trusts the cluster CA, and presents no certificate: the
// signature is the credential.
func (c *cluster) hookClient() (*http.Client, error) {
	caPEM, err := os.ReadFile(c.adminFiles().CA)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA: %w (run `provision up %s` first)", err, c.opts.File)
	}
	tlsConf, err := pki.ClientTLS(caPEM, nil, nil)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}, Timeout: 10 * time.Second}, nil
}

// deployCommand is `provision deploy FILE JSON`.
func deployCommand(opts func(*cobra.Command, []string) Options) *cobra.Command {
	var o DeployOptions
	cmd := &cobra.Command{
		Use:   "deploy FILE [JSON]",
		Short: "Sign JSON with the deploy hook's secret and send it to the cluster's deploy hook",
		Long: `deploy sends JSON to the deploy hook of the file's deploy_hook block, signed
with its secret, as a CI system would: the hook writes it to the block's key
(default /coreos.com/deploy), where a sidekick unit watching the key acts on
it. It prints the key and the etcd revision written.

  provision deploy cluster.hcl '{"image":"v2"}'
  provision deploy cluster.hcl --show-secret   the secret, for a CI system`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.Options = opts(cmd, args)
			if len(args) == 2 {
				o.Body = args[1]
			} else if !o.ShowSecret {
				return errors.New(`give the JSON to deploy, e.g. provision deploy FILE '{"image":"v2"}'`)
			}
			return Deploy(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.Node, "node", "", "send to this node (default: the first that answers)")
	cmd.Flags().BoolVar(&o.ShowSecret, "show-secret", false, "print the hook's secret instead of deploying")
	return cmd
}
