// Package keys implements etcd v2's key verbs — set, get, mk, update, rm,
// mkdir, ls, watch — on the etcd v3 API, for the etcdctl-v2-style commands
// that CoreOS units are written against.
//
// A key is stored under its own name at the v3 root, so a user's v3 etcdctl
// sees /foo/bar as "/foo/bar". v3 has no directories, so here a directory is a
// key prefix: /a/b/c existing makes /a and /a/b directories. An empty
// directory is kept in being by a marker, its name with a trailing slash
// ("/d/") and an empty value. Every write checks, in the transaction that
// makes it, that the keys still form a tree: no file has anything below it,
// and no directory is also a file.
//
// A TTL is a v3 lease, granted afresh for each write and attached to the key.
// v3 leases have a floor (about two seconds with etcd's default timings), so
// shorter TTLs last that long. A directory's TTL applies to its marker only:
// unlike v2, keys inside the directory outlive it.
package keys

import (
	"cmp"
	"context"
	"path"
	"slices"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Keys reads and writes etcd v2-style keys through a v3 client.
type Keys struct {
	c *clientv3.Client
}

// New returns Keys that use c.
func New(c *clientv3.Client) *Keys {
	return &Keys{c: c}
}

// Node is a key or a directory, as etcd v2 described it.
type Node struct {
	Key           string
	Value         string
	Dir           bool
	TTL           int64 // seconds remaining; 0 means the node does not expire
	CreatedIndex  int64 // v3 revision that created the key
	ModifiedIndex int64 // v3 revision that last changed it
}

// Set writes value at key, creating or replacing it. A ttl above zero makes
// the key expire after that long (rounded up to whole seconds); zero makes it
// permanent, clearing any earlier TTL. Setting a directory fails with
// ErrNotFile, and setting a key below a file with ErrNotDir.
func (k *Keys) Set(ctx context.Context, key, value string, ttl time.Duration) (*Node, error) {
	return k.put(ctx, clean(key), value, ttl, anyway)
}

// Mk creates key with value, failing with ErrNodeExist if key already exists
// as a file or a directory.
func (k *Keys) Mk(ctx context.Context, key, value string, ttl time.Duration) (*Node, error) {
	return k.put(ctx, clean(key), value, ttl, absent)
}

// Update replaces the value (and TTL) of an existing key, failing with
// ErrKeyNotFound if there is none.
func (k *Keys) Update(ctx context.Context, key, value string, ttl time.Duration) (*Node, error) {
	return k.put(ctx, clean(key), value, ttl, present)
}

// Mkdir creates an empty directory, failing with ErrNodeExist if key already
// exists as a directory or a file.
func (k *Keys) Mkdir(ctx context.Context, key string, ttl time.Duration) error {
	_, err := k.put(ctx, clean(key), "", ttl, absentDir)
	return err
}

// precondition says what must be true of the key itself for a put to go
// ahead, on top of what the tree always requires.
type precondition int

const (
	anyway    precondition = iota // set: create or replace a file
	absent                        // mk: create a file
	present                       // update: replace a file
	absentDir                     // mkdir: create a directory marker
)

// put writes key in a single Txn that also checks, atomically, that no
// ancestor of key is a file, that key is not a directory, and pre; when the
// Txn is refused, its Else branch reads what is needed to say why.
func (k *Keys) put(ctx context.Context, key, value string, ttl time.Duration, pre precondition) (*Node, error) {
	if key == "/" {
		return nil, newError(ErrRootReadOnly, key, 0)
	}
	ancestors := ancestors(key)
	var cmps []clientv3.Cmp
	for _, a := range ancestors {
		cmps = append(cmps, clientv3.Compare(clientv3.Version(a), "=", 0))
	}
	cmps = append(cmps, clientv3.Compare(clientv3.Version(dirPrefix(key)), "=", 0).WithPrefix())
	switch pre {
	case absent, absentDir:
		cmps = append(cmps, clientv3.Compare(clientv3.Version(key), "=", 0))
	case present:
		cmps = append(cmps, clientv3.Compare(clientv3.Version(key), ">", 0))
	}
	probe := []clientv3.Op{
		clientv3.OpGet(key, clientv3.WithCountOnly()),
		clientv3.OpGet(dirPrefix(key), clientv3.WithPrefix(), clientv3.WithCountOnly()),
	}
	for _, a := range ancestors {
		probe = append(probe, clientv3.OpGet(a, clientv3.WithCountOnly()))
	}

	stored := key
	if pre == absentDir {
		stored = dirPrefix(key)
	}
	opts := []clientv3.OpOption{clientv3.WithPrevKV()}
	var lease clientv3.LeaseID
	var granted int64 // the lessor may lengthen a TTL below its floor
	if ttl > 0 {
		l, err := k.c.Grant(ctx, seconds(ttl))
		if err != nil {
			return nil, err
		}
		lease, granted = l.ID, l.TTL
		opts = append(opts, clientv3.WithLease(lease))
	}

	resp, err := k.c.Txn(ctx).If(cmps...).Then(clientv3.OpPut(stored, value, opts...)).Else(probe...).Commit()
	if lease != 0 && (err != nil || !resp.Succeeded) {
		// Nothing is attached to the lease; it would expire on its own, but
		// there is no reason to leave it for the lessor until then.
		k.c.Revoke(context.WithoutCancel(ctx), lease)
	}
	if err != nil {
		return nil, err
	}
	rev := resp.Header.Revision
	if !resp.Succeeded {
		count := func(i int) int64 { return resp.Responses[i].GetResponseRange().Count }
		for i, a := range ancestors {
			if count(2+i) > 0 {
				return nil, newError(ErrNotDir, a, rev)
			}
		}
		isFile, isDir := count(0) > 0, count(1) > 0
		switch {
		case (pre == absent || pre == absentDir) && (isFile || isDir):
			return nil, newError(ErrNodeExist, key, rev)
		case isDir:
			return nil, newError(ErrNotFile, key, rev)
		default:
			return nil, newError(ErrKeyNotFound, key, rev)
		}
	}
	n := &Node{Key: key, Value: value, Dir: pre == absentDir, TTL: granted, CreatedIndex: rev, ModifiedIndex: rev}
	if prev := resp.Responses[0].GetResponsePut().PrevKv; prev != nil {
		n.CreatedIndex = prev.CreateRevision
	}
	return n, nil
}

// Get returns the file at key. A missing key is ErrKeyNotFound; a directory
// is ErrNotFile (use Ls for directories).
func (k *Keys) Get(ctx context.Context, key string) (*Node, error) {
	key = clean(key)
	resp, err := k.c.Txn(ctx).Then(
		clientv3.OpGet(key),
		clientv3.OpGet(dirPrefix(key), clientv3.WithPrefix(), clientv3.WithCountOnly()),
	).Commit()
	if err != nil {
		return nil, err
	}
	rev := resp.Header.Revision
	files := resp.Responses[0].GetResponseRange().Kvs
	switch {
	case key == "/" || resp.Responses[1].GetResponseRange().Count > 0:
		return nil, newError(ErrNotFile, key, rev)
	case len(files) == 0:
		return nil, newError(ErrKeyNotFound, key, rev)
	}
	return k.node(ctx, key, false, files[0])
}

// Rm removes the file at key. A directory is ErrNotFile unless recursive is
// set, in which case the directory and everything below it go. Rm deletes
// keys rather than revoking their leases, so that watchers can tell a removal
// ("delete") from an expiry ("expire").
func (k *Keys) Rm(ctx context.Context, key string, recursive bool) error {
	key = clean(key)
	if key == "/" {
		return newError(ErrRootReadOnly, key, 0)
	}
	prefix := dirPrefix(key)
	if recursive {
		resp, err := k.c.Txn(ctx).Then(
			clientv3.OpDelete(key),
			clientv3.OpDelete(prefix, clientv3.WithPrefix()),
		).Commit()
		if err != nil {
			return err
		}
		if resp.Responses[0].GetResponseDeleteRange().Deleted+resp.Responses[1].GetResponseDeleteRange().Deleted == 0 {
			return newError(ErrKeyNotFound, key, resp.Header.Revision)
		}
		return nil
	}
	resp, err := k.c.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(key), ">", 0)).
		Then(clientv3.OpDelete(key)).
		Else(clientv3.OpGet(prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())).
		Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseRange().Count > 0 {
			return newError(ErrNotFile, key, resp.Header.Revision)
		}
		return newError(ErrKeyNotFound, key, resp.Header.Revision)
	}
	return nil
}

