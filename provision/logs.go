package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/corral-dev/corral/clusterd/logship"
)

// logsMarker, in the cluster's state directory, records the settings
// provision last wrote, so that a file without a logs block costs no etcd
// connection unless shipping has to be turned off.
const logsMarker = "logs.json"

// ensureLogs writes the logs block where every clusterd watches it
// (logship.SettingsKey), or removes it when the file no longer has one, so
// shipping starts, moves or stops on the running machines without
// restarting them, as the overlay's config does. It runs before the
// services, so their first lines are shipped too.
func (c *cluster) ensureLogs(ctx context.Context, timeout time.Duration) error {
	marker := filepath.Join(c.dir.Path, logsMarker)
	if _, err := os.Stat(marker); c.cfg.Logs == nil && errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cli, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	if c.cfg.Logs == nil {
		if _, err := cli.Delete(ctx, logship.SettingsKey); err != nil {
			return fmt.Errorf("turning log shipping off (%s): %w", logship.SettingsKey, err)
		}
		fmt.Fprintf(c.opts.Out, "logs: shipping off (no logs block)\n")
		return os.Remove(marker)
	}
	s := c.cfg.Logs.Settings(c.cfg.Cluster.Name)
	val, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if _, err := cli.Put(ctx, logship.SettingsKey, string(val)); err != nil {
		return fmt.Errorf("logs %s: writing %s: %w", s.Destination, logship.SettingsKey, err)
	}
	fmt.Fprintf(c.opts.Out, "logs: units' output and clusterd's log ship to %s\n", s.Destination)
	return os.WriteFile(marker, val, 0o600)
}
