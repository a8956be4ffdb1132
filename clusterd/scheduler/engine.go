// Package scheduler is the cluster's engine, as fleet's was: one clusterd,
// elected through etcd, places every unit on a machine that satisfies its
// [X-Fleet] constraints, and moves the units of a machine that has been gone
// for longer than a grace period, or at once when it was removed for good
// (a membership tombstone). Each decision is written under the target
// machine's own key prefix (one decision wakes one agent) and carries the
// revision it was made at; the writes are guarded by the engine's election
// key, so a deposed engine can't overwrite its successor.
package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/corral-dev/corral/clusterd/election"
	"github.com/corral-dev/corral/clusterd/membership"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/unitstore"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// electionKey is where engines campaign.
const electionKey = "/corral/engine/leader"

// DefaultGrace is how long a machine may be gone before its units move: on
// top of the machine TTL, it rides out a restart or a short partition.
const DefaultGrace = 5 * time.Second

// Engine campaigns for leadership and, while it leads, schedules.
type Engine struct {
	Client    *clientv3.Client
	MachineID string
	TTL       time.Duration // the election lease; a dead engine is replaced within it
	Grace     time.Duration
	Log       *slog.Logger
	Observer  Observer // optional: told of placements and failovers (metrics)
}

// Run campaigns and schedules until ctx ends, campaigning again whenever
// leadership is lost.
func (e *Engine) Run(ctx context.Context) error {
	if e.Grace == 0 {
		e.Grace = DefaultGrace
	}
	if e.TTL == 0 {
		e.TTL = registry.DefaultTTL
	}
	if e.Log == nil {
		e.Log = slog.Default()
	}
	e.Log = e.Log.With("component", "engine")
	c := election.Campaign{Client: e.Client, Key: electionKey, ID: e.MachineID, TTL: e.TTL, Name: "engine", Log: e.Log}
	c.Run(ctx, func(ctx context.Context, leader clientv3.Cmp) error {
		s := &scheduler{
			client: e.Client, grace: e.Grace, log: e.Log, lost: map[string]time.Time{}, fleets: newFleetCache(), track: newTracker(e.Observer),
			leader: leader,
		}
		return s.loop(ctx)
	})
	return nil
}

// scheduler holds one leadership term's state.
type scheduler struct {
	client *clientv3.Client
	grace  time.Duration
	log    *slog.Logger
	leader clientv3.Cmp
	// lost records when a machine that still holds assignments was first
	// seen gone; its units move once the grace period has passed.
	lost map[string]time.Time
	// fleets keeps the units' parsed [X-Fleet] sections between passes.
	fleets *fleetCache
	track  *tracker
}

// loop reconciles on every change to units or machines, and when a lost
// machine's grace period ends.
func (s *scheduler) loop(ctx context.Context) error {
	changes := s.client.Watch(ctx, "/corral/", clientv3.WithPrefix())
	for {
		s.track.woke(time.Now())
		next, err := s.reconcile(ctx)
		if err != nil {
			s.log.Warn("scheduling pass failed", "err", err)
			next = time.Second
		}
		var timer <-chan time.Time
		if next > 0 {
			timer = time.After(next)
		}
		if err := wait(ctx, changes, timer); err != nil {
			return err
		}
	}
}

// wait returns once a change that matters has arrived, or the timer has
// fired. Changes come in bursts (a `clusterctl start` of many units, a
// machine's units moving), and a pass reads everything, so it also takes
// every change that has arrived meanwhile: one pass answers them all.
func wait(ctx context.Context, changes clientv3.WatchChan, timer <-chan time.Time) error {
	take := func(resp clientv3.WatchResponse, ok bool) (bool, error) {
		if !ok {
			return false, fmt.Errorf("watch closed")
		}
		if err := resp.Err(); err != nil {
			return false, err
		}
		return relevant(resp.Events), nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer:
			return nil
		case resp, ok := <-changes:
			rel, err := take(resp, ok)
			if err != nil {
				return err
			}
			for more := true; more; {
				select {
				case resp, ok := <-changes:
					r, err := take(resp, ok)
					if err != nil {
						return err
					}
					rel = rel || r
				default:
					more = false
				}
			}
			if rel {
				return nil
			}
		}
	}
}

