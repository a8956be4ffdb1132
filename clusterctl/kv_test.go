package clusterctl_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterctl"
	"github.com/corral-dev/corral/clusterd/keys"
	"github.com/corral-dev/corral/internal/etcdtest"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// cluster is an etcd for the commands, reached the way the root command
// reaches one: a fresh client per command, which the command closes.
type cluster struct {
	t *testing.T
	c *clientv3.Client
}

func newCluster(t *testing.T) *cluster {
	return &cluster{t: t, c: etcdtest.Start(t)}
}

func (cl *cluster) connect(context.Context) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: cl.c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

// command returns a root command holding the key commands, writing to out
// and errOut.
func (cl *cluster) command(out, errOut io.Writer, args ...string) *cobra.Command {
	root := &cobra.Command{Use: "clusterctl", SilenceUsage: true, SilenceErrors: true}
	root.AddCommand(clusterctl.KVCommands(cl.connect)...)
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(errOut)
	return root
}

// run runs clusterctl args to completion and returns its stdout.
func (cl *cluster) run(args ...string) (string, error) {
	cl.t.Helper()
	var out, errOut bytes.Buffer
	err := cl.command(&out, &errOut, args...).ExecuteContext(cl.t.Context())
	if errOut.Len() > 0 {
		cl.t.Logf("clusterctl %s: stderr %q", strings.Join(args, " "), errOut.String())
	}
	return out.String(), err
}

// ok runs clusterctl args, which must succeed, and returns its stdout.
func (cl *cluster) ok(args ...string) string {
	cl.t.Helper()
	out, err := cl.run(args...)
	if err != nil {
		cl.t.Fatalf("clusterctl %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// fails runs clusterctl args, which must fail with exit code, and returns
// the error line it would print.
func (cl *cluster) fails(code int, args ...string) string {
	cl.t.Helper()
	_, err := cl.run(args...)
	var exit *clusterctl.ExitError
	if !errors.As(err, &exit) || exit.Code != code {
		cl.t.Fatalf("clusterctl %s: err %v, want exit code %d", strings.Join(args, " "), err, code)
	}
	return exit.Error()
}

// revision returns the store's current revision.
func (cl *cluster) revision() int64 {
	cl.t.Helper()
	resp, err := cl.c.Get(cl.t.Context(), "/", clientv3.WithCountOnly())
	if err != nil {
		cl.t.Fatal(err)
	}
	return resp.Header.Revision
}

func TestSetGet(t *testing.T) {
	cl := newCluster(t)
	const value = `{ "baz": "quux" }`
	if out := cl.ok("set", "/foo/bar", value, "--ttl", "30"); out != value+"\n" {
		t.Errorf("set printed %q", out)
	}
	if out := cl.ok("get", "/foo/bar"); out != value+"\n" {
		t.Errorf("get printed %q", out)
	}
	// Flags go before the arguments as well as after.
	cl.ok("set", "--ttl", "30", "/foo/baz", "v")
	for _, key := range []string{"/foo/bar", "/foo/baz"} {
		n, err := keys.New(cl.c).Get(t.Context(), key)
		if err != nil || n.TTL < 1 || n.TTL > 30 {
			t.Errorf("%s after set --ttl 30: %+v, %v", key, n, err)
		}
	}
}

func TestErrors(t *testing.T) {
	cl := newCluster(t)
	msg := cl.fails(4, "get", "/foo/bar")
	if want := fmt.Sprintf("Error: 100: Key not found (/foo/bar) [%d]", cl.revision()); msg != want {
		t.Errorf("get of a missing key: %q, want %q", msg, want)
	}
	cl.ok("set", "/dir/key", "v")
	if msg := cl.fails(4, "get", "/dir"); !strings.HasPrefix(msg, "Error: 102: Not a file (/dir) [") {
		t.Errorf("get of a directory: %q", msg)
	}

	// Bad command lines.
	cl.fails(1, "get")
	cl.fails(1, "set", "/k")
	cl.fails(1, "get", "/k", "/l")
	cl.fails(1, "get", "/k", "--bogus")
	cl.fails(1, "exec-watch", "/k")
	cl.fails(1, "exec-watch", "/k", "/l", "--", "true")
}

func TestMkUpdate(t *testing.T) {
	cl := newCluster(t)
	if out := cl.ok("mk", "/m", "1"); out != "1\n" {
		t.Errorf("mk printed %q", out)
	}
	if msg := cl.fails(4, "mk", "/m", "2"); !strings.HasPrefix(msg, "Error: 105: Key already exists (/m) [") {
		t.Errorf("second mk: %q", msg)
	}
	if msg := cl.fails(4, "update", "/u", "1"); !strings.HasPrefix(msg, "Error: 100: Key not found (/u) [") {
		t.Errorf("update of a missing key: %q", msg)
	}

	// etcdctl update --ttl 8 KEY V || etcdctl set --ttl 8 KEY V
	heartbeat := func(value string) {
		t.Helper()
		if _, err := cl.run("update", "--ttl", "8", "/u", value); err != nil {
			cl.ok("set", "--ttl", "8", "/u", value)
		}
	}
	heartbeat("10.1.0.1")
	heartbeat("10.1.0.2")
	if out := cl.ok("get", "/u"); out != "10.1.0.2\n" {
		t.Errorf("after heartbeats, get printed %q", out)
	}
}

func TestDirectories(t *testing.T) {
	cl := newCluster(t)
	cl.ok("mkdir", "/empty")
	cl.ok("set", "/services/web/10.0.0.1", "a")
	cl.ok("set", "/services/web/10.0.0.2", "b")
	cl.ok("set", "/services-count", "2")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"ls"}, "/empty\n/services\n/services-count\n"},
		{[]string{"ls", "-p"}, "/empty/\n/services/\n/services-count\n"},
		{[]string{"ls", "/services/web/"}, "/services/web/10.0.0.1\n/services/web/10.0.0.2\n"},
		{[]string{"ls", "--recursive", "/"}, "/empty\n/services\n/services/web\n/services/web/10.0.0.1\n/services/web/10.0.0.2\n/services-count\n"},
		{[]string{"ls", "/services", "-r", "-p"}, "/services/web/\n/services/web/10.0.0.1\n/services/web/10.0.0.2\n"},
		{[]string{"ls", "/empty"}, ""},
		{[]string{"ls", "/services-count"}, "/services-count\n"},
	} {
		if out := cl.ok(tc.args...); out != tc.want {
			t.Errorf("clusterctl %s printed %q, want %q", strings.Join(tc.args, " "), out, tc.want)
		}
	}
	if msg := cl.fails(4, "ls", "/nope"); !strings.HasPrefix(msg, "Error: 100: Key not found (/nope) [") {
		t.Errorf("ls of a missing dir: %q", msg)
	}
	if msg := cl.fails(4, "mkdir", "/services"); !strings.HasPrefix(msg, "Error: 105: Key already exists (/services) [") {
		t.Errorf("mkdir of an existing dir: %q", msg)
	}

	if msg := cl.fails(4, "rm", "/services"); !strings.HasPrefix(msg, "Error: 102: Not a file (/services) [") {
		t.Errorf("rm of a directory: %q", msg)
	}
	if msg := cl.fails(4, "rm", "--dir", "/services"); !strings.HasPrefix(msg, "Error: 108: Directory not empty (/services) [") {
		t.Errorf("rm --dir of a full directory: %q", msg)
	}
	cl.ok("rm", "--dir", "/empty")
	cl.ok("rm", "/services-count")
	cl.ok("rm", "/services", "--recursive")
	if out := cl.ok("ls", "-r"); out != "" {
		t.Errorf("after removing everything, ls -r printed %q", out)
	}
	cl.ok("mkdir", "/d")
	cl.ok("rmdir", "/d")
}

