package logship_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/cloudwatchlogs"
	"github.com/corral-dev/corral/clusterd/driver/execdriver"
	"github.com/corral-dev/corral/clusterd/logship"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/internal/awsemu"
)

// failAfter bounds every wait: a guard that turns a hang into a failure.
const failAfter = 60 * time.Second

func TestMain(m *testing.M) {
	// The execdriver's loggers are this binary; built with -race it
	// would wait a second at exit for late race reports.
	if _, ok := os.LookupEnv("GORACE"); !ok {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	os.Exit(m.Run())
}

const machineID = "0123456789abcdef0123456789abcdef"

// waitFor polls cond until it holds; there is no event to wait on for
// "the sink has these lines" or "the journal grew".
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(failAfter)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gate is a reverse proxy in front of the emulator that can hold every
// request: a CloudWatch endpoint that stops answering, as when the
// network to it is cut.
type gate struct {
	proxy http.Handler
	mu    sync.Mutex
	open  chan struct{} // closed while requests may pass
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
	case <-r.Context().Done():
		return
	}
	g.proxy.ServeHTTP(w, r)
}

func (g *gate) block() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *gate) unblock() {
	g.mu.Lock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
	g.mu.Unlock()
}

// cloudWatch starts the emulator behind a gate and returns a client
// (the real SDK over HTTP) and the gate.
func cloudWatch(t *testing.T) (*cloudwatchlogs.Client, *gate) {
	t.Helper()
	e := awsemu.New(awsemu.Options{})
	endpoint, err := e.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	u, _ := url.Parse(endpoint)
	g := &gate{proxy: httputil.NewSingleHostReverseProxy(u), open: make(chan struct{})}
	close(g.open)
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	t.Cleanup(g.unblock) // let held requests finish, so srv.Close returns
	cfg := awsemu.TestConfig(srv.URL)
	cfg.Region = e.Region()
	return cloudwatchlogs.NewFromConfig(cfg), g
}

// events reads back a stream's messages, oldest first (nil if the stream
// does not exist yet).
func events(t *testing.T, c *cloudwatchlogs.Client, group, stream string) []string {
	t.Helper()
	var out []string
	var token *string
	for {
		resp, err := c.GetLogEvents(context.Background(), &cloudwatchlogs.GetLogEventsInput{
			LogGroupName: aws.String(group), LogStreamName: aws.String(stream),
			StartFromHead: aws.Bool(true), NextToken: token,
		})
		if err != nil {
			if strings.Contains(err.Error(), "ResourceNotFoundException") {
				return nil
			}
			t.Fatalf("GetLogEvents %s/%s: %v", group, stream, err)
		}
		for _, ev := range resp.Events {
			out = append(out, *ev.Message)
		}
		if len(resp.Events) == 0 || (token != nil && *resp.NextForwardToken == *token) {
			return out
		}
		token = resp.NextForwardToken
	}
}

// testLog logs to the test, until it ends.
func testLog(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() { w.mu.Lock(); w.done = true; w.mu.Unlock() })
	return slog.New(slog.NewTextHandler(w, nil))
}

type testWriter struct {
	mu   sync.Mutex
	t    *testing.T
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// execUnits runs an exec driver whose units' lines go to sh.
func execUnits(t *testing.T, sh *logship.Shipper) *execdriver.Driver {
	t.Helper()
	log := testLog(t)
	d, err := execdriver.New(filepath.Join(t.TempDir(), "units"), log)
	if err != nil {
		t.Fatal(err)
	}
	u, err := logship.ListenUnits(d.ShipSocketPath(), machineID, sh, log)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last first: the driver stops its units, then the
	// listener goes.
	t.Cleanup(func() { u.Close() })
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("closing the driver: %v", err)
		}
	})
	return d
}

