package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/corral-dev/corral/clusterd/backup"
	"github.com/corral-dev/corral/clusterd/store"
)

// restoreSnapshot makes an init node's etcd data from cfg.RestoreFrom,
// once: a node whose data dir holds a member already starts from its data.
// It reports whether it restored. The member is the only one of a new
// cluster (token: the new CA's hash, so a new cluster id); the others join
// it as new members.
func (c *Config) restoreSnapshot() (bool, error) {
	if c.RestoreFrom == "" || store.HasData(c.DataDir) {
		return false, nil
	}
	if c.Mode != store.ModeInit {
		return false, fmt.Errorf("clusterd: --restore-from needs --mode init: only a new cluster's first member restores; the others join it")
	}
	// The store keeps etcd's data in <data dir>/etcd and listens for peers
	// on its default port.
	peer := "https://" + net.JoinHostPort(c.IP.String(), strconv.Itoa(store.DefaultPeerPort))
	info, err := backup.RestoreMember(c.RestoreFrom, filepath.Join(c.DataDir, "etcd"), c.Name, peer, c.Token.CAHash)
	if err != nil {
		return false, err
	}
	c.Log.Info("restored etcd from a snapshot", "snapshot", c.RestoreFrom, "revision", info.Revision, "keys", info.Keys, "sha256", info.SHA256)
	return true, nil
}

// dropRestoredLeases runs right after a restored member starts, before
// this node grants any lease of its own (see backup.RevokeLeases).
func (n *Node) dropRestoredLeases(ctx context.Context) error {
	count, err := backup.RevokeLeases(ctx, n.Store.Client)
	if err != nil {
		return err
	}
	n.cfg.Log.Info("revoked the snapshot's leases: the old cluster's machines and elections are gone", "leases", count)
	return nil
}

// runBackups takes part in the election for scheduled snapshots; the
// elected machine takes them (see backup.Scheduler).
func (n *Node) runBackups(ctx context.Context) {
	work := filepath.Join(n.cfg.DataDir, "backup")
	if err := os.MkdirAll(work, 0o700); err != nil {
		n.cfg.Log.Error("scheduled snapshots off", "err", err)
		return
	}
	s := &backup.Scheduler{Client: n.Store.Client, MachineID: n.Machine.ID, Work: work, Log: n.cfg.Log}
	s.Run(ctx)
}
