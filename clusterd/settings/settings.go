// Package settings follows a cluster-wide setting that provision writes
// under /corral/config/<name> (the logs block, the deploy hook's): each
// clusterd reads the key and every change to it, so a setting takes effect
// on running machines without a restart.
package settings

import (
	"context"
	"errors"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// retryDelay is how long Watch waits before following the key again after
// the watch broke (etcd unreachable, leader lost), so a cluster without a
// quorum is not hammered.
const retryDelay = time.Second

// Watch calls apply with key's value (nil when absent) now and whenever it
// changes, until ctx ends. A broken watch is logged and followed again a
// second later; apply may then see the same value twice, so it compares
// with what it has. Calls to apply are sequential.
func Watch(ctx context.Context, cli *clientv3.Client, key string, log *slog.Logger, apply func(val []byte)) {
	for ctx.Err() == nil {
		err := follow(ctx, cli, key, apply)
		if ctx.Err() != nil {
			return
		}
		log.Warn("watching "+key+"; retrying", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(retryDelay):
		}
	}
}

// follow reads key and then each change to it, calling apply with the
// value (nil when absent), until the watch breaks or ctx ends. The watch
// starts at the revision read, so no change between the two is missed, and
// requires a leader, so a member cut off from the quorum gives up rather
// than waiting silently.
func follow(ctx context.Context, cli *clientv3.Client, key string, apply func(val []byte)) error {
	resp, err := cli.Get(ctx, key)
	if err != nil {
		return err
	}
	var val []byte
	if len(resp.Kvs) > 0 {
		val = resp.Kvs[0].Value
	}
	apply(val)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range cli.Watch(wctx, key, clientv3.WithRev(resp.Header.Revision+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				apply(nil)
			} else {
				apply(ev.Kv.Value)
			}
		}
	}
	return errors.New("watch closed")
}
