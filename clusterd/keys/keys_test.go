package keys_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/keys"
	"github.com/corral-dev/corral/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func start(t *testing.T) (*keys.Keys, *clientv3.Client) {
	t.Helper()
	c := etcdtest.Start(t)
	return keys.New(c), c
}

// wantCode fails the test unless err is a *keys.Error with code and cause.
func wantCode(t *testing.T, err error, code int, cause string) {
	t.Helper()
	var kerr *keys.Error
	if !errors.As(err, &kerr) {
		t.Fatalf("err = %v, want v2 error %d", err, code)
	}
	if kerr.Code != code || kerr.Cause != cause {
		t.Fatalf("err = %v, want %d (%s)", err, code, cause)
	}
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func TestSetGet(t *testing.T) {
	k, c := start(t)
	ctx := t.Context()

	n := must[*keys.Node](t)(k.Set(ctx, "/foo/bar", `{ "baz": "quux" }`, 0))
	if n.Key != "/foo/bar" || n.Value != `{ "baz": "quux" }` || n.TTL != 0 || n.CreatedIndex != n.ModifiedIndex {
		t.Fatalf("Set = %+v", n)
	}
	got := must[*keys.Node](t)(k.Get(ctx, "/foo/bar"))
	if *got != *n {
		t.Fatalf("Get = %+v, want %+v", got, n)
	}

	again := must[*keys.Node](t)(k.Set(ctx, "/foo/bar", "v2", time.Minute))
	if again.CreatedIndex != n.CreatedIndex || again.ModifiedIndex <= n.ModifiedIndex || again.TTL != 60 {
		t.Fatalf("second Set = %+v, first %+v", again, n)
	}
	got = must[*keys.Node](t)(k.Get(ctx, "/foo/bar"))
	if got.Value != "v2" || got.TTL < 1 || got.TTL > 60 {
		t.Fatalf("Get after Set with TTL = %+v", got)
	}

	// Keys are plain v3 keys under their own names.
	resp := must[*clientv3.GetResponse](t)(c.Get(ctx, "/foo/bar"))
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v2" || resp.Kvs[0].Lease == 0 {
		t.Fatalf("v3 view of /foo/bar = %v", resp.Kvs)
	}
}

func TestKeysAreNormalised(t *testing.T) {
	k, c := start(t)
	ctx := t.Context()
	must[*keys.Node](t)(k.Set(ctx, "foo//bar/", "v", 0))
	for _, key := range []string{"/foo/bar", "foo/bar", "/foo/./bar//"} {
		if n, err := k.Get(ctx, key); err != nil || n.Key != "/foo/bar" {
			t.Errorf("Get(%q) = %+v, %v", key, n, err)
		}
	}
	resp := must[*clientv3.GetResponse](t)(c.Get(ctx, "", clientv3.WithPrefix()))
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != "/foo/bar" {
		t.Fatalf("stored keys = %v", resp.Kvs)
	}
}

func TestGetErrors(t *testing.T) {
	k, _ := start(t)
	ctx := t.Context()
	rev := must[*keys.Node](t)(k.Set(ctx, "/dir/file", "v", 0)).ModifiedIndex

	_, err := k.Get(ctx, "/foo/bar")
	wantCode(t, err, keys.ErrKeyNotFound, "/foo/bar")
	if want := fmt.Sprintf("100: Key not found (/foo/bar) [%d]", rev); err.Error() != want {
		t.Errorf("Error() = %q, want %q", err, want)
	}
	_, err = k.Get(ctx, "/dir")
	wantCode(t, err, keys.ErrNotFile, "/dir")
	_, err = k.Get(ctx, "/")
	wantCode(t, err, keys.ErrNotFile, "/")
}

func TestSetErrors(t *testing.T) {
	k, _ := start(t)
	ctx := t.Context()
	must[*keys.Node](t)(k.Set(ctx, "/a/b", "v", 0))

	_, err := k.Set(ctx, "/a", "v", 0)
	wantCode(t, err, keys.ErrNotFile, "/a")
	_, err = k.Set(ctx, "/a/b/c/d", "v", 0)
	wantCode(t, err, keys.ErrNotDir, "/a/b")
	_, err = k.Set(ctx, "/", "v", 0)
	wantCode(t, err, keys.ErrRootReadOnly, "/")

	// A refused write leaves nothing behind.
	if nodes := must[[]keys.Node](t)(k.Ls(ctx, "/", true)); len(nodes) != 2 {
		t.Fatalf("after refused writes, Ls = %+v", nodes)
	}
}

