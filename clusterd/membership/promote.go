package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// DefaultRecheck is how often a client counts the voters when nothing woke
// it: etcd has no watch on its member list, so a removal made by hand
// (etcdctl member remove) is only seen this way.
const DefaultRecheck = 5 * time.Second

// claimTTL bounds how long a promoter that died keeps the claim.
const claimTTL = 10

// ErrVoterNotNeeded stops a promotion that another machine's made moot.
var ErrVoterNotNeeded = errors.New("membership: the cluster has the voters it wants")

// Promoter runs on a client machine and makes it a voter when the cluster
// has fewer voters than its settings ask for and this machine wins the
// claim.
type Promoter struct {
	Client *clientv3.Client
	// Machine is this machine.
	Machine Machine
	// Promote starts this machine's etcd member and has it promoted
	// (store.Store.Promote); check runs under the join lock.
	Promote func(ctx context.Context, check func(context.Context, *clientv3.Client) error) error
	Log     *slog.Logger
	Recheck time.Duration // default DefaultRecheck
}

// Run returns nil once this machine is a voter, or when ctx ends.
func (p *Promoter) Run(ctx context.Context) error {
	if p.Recheck == 0 {
		p.Recheck = DefaultRecheck
	}
	if p.Log == nil {
		p.Log = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Wake up on settings changes, removals (tombstones) and a claim being
	// let go; the recheck covers the rest.
	settings := p.Client.Watch(ctx, ConfigKey)
	events := p.Client.Watch(ctx, "/corral/membership/", clientv3.WithPrefix())
	for {
		done, err := p.try(ctx)
		switch {
		case done:
			return nil
		case err != nil && ctx.Err() == nil:
			p.Log.Warn("promotion to etcd voter failed; will try again", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-settings:
		case <-events:
		case <-time.After(p.Recheck):
		}
	}
}

// wanted says whether the cluster wants another voter; it errs with
// ErrVoterNotNeeded when not.
func wanted(ctx context.Context, c *clientv3.Client) error {
	set, ok, err := GetSettings(ctx, c)
	if err != nil || !ok {
		return cmpErr(err, ErrVoterNotNeeded)
	}
	list, err := c.MemberList(ctx)
	if err != nil {
		return err
	}
	voters := 0
	for _, m := range list.Members {
		if !m.IsLearner {
			voters++
		}
	}
	if voters >= set.Voters {
		return ErrVoterNotNeeded
	}
	return nil
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// try promotes this machine if a voter is wanted and nobody else is being
// promoted; done says it is now a voter.
func (p *Promoter) try(ctx context.Context) (done bool, err error) {
	if err := wanted(ctx, p.Client); err != nil {
		return false, ignore(err, ErrVoterNotNeeded)
	}
	if gone, err := Removed(ctx, p.Client, p.Machine.ID); err != nil || gone {
		return false, err
	}
	sess, err := concurrency.NewSession(p.Client, concurrency.WithTTL(claimTTL), concurrency.WithContext(ctx))
	if err != nil {
		return false, err
	}
	// Closing the session revokes its lease, and with it the claim: the
	// next promoter, if one is still wanted, is woken by the delete.
	defer sess.Close()
	resp, err := p.Client.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(claimKey), "=", 0)).
		Then(clientv3.OpPut(claimKey, p.Machine.Name, clientv3.WithLease(sess.Lease()))).Commit()
	if err != nil || !resp.Succeeded {
		return false, err // another machine is being promoted
	}
	p.Log.Info("the cluster wants another etcd voter; promoting this machine")
	err = p.Promote(ctx, wanted)
	if err != nil {
		return false, ignore(fmt.Errorf("promoting %s: %w", p.Machine.Name, err), ErrVoterNotNeeded)
	}
	p.Log.Info("promoted to etcd voter")
	return true, nil
}

// ignore is err, or nil if it is target.
func ignore(err, target error) error {
	if errors.Is(err, target) {
		return nil
	}
	return err
}