// Rmdir removes key if it is a file or an empty directory, as etcdctl v2's
// rmdir and rm --dir did. A directory with anything in it is ErrDirNotEmpty.
func (k *Keys) Rmdir(ctx context.Context, key string) error {
	key = clean(key)
	if key == "/" {
		return newError(ErrRootReadOnly, key, 0)
	}
	prefix := dirPrefix(key)
	// The directory's contents are everything under its prefix except the
	// marker, which is the prefix itself: the range starts just after it.
	empty := clientv3.Compare(clientv3.Version(prefix+"\x00"), "=", 0).WithRange(clientv3.GetPrefixRangeEnd(prefix))
	resp, err := k.c.Txn(ctx).If(empty).Then(clientv3.OpDelete(key), clientv3.OpDelete(prefix)).Commit()
	if err != nil {
		return err
	}
	switch {
	case !resp.Succeeded:
		return newError(ErrDirNotEmpty, key, resp.Header.Revision)
	case resp.Responses[0].GetResponseDeleteRange().Deleted+resp.Responses[1].GetResponseDeleteRange().Deleted == 0:
		return newError(ErrKeyNotFound, key, resp.Header.Revision)
	}
	return nil
}

// Ls lists the directory dir: its files and subdirectories, or with
// recursive everything below it, in v2's depth-first order ("/a", "/a/b",
// "/a-b"). Listing a file returns just that file, as v2 did; a missing
// directory is ErrKeyNotFound.
func (k *Keys) Ls(ctx context.Context, dir string, recursive bool) ([]Node, error) {
	dir = clean(dir)
	prefix := dirPrefix(dir)
	resp, err := k.c.Txn(ctx).Then(
		clientv3.OpGet(dir),
		clientv3.OpGet(prefix, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, err
	}
	if files := resp.Responses[0].GetResponseRange().Kvs; len(files) > 0 && dir != "/" {
		n, err := k.node(ctx, dir, false, files[0])
		if err != nil {
			return nil, err
		}
		return []Node{*n}, nil
	}
	below := resp.Responses[1].GetResponseRange().Kvs
	if len(below) == 0 && dir != "/" {
		return nil, newError(ErrKeyNotFound, dir, resp.Header.Revision)
	}

	var nodes []Node
	index := make(map[string]int)
	// add lists n once. A directory implied by a key below it is replaced by
	// the one its marker describes, which carries indexes and a TTL.
	add := func(n Node, implied bool) {
		if i, ok := index[n.Key]; ok {
			if !implied {
				nodes[i] = n
			}
			return
		}
		index[n.Key] = len(nodes)
		nodes = append(nodes, n)
	}
outer:
	for _, kv := range below {
		key, isDir := nodeKey(kv.Key)
		if key == dir || !strings.HasPrefix(key, prefix) {
			continue // dir's own marker, or a stray v3 key that cleans to elsewhere
		}
		rel := key[len(prefix):]
		for i := range len(rel) {
			if rel[i] == '/' {
				add(Node{Key: prefix + rel[:i], Dir: true}, true)
				if !recursive {
					continue outer
				}
			}
		}
		n, err := k.node(ctx, key, isDir, kv)
		if err != nil {
			return nil, err
		}
		add(*n, false)
	}
	slices.SortFunc(nodes, func(a, b Node) int { return comparePaths(a.Key, b.Key) })
	return nodes, nil
}

// node describes kv, stored for key, looking up the TTL left on its lease.
func (k *Keys) node(ctx context.Context, key string, dir bool, kv *mvccpb.KeyValue) (*Node, error) {
	n := &Node{Key: key, Dir: dir, CreatedIndex: kv.CreateRevision, ModifiedIndex: kv.ModRevision}
	if !dir {
		n.Value = string(kv.Value)
	}
	if kv.Lease != 0 {
		resp, err := k.c.TimeToLive(ctx, clientv3.LeaseID(kv.Lease))
		if err != nil {
			return nil, err
		}
		// A lease that has just run out keeps its keys until the leader
		// revokes it; as in v2, a key that is still there has a TTL of at
		// least one second.
		n.TTL = max(resp.TTL, 1)
	}
	return n, nil
}

// clean normalises key as v2 did: rooted, without trailing or repeated
// slashes, "." and ".." resolved. The root directory is "/".
func clean(key string) string {
	return path.Clean("/" + key)
}

// nodeKey maps a stored v3 key to the node it stands for: a marker "/d/"
// stands for the directory "/d".
func nodeKey(stored []byte) (key string, dir bool) {
	s := string(stored)
	return clean(s), len(s) > 1 && strings.HasSuffix(s, "/")
}

// dirPrefix is the prefix under which dir's contents are stored, which for
// any directory but the root is also its marker.
func dirPrefix(dir string) string {
	if dir == "/" {
		return dir
	}
	return dir + "/"
}

// ancestors returns the directories above key, short of the root: /a and
// /a/b for /a/b/c.
func ancestors(key string) []string {
	var dirs []string
	for i := 1; i < len(key); i++ {
		if key[i] == '/' {
			dirs = append(dirs, key[:i])
		}
	}
	return dirs
}

// comparePaths orders keys depth-first, as if '/' sorted before every other
// byte, so that a directory's contents follow it directly: "/a", "/a/b",
// "/a-b".
func comparePaths(a, b string) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		switch {
		case a[i] == b[i]:
		case a[i] == '/':
			return -1
		case b[i] == '/':
			return 1
		default:
			return cmp.Compare(a[i], b[i])
		}
	}
	return cmp.Compare(len(a), len(b))
}

// seconds rounds d up to whole seconds, the granularity of v3 leases.
func seconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}