func TestMk(t *testing.T) {
	k, _ := start(t)
	ctx := t.Context()
	n := must[*keys.Node](t)(k.Mk(ctx, "/a/b", "v", 0))
	if n.Value != "v" {
		t.Fatalf("Mk = %+v", n)
	}
	_, err := k.Mk(ctx, "/a/b", "w", 0)
	wantCode(t, err, keys.ErrNodeExist, "/a/b")
	_, err = k.Mk(ctx, "/a", "w", 0)
	wantCode(t, err, keys.ErrNodeExist, "/a")
	_, err = k.Mk(ctx, "/a/b/c", "w", 0)
	wantCode(t, err, keys.ErrNotDir, "/a/b")
	if got := must[*keys.Node](t)(k.Get(ctx, "/a/b")); got.Value != "v" {
		t.Fatalf("Mk overwrote: %+v", got)
	}
}

func TestMkConcurrent(t *testing.T) {
	k, _ := start(t)
	ctx := t.Context()
	const n = 10
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			_, errs[i] = k.Mk(ctx, "/lock", fmt.Sprint(i), 0)
		})
	}
	wg.Wait()
	winners := 0
	for _, err := range errs {
		if err == nil {
			winners++
			continue
		}
		wantCode(t, err, keys.ErrNodeExist, "/lock")
	}
	if winners != 1 {
		t.Fatalf("%d goroutines won Mk, want 1", winners)
	}
}

