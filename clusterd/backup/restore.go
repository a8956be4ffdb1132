package backup

import (
	"context"
	"fmt"
	"os"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// RestoreMember makes etcdDir, which must not exist yet, the data
// directory of the first member of a new cluster holding the snapshot's
// data: etcd's restore procedure (etcdutl snapshot restore), with name and
// peerURL as the only member and token as the new cluster token, so the
// cluster id and member id are new. The snapshot is verified first. The
// restore goes to a sibling directory that is renamed into place, so a
// crash half-way leaves no data directory that looks whole.
func RestoreMember(snapshotPath, etcdDir, name, peerURL, token string) (*Info, error) {
	info, err := Verify(snapshotPath)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(etcdDir); err == nil {
		return nil, fmt.Errorf("backup: restoring into %s: it exists already; a member's data is never overwritten", etcdDir)
	}
	tmp := etcdDir + ".restoring"
	if err := os.RemoveAll(tmp); err != nil {
		return nil, err
	}
	err = snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snapshotPath,
		Name:                name,
		OutputDataDir:       tmp,
		PeerURLs:            []string{peerURL},
		InitialCluster:      name + "=" + peerURL,
		InitialClusterToken: token,
	})
	if err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("backup: restoring %s: %w", snapshotPath, err)
	}
	if err := os.Rename(tmp, etcdDir); err != nil {
		os.RemoveAll(tmp)
		return nil, fmt.Errorf("backup: %w", err)
	}
	return info, nil
}

// RevokeLeases revokes every lease in the cluster. Right after a restore,
// before anything of the new cluster has granted one, every lease belongs
// to a process of the old cluster that will never renew it: machine
// heartbeats, elections, locks. Revoking them at once drops the old
// machines' registrations (their units are rescheduled onto the new
// machines after the scheduler's grace period) and frees the elections,
// rather than waiting out each TTL, which etcd restarts on restore.
func RevokeLeases(ctx context.Context, cli *clientv3.Client) (int, error) {
	resp, err := cli.Leases(ctx)
	if err != nil {
		return 0, fmt.Errorf("backup: listing the restored leases: %w", err)
	}
	for _, l := range resp.Leases {
		if _, err := cli.Revoke(ctx, l.ID); err != nil {
			return 0, fmt.Errorf("backup: revoking restored lease %x: %w", l.ID, err)
		}
	}
	return len(resp.Leases), nil
}
