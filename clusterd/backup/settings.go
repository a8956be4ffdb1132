// Package backup takes, checks, stores, prunes and restores etcd snapshots
// of a Corral cluster. A snapshot comes from etcd's own snapshot API
// (clientv3 Maintenance.Snapshot, never a copy of the data files); it is
// verified twice before it is kept: the sha256 that etcd appends must match
// the data, and the data must open as an etcd database (etcdutl's snapshot
// status). Snapshots go to a directory ("dir:/path", written atomically) or
// to S3 ("s3" for the cluster's bucket under backups/<cluster>/, or
// "s3://bucket/prefix"), named <cluster>-<UTC time>-r<revision>.db, and
// only the newest Keep of the names this package writes are kept.
//
// On the machines, one clusterd at a time (elected through etcd, as the
// scheduler's engine is) takes them on the schedule provision writes at
// SettingsKey, and records each success at LastKey and each failure at
// FailedKey. RestoreMember turns a snapshot into a new member's data
// directory: etcd's restore procedure, with a new cluster token, so the
// restored cluster has a new cluster id and only the new member in it.
package backup

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SettingsKey is where provision writes the cluster's backup block. Every
// clusterd watches it (the elected one acts on it), so changing the
// schedule needs no restart; no key means no scheduled snapshots.
const SettingsKey = "/corral/config/backup"

// LastKey holds the last successful scheduled snapshot (a Record), so that
// `provision status` can say when it was taken and where it went.
const LastKey = "/corral/backup/last"

// FailedKey holds the last failed attempt (a Record with Error set); a
// later success does not remove it, its Time tells which came last.
const FailedKey = "/corral/backup/failed"

// Settings is the backup block as clusterd reads it, JSON at SettingsKey.
type Settings struct {
	Cluster string `json:"cluster"` // names the snapshots and the S3 prefix
	// Schedule is how often a snapshot is taken, as time.Duration text.
	Schedule string `json:"schedule"`
	Keep     int    `json:"keep"`
	// Destination is "dir:<absolute path>", "s3" or "s3://bucket[/prefix]".
	Destination string `json:"destination"`
	// Region for S3; empty means the machine's own.
	Region string `json:"region,omitempty"`
}

// Period is the schedule as a duration, checked.
func (s Settings) Period() (time.Duration, error) {
	d, err := time.ParseDuration(s.Schedule)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("backup schedule %q: want a positive duration such as \"1h\" or \"30m\"", s.Schedule)
	}
	return d, nil
}

// Destination kinds.
const (
	Dir = "dir"
	S3  = "s3"
)

// Target is a parsed destination.
type Target struct {
	Kind   string // Dir or S3
	Path   string // Dir: the directory
	Bucket string // S3: the bucket; empty means the cluster's own
	Prefix string // S3: the key prefix, ending in "/"
}

// ParseDestination checks a destination and splits it. A bare "s3" is the
// cluster's bucket (created by the AWS provider) under backups/<cluster>/,
// which its lifecycle rule expires.
func ParseDestination(dest, cluster string) (Target, error) {
	switch {
	case strings.HasPrefix(dest, "dir:"):
		p := strings.TrimPrefix(dest, "dir:")
		if !filepath.IsAbs(p) {
			return Target{}, fmt.Errorf("destination %q: give an absolute directory, e.g. \"dir:/var/backups/corral\"", dest)
		}
		return Target{Kind: Dir, Path: filepath.Clean(p)}, nil
	case dest == "s3":
		return Target{Kind: S3, Prefix: "backups/" + cluster + "/"}, nil
	case strings.HasPrefix(dest, "s3://"):
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(dest, "s3://"), "/")
		if bucket == "" {
			return Target{}, fmt.Errorf("destination %q: name the bucket, e.g. \"s3://my-bucket/corral\"", dest)
		}
		if prefix = strings.Trim(prefix, "/"); prefix != "" {
			prefix += "/"
		}
		return Target{Kind: S3, Bucket: bucket, Prefix: prefix}, nil
	}
	return Target{}, fmt.Errorf("destination %q: want \"dir:<absolute directory>\", \"s3\" (the cluster's bucket) or \"s3://<bucket>[/<prefix>]\"", dest)
}

// Record describes one snapshot attempt, as stored at LastKey or FailedKey.
type Record struct {
	Time     time.Time `json:"time"`
	Revision int64     `json:"revision,omitempty"`
	Location string    `json:"location,omitempty"`
	Size     int64     `json:"size,omitempty"`
	SHA256   string    `json:"sha256,omitempty"`
	Machine  string    `json:"machine,omitempty"` // the machine that took it
	Error    string    `json:"error,omitempty"`
}

// ReadRecords returns the last success and the last failure, either nil
// when there is none.
func ReadRecords(ctx context.Context, cli *clientv3.Client) (last, failed *Record, err error) {
	resp, err := cli.Txn(ctx).Then(clientv3.OpGet(LastKey), clientv3.OpGet(FailedKey)).Commit()
	if err != nil {
		return nil, nil, err
	}
	out := make([]*Record, 2)
	for i, r := range resp.Responses {
		kvs := r.GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue
		}
		out[i] = new(Record)
		if err := json.Unmarshal(kvs[0].Value, out[i]); err != nil {
			return nil, nil, fmt.Errorf("reading %s: %w", kvs[0].Key, err)
		}
	}
	return out[0], out[1], nil
}

// PutRecord stores r at key (LastKey or FailedKey).
func PutRecord(ctx context.Context, cli *clientv3.Client, key string, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = cli.Put(ctx, key, string(b))
	return err
}