func TestUpdate(t *testing.T) {
	k, _ := start(t)
	ctx := t.Context()
	_, err := k.Update(ctx, "/svc/x", "v", 0)
	wantCode(t, err, keys.ErrKeyNotFound, "/svc/x")

	// The CoreOS heartbeat idiom: etcdctl update --ttl 8 KEY V || etcdctl set --ttl 8 KEY V.
	refresh := func(value string) *keys.Node {
		t.Helper()
		n, err := k.Update(ctx, "/svc/x", value, 8*time.Second)
		var kerr *keys.Error
		if errors.As(err, &kerr) && kerr.Code == keys.ErrKeyNotFound {
			n, err = k.Set(ctx, "/svc/x", value, 8*time.Second)
		}
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	first, second := refresh("10.1.2.3"), refresh("10.1.2.4")
	if second.CreatedIndex != first.CreatedIndex || second.Value != "10.1.2.4" || second.TTL != 8 {
		t.Fatalf("update || set: first %+v, second %+v", first, second)
	}

	// Updating without a TTL makes the key permanent, as in v2.
	if n := must[*keys.Node](t)(k.Update(ctx, "/svc/x", "v", 0)); n.TTL != 0 {
		t.Fatalf("Update without TTL = %+v", n)
	}
	if n := must[*keys.Node](t)(k.Get(ctx, "/svc/x")); n.TTL != 0 {
		t.Fatalf("Get after Update without TTL = %+v", n)
	}
	_, err = k.Update(ctx, "/svc", "v", 0)
	wantCode(t, err, keys.ErrNotFile, "/svc")
}

func TestRm(t *testing.T) {
	k, c := start(t)
	ctx := t.Context()
	for _, key := range []string{"/f", "/d/x", "/d/sub/y", "/d-sibling"} {
		must[*keys.Node](t)(k.Set(ctx, key, "v", 0))
	}
	if err := k.Mkdir(ctx, "/d/empty", 0); err != nil {
		t.Fatal(err)
	}

	if err := k.Rm(ctx, "/f", false); err != nil {
		t.Fatal(err)
	}
	_, err := k.Get(ctx, "/f")
	wantCode(t, err, keys.ErrKeyNotFound, "/f")
	wantCode(t, k.Rm(ctx, "/f", false), keys.ErrKeyNotFound, "/f")
	wantCode(t, k.Rm(ctx, "/d", false), keys.ErrNotFile, "/d")
	wantCode(t, k.Rm(ctx, "/d/empty", false), keys.ErrNotFile, "/d/empty")
	wantCode(t, k.Rm(ctx, "/", true), keys.ErrRootReadOnly, "/")

	if err := k.Rm(ctx, "/d", true); err != nil {
		t.Fatal(err)
	}
	wantCode(t, k.Rm(ctx, "/d", true), keys.ErrKeyNotFound, "/d")
	// Everything under /d went, markers included, and nothing beside it.
	resp := must[*clientv3.GetResponse](t)(c.Get(ctx, "", clientv3.WithPrefix(), clientv3.WithKeysOnly()))
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != "/d-sibling" {
		t.Fatalf("after rm -r /d, stored keys = %v", resp.Kvs)
	}
	// A recursive rm of a file is just an rm.
	if err := k.Rm(ctx, "/d-sibling", true); err != nil {
		t.Fatal(err)
	}
}

func TestRmdir(t *testing.T) {
	k, _ := start(t)
	ctx := t.Context()
	must[*keys.Node](t)(k.Set(ctx, "/full/x", "v", 0))
	must[*keys.Node](t)(k.Set(ctx, "/file", "v", 0))
	if err := k.Mkdir(ctx, "/empty", 0); err != nil {
		t.Fatal(err)
	}

	wantCode(t, k.Rmdir(ctx, "/full"), keys.ErrDirNotEmpty, "/full")
	for _, key := range []string{"/empty", "/file"} {
		if err := k.Rmdir(ctx, key); err != nil {
			t.Fatalf("Rmdir(%s): %v", key, err)
		}
		wantCode(t, k.Rmdir(ctx, key), keys.ErrKeyNotFound, key)
	}
}

func TestMkdir(t *testing.T) {
	k, c := start(t)
	ctx := t.Context()
	if err := k.Mkdir(ctx, "/d", 0); err != nil {
		t.Fatal(err)
	}
	// The empty directory is a marker key, visible to v3 clients.
	resp := must[*clientv3.GetResponse](t)(c.Get(ctx, "/d/"))
	if len(resp.Kvs) != 1 || len(resp.Kvs[0].Value) != 0 {
		t.Fatalf("marker /d/ = %v", resp.Kvs)
	}
	if nodes := must[[]keys.Node](t)(k.Ls(ctx, "/d", false)); len(nodes) != 0 {
		t.Fatalf("Ls(empty dir) = %+v", nodes)
	}
	_, err := k.Get(ctx, "/d")
	wantCode(t, err, keys.ErrNotFile, "/d")
	_, err = k.Set(ctx, "/d", "v", 0)
	wantCode(t, err, keys.ErrNotFile, "/d")
	wantCode(t, k.Mkdir(ctx, "/d", 0), keys.ErrNodeExist, "/d")

	// A directory implied by a key inside it exists too.
	must[*keys.Node](t)(k.Set(ctx, "/a/b/c", "v", 0))
	wantCode(t, k.Mkdir(ctx, "/a/b", 0), keys.ErrNodeExist, "/a/b")
	wantCode(t, k.Mkdir(ctx, "/a/b/c", 0), keys.ErrNodeExist, "/a/b/c")
	wantCode(t, k.Mkdir(ctx, "/a/b/c/d", 0), keys.ErrNotDir, "/a/b/c")
	// Keys can go inside a made directory.
	must[*keys.Node](t)(k.Set(ctx, "/d/x", "v", 0))
}

func TestLs(t *testing.T) {
	k, _ := start(t)
	ctx := t.Context()
	if nodes := must[[]keys.Node](t)(k.Ls(ctx, "/", true)); len(nodes) != 0 {
		t.Fatalf("Ls of an empty store = %+v", nodes)
	}
	for _, key := range []string{"/a/b/c", "/a-b", "/a/d", "/coreos.com/network/config"} {
		must[*keys.Node](t)(k.Set(ctx, key, "v:"+key, 0))
	}
	if err := k.Mkdir(ctx, "/a/e", 0); err != nil {
		t.Fatal(err)
	}

	type entry struct {
		key string
		dir bool
	}
	ls := func(dir string, recursive bool) []entry {
		t.Helper()
		var got []entry
		for _, n := range must[[]keys.Node](t)(k.Ls(ctx, dir, recursive)) {
			if n.Dir == (n.Value != "") || (!n.Dir && n.Value != "v:"+n.Key) {
				t.Errorf("Ls(%s): node %+v", dir, n)
			}
			got = append(got, entry{n.Key, n.Dir})
		}
		return got
	}
	for _, tc := range []struct {
		dir       string
		recursive bool
		want      []entry
	}{
		{"/", false, []entry{{"/a", true}, {"/a-b", false}, {"/coreos.com", true}}},
		{"/a", false, []entry{{"/a/b", true}, {"/a/d", false}, {"/a/e", true}}},
		{"/a/", false, []entry{{"/a/b", true}, {"/a/d", false}, {"/a/e", true}}},
		{"/a/b", false, []entry{{"/a/b/c", false}}},
		{"/a/b/c", false, []entry{{"/a/b/c", false}}},
		{"/", true, []entry{
			{"/a", true}, {"/a/b", true}, {"/a/b/c", false}, {"/a/d", false}, {"/a/e", true},
			{"/a-b", false},
			{"/coreos.com", true}, {"/coreos.com/network", true}, {"/coreos.com/network/config", false},
		}},
		{"/a", true, []entry{{"/a/b", true}, {"/a/b/c", false}, {"/a/d", false}, {"/a/e", true}}},
	} {
		if got := ls(tc.dir, tc.recursive); !slices.Equal(got, tc.want) {
			t.Errorf("Ls(%s, %v) = %v, want %v", tc.dir, tc.recursive, got, tc.want)
		}
	}

	// The made directory's node carries its marker's indexes.
	for _, n := range must[[]keys.Node](t)(k.Ls(ctx, "/a", false)) {
		if n.Key == "/a/e" && n.CreatedIndex == 0 {
			t.Errorf("made dir without indexes: %+v", n)
		}
	}
	_, err := k.Ls(ctx, "/nope", false)
	wantCode(t, err, keys.ErrKeyNotFound, "/nope")
	// "/a" is a directory, but "/a-" is not one because "/a-b" exists.
	_, err = k.Ls(ctx, "/a-", false)
	wantCode(t, err, keys.ErrKeyNotFound, "/a-")
}

// watch collects the first n events on key after revision after.
func watch(t *testing.T, k *keys.Keys, key string, recursive bool, after int64, n int) []keys.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var events []keys.Event
	errEnough := errors.New("enough")
	err := k.WatchAfter(ctx, key, recursive, after, func(e keys.Event) error {
		events = append(events, e)
		if len(events) == n {
			return errEnough
		}
		return nil
	})
	if !errors.Is(err, errEnough) {
		t.Fatalf("WatchAfter(%s) = %v after events %+v", key, err, events)
	}
	return events
}

