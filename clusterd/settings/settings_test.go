package settings_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/settings"
	"github.com/corral-dev/corral/internal/etcdtest"
)

// TestWatchFollowsKey checks that Watch reports the value already there,
// then each put and the delete, in order.
func TestWatchFollowsKey(t *testing.T) {
	cli := etcdtest.Start(t)
	const key = "/corral/config/test"
	if _, err := cli.Put(t.Context(), key, "one"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	got := make(chan []byte, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		settings.Watch(ctx, cli, key, slog.Default(), func(val []byte) { got <- val })
	}()
	t.Cleanup(func() { cancel(); <-done })

	next := func(want string, present bool) {
		t.Helper()
		select {
		case val := <-got:
			if present != (val != nil) || string(val) != want {
				t.Fatalf("apply got %q (present %v), want %q (present %v)", val, val != nil, want, present)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("apply not called for %q within 10s", want)
		}
	}
	next("one", true)
	if _, err := cli.Put(t.Context(), key, "two"); err != nil {
		t.Fatal(err)
	}
	next("two", true)
	if _, err := cli.Delete(t.Context(), key); err != nil {
		t.Fatal(err)
	}
	next("", false)
}

// TestWatchStopsWithContext checks that Watch returns once ctx ends.
func TestWatchStopsWithContext(t *testing.T) {
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		settings.Watch(ctx, cli, "/corral/config/none", slog.Default(), func([]byte) {})
	}()
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Watch still running 10s after its context ended")
	}
}
