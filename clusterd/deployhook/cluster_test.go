package deployhook_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/bootstrap/pki"
	"github.com/corral-dev/corral/clusterd/deployhook"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/clustertest"
	"github.com/corral-dev/corral/provision"
)

func example(names ...string) []string {
	var out []string
	for _, n := range names {
		out = append(out, filepath.Join("..", "..", "examples", "units", n))
	}
	return out
}

// starts counts the app's starts with the given deploy in its journal.
// While the app restarts its machine may briefly not know it: that is an
// error to poll past, not a failure.
func starts(c *clustertest.Cluster, with string) (int, error) {
	out, errOut, code := c.Ctl("journal", "--lines", "1000", "deploy-app.service")
	if code != 0 {
		return 0, fmt.Errorf("journal (exit %d): %s", code, errOut)
	}
	return strings.Count(out, "deploy-app starting with "+with), nil
}

// waitStarts polls the app's journal until it has started n times with
// the deploy (the journal is a file on another machine: polling it, with
// a deadline, is the only way to see a line arrive).
func waitStarts(t *testing.T, c *clustertest.Cluster, with string, n int, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := starts(c, with)
		if err == nil && got >= n {
			return true
		}
		if time.Now().After(deadline) {
			if err != nil {
				t.Logf("last journal read: %v", err)
			}
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// keyRev is the deploy key's modification revision.
func keyRev(t *testing.T, c *clustertest.Cluster) int64 {
	t.Helper()
	resp, err := c.Admin.Get(context.Background(), deployhook.DefaultKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return 0
	}
	return resp.Kvs[0].ModRevision
}

// TestDeployOnCluster is the book's deploy flow on a real three-machine
// cluster: a signed request through `provision deploy` changes the key,
// and the sidekick restarts the app with it; a wrong signature, an old
// timestamp and a replayed nonce are refused and change nothing.
func TestDeployOnCluster(t *testing.T) {
	c := clustertest.Prepare(t, clustertest.Options{Nodes: 3})
	c.Edit(`node_group "core" {`, "deploy_hook {}\nnode_group \"core\" {") // the secret: generated
	c.Up()
	if !strings.Contains(c.Output(), "deploy hook: generated its secret") {
		t.Fatalf("up did not say it generated the secret:\n%s", c.Output())
	}
	opts := provision.Options{File: c.File}
	var secret bytes.Buffer
	opts.Out = &secret
	if err := provision.Deploy(context.Background(), provision.DeployOptions{Options: opts, ShowSecret: true}); err != nil {
		t.Fatal(err)
	}
	if len(strings.TrimSpace(secret.String())) != 64 {
		t.Fatalf("--show-secret printed %q, want 64 hex digits", secret.String())
	}

	if out, errOut, code := c.Ctl(append([]string{"start"}, example("deploy-app.service", "deploy-watch.service")...)...); code != 0 {
		t.Fatalf("start (exit %d): %s%s", code, out, errOut)
	}
	if !waitStarts(t, c, "nothing", 1, time.Minute) {
		t.Fatal("deploy-app never started")
	}
	// The sidekick is active, but its watch may not be in place yet: a
	// change made before would be missed, as it would in production.
	// Writing the key directly until the app restarts proves the watch.
	for i := 1; !waitStarts(t, c, `{"image":"v1"}`, 1, 5*time.Second); i++ {
		if i > 12 {
			t.Fatal("the sidekick never restarted the app after the key changed")
		}
		if _, err := c.Admin.Put(context.Background(), deployhook.DefaultKey, `{"image":"v1"}`); err != nil {
			t.Fatal(err)
		}
	}

	// A signed deploy through the CLI: the key changes, the app restarts.
	var out bytes.Buffer
	opts.Out = &out
	before := keyRev(t, c)
	if err := provision.Deploy(context.Background(), provision.DeployOptions{Options: opts, Body: `{"image":"v2"}`}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `deployed: /coreos.com/deploy = {"image":"v2"} (revision `) {
		t.Errorf("provision deploy printed %q", out.String())
	}
	if keyRev(t, c) == before {
		t.Fatal("a signed deploy did not change the key")
	}
	if !waitStarts(t, c, `{"image":"v2"}`, 1, time.Minute) {
		t.Fatal("the sidekick did not restart the app after a signed deploy")
	}

	// Hand-made requests, to every machine's hook, over TLS from the
	// cluster CA.
	caPEM, err := os.ReadFile(c.Dir().AdminFiles().CA)
	if err != nil {
		t.Fatal(err)
	}
	tlsConf, err := pki.ClientTLS(caPEM, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}, Timeout: 10 * time.Second}
	var urls []string
	for _, n := range c.Nodes() {
		urls = append(urls, "https://"+net.JoinHostPort(n.IP.String(), strconv.Itoa(deployhook.DefaultPort))+deployhook.Path)
	}
	key := strings.TrimSpace(secret.String())
	body := []byte(`{"image":"v3"}`)
	good, err := deployhook.NewRequest(context.Background(), urls[1], key, body, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	replay := good.Clone(context.Background())
	if _, err := deployhook.Do(hc, good); err != nil {
		t.Fatalf("a signed request to %s: %v", urls[1], err)
	}
	if !waitStarts(t, c, `{"image":"v3"}`, 1, time.Minute) {
		t.Fatal("the sidekick did not restart the app after a signed request")
	}

	rev := keyRev(t, c)
	wrongSig, _ := deployhook.NewRequest(context.Background(), urls[0], key, []byte(`{"image":"evil"}`), time.Now())
	wrongSig.Header.Set(deployhook.SignatureHeader, deployhook.Sign("not-the-cluster-secret!", wrongSig.Header.Get(deployhook.TimestampHeader),
		wrongSig.Header.Get(deployhook.NonceHeader), []byte(`{"image":"evil"}`)))
	old, _ := deployhook.NewRequest(context.Background(), urls[2], key, []byte(`{"image":"old"}`), time.Now().Add(-10*time.Minute))
	replay.Body, _ = replay.GetBody()
	replay.URL.Host, replay.Host = strings.TrimPrefix(strings.TrimSuffix(urls[2], deployhook.Path), "https://"), ""
	for name, req := range map[string]*http.Request{"wrong signature": wrongSig, "old timestamp": old, "replayed nonce (to another machine)": replay} {
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: %s, want 401", name, resp.Status)
		}
		if now := keyRev(t, c); now != rev {
			t.Errorf("%s: the key changed (revision %d → %d)", name, rev, now)
		}
	}
	for _, refused := range []string{`{"image":"evil"}`, `{"image":"old"}`} {
		if n, err := starts(c, refused); err != nil || n != 0 {
			t.Errorf("the app started %d times with the refused deploy %s (journal: %v)", n, refused, err)
		}
	}
	snap := c.WaitUnits("both units still up", func(s *unitstore.Snapshot) bool { return true })
	if u := snap.Units["deploy-watch.service"]; u == nil || len(u.States) != 1 || u.States[0].Active != "active" {
		t.Errorf("the sidekick is not active after the deploys: %+v", u)
	}
}
