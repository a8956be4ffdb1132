// Package election runs one machine's part in a cluster-wide election on
// etcd's concurrency.Election: the scheduler's engine and the backup
// scheduler each have exactly one machine acting at a time, and a machine
// that dies is replaced within its lease's TTL.
package election

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// retryDelay is how long Run waits before campaigning again after a term
// ended in error, so a cluster without a quorum is not hammered.
const retryDelay = time.Second

// Campaign is one machine's candidacy at Key.
type Campaign struct {
	Client *clientv3.Client
	Key    string        // the election's key prefix, e.g. /corral/engine/leader
	ID     string        // the candidate's value: its machine id
	TTL    time.Duration // the session's lease: a dead leader is replaced within it
	Name   string        // names the role in logs: "engine"
	Log    *slog.Logger
}

// Lead is a term of leadership: it runs until ctx ends (leadership lost,
// or Run's context ended). Writes only the leader may make are guarded by
// leader, which holds only while this term lasts (fencing: a deposed
// leader's writes fail).
type Lead func(ctx context.Context, leader clientv3.Cmp) error

// Run campaigns and, while elected, runs lead, until ctx ends; a term that
// ends in error (leadership lost, lead failed) is logged and campaigned
// for again a second later.
func (c Campaign) Run(ctx context.Context, lead Lead) {
	for ctx.Err() == nil {
		if err := c.term(ctx, lead); err != nil && ctx.Err() == nil {
			c.Log.Warn(c.Name+" stopped leading", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(retryDelay):
			}
		}
	}
}

// term wins the election, then runs lead until the session is lost.
func (c Campaign) term(ctx context.Context, lead Lead) error {
	sess, err := concurrency.NewSession(c.Client, concurrency.WithTTL(int(c.TTL/time.Second)), concurrency.WithContext(ctx))
	if err != nil {
		return err
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, c.Key)
	if err := el.Campaign(ctx, c.ID); err != nil {
		return err
	}
	c.Log.Info("elected " + c.Name)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The session's lease lapsing (etcd unreachable for a TTL) ends the
	// term: another machine may be elected by now.
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	err = lead(lctx, clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev()))
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("leadership lost: %w", err)
}
