package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/etcdtest"
)

const machineID = "0123456789abcdef0123456789abcdef"

// recorder is a driver that runs nothing and remembers every call in
// order. The agent, not the driver, is under test here; the real drivers
// have tests of their own.
type recorder struct {
	mu      sync.Mutex
	running map[string]string // unit → content it was started with
	events  []string          // "start NAME CONTENT" / "stop NAME", in order
	notify  chan struct{}     // closed and replaced on every call
	changes chan string
}

func newRecorder(running ...string) *recorder {
	r := &recorder{running: map[string]string{}, notify: make(chan struct{}), changes: make(chan string, 64)}
	for _, name := range running {
		r.running[name] = "from an earlier life"
	}
	return r
}

func (r *recorder) Start(_ context.Context, name string, u *unit.File) error {
	r.record("start "+name+" "+u.Value("Service", "ExecStart"), func() { r.running[name] = u.Value("Service", "ExecStart") })
	return nil
}

func (r *recorder) Stop(_ context.Context, name string) error {
	r.record("stop "+name, func() { delete(r.running, name) })
	return nil
}

func (r *recorder) record(event string, change func()) {
	r.mu.Lock()
	change()
	r.events = append(r.events, event)
	close(r.notify)
	r.notify = make(chan struct{})
	r.mu.Unlock()
	select {
	case r.changes <- strings.Fields(event)[1]:
	default:
	}
}

func (r *recorder) States() map[string]driver.State {
	r.mu.Lock()
	defer r.mu.Unlock()
	states := map[string]driver.State{}
	for name := range r.running {
		states[name] = driver.State{Active: "active", Sub: "running"}
	}
	return states
}

func (r *recorder) Changes() <-chan string { return r.changes }

// waitFor waits until the recorded events satisfy cond and returns them.
func (r *recorder) waitFor(t *testing.T, what string, cond func(events []string) bool) []string {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		r.mu.Lock()
		events, notify := slices.Clone(r.events), r.notify
		r.mu.Unlock()
		if cond(events) {
			return events
		}
		select {
		case <-notify:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; driver calls: %q", what, events)
		}
	}
}

func (r *recorder) calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func (r *recorder) has(event string) func([]string) bool {
	return func(events []string) bool { return slices.Contains(events, event) }
}

// assign writes an assignment for this test's machine as the engine does.
func assign(t *testing.T, c *clientv3.Client, name, execStart string, revision int64) {
	t.Helper()
	content := fmt.Sprintf("[Service]\nExecStart=%s\n", execStart)
	v, _ := json.Marshal(unitstore.Assignment{Name: name, Content: content, Hash: execStart, Desired: unitstore.Launched, Revision: revision})
	if _, err := c.Put(context.Background(), unitstore.AssignKey(machineID, name), string(v)); err != nil {
		t.Fatal(err)
	}
}

func unassign(t *testing.T, c *clientv3.Client, name string) {
	t.Helper()
	if _, err := c.Delete(context.Background(), unitstore.AssignKey(machineID, name)); err != nil {
		t.Fatal(err)
	}
}

