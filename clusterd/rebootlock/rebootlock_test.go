package rebootlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/corral-dev/corral/internal/etcdtest"
)

// The semaphore starts as locksmith's (one slot) and is written in
// locksmith's JSON.
func TestDefaultsAndLayout(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx := t.Context()
	s, err := Get(ctx, cli)
	if err != nil || s.Max != 1 || s.Semaphore != 1 || len(s.Holders) != 0 {
		t.Fatalf("Get on an empty cluster = %+v, %v; want one free slot", s, err)
	}
	if err := Lock(ctx, cli, "m1"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, Key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("%s after Lock: %v %v", Key, resp, err)
	}
	if got, want := string(resp.Kvs[0].Value), `{"semaphore":0,"max":1,"holders":["m1"]}`; got != want {
		t.Errorf("%s = %s, want %s", Key, got, want)
	}
	if err := Lock(ctx, cli, "m1"); err != nil {
		t.Errorf("Lock by its holder again = %v, want nil", err)
	}
	if err := Lock(ctx, cli, "m2"); !errors.Is(err, ErrBusy) {
		t.Errorf("second holder's Lock = %v, want ErrBusy", err)
	}
	if err := Unlock(ctx, cli, "m2"); !errors.Is(err, ErrNotHeld) {
		t.Errorf("Unlock by a non-holder = %v, want ErrNotHeld", err)
	}
	if err := Unlock(ctx, cli, "m1"); err != nil {
		t.Fatal(err)
	}
	if err := Lock(ctx, cli, "m2"); err != nil {
		t.Errorf("Lock after the slot was given back = %v", err)
	}
	if _, err := SetMax(ctx, cli, 0); err == nil {
		t.Error("SetMax(0) accepted")
	}
}

// Many holders contending for max slots: never more than max hold one at
// once, and every one gets its turn.
func TestAcquireNeverExceedsMax(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	const max, holders = 2, 8
	if s, err := SetMax(ctx, cli, max); err != nil || s.Semaphore != max {
		t.Fatalf("SetMax = %+v, %v", s, err)
	}
	var inside, peak, done atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, holders)
	for i := range holders {
		wg.Go(func() {
			name := fmt.Sprintf("m%d", i)
			if err := Acquire(ctx, cli, name); err != nil {
				errs <- err
				return
			}
			n := inside.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			// While inside, the semaphore must list this holder.
			if s, err := Get(ctx, cli); err != nil || len(s.Holders) > max {
				errs <- fmt.Errorf("%s inside: semaphore %+v, %v", name, s, err)
			}
			inside.Add(-1)
			if err := Unlock(ctx, cli, name); err != nil {
				errs <- err
			}
			done.Add(1)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if done.Load() != holders {
		t.Errorf("%d of %d holders had their turn", done.Load(), holders)
	}
	if peak.Load() > max {
		t.Errorf("%d holders at once, max %d", peak.Load(), max)
	}
	if s, _ := Get(ctx, cli); len(s.Holders) != 0 || s.Semaphore != max {
		t.Errorf("after everyone: %+v, want all %d slots free", s, max)
	}
}

// Acquire waits for a slot to be given back, and gives up with its
// context.
func TestAcquireWaitsForRelease(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx := t.Context()
	if err := Lock(ctx, cli, "old"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := Acquire(short, cli, "new")
	cancel()
	if err == nil {
		t.Fatal("Acquire took a held slot")
	}
	got := make(chan error, 1)
	go func() { got <- Acquire(ctx, cli, "new") }()
	if err := Unlock(ctx, cli, "old"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Acquire after the release = %v", err)
	}
	if s, _ := Get(ctx, cli); len(s.Holders) != 1 || s.Holders[0] != "new" {
		t.Errorf("holders = %v, want [new]", s.Holders)
	}
}