func TestWatch(t *testing.T) {
	cl := newCluster(t)
	after := fmt.Sprint(cl.revision())
	cl.ok("set", "/w/x", "1")
	cl.ok("rm", "/w/x")

	// --after-index replays what changed since, so these need no timing.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"watch", "/w/x", "--after-index", after}, "1\n"},
		{[]string{"watch", "--recursive", "/w", "--after-index", after}, "[set] /w/x\n1\n"},
	} {
		if out := cl.ok(tc.args...); out != tc.want {
			t.Errorf("clusterctl %s printed %q, want %q", strings.Join(tc.args, " "), out, tc.want)
		}
	}

	// With --forever it prints every change, deletes as v2 did, until
	// interrupted.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	lines, done := cl.start(ctx, "watch", "-r", "-f", "/w", "--after-index", after)
	for _, want := range []string{"[set] /w/x", "1", "[delete] /w/x", "PrevNode.Value: 1"} {
		if got := next(t, lines); got != want {
			t.Fatalf("watch --forever printed %q, want %q", got, want)
		}
	}
	cl.ok("set", "/w/y", "2") // a change made while it runs
	for _, want := range []string{"[set] /w/y", "2"} {
		if got := next(t, lines); got != want {
			t.Fatalf("watch --forever printed %q, want %q", got, want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch --forever after interrupt: %v", err)
	}
}

func TestExecWatch(t *testing.T) {
	cl := newCluster(t)
	after := cl.revision()
	cl.ok("set", "/services/changed/helloworld", "1")

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	lines, done := cl.start(ctx, "exec-watch", "--recursive", "/services", "--after-index", fmt.Sprint(after), "--",
		"sh", "-c", `echo "$ETCD_WATCH_ACTION $ETCD_WATCH_KEY $ETCD_WATCH_VALUE $ETCD_WATCH_MODIFIED_INDEX"`)
	if got, want := next(t, lines), fmt.Sprintf("set /services/changed/helloworld 1 %d", after+1); got != want {
		t.Fatalf("first run printed %q, want %q", got, want)
	}
	cl.ok("set", "/services/changed/helloworld", "2")
	cl.ok("rm", "/services/changed/helloworld")
	for _, want := range []string{
		fmt.Sprintf("update /services/changed/helloworld 2 %d", after+2),
		fmt.Sprintf("delete /services/changed/helloworld  %d", after+3),
	} {
		if got := next(t, lines); got != want {
			t.Fatalf("exec-watch command printed %q, want %q", got, want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("exec-watch after interrupt: %v", err)
	}
}

// start runs clusterctl args in the background until ctx ends. It returns
// the lines of its stdout as they come, and its result when it is done.
func (cl *cluster) start(ctx context.Context, args ...string) (<-chan string, <-chan error) {
	pr, pw := io.Pipe()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				pr.Close() // unblock any further writes
				return
			}
		}
	}()
	done := make(chan error, 1)
	go func() {
		err := cl.command(pw, io.Discard, args...).ExecuteContext(ctx)
		pw.Close()
		done <- err
	}()
	return lines, done
}

// next returns the next line from lines, failing the test if there is none.
func next(t *testing.T, lines <-chan string) string {
	t.Helper()
	line, ok := <-lines
	if !ok {
		t.Fatal("output ended early")
	}
	return line
}
