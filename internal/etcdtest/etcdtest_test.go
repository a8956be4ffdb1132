package etcdtest_test

import (
	"context"
	"testing"

	"github.com/corral-dev/corral/internal/etcdtest"
)

func TestStart(t *testing.T) {
	c := etcdtest.Start(t)
	ctx := t.Context()
	if _, err := c.Put(ctx, "/k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get /k = %v, want v", resp.Kvs)
	}
}

// Two servers in one process must not collide on ports or data directories.
func TestStartTwice(t *testing.T) {
	a, b := etcdtest.Start(t), etcdtest.Start(t)
	ctx := context.Background()
	if _, err := a.Put(ctx, "/k", "a"); err != nil {
		t.Fatal(err)
	}
	resp, err := b.Get(ctx, "/k")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatalf("second server sees the first's key: %v", resp.Kvs)
	}
}
