package subnet_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/overlay/subnet"
	"github.com/corral-dev/corral/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// waitTimeout only bounds a test that is already failing; nothing waits for
// it to pass.
const waitTimeout = 10 * time.Second

// watcher runs subnet.Watch and passes each set it delivers to sets.
type watcher struct {
	sets <-chan []subnet.Lease
	done <-chan struct{} // closed when Watch has returned err
	err  error
	stop context.CancelFunc
}

func startWatch(t *testing.T, c *clientv3.Client, fn func([]subnet.Lease)) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	sets := make(chan []subnet.Lease)
	done := make(chan struct{})
	w := &watcher{sets: sets, done: done, stop: cancel}
	go func() {
		defer close(done)
		w.err = subnet.Watch(ctx, c, func(ls []subnet.Lease) {
			if fn != nil {
				fn(ls)
			}
			select {
			case sets <- ls:
			case <-ctx.Done():
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return w
}

// next returns the next set delivered.
func (w *watcher) next(t *testing.T) []subnet.Lease {
	t.Helper()
	select {
	case ls := <-w.sets:
		return ls
	case <-w.done:
		t.Fatalf("Watch returned early: %v", w.err)
	case <-time.After(waitTimeout):
		t.Fatalf("no lease set delivered in %v", waitTimeout)
	}
	return nil
}

func machines(ls []subnet.Lease) []string {
	var ids []string
	for _, l := range ls {
		ids = append(ids, l.MachineID)
	}
	slices.Sort(ids)
	return ids
}

func TestWatch(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	cfg := &subnet.Config{Network: pfx("10.1.0.0/16")}
	put(t, c, cfg)
	m1 := acquire(t, c, cfg, "m1", 1)

	w := startWatch(t, c, nil)
	if got := w.next(t); len(got) != 1 || got[0].MachineID != "m1" || got[0].Subnet != m1.Subnet {
		t.Fatalf("initial set %+v, want m1's lease on %s", got, m1.Subnet)
	}

	m2 := acquire(t, c, cfg, "m2", 2)
	got := w.next(t)
	if !slices.Equal(machines(got), []string{"m1", "m2"}) {
		t.Fatalf("set after m2 acquired: %+v, want m1 and m2", got)
	}
	for _, l := range got {
		if l.MachineID == "m2" && (l.Subnet != m2.Subnet || l.PublicIP != publicIP(2)) {
			t.Errorf("m2's lease in the set %+v, want %+v", l, *m2)
		}
	}
	if !slices.IsSortedFunc(got, func(a, b subnet.Lease) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) }) {
		t.Errorf("set not sorted by subnet: %+v", got)
	}

	if _, err := subnet.Release(ctx, c, "m1"); err != nil {
		t.Fatal(err)
	}
	if got := w.next(t); !slices.Equal(machines(got), []string{"m2"}) {
		t.Fatalf("set after m1 released: %+v, want m2 only", got)
	}

	// A change that leaves the set as it was is not delivered: the next set
	// seen is the one after m3 arrives.
	if _, err := subnet.Acquire(ctx, c, cfg, "m2", publicIP(2), "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "/coreos.com/network/subnets/", "not a lease"); err != nil {
		t.Fatal(err)
	}
	acquire(t, c, cfg, "m3", 3)
	if got := w.next(t); !slices.Equal(machines(got), []string{"m2", "m3"}) {
		t.Fatalf("set after m3 acquired: %+v, want m2 and m3", got)
	}

	w.stop()
	select {
	case <-w.done:
		if !errors.Is(w.err, context.Canceled) {
			t.Errorf("Watch returned %v after its context ended, want context.Canceled", w.err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Watch did not return after its context ended")
	}
}

// The watch starts from the revision the initial list was read at. If etcd
// has compacted past it by then, Watch must list again and carry on rather
// than fail or miss the changes. fn delivers the initial set before the
// watch is set up, so holding fn there gives the test time to compact.
func TestWatchSurvivesCompaction(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	cfg := &subnet.Config{Network: pfx("10.1.0.0/16")}
	put(t, c, cfg)
	acquire(t, c, cfg, "m1", 1)

	held, hold := make(chan struct{}), make(chan struct{})
	first := true
	w := startWatch(t, c, func([]subnet.Lease) {
		if first {
			first = false
			close(held)
			<-hold
		}
	})
	select {
	case <-held:
		// fn is blocked in the initial delivery, after the list and before
		// the watch; w.sets gets the set once it is released.
	case <-time.After(waitTimeout):
		t.Fatalf("no initial set delivered in %v", waitTimeout)
	}

	acquire(t, c, cfg, "m2", 2)
	if _, err := subnet.Release(ctx, c, "m1"); err != nil {
		t.Fatal(err)
	}
	_, rev, err := subnet.List(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	close(hold)

	if got := w.next(t); !slices.Equal(machines(got), []string{"m1"}) {
		t.Fatalf("initial set %+v, want m1", got)
	}
	if got := w.next(t); !slices.Equal(machines(got), []string{"m2"}) {
		t.Fatalf("set after compaction %+v, want m2", got)
	}
	// And it keeps watching from the new list.
	acquire(t, c, cfg, "m3", 3)
	if got := w.next(t); !slices.Equal(machines(got), []string{"m2", "m3"}) {
		t.Fatalf("set after m3 acquired %+v, want m2 and m3", got)
	}
}
