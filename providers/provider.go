// Package providers defines what provision needs from a place that runs
// nodes: make a node run, list what exists, remove a node. Each target (local,
// and later aws, pxe, vagrant) is one package implementing Provider.
package providers

import (
	"context"
	"io"
	"net/netip"

	"github.com/corral-dev/corral/templates"
)

// NodeSpec is one node as provision wants it.
type NodeSpec struct {
	Name    string
	IP      netip.Addr
	DataDir string   // the node's own directory on the provisioning host
	Args    []string // clusterd's command line, without the program name
	// Boot is what the node boots with (files, units, clusterd's settings),
	// for providers that install it on a machine rather than run clusterd
	// from this host: ssh, and the cloud and bare-metal providers through
	// their user data. The local provider runs Args and ignores it.
	Boot *templates.Node
}

// Instance is one node as the provider sees it.
type Instance struct {
	Name    string
	Running bool
	Detail  string // provider-specific, e.g. "pid 4242 in netns corral-local-core-1"
}

// Provider runs nodes somewhere.
type Provider interface {
	// Inventory lists the nodes that exist, whether or not provision's state
	// knows them, so that nothing a crashed run made is ever lost.
	Inventory(ctx context.Context) ([]Instance, error)
	// Launch makes the node exist and run; a running node is left alone.
	Launch(ctx context.Context, spec NodeSpec) error
	// Terminate removes the node and everything made for it.
	Terminate(ctx context.Context, name string) error
}

// Teardowner is implemented by providers with cluster-wide resources
// (a bridge, a VPC) to remove once every node is gone.
type Teardowner interface {
	Teardown(ctx context.Context) error
}

// Report is what a booting node says before it can reach etcd, through the
// provider's own channel (a process's exit, a boot server's /report): that
// it failed, and why. Once joined, a node speaks through etcd's registry.
type Report struct {
	Node string
	Err  error // with the node's own words: its log's last lines
}

// Reporter is implemented by providers that hear from nodes while they
// boot, so that provision stops waiting for a node that has failed and
// says why, instead of waiting out its timeout.
type Reporter interface {
	Reports() <-chan Report
}

// Preparer is implemented by providers that bring machines up in one batch
// (`vagrant up a b c`) rather than one by one: provision calls Prepare with
// every node of the cluster before it launches any of them, so the batch
// can be made at once; Launch then installs and starts each node.
type Preparer interface {
	Prepare(ctx context.Context, specs []NodeSpec) error
}

// Sheller is implemented by providers that can open a shell on a node, or
// run a command there (`provision ssh`): over SSH where the node has a
// machine of its own, in the node's namespace on this host for local.
// It returns the command's exit status.
type Sheller interface {
	Shell(ctx context.Context, node, command string, in io.Reader, out, errOut io.Writer) (int, error)
}
