package provision

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/corral-dev/corral/clusterd/backup"
	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/provision/progress"
	"github.com/corral-dev/corral/provision/state"
	"github.com/corral-dev/corral/templates"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// backupSetting is the backup block as a cluster-wide setting.
var backupSetting = setting{
	key:     backup.SettingsKey,
	marker:  "backup.json",
	off:     "scheduled snapshots",
	offNote: "backup: scheduled snapshots off (no backup block)",
}

// ensureBackup writes the backup block where every clusterd watches it
// (backup.SettingsKey), or removes it when the file no longer has one:
// the elected machine starts, changes or stops taking snapshots without a
// restart, as with the logs block.
func (c *cluster) ensureBackup(ctx context.Context, timeout time.Duration) error {
	var value func() (settingValue, error)
	var s backup.Settings
	if c.cfg.Backup != nil {
		s = c.cfg.Backup.Settings(c.cfg.Cluster.Name)
		value = func() (settingValue, error) {
			return settingValue{put: s, record: s, name: "backup " + s.Destination}, nil
		}
	}
	// A restored cluster holds the settings of the one it came from: the
	// file's (or none) must replace them even without a marker.
	written, err := c.ensureSetting(ctx, timeout, backupSetting, c.restore != nil, value)
	if written {
		fmt.Fprintf(c.opts.Out, "backup: a snapshot every %s to %s, newest %d kept\n", s.Schedule, s.Destination, s.Keep)
	}
	return err
}

// BackupOptions tune `provision backup`.
type BackupOptions struct {
	Options
	// To is a local file to write the snapshot to, instead of the backup
	// block's destination.
	To string
}

// Backup takes a snapshot of the cluster now, from this host through the
// admin client, verifies it and stores it: in the file To, or in the
// backup block's destination (pruned to its keep, and recorded at
// backup.LastKey as a scheduled one is). A "dir:" destination is then a
// directory on this host, which for provider local is where the machines
// write theirs too. It prints where the snapshot went, its size, revision
// and sha256.
func Backup(ctx context.Context, opts BackupOptions) error {
	c, err := open(opts.Options)
	if err != nil {
		return err
	}
	if opts.To == "" && c.cfg.Backup == nil {
		return fmt.Errorf("%s has no backup block to say where snapshots go: add one (backup { destination = \"dir:/var/backups/corral\" }) or give --to FILE", opts.File)
	}
	cli, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	show := progress.New(c.opts.Out, progress.IsTerminal(c.opts.Out))
	defer show.Done()
	live := progress.IsTerminal(c.opts.Out)
	received := func(n int64) {
		if live {
			show.Set("snapshot", "receiving", sizeOf(n))
		}
	}
	show.Set("snapshot", "receiving", "")
	var rec backup.Record
	if opts.To != "" {
		rec, err = backupTo(ctx, cli, opts.To, received)
	} else {
		rec, err = c.backupToDestination(ctx, cli, received)
	}
	if err != nil {
		show.Set("snapshot", "failed", "")
		return err
	}
	show.Set("snapshot", "verified", sizeOf(rec.Size))
	show.Done()
	fmt.Fprintf(c.opts.Out, "snapshot of cluster %q at revision %d: %s\n  size %s (%d bytes), sha256 %s\n",
		c.cfg.Cluster.Name, rec.Revision, rec.Location, sizeOf(rec.Size), rec.Size, rec.SHA256)
	self, _ := invokedAs()
	fmt.Fprintf(c.opts.Out, "Restore it into a new cluster (after `%s down %s`):\n  %s restore %s --from %s\n",
		self, fileArgs(c.opts), self, fileArgs(c.opts), shellQuote(rec.Location))
	return nil
}

// backupTo writes a verified snapshot to the local file path, atomically:
// it streams into a temporary file beside it, renamed once verified.
func backupTo(ctx context.Context, cli *clientv3.Client, path string, progress backup.Progress) (backup.Record, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return backup.Record{}, err
	}
	info, err := backup.Take(ctx, cli, filepath.Dir(abs), progress)
	if err != nil {
		return backup.Record{}, err
	}
	if err := os.Rename(info.Path, abs); err != nil {
		os.Remove(info.Path)
		return backup.Record{}, fmt.Errorf("writing the snapshot to %s: %w", abs, err)
	}
	return backup.Record{Time: time.Now().UTC(), Revision: info.Revision, Location: abs, Size: info.Size, SHA256: info.SHA256}, nil
}

// backupToDestination stores a snapshot as the scheduled ones are, and
// records it, so the schedule counts from it.
func (c *cluster) backupToDestination(ctx context.Context, cli *clientv3.Client, progress backup.Progress) (backup.Record, error) {
	s := c.cfg.Backup.Settings(c.cfg.Cluster.Name)
	dest, err := backup.Open(ctx, s)
	if err != nil {
		return backup.Record{}, err
	}
	rec, err := backup.Save(ctx, cli, s, dest, c.dir.Path, progress)
	if err != nil {
		return rec, err
	}
	rec.Machine = "provision"
	if err := backup.PutRecord(ctx, cli, backup.LastKey, rec); err != nil {
		return rec, fmt.Errorf("the snapshot is at %s, but recording it at %s failed: %w", rec.Location, backup.LastKey, err)
	}
	return rec, nil
}

