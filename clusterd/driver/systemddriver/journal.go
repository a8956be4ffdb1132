package systemddriver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Journal writes the unit's last lines from journald (all of them if lines
// < 0, none if 0) to w and, if follow, what the unit writes after them
// until ctx ends, when it returns nil. The output includes systemd's own
// messages about the unit, as journalctl -u shows them. It runs journalctl,
// which knows the journal's file format and rotation.
func (d *Driver) Journal(ctx context.Context, name string, lines int, follow bool, w io.Writer) error {
	if err := checkName(name); err != nil {
		return err
	}
	n := "all"
	if lines >= 0 {
		n = strconv.Itoa(lines)
	}
	args := []string{"--unit=" + name, "--lines=" + n, "--output=cat", "--no-pager", "--quiet"}
	if follow {
		args = append(args, "--follow")
	}
	if d.root != "/" {
		// journald's runtime journal, where a systemd under another root
		// (a test's, with Storage=volatile) keeps it; journalctl finds the
		// machine-id directory inside. --root would add <Root>/var/log/journal,
		// which under a root that shares the host's /var is the host's.
		args = append(args, "--directory="+d.path("run/log/journal"))
	}
	cmd := exec.CommandContext(ctx, "journalctl", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	// Should w block, the kill does not end the copy: give up waiting.
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	if follow && ctx.Err() != nil {
		return nil // following ends with ctx
	}
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("systemddriver: journalctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
