package election_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/election"
	"github.com/corral-dev/corral/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// term is one candidate's term of leadership as the test sees it.
type term struct {
	id     string
	leader clientv3.Cmp
}

// TestOneLeaderAndFailover runs two candidates: exactly one leads, its
// fencing compare guards writes, and when it stops the other takes over
// and the deposed leader's compare no longer holds.
func TestOneLeaderAndFailover(t *testing.T) {
	cli := etcdtest.Start(t)
	terms := make(chan term, 4)
	stops := map[string]context.CancelFunc{}
	var dones []chan struct{}
	for _, id := range []string{"a", "b"} {
		ctx, cancel := context.WithCancel(t.Context())
		stops[id] = cancel
		done := make(chan struct{})
		dones = append(dones, done)
		c := election.Campaign{Client: cli, Key: "/test/leader", ID: id, TTL: 2 * time.Second, Name: "test " + id, Log: slog.Default()}
		go func() {
			defer close(done)
			c.Run(ctx, func(ctx context.Context, leader clientv3.Cmp) error {
				terms <- term{id, leader}
				<-ctx.Done()
				return ctx.Err()
			})
		}()
	}
	t.Cleanup(func() {
		for _, stop := range stops {
			stop()
		}
		for _, d := range dones {
			<-d
		}
	})
	next := func() term {
		t.Helper()
		select {
		case tm := <-terms:
			return tm
		case <-time.After(15 * time.Second):
			t.Fatal("no candidate elected within 15s")
		}
		return term{}
	}
	guarded := func(leader clientv3.Cmp) bool {
		t.Helper()
		resp, err := cli.Txn(t.Context()).If(leader).Then(clientv3.OpPut("/test/fenced", "x")).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return resp.Succeeded
	}

	first := next()
	if !guarded(first.leader) {
		t.Fatalf("%s leads, but a write guarded by its compare failed", first.id)
	}
	select {
	case tm := <-terms:
		t.Fatalf("%s elected while %s still leads", tm.id, first.id)
	default:
	}
	stops[first.id]()
	second := next()
	if second.id == first.id {
		t.Fatalf("%s elected again after it stopped", first.id)
	}
	if guarded(first.leader) {
		t.Fatalf("the deposed leader %s's guarded write succeeded", first.id)
	}
	if !guarded(second.leader) {
		t.Fatalf("%s leads, but a write guarded by its compare failed", second.id)
	}
}
