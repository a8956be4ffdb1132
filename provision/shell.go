package provision

import (
	"context"
	"fmt"
	"io"

	"github.com/corral-dev/corral/providers"
)

// ShellOptions tune `provision ssh`.
type ShellOptions struct {
	Options
	Node    string
	Command string // "" opens a shell
	In      io.Reader
}

// Shell opens a shell on a node, or runs a command there, through its
// provider, and returns the command's exit status.
func Shell(ctx context.Context, opts ShellOptions) (int, error) {
	c, err := open(opts.Options)
	if err != nil {
		return 0, err
	}
	if c.state.Node(opts.Node) == nil {
		return 0, fmt.Errorf("cluster %q has no node %q; `provision status %s` lists them", c.cfg.Cluster.Name, opts.Node, opts.File)
	}
	t, err := c.target(ctx)
	if err != nil {
		return 0, err
	}
	sh, ok := t.(providers.Sheller)
	if !ok {
		return 0, fmt.Errorf("the %s provider cannot open a shell on a node", c.cfg.Provider.Type)
	}
	return sh.Shell(ctx, opts.Node, opts.Command, opts.In, c.opts.Out, c.opts.Err)
}
