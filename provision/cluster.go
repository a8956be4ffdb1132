// Package provision turns a cluster's HCL file into running machines and
// back: up converges the cluster to the file, down removes all of it, status
// shows what runs, env prints the settings clusterctl and etcdctl need, and
// output prints the values the file's output blocks compute from the
// cluster.
package provision

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/providers/local"
	"github.com/corral-dev/corral/provision/config"
	"github.com/corral-dev/corral/provision/state"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrInvalidConfig marks a run stopped by diagnostics in the HCL file; the
// diagnostics have been printed already.
var ErrInvalidConfig = errors.New("invalid configuration")

// Options are what every command shares.
type Options struct {
	File   string    // the cluster's HCL file
	Out    io.Writer // progress and results
	Err    io.Writer // diagnostics and warnings
	Binary string    // the corral binary to run as clusterd; default: this one
	// Inputs are the values of the file's variables: -var, -var-file and
	// the CORRAL_VAR_ environment.
	Inputs config.Inputs
	// Profile is the AWS shared-config profile (--profile); it overrides
	// the aws provider's profile.
	Profile string
}

// cluster is one HCL file's cluster, opened for a command.
type cluster struct {
	opts  Options
	cfg   *config.Config
	dir   state.Dir
	state *state.State
	local *local.Provider // when the provider is local
	tgt   target
	sum   string // the SHA-512 of the binary nodes run, once computed
	// restore, during `provision restore`, is the snapshot the new
	// cluster starts from (backup.go).
	restore *restoreSource
	// keysMu guards state.HostKeys and the saves of recordHostKey, which
	// SSH connections call from concurrent launches and inventories.
	keysMu sync.Mutex
}

// recordHostKey keeps a host's first SSH key in the state, and saves the
// state if there is one on disk already: a plan before the first up
// writes nothing (up's first save carries the key; until then the key is
// only trusted for this run).
func (c *cluster) recordHostKey(host, fingerprint string) error {
	c.keysMu.Lock()
	defer c.keysMu.Unlock()
	if c.state.HostKeys == nil {
		c.state.HostKeys = map[string]string{}
	}
	c.state.HostKeys[host] = fingerprint
	if !c.dir.Exists() {
		return nil
	}
	return c.dir.Save(c.state)
}

// open loads and validates the file (printing HCL's diagnostics) and the
// cluster's state. Nothing is created.
func open(opts Options) (*cluster, error) {
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Err == nil {
		opts.Err = opts.Out
	}
	abs, err := filepath.Abs(opts.File)
	if err != nil {
		return nil, err
	}
	cfg, diags := config.Load(opts.File, opts.Inputs)
	if diags != nil {
		// Positions are printed as the user named the file.
		diags.WriteTo(opts.Err)
	}
	if diags.HasErrors() {
		return nil, ErrInvalidConfig
	}
	c := &cluster{opts: opts, cfg: cfg, dir: state.For(abs, cfg.Cluster.Name)}
	if c.state, err = c.dir.Load(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *cluster) adminFiles() pki.Files { return c.dir.AdminFiles() }

func (c *cluster) tokenFile() string { return c.dir.PKI("token") }
func (c *cluster) caKeyFile() string { return c.dir.PKI("ca.key") }

// ensurePKI makes the cluster CA, the join token and the admin client
// certificate on first use.
func (c *cluster) ensurePKI() (pki.Token, error) {
	if b, err := os.ReadFile(c.tokenFile()); err == nil {
		return pki.ParseToken(string(b))
	}
	ca, err := pki.NewCA(c.cfg.Cluster.Name)
	if err != nil {
		return pki.Token{}, err
	}
	tok, err := pki.NewToken(ca)
	if err != nil {
		return pki.Token{}, err
	}
	cert, key, err := ca.Issue(pki.CertRequest{CommonName: "corral-admin"}, pki.DefaultValidity)
	if err != nil {
		return pki.Token{}, err
	}
	caKey, err := ca.KeyPEM()
	if err != nil {
		return pki.Token{}, err
	}
	if err := c.adminFiles().Write(ca.CertPEM(), cert, key); err != nil {
		return pki.Token{}, err
	}
	if err := state.WriteFile(c.caKeyFile(), caKey); err != nil {
		return pki.Token{}, err
	}
	// The token goes last: its presence says the rest is complete.
	return tok, state.WriteFile(c.tokenFile(), []byte(tok.String()+"\n"))
}

// endpoints are the members' etcd client URLs.
func (c *cluster) endpoints() []string {
	var out []string
	for _, n := range c.state.Members() {
		out = append(out, store.ClientURL(n.IP.AsSlice(), 0))
	}
	return out
}

// connect returns an admin client for the cluster.
func (c *cluster) connect(ctx context.Context) (*clientv3.Client, error) {
	eps := c.endpoints()
	if len(eps) == 0 {
		return nil, fmt.Errorf("cluster %q has no members; run `provision up %s`", c.cfg.Cluster.Name, c.opts.File)
	}
	cli, err := store.Connect(ctx, c.adminFiles(), eps)
	if err != nil {
		return nil, err
	}
	if err := store.Ready(ctx, cli); err != nil {
		cli.Close()
		return nil, fmt.Errorf("cluster %q does not answer at %s: %w", c.cfg.Cluster.Name, strings.Join(eps, ","), err)
	}
	return cli, nil
}

// Env prints shell exports that point clusterctl and etcdctl at the cluster.
func Env(opts Options) error {
	c, err := open(opts)
	if err != nil {
		return err
	}
	if len(c.state.Members()) == 0 {
		return fmt.Errorf("cluster %q is not up; run `provision up %s` first", c.cfg.Cluster.Name, opts.File)
	}
	f := c.adminFiles()
	fmt.Fprintf(opts.Out, "export ETCDCTL_ENDPOINTS=%s\n", strings.Join(c.endpoints(), ","))
	fmt.Fprintf(opts.Out, "export ETCDCTL_CACERT=%s\nexport ETCDCTL_CERT=%s\nexport ETCDCTL_KEY=%s\n", f.CA, f.Cert, f.Key)
	fmt.Fprintf(opts.Out, "# clusterctl and etcdctl (v3) now talk to cluster %q\n", c.cfg.Cluster.Name)
	return nil
}