func actions(events []keys.Event) []string {
	var as []string
	for _, e := range events {
		as = append(as, e.Action+" "+e.Node.Key)
	}
	return as
}

// The CoreOS in Action demo: etcdctl set --ttl 3 /foo/bar ...; the key is
// there at once, then goes, and a watcher is told it expired.
func TestTTLExpires(t *testing.T) {
	k, _ := start(t)
	ctx := t.Context()
	n := must[*keys.Node](t)(k.Set(ctx, "/foo/bar", `{ "baz": "quux" }`, 3*time.Second))
	if got := must[*keys.Node](t)(k.Get(ctx, "/foo/bar")); got.Value != `{ "baz": "quux" }` || got.TTL < 1 || got.TTL > 3 {
		t.Fatalf("Get straight after Set = %+v", got)
	}

	e := watch(t, k, "/foo/bar", false, n.ModifiedIndex, 1)[0]
	if e.Action != "expire" || e.Node.Key != "/foo/bar" || e.PrevNode == nil || e.PrevNode.Value != `{ "baz": "quux" }` {
		t.Fatalf("event = %+v (prev %+v), want expire of /foo/bar", e, e.PrevNode)
	}
	_, err := k.Get(ctx, "/foo/bar")
	wantCode(t, err, keys.ErrKeyNotFound, "/foo/bar")
}

func TestWatchActions(t *testing.T) {
	k, _ := start(t)
	ctx := t.Context()
	after := must[*keys.Node](t)(k.Set(ctx, "/other", "v", 0)).ModifiedIndex

	must[*keys.Node](t)(k.Set(ctx, "/w", "1", 0))
	must[*keys.Node](t)(k.Set(ctx, "/w", "2", 0))
	must[*keys.Node](t)(k.Update(ctx, "/w", "3", 0))
	if err := k.Rm(ctx, "/w", false); err != nil {
		t.Fatal(err)
	}
	// Removing a key that has a TTL is a delete, not an expiry.
	must[*keys.Node](t)(k.Mk(ctx, "/w", "4", time.Minute))
	if err := k.Rm(ctx, "/w", false); err != nil {
		t.Fatal(err)
	}
	must[*keys.Node](t)(k.Set(ctx, "/w", "5", 2*time.Second))

	events := watch(t, k, "/w", false, after, 8)
	want := []string{"set /w", "update /w", "update /w", "delete /w", "set /w", "delete /w", "set /w", "expire /w"}
	if got := actions(events); !slices.Equal(got, want) {
		t.Fatalf("actions = %v, want %v", got, want)
	}
	if e := events[1]; e.Node.Value != "2" || e.PrevNode == nil || e.PrevNode.Value != "1" {
		t.Errorf("update event = %+v (prev %+v)", e, e.PrevNode)
	}
	if e := events[3]; e.Node.Value != "" || e.PrevNode == nil || e.PrevNode.Value != "3" || e.Node.ModifiedIndex <= e.PrevNode.ModifiedIndex {
		t.Errorf("delete event = %+v (prev %+v)", e, e.PrevNode)
	}
	if e := events[4]; e.Node.TTL < 1 || e.PrevNode != nil {
		t.Errorf("set with TTL event = %+v (prev %+v)", e, e.PrevNode)
	}
}

