// Package agent runs, on every machine, the units the engine assigned to
// it. It watches only its own assignments, starts and stops units through
// a driver, and publishes their states. It is fail-static: while etcd is
// unreachable it keeps running what it runs, and reconciles when it can
// again. When it (re)starts it first stops whatever is no longer assigned
// to it, so a machine that comes back from a partition never runs a unit
// that has moved elsewhere.
package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/clusterd/unitstore"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Agent holds this machine's units to their assignments.
type Agent struct {
	Client  *clientv3.Client
	Machine unit.Machine
	Driver  driver.Driver
	TTL     time.Duration // lease of the published states
	Log     *slog.Logger

	mu sync.Mutex
	// seen is the newest assignment revision seen per unit: fencing.
	seen map[string]int64
	// held is what the agent last applied per unit.
	held map[string]unitstore.Assignment
	// started is the assignment revision each unit was last started for:
	// a unit is started once per assignment, so a failed unit stays failed
	// (as systemd keeps it) rather than being retried on every change.
	started map[string]int64
}

// Run reconciles until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	if a.Log == nil {
		a.Log = slog.Default()
	}
	a.Log = a.Log.With("component", "agent")
	a.seen, a.held, a.started = map[string]int64{}, map[string]unitstore.Assignment{}, map[string]int64{}
	go a.publish(ctx)
	for ctx.Err() == nil {
		if err := a.follow(ctx); err != nil && ctx.Err() == nil {
			// Fail-static: keep what runs, try again.
			a.Log.Warn("lost the assignments watch; units keep running", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

// follow lists the assignments, applies them, and keeps applying them on
// every change until the watch fails.
func (a *Agent) follow(ctx context.Context) error {
	prefix := unitstore.AssignPrefix + a.Machine.ID + "/"
	for {
		resp, err := a.Client.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			return err
		}
		want := map[string]unitstore.Assignment{}
		for _, kv := range resp.Kvs {
			var as unitstore.Assignment
			if err := json.Unmarshal(kv.Value, &as); err == nil {
				want[as.Name] = as
			}
		}
		a.apply(ctx, want)
		if err := a.awaitChange(ctx, prefix, resp.Header.Revision+1); err != nil {
			return err
		}
	}
}

// awaitChange returns once anything under prefix changes at or after rev.
// The watch is cancelled on return: the next round opens its own, and a
// watch left open would pile up one per change for the agent's lifetime.
func (a *Agent) awaitChange(ctx context.Context, prefix string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	select {
	case r, ok := <-a.Client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev)):
		if !ok {
			return ctx.Err()
		}
		return r.Err()
	case <-ctx.Done():
		return nil
	}
}

// apply makes the driver's units match want: first it stops what is no
// longer assigned here, then starts or stops the rest.
func (a *Agent) apply(ctx context.Context, want map[string]unitstore.Assignment) {
	a.mu.Lock()
	defer a.mu.Unlock()
	known := a.Driver.States()
	for name := range known {
		if as, ok := want[name]; !ok || as.Desired != unitstore.Launched {
			if err := a.Driver.Stop(ctx, name); err != nil {
				a.Log.Error("stopping unit", "unit", name, "err", err)
			}
			delete(a.started, name)
			delete(known, name)
		}
	}
	for name := range a.held {
		if _, ok := want[name]; !ok {
			delete(a.held, name)
		}
	}
	for name, as := range want {
		if as.Revision < a.seen[name] {
			a.Log.Warn("ignoring an assignment older than one already seen", "unit", name, "revision", as.Revision, "seen", a.seen[name])
			continue
		}
		a.seen[name] = as.Revision
		a.held[name] = as
		_, running := known[name]
		if as.Desired != unitstore.Launched || (running && a.started[name] == as.Revision) {
			continue
		}
		if err := a.start(ctx, as); err != nil {
			a.Log.Error("starting unit", "unit", name, "err", err)
			continue
		}
		a.started[name] = as.Revision
	}
}

func (a *Agent) start(ctx context.Context, as unitstore.Assignment) error {
	n, err := unit.ParseName(as.Name)
	if err != nil {
		return err
	}
	f, err := unit.Parse(as.Name, []byte(as.Content))
	if err != nil {
		return err
	}
	// Specifiers such as %H and %m apply to plain units too.
	return a.Driver.Start(ctx, as.Name, unit.Instantiate(f, n, a.Machine))
}

// publish writes the driver's states under a lease of this agent's, so the
// states of a dead machine vanish with it.
func (a *Agent) publish(ctx context.Context) {
	ttl := a.TTL
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	for ctx.Err() == nil {
		sess, err := concurrency.NewSession(a.Client, concurrency.WithTTL(int(ttl/time.Second)), concurrency.WithContext(ctx))
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		}
		a.publishWith(ctx, sess)
		sess.Close()
	}
}

func (a *Agent) publishWith(ctx context.Context, sess *concurrency.Session) {
	published := map[string]driver.State{}
	sync := func() {
		states := a.Driver.States()
		a.mu.Lock()
		held := map[string]string{}
		for name, as := range a.held {
			held[name] = as.Hash
		}
		a.mu.Unlock()
		for name, st := range states {
			if published[name] == st {
				continue
			}
			v, _ := json.Marshal(unitstore.UnitState{Name: name, Machine: a.Machine.ID, Hash: held[name], Active: st.Active, Sub: st.Sub})
			if _, err := a.Client.Put(ctx, unitstore.StateKey(a.Machine.ID, name), string(v), clientv3.WithLease(sess.Lease())); err != nil {
				return
			}
			published[name] = st
		}
		for name := range published {
			if _, ok := states[name]; !ok {
				a.Client.Delete(ctx, unitstore.StateKey(a.Machine.ID, name))
				delete(published, name)
			}
		}
	}
	// Clear states this machine published in an earlier life.
	a.Client.Delete(ctx, unitstore.StatePrefix+a.Machine.ID+"/", clientv3.WithPrefix())
	sync()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sess.Done():
			return
		case <-a.Driver.Changes():
			sync()
		}
	}
}
