package ssh

import (
	"context"
	"fmt"
	"strings"
)

// machineIDScript prints the machine id clusterd keeps in its data
// directory: the one the manifest ($1) names, else $2.
var machineIDScript = &script{name: "machine-id", text: `d=$(sed -n 's/^datadir //p' "$1" 2>/dev/null) || d=
cat -- "${d:-$2}/machine-id"
`}

// MachineID reads the node's machine id (machine-id in clusterd's data
// directory on its machine): the key of what the cluster's registry holds
// for the machine, to release after Terminate, which removes the file.
func (p *Provider) MachineID(ctx context.Context, node string) (string, error) {
	c, err := p.dial(ctx, node)
	if err != nil {
		return "", err
	}
	defer c.Close()
	out, err := c.run(ctx, machineIDScript.with(manifestPath, defaultDataDir), nil)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(out)
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", fmt.Errorf("ssh: %s: not a 32-hex machine id: %q", node, id)
	}
	return id, nil
}
