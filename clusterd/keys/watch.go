package keys

import (
	"context"
	"errors"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Event is a change to a node, as an etcd v2 watch reported it.
type Event struct {
	// Action is "set" when a key was created, "update" when an existing
	// key was written, "delete" when it was removed and "expire" when its
	// TTL ran out. (v2 also said "set" for a set that replaced a key; v3
	// cannot tell which verb wrote a key, only whether it was new.)
	Action   string
	Node     Node
	PrevNode *Node // the node before the change; nil if it did not exist
}

// errWatchClosed reports a watch channel closed under a live context, which
// happens when the client itself is closed.
var errWatchClosed = errors.New("keys: watch closed")

// Watch calls fn for each change to key, or with recursive to anything below
// it, made after the current revision. It returns when fn returns an error,
// which it passes on, or when ctx ends.
func (k *Keys) Watch(ctx context.Context, key string, recursive bool, fn func(Event) error) error {
	return k.WatchAfter(ctx, key, recursive, 0, fn)
}

// WatchAfter is Watch starting after revision index rather than the current
// one, as etcdctl v2's --after-index did; index 0 means the current revision.
// It lets a caller that has just made a change watch for the next one without
// missing any in between.
func (k *Keys) WatchAfter(ctx context.Context, key string, recursive bool, index int64, fn func(Event) error) error {
	key = clean(key)
	prefix := dirPrefix(key)
	match := func(stored string) bool {
		if recursive {
			return stored == key || strings.HasPrefix(stored, prefix)
		}
		return stored == key || stored == prefix
	}
	// One range covers key, its marker and everything below; it also takes
	// in siblings such as key+"-x", which match filters out.
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithPrevKV()}

	var rev int64 // 0 is the client's "from now on"
	if index > 0 {
		rev = index + 1
	}
	for {
		wctx, cancel := context.WithCancel(ctx)
		next, err := k.relay(ctx, k.c.Watch(wctx, key, append(opts, clientv3.WithRev(rev))...), match, fn)
		cancel()
		if err != nil {
			return err
		}
		rev = next
	}
}

// relay passes the events on wch that match to fn. It returns the revision to
// resume from if the revisions it was waiting for were compacted away, and
// otherwise the error that ended the watch.
func (k *Keys) relay(ctx context.Context, wch clientv3.WatchChan, match func(string) bool, fn func(Event) error) (int64, error) {
	for resp := range wch {
		if resp.CompactRevision != 0 {
			// The changes in between are gone for good; carry on from the
			// oldest revision left rather than lose the watch.
			return resp.CompactRevision, nil
		}
		if err := resp.Err(); err != nil {
			return 0, err
		}
		for _, ev := range resp.Events {
			if !match(string(ev.Kv.Key)) {
				continue
			}
			e, err := k.event(ctx, ev)
			if err != nil {
				return 0, err
			}
			if err := fn(e); err != nil {
				return 0, err
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return 0, errWatchClosed
}

// event translates a v3 watch event into v2's terms.
func (k *Keys) event(ctx context.Context, ev *clientv3.Event) (Event, error) {
	key, dir := nodeKey(ev.Kv.Key)
	var e Event
	if p := ev.PrevKv; p != nil {
		e.PrevNode = &Node{Key: key, Dir: dir, CreatedIndex: p.CreateRevision, ModifiedIndex: p.ModRevision}
		if !dir {
			e.PrevNode.Value = string(p.Value)
		}
	}
	if ev.Type == clientv3.EventTypePut {
		n, err := k.node(ctx, key, dir, ev.Kv)
		if err != nil {
			return Event{}, err
		}
		e.Node, e.Action = *n, "update"
		if ev.IsCreate() {
			e.Action = "set"
		}
		return e, nil
	}

	e.Node = Node{Key: key, Dir: dir, ModifiedIndex: ev.Kv.ModRevision}
	e.Action = "delete"
	if p := ev.PrevKv; p != nil {
		e.Node.CreatedIndex = p.CreateRevision
		// v3 reports an expiry as a plain delete. Rm never revokes leases,
		// so a key deleted while holding a lease that no longer exists was
		// deleted by the lease running out. (A key removed by Rm whose lease
		// then expired before this event was read is misreported as expired;
		// only an old event, replayed, can hit that.)
		if p.Lease != 0 {
			ttl, err := k.c.TimeToLive(ctx, clientv3.LeaseID(p.Lease))
			if err != nil {
				return Event{}, err
			}
			if ttl.TTL == -1 {
				e.Action = "expire"
			}
		}
	}
	return e, nil
}
