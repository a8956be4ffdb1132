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
)

// setting is a cluster-wide setting: a block of the file that provision
// writes as JSON at key, where every clusterd watches it, so it starts,
// changes or stops on the running machines without restarting them.
type setting struct {
	key string // the etcd key clusterd watches
	// marker, in the cluster's state directory, records that provision
	// wrote the setting, so a file without the block costs no etcd
	// connection unless the setting has to be removed.
	marker  string
	off     string // what removing the setting turns off, for errors: "log shipping"
	offNote string // printed once it is removed
}

// settingValue is what ensureSetting writes for a block the file has.
type settingValue struct {
	put    any    // the JSON clusterd reads at the key
	record any    // what the marker keeps of it (without secrets)
	name   string // names the block in errors: "logs dir:/var/log/corral"
}

// ensureSetting makes the setting what the file says. A nil value (the
// file has no block) deletes the key and the marker; otherwise value's
// result is put at the key and recorded in the marker, and written is
// true. value runs only once connected, so nothing it generates is made
// for a cluster that can't be reached. force connects even without a
// block or marker (a restored cluster holds the settings of the one it
// came from, which the file's must replace).
func (c *cluster) ensureSetting(ctx context.Context, timeout time.Duration, s setting, force bool, value func() (settingValue, error)) (written bool, err error) {
	marker := filepath.Join(c.dir.Path, s.marker)
	if _, err := os.Stat(marker); value == nil && errors.Is(err, fs.ErrNotExist) && !force {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cli, err := c.connect(ctx)
	if err != nil {
		return false, err
	}
	defer cli.Close()
	if value == nil {
		if _, err := cli.Delete(ctx, s.key); err != nil {
			return false, fmt.Errorf("turning %s off (%s): %w", s.off, s.key, err)
		}
		fmt.Fprintln(c.opts.Out, s.offNote)
		if err := os.Remove(marker); !errors.Is(err, fs.ErrNotExist) {
			return false, err
		}
		return false, nil
	}
	v, err := value()
	if err != nil {
		return false, err
	}
	val, err := json.Marshal(v.put)
	if err != nil {
		return false, err
	}
	if _, err := cli.Put(ctx, s.key, string(val)); err != nil {
		return false, fmt.Errorf("%s: writing %s: %w", v.name, s.key, err)
	}
	rec, err := json.Marshal(v.record)
	if err != nil {
		return false, err
	}
	return true, os.WriteFile(marker, rec, 0o600)
}