// runAgent runs an agent for machineID with client c until the test ends.
func runAgent(t *testing.T, c *clientv3.Client, d driver.Driver) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	a := &Agent{Client: c, Machine: unit.Machine{ID: machineID, Hostname: "test"}, Driver: d, TTL: 5 * time.Second,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go func() { a.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestAgentStartsAndStopsItsAssignments(t *testing.T) {
	c := etcdtest.Start(t)
	d := newRecorder()
	runAgent(t, c, d)

	assign(t, c, "a.service", "/bin/a", 10)
	d.waitFor(t, "a started", d.has("start a.service /bin/a"))
	// Another machine's assignment is none of this agent's business.
	other := unitstore.Assignment{Name: "b.service", Content: "[Service]\nExecStart=/bin/b\n", Desired: unitstore.Launched, Revision: 11}
	v, _ := json.Marshal(other)
	c.Put(context.Background(), unitstore.AssignKey(strings.Repeat("f", 32), "b.service"), string(v))
	unassign(t, c, "a.service")
	events := d.waitFor(t, "a stopped", d.has("stop a.service"))
	if slices.ContainsFunc(events, func(e string) bool { return strings.Contains(e, "b.service") }) {
		t.Errorf("the agent acted on another machine's assignment: %q", events)
	}
}

// An assignment older than one the agent has already seen for the same
// unit is a stale decision (from an engine that lost its lease, say): the
// agent must not act on it.
func TestAgentFencesStaleAssignments(t *testing.T) {
	c := etcdtest.Start(t)
	d := newRecorder()
	runAgent(t, c, d)

	assign(t, c, "a.service", "/bin/new", 20)
	d.waitFor(t, "a started", d.has("start a.service /bin/new"))
	assign(t, c, "a.service", "/bin/stale", 19)
	// The marker is written after the stale assignment, so by the time the
	// agent has started it, it has read the stale one too.
	assign(t, c, "marker.service", "/bin/marker", 21)
	events := d.waitFor(t, "marker started", d.has("start marker.service /bin/marker"))
	if slices.Contains(events, "start a.service /bin/stale") {
		t.Fatalf("the agent started a stale assignment: %q", events)
	}
	// A newer one is applied.
	assign(t, c, "a.service", "/bin/newer", 22)
	d.waitFor(t, "a restarted with newer content", d.has("start a.service /bin/newer"))
}

// When the agent (re)starts it first stops what is no longer assigned to
// it, before it starts anything: a machine back from a partition or a
// clusterd restart never runs a moved unit beside its new copy.
func TestAgentStopsWhatMovedAwayBeforeStartingAnything(t *testing.T) {
	c := etcdtest.Start(t)
	assign(t, c, "new.service", "/bin/new", 30)
	d := newRecorder("moved.service")
	runAgent(t, c, d)

	events := d.waitFor(t, "new started", d.has("start new.service /bin/new"))
	if got := events[0]; got != "stop moved.service" {
		t.Fatalf("first driver call = %q, want the moved unit stopped first; all calls: %q", got, events)
	}
}

// Fail-static: while etcd is out of reach the agent keeps what runs; when
// it is back, it first stops what moved away, then starts what is new.
func TestAgentFailStatic(t *testing.T) {
	c := etcdtest.Start(t)
	p := newCutProxy(t, c.Endpoints()[0])
	ac, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{"http://" + p.addr()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(), // it complains about every cut connection
		// Reconnect quickly once the proxy heals, rather than after gRPC's
		// default back-off of up to two minutes.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, MaxDelay: 500 * time.Millisecond},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ac.Close() })
	d := newRecorder()
	runAgent(t, ac, d)

	assign(t, c, "keep.service", "/bin/keep", 40)
	assign(t, c, "moved.service", "/bin/moved", 41)
	d.waitFor(t, "both started", func(e []string) bool {
		return slices.Contains(e, "start keep.service /bin/keep") && slices.Contains(e, "start moved.service /bin/moved")
	})
	before := len(d.calls())

	p.cut()
	// While the agent is cut off, the engine moves a unit away and assigns
	// a new one.
	unassign(t, c, "moved.service")
	assign(t, c, "new.service", "/bin/new", 42)
	// Wait until the agent's client has tried to reconnect and been
	// refused twice: it knows it is cut off, and has had its chance to
	// react wrongly.
	p.waitRefused(t, 2)
	if events := d.calls(); len(events) != before {
		t.Fatalf("the agent acted while cut off from etcd: %q", events[before:])
	}
	if _, ok := d.States()["moved.service"]; !ok {
		t.Fatal("moved.service stopped while the agent was cut off")
	}

	p.heal()
	events := d.waitFor(t, "new started after the heal", d.has("start new.service /bin/new"))[before:]
	stop := slices.Index(events, "stop moved.service")
	start := slices.Index(events, "start new.service /bin/new")
	if stop < 0 || stop > start {
		t.Fatalf("after the heal the moved unit must be stopped before anything starts; driver calls: %q", events)
	}
	if slices.Contains(events, "stop keep.service") || slices.Contains(events, "start keep.service /bin/keep") {
		t.Fatalf("keep.service, still assigned, was touched: %q", events)
	}
}

// cutProxy forwards TCP to an etcd endpoint until cut; while cut it closes
// every connection, accepted or new, and counts the refusals.
type cutProxy struct {
	ln      net.Listener
	backend string

	mu      sync.Mutex
	isCut   bool
	conns   []net.Conn
	refused int
	notify  chan struct{}
}

func newCutProxy(t *testing.T, endpoint string) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, backend: strings.TrimPrefix(endpoint, "http://"), notify: make(chan struct{})}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.isCut {
			p.refused++
			close(p.notify)
			p.notify = make(chan struct{})
			p.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.backend)
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go func() { io.Copy(out, in); out.Close() }()
		go func() { io.Copy(in, out); in.Close() }()
	}
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *cutProxy) heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isCut = false
}

func (p *cutProxy) waitRefused(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		p.mu.Lock()
		refused, notify := p.refused, p.notify
		p.mu.Unlock()
		if refused >= n {
			return
		}
		select {
		case <-notify:
		case <-deadline:
			t.Fatalf("the agent's client never tried to reconnect (%d refusals)", refused)
		}
	}
}
