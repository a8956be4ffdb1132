package provision

import (
	"context"
	"fmt"
	"time"

	"github.com/corral-dev/corral/clusterd/logship"
)

// logsSetting is the logs block as a cluster-wide setting.
var logsSetting = setting{
	key:     logship.SettingsKey,
	marker:  "logs.json",
	off:     "log shipping",
	offNote: "logs: shipping off (no logs block)",
}

// ensureLogs writes the logs block where every clusterd watches it
// (logship.SettingsKey), or removes it when the file no longer has one, so
// shipping starts, moves or stops on the running machines without
// restarting them, as the overlay's config does. It runs before the
// services, so their first lines are shipped too.
func (c *cluster) ensureLogs(ctx context.Context, timeout time.Duration) error {
	var value func() (settingValue, error)
	var s logship.Settings
	if c.cfg.Logs != nil {
		s = c.cfg.Logs.Settings(c.cfg.Cluster.Name)
		value = func() (settingValue, error) {
			return settingValue{put: s, record: s, name: "logs " + s.Destination}, nil
		}
	}
	written, err := c.ensureSetting(ctx, timeout, logsSetting, false, value)
	if written {
		fmt.Fprintf(c.opts.Out, "logs: units' output and clusterd's log ship to %s\n", s.Destination)
	}
	return err
}