func startUnit(t *testing.T, d *execdriver.Driver, name, src string) {
	t.Helper()
	f, err := unit.Parse(name, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(context.Background(), name, f); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
}

// TestCloudWatchExecUnits runs units under the real exec driver and reads
// their output back from the emulator: every line, in order, each unit in
// its own stream <machine-id>-<unit>, the driver's own messages included.
func TestCloudWatchExecUnits(t *testing.T) {
	client, _ := cloudWatch(t)
	const group = "/corral/test"
	sh := logship.New(logship.NewCloudWatchSink(client, group), logship.Options{Log: testLog(t)})
	t.Cleanup(func() { sh.Close() })
	d := execUnits(t, sh)

	const n = 3000
	startUnit(t, d, "count.service", "[Service]\nType=oneshot\nExecStart=/usr/bin/seq 1 "+strconv.Itoa(n)+"\n")
	startUnit(t, d, "hello.service", "[Service]\nType=oneshot\nExecStart=/bin/echo hello from the other unit\n")

	stream := logship.StreamName(machineID, "count.service")
	var got []string
	waitFor(t, "all of count.service's lines in CloudWatch", func() bool {
		got = events(t, client, group, stream)
		nums := 0
		for _, m := range got {
			if _, err := strconv.Atoi(m); err == nil {
				nums++
			}
		}
		return nums >= n
	})
	next := 1
	for _, m := range got {
		v, err := strconv.Atoi(m)
		if err != nil {
			continue // the driver's messages ("count.service: Starting" …)
		}
		if v != next {
			t.Fatalf("stream %s: line %d where %d was due: %q", stream, v, next, got)
		}
		next++
	}
	if next != n+1 {
		t.Fatalf("stream %s: %d numbered lines, want %d", stream, next-1, n)
	}
	if !slicesContainsPrefix(got, "count.service: ") {
		t.Errorf("stream %s lacks the driver's messages; got %q…", stream, got[:min(5, len(got))])
	}
	waitFor(t, "hello.service's line in its own stream", func() bool {
		return slicesContainsPrefix(events(t, client, group, logship.StreamName(machineID, "hello.service")), "hello from the other unit")
	})
	if dropped := sh.Dropped()[stream]; dropped != 0 {
		t.Errorf("%d lines dropped with a sink that never failed", dropped)
	}
}

func slicesContainsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// journalLines counts the lines of a unit's journal.
func journalLines(t *testing.T, d *execdriver.Driver, name string) int {
	t.Helper()
	var b strings.Builder
	if err := d.Journal(context.Background(), name, -1, false, &b); err != nil {
		t.Fatal(err)
	}
	return strings.Count(b.String(), "\n")
}

var tickRE = regexp.MustCompile(`^tick (\d+)$`)

// TestBlockedSink cuts CloudWatch off while a unit writes: the unit runs
// on and its journal keeps growing, the stream's queue fills to its bound
// and then drops, counting; once CloudWatch answers again the kept lines
// arrive in order, then the line that counts the dropped ones.
func TestBlockedSink(t *testing.T) {
	client, g := cloudWatch(t)
	const group = "/corral/blocked"
	const bound = 50
	// ShipTimeout stays at its default (30s), longer than the block: a
	// timed-out PutLogEvents may still land, and its retry would store the
	// batch twice (at-least-once delivery), which the exact checks below
	// would take for disorder.
	sh := logship.New(logship.NewCloudWatchSink(client, group), logship.Options{
		Log: testLog(t), QueueLines: bound, Flush: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	})
	t.Cleanup(func() { sh.Close() })
	d := execUnits(t, sh)
	const name = "ticker.service"
	stream := logship.StreamName(machineID, name)
	startUnit(t, d, name, "[Service]\nExecStart=/bin/sh -c 'i=0; while :; do i=$$((i+1)); echo tick $$i; sleep 0.005; done'\n")
	waitFor(t, "the first ticks in CloudWatch", func() bool { return len(events(t, client, group, stream)) > 5 })

	g.block()
	waitFor(t, "the queue to fill and drop", func() bool { return sh.Dropped()[stream] > 0 })
	if q := sh.Queued(stream); q != bound {
		t.Errorf("queue holds %d lines while dropping, want the bound %d", q, bound)
	}
	// The unit is not held up: its journal keeps growing while the
	// shipper drops, and the drop counter with it.
	j0, d0 := journalLines(t, d, name), sh.Dropped()[stream]
	waitFor(t, "the journal to grow by 200 lines while the sink is blocked", func() bool {
		return journalLines(t, d, name) >= j0+200
	})
	if d1 := sh.Dropped()[stream]; d1 <= d0 {
		t.Errorf("drop counter stuck at %d while the unit wrote on", d1)
	}
	if q := sh.Queued(stream); q != bound {
		t.Errorf("queue holds %d lines, want the bound %d", q, bound)
	}
	if st, _ := d.Status(name); st.State.Active != "active" {
		t.Errorf("unit is %+v while its sink is blocked, want active", st.State)
	}

	g.unblock()
	markRE := regexp.MustCompile(`^corral logship: (\d+) lines dropped`)
	var got []string
	waitFor(t, "the dropped-lines marker in CloudWatch", func() bool {
		got = events(t, client, group, stream)
		return slicesContainsPrefix(got, "corral logship: ")
	})
	// Ticks run consecutively up to the marker, the marker counts the
	// gap exactly, and the ticks go on after it.
	last, seenMark := 0, false
	for i, m := range got {
		if mm := markRE.FindStringSubmatch(m); mm != nil {
			if seenMark {
				continue // a later gap (the emulator is fast, but not promised)
			}
			seenMark = true
			gap, _ := strconv.Atoi(mm[1])
			if i+1 >= len(got) {
				waitFor(t, "a tick after the marker", func() bool { got = events(t, client, group, stream); return len(got) > i+1 })
			}
			tm := tickRE.FindStringSubmatch(got[i+1])
			if tm == nil {
				t.Fatalf("after the marker %q: %q, want a tick", m, got[i+1])
			}
			after, _ := strconv.Atoi(tm[1])
			if after != last+gap+1 {
				t.Errorf("marker says %d dropped between tick %d and tick %d; want %d", gap, last, after, after-last-1)
			}
			t.Logf("kept ticks up to %d, marker %q, resumed at tick %d", last, m, after)
			break
		}
		tm := tickRE.FindStringSubmatch(m)
		if tm == nil {
			continue // the driver's messages
		}
		v, _ := strconv.Atoi(tm[1])
		if v != last+1 {
			t.Fatalf("tick %d after tick %d before any marker: lines out of order or lost", v, last)
		}
		last = v
	}
	if !seenMark {
		t.Fatal("no marker")
	}
}