// sizeOf prints a byte count for people.
func sizeOf(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// RestoreOptions tune `provision restore`.
type RestoreOptions struct {
	UpOptions
	From string // the snapshot file
}

// restoreSource is a restore in progress: the snapshot, and the machine
// ids its registry gave each node name.
type restoreSource struct {
	path     string
	machines map[string]string // node name → machine id
}

// Restore builds the cluster described by the file from a snapshot: a new
// cluster (fresh CA, token, etcd cluster id and members) holding the
// snapshot's data. It follows etcd's restore procedure: the first member
// starts from the snapshot (clusterd --restore-from, etcdutl's restore
// with the new cluster token) and the other members join it as new
// members; the new CA replaces the snapshot's sealed one.
//
// What was alive in the old cluster is treated so: each node takes back
// the machine id the snapshot's registry had for its name, so its unit
// assignments and its overlay subnet are its own again, and the units
// start on it as soon as it registers; the old cluster's leases (machine
// heartbeats, elections, locks) are revoked when the first member starts;
// units of machines that do not come back are rescheduled by the engine
// after its grace period, and their overlay subnets are released once
// every node has joined. The snapshot is a file on this host or an s3://
// URL (downloaded first); the provider must be local, whose first member
// runs here and can read the file.
func Restore(ctx context.Context, opts RestoreOptions) error {
	c, err := open(opts.Options)
	if err != nil {
		return err
	}
	if c.dir.Exists() {
		return fmt.Errorf("cluster %q already exists (state in %s): restore builds a new cluster; run `provision down %s` first, or restore from another file",
			c.cfg.Cluster.Name, c.dir.Path, fileArgs(c.opts))
	}
	if c.cfg.Provider.Type != "local" {
		return fmt.Errorf("restore: provider %q: the first member must read the snapshot from a file, which only provider local can give it so far; restore into a local cluster, or copy the data with etcdctl", c.cfg.Provider.Type)
	}
	abs, err := c.snapshotFile(ctx, opts.From)
	if err != nil {
		return err
	}
	info, err := backup.Verify(abs)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.opts.Out, "snapshot %s: revision %d, %d keys, sha256 %s\n", abs, info.Revision, info.Keys, info.SHA256)
	src := &restoreSource{path: abs, machines: map[string]string{}}
	recs, err := backup.ReadKeys(abs, registry.Prefix)
	if err != nil {
		return err
	}
	for key, val := range recs {
		var m registry.Machine
		if json.Unmarshal(val, &m) == nil && m.Name != "" && m.ID == strings.TrimPrefix(key, registry.Prefix) {
			src.machines[m.Name] = m.ID
		}
	}
	if err := c.adoptUnits(abs); err != nil {
		return err
	}
	opts.restore = src
	if err := Up(ctx, opts.UpOptions); err != nil {
		return err
	}
	return c.releaseStaleSubnets(ctx)
}

// snapshotFile is from as a local file: an s3:// URL (as `provision
// backup` prints it) is downloaded into the cluster's state directory
// first, where it stays beside the state the restore makes.
func (c *cluster) snapshotFile(ctx context.Context, from string) (string, error) {
	if !strings.HasPrefix(from, "s3://") {
		return filepath.Abs(from)
	}
	if err := os.MkdirAll(c.dir.Path, 0o700); err != nil {
		return "", err
	}
	region := ""
	if c.cfg.Backup != nil {
		region = c.cfg.Backup.Region
	}
	fmt.Fprintf(c.opts.Out, "downloading %s\n", from)
	return backup.Fetch(ctx, from, region, c.dir.Path)
}

// adoptUnits records, in a new state, the file's services whose units the
// snapshot holds: they are provision's own (it made them), so up converges
// them rather than refusing them as submitted by hand.
func (c *cluster) adoptUnits(snapshot string) error {
	files, err := backup.ReadKeys(snapshot, unitstore.FilesPrefix)
	if err != nil {
		return err
	}
	for _, u := range c.cfg.Units() {
		if _, ok := files[unitstore.FilesPrefix+u.Name]; !ok {
			continue
		}
		hash, err := unitHash(u)
		if err != nil {
			return err
		}
		c.state.Units = append(c.state.Units, state.Unit{Name: u.Name, Hash: hash})
	}
	if len(c.state.Units) == 0 {
		return nil
	}
	return c.dir.Save(c.state)
}

