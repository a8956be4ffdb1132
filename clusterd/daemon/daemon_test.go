package daemon_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/store"
	"github.com/corral-dev/corral/internal/clustertest"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func without(name string) func([]registry.Machine) bool {
	return func(ms []registry.Machine) bool {
		return !slices.ContainsFunc(ms, func(m registry.Machine) bool { return m.Name == name })
	}
}

func with(name string) func([]registry.Machine) bool {
	return func(ms []registry.Machine) bool { return !without(name)(ms) }
}

// Kill one of three members: the other two keep serving writes, the dead
// machine leaves the list after its TTL, and once restarted it rejoins as
// the same member and machine, with the writes it missed.
func TestMemberFailureAndRejoin(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, TTL: 3 * time.Second})
	ms := c.WaitMachines(30*time.Second, "3 machines", func(ms []registry.Machine) bool { return len(ms) == 3 })
	var id string
	for _, m := range ms {
		if m.Name == "core-3" {
			id = m.ID
		}
	}
	ctx := context.Background()
	list, err := c.Admin.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var memberID uint64
	for _, m := range list.Members {
		if m.Name == "core-3" {
			memberID = m.ID
		}
	}

	c.Kill("core-3")
	for i := range 10 {
		if err := putRetrying(ctx, c.Admin, "/while-away", strings.Repeat("x", i+1)); err != nil {
			t.Fatalf("write %d with one member dead: %v", i, err)
		}
	}
	c.WaitMachines(30*time.Second, "core-3 to leave after its TTL", without("core-3"))

	c.Restart("core-3")
	back := c.WaitMachines(30*time.Second, "core-3 to return", with("core-3"))
	for _, m := range back {
		if m.Name == "core-3" && m.ID != id {
			t.Fatalf("core-3 came back as machine %s, was %s", m.ID, id)
		}
	}
	list, err = c.Admin.MemberList(ctx)
	if err != nil || len(list.Members) != 3 {
		t.Fatalf("members after rejoin: %v %v", list, err)
	}
	if !slices.ContainsFunc(list.Members, func(m *etcdserverpb.Member) bool { return m.ID == memberID && m.Name == "core-3" }) {
		t.Fatalf("core-3 is not the same etcd member %x after restart: %v", memberID, list.Members)
	}
	// Ask core-3 alone, serializably: the answer is its own copy of the data.
	n := c.Node("core-3")
	own, err := store.Connect(ctx, c.Dir().AdminFiles(), []string{store.ClientURL(n.IP.AsSlice(), 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	// Wait for its copy to reach the last write, watching from core-3 itself.
	last, err := c.Admin.Get(ctx, "/while-away")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for r := range own.Watch(wctx, "/while-away", clientv3.WithRev(last.Kvs[0].ModRevision)) {
		if len(r.Events) > 0 {
			break
		}
	}
	got, err := own.Get(ctx, "/while-away", clientv3.WithSerializable())
	if err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != strings.Repeat("x", 10) {
		t.Fatalf("core-3's own data after rejoin: %v %v", got, err)
	}
}

// A node with a wrong token is refused with a clear error, gets no
// certificate, and leaves the cluster as it was.
func TestWrongTokenIsRefused(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 1})
	raw, err := os.ReadFile(c.Dir().PKI("token"))
	if err != nil {
		t.Fatal(err)
	}
	good, err := pki.ParseToken(string(raw))
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := pki.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	otherToken, err := pki.NewToken(otherCA)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		token pki.Token
		want  string
	}{
		"wrong secret":  {pki.Token{CAHash: good.CAHash, Secret: otherToken.Secret}, "refused the token's secret"},
		"wrong CA hash": {pki.Token{CAHash: otherToken.CAHash, Secret: good.Secret}, "but the token pins " + otherToken.CAHash},
	}
	before, err := c.Admin.MemberList(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			// From the host namespace: the bridge routes it to core-1.
			cmd := exec.CommandContext(ctx, c.Binary, "clusterd", "--name", "intruder", "--data-dir", dir,
				"--ip", "127.0.0.1", "--mode", "join", "--servers", c.Node("core-1").IP.String(), "--token", tc.token.String())
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("want a failed exit, got %v\n%s", err, out.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, out.String())
			}
			if _, err := os.Stat(filepath.Join(dir, "pki", "node.crt")); !os.IsNotExist(err) {
				t.Fatal("a refused node got a certificate")
			}
		})
	}
	after, err := c.Admin.MemberList(context.Background())
	if err != nil || len(after.Members) != len(before.Members) {
		t.Fatalf("membership changed: %v -> %v (%v)", before.Members, after.Members, err)
	}
}

// Cut a member's veth: the rest keep serving, the cut machine leaves the
// list when its lease runs out; heal it and it registers again by itself.
func TestPartitionedMemberReturns(t *testing.T) {
	c := clustertest.Start(t, clustertest.Options{Nodes: 3, TTL: 3 * time.Second})
	c.WaitMachines(30*time.Second, "3 machines", func(ms []registry.Machine) bool { return len(ms) == 3 })
	c.Partition("core-2")
	// A request already on its way to core-2 is lost with it; the client
	// notices the silent connection by keepalive and a retry goes elsewhere.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.Admin.Put(ctx, "/during-partition", "ok")
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write succeeded during a partition of one member: %v", err)
		}
	}
	c.WaitMachines(30*time.Second, "core-2 to leave", without("core-2"))
	c.Heal("core-2")
	c.WaitMachines(60*time.Second, "core-2 to come back", with("core-2"))
}

// putRetrying writes key, trying again for up to 10s. The client may have
// been talking to the member that died: a write it had sent fails with
// Unavailable, and etcd's client does not resend a write that may have
// landed. The quorum is still there, so the next try goes to a live member.
func putRetrying(ctx context.Context, c *clientv3.Client, key, value string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		_, err := c.Put(ctx, key, value)
		if err == nil || status.Code(err) != codes.Unavailable {
			return err
		}
		select { // a pause between tries, not a wait for an event
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
