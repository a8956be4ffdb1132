package provision

import (
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/corral-dev/corral/provision/state"
	"github.com/corral-dev/corral/templates"
)

// deliveredURL is the binary's URL in the boot configs of providers that
// put the binary on the machine themselves (ssh uploads it): both formats
// want one, and nothing ever fetches it. A provider that serves assets
// (a boot server, a bucket) gives its own.
const deliveredURL = "https://delivered-by-provider.corral.invalid/clusterd"

// bootNode is what the node boots with: what its Ignition config or
// cloud-config carries, and what the ssh provider installs. It needs the
// cluster's secrets, so the cluster must have been brought up once.
func (c *cluster) bootNode(n state.Node) (templates.Node, error) {
	tok, err := os.ReadFile(c.tokenFile())
	if err != nil {
		return templates.Node{}, fmt.Errorf("cluster %q has no join token yet (%w); run `provision up %s` first", c.cfg.Cluster.Name, err, c.opts.File)
	}
	g := c.group(n.Group)
	if g == nil {
		return templates.Node{}, fmt.Errorf("node %s: its group %q is no longer in %s", n.Name, n.Group, c.opts.File)
	}
	sum, err := c.binarySum()
	if err != nil {
		return templates.Node{}, err
	}
	node := templates.Node{
		Hostname:          n.Name,
		Cluster:           c.cfg.Cluster.Name,
		SSHAuthorizedKeys: c.cfg.Cluster.SSHAuthorizedKeys,
		Clusterd: templates.Clusterd{
			Mode:       c.mode(n),
			Servers:    c.servers(n),
			Token:      string(tok),
			IP:         n.IP,
			Metadata:   g.Metadata,
			MachineTTL: c.cfg.Cluster.MachineTTL,
		},
		Binary: templates.Binary{URL: c.binaryURL(), SHA512: sum},
		Files:  g.Files,
		Units:  g.Units,
	}
	if node.Clusterd.Mode == templates.ModeInit {
		if node.Clusterd.CACert, err = os.ReadFile(c.adminFiles().CA); err != nil {
			return node, err
		}
		if node.Clusterd.CAKey, err = os.ReadFile(c.caKeyFile()); err != nil {
			return node, err
		}
	}
	if g.PXE != nil && g.PXE.InstallToDisk && c.cfg.Provider.PXE != nil {
		// The installed system says so once it runs from its disk: the
		// boot server then tells the machine to boot from the disk, and
		// never installs it again in a loop.
		report := c.cfg.Provider.PXE.URL + "/report?mac=" + n.MAC
		node.Units = append(slices.Clone(node.Units), templates.Unit{Name: "corral-installed.service", Enabled: true, Content: "[Unit]\n" +
			"Description=Tell Corral's boot server this machine runs from its disk\n" +
			"Wants=network-online.target\nAfter=network-online.target\n\n" +
			"[Service]\nType=oneshot\n" +
			"ExecStart=/usr/bin/curl -fsS --retry 10 -X POST -H 'Content-Type: application/json' -d '{\"status\":\"installed\"}' '" + report + "'\n\n" +
			"[Install]\nWantedBy=multi-user.target\n"})
	}
	if nw := c.cfg.Network; nw != nil {
		node.Clusterd.Network = templates.Network{Bridge: nw.Bridge, NoIPMasq: !nw.IPMasq}
	}
	return node, nil
}

// binarySum is the SHA-512 of the binary nodes run, computed once.
func (c *cluster) binarySum() (string, error) {
	if c.sum != "" {
		return c.sum, nil
	}
	bin, err := c.binary()
	if err != nil {
		return "", err
	}
	f, err := os.Open(bin)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha512.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	c.sum = hex.EncodeToString(h.Sum(nil))
	return c.sum, nil
}

// binaryURL is where a node fetches clusterd from: the boot server's
// assets for bare metal, else the placeholder of providers that deliver it.
func (c *cluster) binaryURL() string {
	if p := c.cfg.Provider.PXE; p != nil {
		return p.URL + "/assets/clusterd"
	}
	return deliveredURL
}