// relevant filters out the engine's own and the agents' state writes,
// which don't change any decision.
func relevant(events []*clientv3.Event) bool {
	for _, ev := range events {
		k := string(ev.Kv.Key)
		if hasPrefix(k, registry.Prefix) || hasPrefix(k, unitstore.FilesPrefix) || hasPrefix(k, unitstore.DesiredPrefix) ||
			hasPrefix(k, membership.RemovedPrefix) {
			return true
		}
	}
	return false
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

// reconcile reads everything, decides, and writes the difference. It
// returns when it wants to run again regardless of changes (a grace
// period ending), or 0.
func (s *scheduler) reconcile(ctx context.Context) (time.Duration, error) {
	snap, err := unitstore.Read(ctx, s.client)
	if err != nil {
		return 0, err
	}
	all, _, err := registry.List(ctx, s.client)
	if err != nil {
		return 0, err
	}
	removed, err := tombstoned(ctx, s.client)
	if err != nil {
		return 0, err
	}
	now := time.Now()
	live := map[string]bool{}
	var machines []registry.Machine
	for _, m := range all {
		// A removed machine may stay registered for a while (its
		// clusterd stopping, its etcd member being removed): it is
		// never a choice.
		if removed[m.ID] {
			continue
		}
		machines = append(machines, m)
		live[m.ID] = true
		delete(s.lost, m.ID)
	}
	var next time.Duration
	dead := map[string]bool{} // machines whose units may move now
	for m := range snap.Assigned {
		if live[m] {
			continue
		}
		if removed[m] {
			// Removed for good: nothing to wait for.
			s.log.Info("machine removed; its units move now", "machine", m)
			delete(s.lost, m)
			dead[m] = true
			continue
		}
		since, ok := s.lost[m]
		if !ok {
			since = now
			s.lost[m] = now
			s.log.Info("machine lost; its units move after the grace period", "machine", m, "grace", s.grace)
		}
		if wait := since.Add(s.grace).Sub(now); wait > 0 {
			if next == 0 || wait < next {
				next = wait
			}
			continue
		}
		dead[m] = true
	}
	plan := decideWith(s.fleets, snap, machines, dead)
	s.track.decided(snap, plan, dead)
	if err := s.write(ctx, snap, plan); err != nil {
		return next, err
	}
	s.track.written(time.Now())
	return next, nil
}

// tombstoned reads the ids of the machines removed for good
// (clusterctl machine remove, provision scaling in): their tombstones'
// keys, under membership.RemovedPrefix.
func tombstoned(ctx context.Context, c *clientv3.Client) (map[string]bool, error) {
	resp, err := c.Get(ctx, membership.RemovedPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key[len(membership.RemovedPrefix):])] = true
	}
	return out, nil
}

// Limits of one write transaction: etcd's default --max-txn-ops, and well
// under its default --max-request-bytes (1.5 MiB).
const (
	maxTxnOps   = 128
	maxTxnBytes = 1 << 20
)

// write applies the plan's differences from the snapshot, guarded by
// leadership, in transactions small enough for etcd's limits. Unchanged
// keys are not written.
func (s *scheduler) write(ctx context.Context, snap *unitstore.Snapshot, p *plan) error {
	var (
		ops   []clientv3.Op
		sizes []int
	)
	add := func(op clientv3.Op, size int) {
		ops = append(ops, op)
		sizes = append(sizes, len(op.KeyBytes())+size)
	}
	for m, units := range snap.Assigned {
		for name, cur := range units {
			want, ok := p.assign[m][name]
			if !ok {
				add(clientv3.OpDelete(unitstore.AssignKey(m, name)), 0)
				s.log.Info("withdrawn", "unit", name, "machine", m)
				continue
			}
			if want.Hash == cur.Hash && want.Desired == cur.Desired {
				delete(p.assign[m], name) // unchanged: keep its revision
			}
		}
	}
	for m, units := range p.assign {
		for name, a := range units {
			a.Revision = snap.Revision
			b, _ := json.Marshal(a)
			add(clientv3.OpPut(unitstore.AssignKey(m, name), string(b)), len(b))
			s.log.Info("assigned", "unit", name, "machine", m, "desired", a.Desired)
		}
	}
	for name, u := range snap.Units {
		want, ok := p.placement[name]
		switch {
		case !ok && u.Placement != nil:
			add(clientv3.OpDelete(unitstore.PlacementPrefix+name), 0)
		case ok && (u.Placement == nil || *u.Placement != want):
			b, _ := json.Marshal(want)
			add(clientv3.OpPut(unitstore.PlacementPrefix+name, string(b)), len(b))
		}
	}
	for len(ops) > 0 {
		n, bytes := 0, 0
		for n < len(ops) && n < maxTxnOps && (n == 0 || bytes+sizes[n] <= maxTxnBytes) {
			bytes += sizes[n]
			n++
		}
		resp, err := s.client.Txn(ctx).If(s.leader).Then(ops[:n]...).Commit()
		if err != nil {
			return err
		}
		if !resp.Succeeded {
			return fmt.Errorf("no longer the elected engine")
		}
		ops, sizes = ops[n:], sizes[n:]
	}
	return nil
}
