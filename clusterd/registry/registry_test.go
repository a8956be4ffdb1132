package registry_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func has(id string) func([]registry.Machine) bool {
	return func(ms []registry.Machine) bool {
		return slices.ContainsFunc(ms, func(m registry.Machine) bool { return m.ID == id })
	}
}

func not(f func([]registry.Machine) bool) func([]registry.Machine) bool {
	return func(ms []registry.Machine) bool { return !f(ms) }
}

func wait(t *testing.T, c *clientv3.Client, what string, cond func([]registry.Machine) bool) []registry.Machine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ms, err := registry.WaitFor(ctx, c, cond)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return ms
}

func TestMachineIDIsStable(t *testing.T) {
	dir := t.TempDir()
	a, err := registry.MachineID(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := registry.MachineID(dir)
	if err != nil || a != b || len(a) != 32 {
		t.Fatalf("machine id not stable 32-hex: %q then %q (%v)", a, b, err)
	}
	if c, _ := registry.MachineID(t.TempDir()); c == a {
		t.Fatalf("two data dirs share machine id %s", a)
	}
}

// A heartbeat registers, survives the loss of its lease by registering
// again, and takes the record with it when it stops.
func TestHeartbeatLifecycle(t *testing.T) {
	c := etcdtest.Start(t)
	m := registry.Machine{ID: "0123456789abcdef0123456789abcdef", Name: "core-1", IP: "10.0.0.1", Metadata: map[string]string{"role": "web"}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- (&registry.Heartbeat{Client: c, Machine: m, TTL: 2 * time.Second}).Run(ctx) }()

	ms := wait(t, c, "registration", has(m.ID))
	if ms[0].Metadata["role"] != "web" || ms[0].Name != "core-1" {
		t.Fatalf("record = %+v", ms[0])
	}

	// Revoke the lease behind the heartbeat's back, as an expiry would.
	resp, err := c.Get(context.Background(), registry.Prefix+m.ID)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatal(err)
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	w := c.Watch(wctx, registry.Prefix+m.ID, clientv3.WithRev(resp.Header.Revision+1))
	if _, err := c.Revoke(context.Background(), lease); err != nil {
		t.Fatal(err)
	}
	var sawDelete, sawPut bool
	for ev := range w {
		for _, e := range ev.Events {
			switch e.Type {
			case clientv3.EventTypeDelete:
				sawDelete = true
			case clientv3.EventTypePut:
				sawPut = sawDelete
			}
		}
		if sawPut {
			break
		}
	}
	if !sawPut {
		t.Fatal("the heartbeat did not register again after losing its lease")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Stopping revokes the lease: the record is gone now, not after the TTL.
	resp, err = c.Get(context.Background(), registry.Prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatalf("record left after a clean stop: %s", resp.Kvs[0].Key)
	}
}

// A machine that stops heartbeating without a word leaves after its TTL.
func TestSilentMachineExpires(t *testing.T) {
	c := etcdtest.Start(t)
	lease, err := c.Grant(context.Background(), 2)
	if err != nil {
		t.Fatal(err)
	}
	id := "ffffffffffffffffffffffffffffffff"
	if _, err := c.Put(context.Background(), registry.Prefix+id, `{"id":"`+id+`","name":"gone"}`, clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	wait(t, c, "the record", has(id))
	wait(t, c, "expiry", not(has(id)))
}
