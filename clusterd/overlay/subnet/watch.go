package subnet

import (
	"context"
	"errors"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// errResync means the watch cannot go on from where it is (its revision was
// compacted away, or etcd ended it) and the leases must be listed afresh.
var errResync = errors.New("subnet watch must resync")

// Watch calls fn with the full set of leases, sorted by subnet, first as it
// is now and then after every change, until ctx ends; it then returns
// ctx.Err(). A full set rather than a delta is what a backend's Sync wants,
// and it means a missed event can never leave a stale route behind.
//
// Calls are never concurrent, and a slow fn does not queue a call per
// change: the events that arrive while fn runs are applied together and fn
// gets the newest set once. A set equal to the last one delivered is not
// delivered again. If the watch falls behind etcd's compaction, or etcd ends
// it, Watch lists the leases again and resumes from there.
//
// fn owns the slice it is given. Watch returns early only if listing the
// leases fails.
func Watch(ctx context.Context, c *clientv3.Client, fn func([]Lease)) error {
	var last []Lease
	delivered := false
	deliver := func(set map[string]Lease) {
		leases := make([]Lease, 0, len(set))
		for _, l := range set {
			leases = append(leases, l)
		}
		sortLeases(leases)
		if delivered && slices.EqualFunc(leases, last, func(a, b Lease) bool { return a.equal(&b) }) {
			return
		}
		last, delivered = leases, true
		fn(slices.Clone(leases))
	}

	for {
		leases, rev, err := List(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		set := make(map[string]Lease, len(leases))
		for _, l := range leases {
			set[KeyFor(l.Subnet)] = l
		}
		deliver(set)

		wctx, cancel := context.WithCancel(ctx)
		wch := c.Watch(wctx, SubnetPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
		err = follow(ctx, wch, set, deliver)
		// Cancelling ends the watch on the server too, and lets the client
		// close wch; nothing else is read from it.
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, errResync) {
			return err
		}
	}
}

// follow applies the events from wch to set, calling deliver once for each
// batch: whatever has arrived by the time it has applied a response. It
// returns ctx.Err() when ctx ends and errResync when wch fails or closes.
func follow(ctx context.Context, wch clientv3.WatchChan, set map[string]Lease, deliver func(map[string]Lease)) error {
	apply := func(resp clientv3.WatchResponse, ok bool) error {
		if !ok || resp.Canceled || resp.Err() != nil {
			// A closed channel without ctx ending, a cancellation, or a
			// compaction (resp.CompactRevision set): listing again is the
			// one way to be sure of the set.
			return errResync
		}
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			if ev.Type == mvccpb.DELETE {
				delete(set, key)
				continue
			}
			// A value that is not a lease is treated as no lease, as List
			// does.
			if l, err := decodeLease(ev.Kv); err == nil {
				set[key] = l
			} else {
				delete(set, key)
			}
		}
		return nil
	}

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case resp, ok := <-wch:
			if err := apply(resp, ok); err != nil {
				return err
			}
		}
		// Coalesce: take in everything that is already waiting before
		// telling fn, so it sees the newest set once rather than each
		// step on the way to it.
	drain:
		for {
			select {
			case resp, ok := <-wch:
				if err := apply(resp, ok); err != nil {
					return err
				}
			default:
				break drain
			}
		}
		deliver(set)
	}
}
