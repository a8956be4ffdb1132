// Package rebootlock is the cluster-wide reboot semaphore of CoreOS's
// locksmith ("etcd-lock"): at most Max machines may be down for a reboot
// or a replacement at once. It keeps locksmith's key and JSON, so the
// layout is the one CoreOS users know, and every change is one etcd
// transaction conditioned on the revision it read, so two holders can
// never take the same slot.
package rebootlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key is locksmith's semaphore key.
const Key = "/coreos.com/updateengine/rebootlock/semaphore"

// Semaphore is the key's value, as locksmith wrote it: Semaphore is the
// number of free slots, Max the number of slots, Holders who holds them.
type Semaphore struct {
	Semaphore int      `json:"semaphore"`
	Max       int      `json:"max"`
	Holders   []string `json:"holders"`
}

// Default is the semaphore before anyone set it: one slot, as locksmith.
var Default = Semaphore{Semaphore: 1, Max: 1}

var (
	// ErrBusy says every slot is held.
	ErrBusy = errors.New("rebootlock: every slot is held")
	// ErrNotHeld says the holder holds no slot.
	ErrNotHeld = errors.New("rebootlock: not held")
)

// Get reads the semaphore (Default when it was never set).
func Get(ctx context.Context, kv clientv3.KV) (Semaphore, error) {
	s, _, err := get(ctx, kv)
	return s, err
}

// get reads the semaphore and the revision to condition a change on
// (0: the key does not exist).
func get(ctx context.Context, kv clientv3.KV) (Semaphore, int64, error) {
	resp, err := kv.Get(ctx, Key)
	if err != nil {
		return Semaphore{}, 0, err
	}
	if len(resp.Kvs) == 0 {
		return Default, 0, nil
	}
	var s Semaphore
	if err := json.Unmarshal(resp.Kvs[0].Value, &s); err != nil {
		return Semaphore{}, 0, fmt.Errorf("rebootlock: %s holds %q: %w", Key, resp.Kvs[0].Value, err)
	}
	return s, resp.Kvs[0].ModRevision, nil
}

// update applies change to the semaphore until the transaction that
// writes it finds the revision it read (another writer got in between:
// read again and retry).
func update(ctx context.Context, kv clientv3.KV, change func(*Semaphore) error) (Semaphore, error) {
	for {
		s, rev, err := get(ctx, kv)
		if err != nil {
			return Semaphore{}, err
		}
		if err := change(&s); err != nil {
			return s, err
		}
		s.Semaphore = s.Max - len(s.Holders)
		b, err := json.Marshal(s)
		if err != nil {
			return Semaphore{}, err
		}
		resp, err := kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(Key), "=", rev)).
			Then(clientv3.OpPut(Key, string(b))).Commit()
		if err != nil {
			return Semaphore{}, err
		}
		if resp.Succeeded {
			return s, nil
		}
	}
}

// Lock takes a slot for holder, or fails with ErrBusy. Taking a slot
// already held by holder succeeds: a machine that rebooted while holding
// it must be able to find it again.
func Lock(ctx context.Context, kv clientv3.KV, holder string) error {
	_, err := update(ctx, kv, func(s *Semaphore) error {
		if slices.Contains(s.Holders, holder) {
			return nil
		}
		if len(s.Holders) >= s.Max {
			return fmt.Errorf("%w (%d of %d, by %v)", ErrBusy, len(s.Holders), s.Max, s.Holders)
		}
		s.Holders = append(s.Holders, holder)
		return nil
	})
	return err
}

// Unlock gives holder's slot back, or fails with ErrNotHeld.
func Unlock(ctx context.Context, kv clientv3.KV, holder string) error {
	_, err := update(ctx, kv, func(s *Semaphore) error {
		i := slices.Index(s.Holders, holder)
		if i < 0 {
			return fmt.Errorf("%w by %q (holders: %v)", ErrNotHeld, holder, s.Holders)
		}
		s.Holders = slices.Delete(s.Holders, i, i+1)
		return nil
	})
	return err
}

// SetMax sets the number of slots. Lowering it below the number held
// takes no slot away: new holders wait until enough are given back.
func SetMax(ctx context.Context, kv clientv3.KV, max int) (Semaphore, error) {
	if max < 1 {
		return Semaphore{}, fmt.Errorf("rebootlock: max must be at least 1, got %d", max)
	}
	return update(ctx, kv, func(s *Semaphore) error { s.Max = max; return nil })
}

// Acquire takes a slot for holder, waiting (on a watch of the key, not a
// timer) for one to be given back while every slot is held.
func Acquire(ctx context.Context, cli *clientv3.Client, holder string) error {
	for {
		_, rev, err := get(ctx, cli)
		if err != nil {
			return err
		}
		err = Lock(ctx, cli, holder)
		if !errors.Is(err, ErrBusy) {
			return err
		}
		// Watch from the revision read before trying: a release between
		// the read and the watch is delivered, not missed.
		wctx, cancel := context.WithCancel(ctx)
		wch := cli.Watch(wctx, Key, clientv3.WithRev(rev+1))
		select {
		case <-wch:
		case <-ctx.Done():
		}
		cancel()
		if ctx.Err() != nil {
			return fmt.Errorf("waiting for a reboot slot: %w", context.Cause(ctx))
		}
	}
}
