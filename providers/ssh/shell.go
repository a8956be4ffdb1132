package ssh

import (
	"context"
	"io"
	"os"

	"github.com/corral-dev/corral/internal/sshsession"
	"github.com/corral-dev/corral/providers"
)

var _ providers.Sheller = (*Provider)(nil)

// Shell runs command on the node's machine, or a login shell when it is
// "" (with a terminal when in is one), after the same host-key check as
// every connection, and returns its exit status.
func (p *Provider) Shell(ctx context.Context, node, command string, in io.Reader, out, errOut io.Writer) (int, error) {
	c, err := p.dial(ctx, node)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if command != "" {
		return sshsession.Run(c.client, command, in, out, errOut)
	}
	tty, _ := in.(*os.File)
	return sshsession.Shell(c.client, tty, in, out, errOut)
}
