package backup

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"
)

// Info describes a verified snapshot file.
type Info struct {
	Path     string
	Size     int64  // bytes, the sha256 trailer included
	SHA256   string // hex sha256 of the whole file, as sha256sum prints it
	Revision int64  // the etcd revision it holds
	Keys     int    // live keys in it
}

// Progress is told how many bytes have arrived so far while a snapshot
// streams; it may be nil.
type Progress func(bytes int64)

// Take streams a snapshot from the cluster through cli into a new file in
// dir, verifies it (see Verify) and returns what it holds. The file is
// removed when anything fails.
func Take(ctx context.Context, cli *clientv3.Client, dir string, progress Progress) (*Info, error) {
	rc, err := cli.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("backup: asking etcd for a snapshot: %w", err)
	}
	defer rc.Close()
	f, err := os.CreateTemp(dir, ".corral-snapshot-*.db")
	if err != nil {
		return nil, fmt.Errorf("backup: a file for the snapshot: %w", err)
	}
	path := f.Name()
	_, err = io.Copy(f, &counter{r: rc, fn: progress})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("backup: receiving the snapshot: %w", err)
	}
	info, err := Verify(path)
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return info, nil
}

// counter reports the bytes read so far, at most every 100ms.
type counter struct {
	r    io.Reader
	fn   Progress
	n    int64
	last time.Time
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.fn != nil && (err != nil || time.Since(c.last) > 100*time.Millisecond) {
		c.last = time.Now()
		c.fn(c.n)
	}
	return n, err
}

// Verify checks that path is a whole etcd snapshot: its length leaves room
// for the sha256 trailer etcd appends (a multiple of 512 bytes plus 32),
// the trailer matches the data, and the data opens as an etcd database
// (bbolt's consistency check and a walk of every key, through etcdutl).
// The error says which check failed.
func Verify(path string) (*Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	size := st.Size()
	// etcd writes the database in whole 512-byte sectors and appends the
	// 32-byte sha256 of them; etcdutl's restore relies on the same rule.
	if size < 512+sha256.Size || size%512 != sha256.Size {
		return nil, fmt.Errorf("backup: %s is not a whole etcd snapshot: %d bytes has no sha256 trailer (truncated, or not made by etcd's snapshot API)", path, size)
	}
	data, whole := sha256.New(), sha256.New()
	if _, err := io.Copy(io.MultiWriter(data, whole), io.LimitReader(f, size-sha256.Size)); err != nil {
		return nil, fmt.Errorf("backup: reading %s: %w", path, err)
	}
	trailer := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, trailer); err != nil {
		return nil, fmt.Errorf("backup: reading %s: %w", path, err)
	}
	whole.Write(trailer)
	if got := data.Sum(nil); !bytes.Equal(got, trailer) {
		return nil, fmt.Errorf("backup: %s is corrupt: sha256 mismatch: etcd recorded %x, the data hashes to %x", path, trailer, got)
	}
	status, err := snapshot.NewV3(zap.NewNop()).Status(path)
	if err != nil {
		return nil, fmt.Errorf("backup: %s does not open as an etcd database: %w", path, err)
	}
	return &Info{Path: path, Size: size, SHA256: hex.EncodeToString(whole.Sum(nil)),
		Revision: status.Revision, Keys: status.TotalKey}, nil
}

// Name is the name a snapshot of cluster at revision, taken at t, is kept
// under: <cluster>-<UTC time>-r<revision>.db. Names of one cluster sort by
// time.
func Name(cluster string, t time.Time, revision int64) string {
	return fmt.Sprintf("%s-%s-r%d.db", cluster, t.UTC().Format(timeFormat), revision)
}

const timeFormat = "20060102T150405Z"

var nameRE = regexp.MustCompile(`^(.+)-(\d{8}T\d{6}Z)-r(\d+)\.db$`)

// parseName reads back a name that Name made for cluster.
func parseName(cluster, name string) (t time.Time, revision int64, ok bool) {
	m := nameRE.FindStringSubmatch(name)
	if m == nil || m[1] != cluster {
		return time.Time{}, 0, false
	}
	t, err := time.Parse(timeFormat, m[2])
	if err != nil {
		return time.Time{}, 0, false
	}
	revision, err = strconv.ParseInt(m[3], 10, 64)
	return t, revision, err == nil
}

// Prune deletes all but the newest keep snapshots of cluster from dest.
// Only names that Name made for this cluster count; anything else there is
// left alone. It returns the names it deleted.
func Prune(ctx context.Context, dest Destination, cluster string, keep int) ([]string, error) {
	names, err := dest.List(ctx)
	if err != nil {
		return nil, err
	}
	type snap struct {
		name string
		t    time.Time
		rev  int64
	}
	var ours []snap
	for _, n := range names {
		if t, rev, ok := parseName(cluster, filepath.Base(n)); ok {
			ours = append(ours, snap{n, t, rev})
		}
	}
	// Newest first: by time, then by revision within the same second.
	slices.SortFunc(ours, func(a, b snap) int {
		if c := b.t.Compare(a.t); c != 0 {
			return c
		}
		return cmp.Compare(b.rev, a.rev)
	})
	var deleted []string
	for _, s := range ours[min(keep, len(ours)):] {
		if err := dest.Delete(ctx, s.name); err != nil {
			return deleted, err
		}
		deleted = append(deleted, s.name)
	}
	return deleted, nil
}