func TestWatchScope(t *testing.T) {
	k, _ := start(t)
	ctx := t.Context()
	after := must[*keys.Node](t)(k.Set(ctx, "/other", "v", 0)).ModifiedIndex

	must[*keys.Node](t)(k.Set(ctx, "/dx", "v", 0))    // a sibling sharing the prefix
	must[*keys.Node](t)(k.Set(ctx, "/d-x", "v", 0))   // inside the v3 range, outside the directory
	must[*keys.Node](t)(k.Set(ctx, "/d/x", "v", 0))   // below /d
	must[*keys.Node](t)(k.Set(ctx, "/d/y/z", "v", 0)) // further below
	if err := k.Mkdir(ctx, "/d/e", 0); err != nil {   // a made directory below
		t.Fatal(err)
	}
	if err := k.Rm(ctx, "/d", true); err != nil {
		t.Fatal(err)
	}
	if err := k.Mkdir(ctx, "/d", 0); err != nil { // /d itself
		t.Fatal(err)
	}

	got := actions(watch(t, k, "/d", true, after, 7))
	want := []string{"set /d/x", "set /d/y/z", "set /d/e", "delete /d/e", "delete /d/x", "delete /d/y/z", "set /d"}
	if !slices.Equal(got, want) {
		t.Errorf("recursive watch = %v, want %v", got, want)
	}
	events := watch(t, k, "/d", false, after, 1)
	if e := events[0]; e.Action != "set" || e.Node.Key != "/d" || !e.Node.Dir {
		t.Errorf("watch of /d = %+v, want the mkdir of /d", e)
	}
}

// A watch whose starting revision has been compacted away carries on from
// the oldest revision left.
func TestWatchResumesAfterCompaction(t *testing.T) {
	k, c := start(t)
	ctx := t.Context()
	first := must[*keys.Node](t)(k.Set(ctx, "/k", "1", 0))
	must[*keys.Node](t)(k.Set(ctx, "/k", "2", 0))
	last := must[*keys.Node](t)(k.Set(ctx, "/k", "3", 0))
	if _, err := c.Compact(ctx, last.ModifiedIndex, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}

	e := watch(t, k, "/k", false, first.ModifiedIndex, 1)[0]
	if e.Action != "update" || e.Node.Value != "3" || e.Node.ModifiedIndex != last.ModifiedIndex {
		t.Fatalf("event = %+v, want the update to 3 at %d", e, last.ModifiedIndex)
	}
}

// Watch starts from the current revision: it reports changes made after it
// was called, never earlier ones.
func TestWatchFromNow(t *testing.T) {
	k, _ := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	before := must[*keys.Node](t)(k.Set(ctx, "/k", "before", 0))

	// The watch is established at some unknown moment after the call, so
	// keep writing until it reports one of the writes.
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				k.Set(ctx, "/k", "after", 0)
			}
		}
	}()
	var got keys.Event
	err := k.Watch(ctx, "/k", false, func(e keys.Event) error {
		got = e
		return context.Canceled
	})
	if !errors.Is(err, context.Canceled) || ctx.Err() != nil {
		t.Fatalf("Watch = %v", err)
	}
	if got.Node.Value != "after" || got.Node.ModifiedIndex <= before.ModifiedIndex {
		t.Fatalf("first event = %+v", got)
	}
}

func TestWatchEndsWithContext(t *testing.T) {
	k, _ := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		errc <- k.Watch(ctx, "/k", true, func(keys.Event) error { return nil })
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch after cancel = %v", err)
	}
}