// restoreArgs prepares node n's launch in a restore: it gives the node the
// machine id the snapshot had for its name (written into its data dir
// before clusterd first starts there), and the first member the
// snapshot to start etcd from.
func (c *cluster) restoreArgs(n state.Node) ([]string, error) {
	if c.restore == nil {
		return nil, nil
	}
	dir := c.dir.NodeDir(n.Name)
	if id, ok := c.restore.machines[n.Name]; ok {
		if _, err := registry.ReadMachineID(dir); errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(dir, "machine-id"), []byte(id+"\n"), 0o600); err != nil {
				return nil, err
			}
		}
	}
	if c.mode(n) == templates.ModeInit {
		return []string{"--restore-from", c.restore.path}, nil
	}
	return nil, nil
}

// releaseStaleSubnets gives back the overlay subnets of the snapshot's
// machines that did not come back: no node of the new cluster has their
// machine id, so nothing would ever release them.
func (c *cluster) releaseStaleSubnets(ctx context.Context) error {
	var err error
	if c.state, err = c.dir.Load(); err != nil { // as up left it
		return err
	}
	cli, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer cli.Close()
	ours := map[string]bool{}
	for _, n := range c.state.Nodes {
		if id, err := registry.ReadMachineID(c.dir.NodeDir(n.Name)); err == nil {
			ours[id] = true
		}
	}
	leases, _, err := subnet.List(ctx, cli)
	if err != nil {
		return err
	}
	for _, l := range leases {
		if ours[l.MachineID] {
			continue
		}
		if _, err := subnet.Release(ctx, cli, l.MachineID); err != nil {
			return fmt.Errorf("releasing the subnet %s of machine %s, which the restored cluster no longer has: %w", l.Subnet, l.MachineID, err)
		}
		fmt.Fprintf(c.opts.Out, "  - subnet %s released (machine %.8s… is not in the restored cluster)\n", l.Subnet, l.MachineID)
	}
	return nil
}

// printBackupStatus adds the last snapshot to `provision status`, in the
// style of its metrics lines: when, which revision, how big, where; and
// the last failure if it came after.
func printBackupStatus(ctx context.Context, c *cluster, cli *clientv3.Client) {
	if cli == nil {
		return
	}
	out := c.opts.Out
	last, failed, err := backup.ReadRecords(ctx, cli)
	switch {
	case err != nil:
		fmt.Fprintf(out, "backup       can't read %s: %v\n", backup.LastKey, err)
		return
	case last != nil:
		fmt.Fprintf(out, "backup       last snapshot %s (%s ago), revision %d, %s: %s\n",
			last.Time.Format(time.RFC3339), time.Since(last.Time).Round(time.Second), last.Revision, sizeOf(last.Size), last.Location)
	case c.cfg.Backup != nil:
		fmt.Fprintf(out, "backup       no snapshot taken yet\n")
	}
	if failed != nil && (last == nil || failed.Time.After(last.Time)) {
		fmt.Fprintf(out, "backup       the last attempt failed %s (%s ago): %s\n",
			failed.Time.Format(time.RFC3339), time.Since(failed.Time).Round(time.Second), failed.Error)
	}
}

// backupCommand is `provision backup FILE [--to PATH]`.
func backupCommand(opts func(*cobra.Command, []string) Options) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "backup FILE [--to PATH]",
		Short: "Take an etcd snapshot of the cluster now, verify it and store it",
		Long: `backup takes a snapshot of the cluster's etcd now, through etcd's snapshot
API from this host, verifies it (etcd's sha256, and that it opens as an etcd
database) and stores it where the file's backup block says (a "dir:"
destination is then a directory on this host), keeping the newest "keep",
or with --to in a local file. It prints where it went, its size, revision
and sha256. The machines take scheduled snapshots on their own; see the
backup block.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return Backup(cmd.Context(), BackupOptions{Options: opts(cmd, args), To: to})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "write the snapshot to this local `FILE` instead of the backup block's destination")
	return cmd
}

// restoreCommand is `provision restore FILE --from SNAPSHOT`.
func restoreCommand(opts func(*cobra.Command, []string) Options) *cobra.Command {
	var o RestoreOptions
	cmd := &cobra.Command{
		Use:   "restore FILE --from SNAPSHOT",
		Short: "Build the cluster in FILE anew from an etcd snapshot",
		Long: `restore builds the cluster described in FILE, as up does, but its etcd
starts from SNAPSHOT (a file, or the s3:// URL backup printed): every key
comes back, and the units, machines' subnets and settings with it, in a new
etcd cluster (new CA, token, cluster id and members). The cluster must not
exist: run down first. Nodes take back the machine ids the snapshot had for
their names, so their units start on them again; units of nodes that are
gone are rescheduled. Provider local only.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.From == "" {
				return errors.New("restore: give the snapshot with --from FILE (one that `provision backup` wrote)")
			}
			o.Options, o.In = opts(cmd, args), cmd.InOrStdin()
			return Restore(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.From, "from", "", "the etcd `SNAPSHOT` to restore: a file, or an s3://bucket/key URL")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 2*time.Minute, "how long to wait for each step, as up")
	o.AutoApprove = true // a new cluster: nothing to delete or replace
	return cmd
}
