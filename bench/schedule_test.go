package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/agent"
	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/corral-dev/corral/clusterd/scheduler"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/clusterd/unitstore"
	"github.com/corral-dev/corral/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

const (
	// schedServices is how many templates the units are instances of: each
	// conflicts with its own other instances (Conflicts=svcK@*), so with as
	// many instances of each as there are machines every machine ends up
	// with one instance of every service: the cluster is exactly full.
	schedServices = 10
	// schedLaunchers is how many clients launch units at once, as several
	// users running `clusterctl start` would.
	schedLaunchers = 8
	// agentsPerClient: the in-process agents share etcd clients, 50 to a
	// client; a thousand clients would be a thousand gRPC connections and
	// their goroutines in this one process, measuring the test rather than
	// the scheduler. Each agent still has its own watch, lease and session.
	agentsPerClient = 50
	// schedLimit bounds one run, so a scheduler that can't keep up fails
	// the benchmark instead of hanging it. It is a limit, not a wait.
	schedLimit = 15 * time.Minute
)

// schedTemplate is one service's template. The [X-Fleet] section is what the
// scheduler works on; the driver never runs ExecStart.
const schedTemplate = `[Unit]
Description=benchmark service %d, instance %%i
[Service]
ExecStart=/bin/sleep infinity
[X-Fleet]
Conflicts=svc%d@*
`

// schedResult is one scheduling run.
type schedResult struct {
	machines, units int
	launched        time.Duration     // the last unit's desired state written
	active          time.Duration     // first launch → every unit reported active
	requests        map[string]int    // the engine's etcd requests, by method
	streams         map[string]int    // the engine's streams opened, by method
	agentRequests   map[string]int    // all agents' requests, for the record
	perMachine      map[string]int    // units on each machine, for the check
	assigned        map[string]string // unit → machine
}

func (r schedResult) total() int {
	n := 0
	for _, v := range r.requests {
		n += v
	}
	return n
}

func (r schedResult) perUnit() time.Duration { return r.active / time.Duration(r.units) }

func (r schedResult) perPlacement() float64 { return float64(r.total()) / float64(r.units) }

// BenchmarkSchedule measures scheduling throughput end to end: one real etcd,
// N machines each with an in-process agent (over a driver that only
// records), one engine, and 10·N units launched by a handful of clients;
// the time from the first launch until every unit is reported active by its
// agent, and the engine's etcd requests per placement, counted by a gRPC
// interceptor on its client. The baseline is fleet's documented ceiling,
// 100 machines and 1,000 units; the target is 1,000 machines and 10,000
// units. Time per unit should not grow much with the cluster, and requests
// per placement not at all.
func BenchmarkSchedule(b *testing.B) {
	var base, target schedResult
	for range b.N {
		base = runSchedule(b, 100)
		target = runSchedule(b, 1000)
	}
	for _, r := range []schedResult{base, target} {
		tag := fmt.Sprintf("-%dm", r.machines)
		b.ReportMetric(r.active.Seconds(), "s-all-active"+tag)
		b.ReportMetric(float64(r.perUnit().Microseconds())/1000, "ms/unit"+tag)
		b.ReportMetric(r.perPlacement(), "req/placement"+tag)
		b.Logf("%4d machines, %5d units: all active in %.2fs (launches written in %.2fs), %.3f ms/unit; engine: %d etcd requests = %.4f per placement %v, streams %v",
			r.machines, r.units, r.active.Seconds(), r.launched.Seconds(), float64(r.perUnit().Microseconds())/1000,
			r.total(), r.perPlacement(), r.requests, r.streams)
	}
	tu := float64(target.perUnit()) / float64(base.perUnit())
	rp := target.perPlacement() / base.perPlacement()
	b.ReportMetric(tu, "time-per-unit-target/baseline")
	b.ReportMetric(rp, "req-per-placement-target/baseline")
	b.Logf("target (1,000 machines, 10,000 units) vs fleet's ceiling (100, 1,000): time per unit %.2f×, etcd requests per placement %.2f×", tu, rp)
}

// runSchedule runs one cluster of n machines with schedServices·n units.
func runSchedule(b *testing.B, n int) schedResult {
	b.Helper()
	res := schedResult{machines: n, units: schedServices * n}
	admin := etcdtest.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), schedLimit)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	quiet := slog.New(slog.DiscardHandler)
	newClient := func(opts ...grpc.DialOption) *clientv3.Client {
		c, err := clientv3.New(clientv3.Config{Endpoints: admin.Endpoints(), DialTimeout: 5 * time.Second, DialOptions: opts, Logger: admin.GetLogger()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		return c
	}

	// The machines: their registry records, as each clusterd's heartbeat
	// writes them (without the lease: none of them goes away here).
	machines := make([]registry.Machine, n)
	var ops []clientv3.Op
	for i := range machines {
		m := registry.Machine{ID: fmt.Sprintf("%032x", 0xb0000+i), Name: fmt.Sprintf("core-%d", i+1), Hostname: fmt.Sprintf("core-%d", i+1), Started: time.Now()}
		machines[i] = m
		v, _ := json.Marshal(m)
		ops = append(ops, clientv3.OpPut(registry.Prefix+m.ID, string(v)))
	}
	for len(ops) > 0 {
		k := min(len(ops), 128)
		if _, err := admin.Txn(ctx).Then(ops[:k]...).Commit(); err != nil {
			b.Fatal(err)
		}
		ops = ops[k:]
	}

	// The units, submitted before the engine starts: `clusterctl submit`.
	var names []string
	files := map[string]unitstore.UnitFile{}
	for k := range schedServices {
		tpl := fmt.Sprintf("svc%d@.service", k)
		f, err := unit.Parse(tpl, []byte(fmt.Sprintf(schedTemplate, k, k)))
		if err != nil {
			b.Fatal(err)
		}
		for i := 1; i <= n; i++ {
			name := fmt.Sprintf("svc%d@%d.service", k, i)
			names = append(names, name)
			files[name] = unitstore.UnitFile{Name: name, Hash: f.Hash(), Content: string(f.Bytes())}
		}
	}
	parallel(b, names, func(name string) error {
		_, err := unitstore.Submit(ctx, admin, files[name])
		return err
	})

	// The agents, sharing clients (agentsPerClient), counted together.
	agents := newRPCCounter()
	var shared *clientv3.Client
	for i, m := range machines {
		if i%agentsPerClient == 0 {
			shared = newClient(agents.options()...)
		}
		a := &agent.Agent{Client: shared, Machine: unit.Machine{ID: m.ID, Hostname: m.Hostname}, Driver: newMemDriver(), Log: quiet}
		wg.Go(func() { a.Run(ctx) })
	}
	// The engine, on a client of its own: every request it makes is counted.
	engine := newRPCCounter()
	e := &scheduler.Engine{Client: newClient(engine.options()...), MachineID: machines[0].ID, Log: quiet}
	wg.Go(func() { e.Run(ctx) })

	// Ready: every agent has listed its assignments and cleared its old
	// states (its session is up), and the engine is elected.
	agents.waitFor(b, ctx, "/etcdserverpb.KV/Range", n)
	agents.waitFor(b, ctx, "/etcdserverpb.KV/DeleteRange", n)
	for {
		resp, err := admin.Get(ctx, "/corral/engine/leader", clientv3.WithPrefix())
		if err != nil {
			b.Fatal(err)
		}
		if len(resp.Kvs) > 0 {
			break
		}
		select {
		case <-admin.Watch(ctx, "/corral/engine/leader", clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)):
		case <-ctx.Done():
			b.Fatal("no engine elected")
		}
	}
	// Let the engine's first pass (nothing launched yet: it writes nothing)
	// read before the count starts: the election's Range, then the pass's
	// reads of the units and of the machines.
	engine.waitFor(b, ctx, "/etcdserverpb.KV/Range", 3)

	// Go: launch every unit, as `clusterctl start` does, from a few clients
	// at once, and wait for the agents to report them all active.
	rev, err := admin.Get(ctx, "/corral/none")
	if err != nil {
		b.Fatal(err)
	}
	engine.reset()
	agents.reset()
	start := time.Now()
	launched := make(chan time.Duration, 1)
	wg.Go(func() {
		parallel(b, names, func(name string) error { return unitstore.SetDesired(ctx, admin, name, unitstore.Launched) })
		launched <- time.Since(start)
	})
	if err := waitActive(ctx, admin, rev.Header.Revision, len(names)); err != nil {
		snap, _ := unitstore.Read(context.Background(), admin)
		placed := 0
		if snap != nil {
			for _, u := range snap.Units {
				if u.Placement != nil && u.Placement.Machine != "" {
					placed++
				}
			}
		}
		b.Fatalf("%d machines: %v (after %v; %d of %d units placed)", n, err, time.Since(start).Round(time.Second), placed, len(names))
	}
	res.active = time.Since(start)
	res.requests, res.streams = engine.snapshot()
	res.agentRequests, _ = agents.snapshot()
	res.launched = <-launched

	// Check the result: every unit on one machine, each service spread
	// one instance to a machine, as its Conflicts ask.
	snap, err := unitstore.Read(ctx, admin)
	if err != nil {
		b.Fatal(err)
	}
	res.perMachine, res.assigned = map[string]int{}, map[string]string{}
	for m, units := range snap.Assigned {
		svcs := map[string]bool{}
		for name := range units {
			if other, dup := res.assigned[name]; dup {
				b.Fatalf("%s assigned to both %s and %s", name, other, m)
			}
			res.assigned[name] = m
			svc, _, _ := strings.Cut(name, "@")
			if svcs[svc] {
				b.Fatalf("two instances of %s on %s despite Conflicts", svc, m)
			}
			svcs[svc] = true
		}
		res.perMachine[m] = len(units)
	}
	if len(res.assigned) != len(names) {
		b.Fatalf("%d of %d units assigned", len(res.assigned), len(names))
	}
	return res
}

// parallel runs fn for every name from schedLaunchers goroutines.
func parallel(b *testing.B, names []string, fn func(string) error) {
	work := make(chan string)
	errs := make(chan error, schedLaunchers)
	var wg sync.WaitGroup
	for range schedLaunchers {
		wg.Go(func() {
			for name := range work {
				if err := fn(name); err != nil {
					select {
					case errs <- fmt.Errorf("%s: %w", name, err):
					default:
					}
				}
			}
		})
	}
	for _, name := range names {
		work <- name
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Error(err)
	default:
	}
}

// waitActive watches the agents' state records from rev on until want
// units are reported active.
func waitActive(ctx context.Context, c *clientv3.Client, rev int64, want int) error {
	active := map[string]bool{} // "machine/unit" → active
	n := 0
	for r := range c.Watch(ctx, unitstore.StatePrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := r.Err(); err != nil {
			return err
		}
		for _, ev := range r.Events {
			key := strings.TrimPrefix(string(ev.Kv.Key), unitstore.StatePrefix)
			var st unitstore.UnitState
			on := ev.Type == clientv3.EventTypePut && json.Unmarshal(ev.Kv.Value, &st) == nil && st.Active == "active"
			if on != active[key] {
				active[key] = on
				if on {
					n++
				} else {
					n--
				}
			}
		}
		if n >= want {
			return nil
		}
	}
	return fmt.Errorf("%d of %d units active: %w", n, want, ctx.Err())
}

// rpcCounter counts a client's gRPC calls by method: unary calls once
// answered, streams once opened.
type rpcCounter struct {
	mu      sync.Mutex
	unary   map[string]int
	streams map[string]int
	changed chan struct{}
}

func newRPCCounter() *rpcCounter {
	return &rpcCounter{unary: map[string]int{}, streams: map[string]int{}, changed: make(chan struct{}, 1)}
}

func (c *rpcCounter) options() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, opts...)
			c.add(c.unary, method)
			return err
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			c.add(c.streams, method)
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

func (c *rpcCounter) add(m map[string]int, method string) {
	c.mu.Lock()
	m[method]++
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *rpcCounter) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.unary)
	clear(c.streams)
}

// snapshot returns the counts, with method names shortened to "Range",
// "Txn", "LeaseGrant" ….
func (c *rpcCounter) snapshot() (unary, streams map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	short := func(m map[string]int) map[string]int {
		out := map[string]int{}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			out[k[strings.LastIndexByte(k, '/')+1:]] += m[k]
		}
		return out
	}
	return short(c.unary), short(c.streams)
}

// waitFor waits until method has been called n times.
func (c *rpcCounter) waitFor(b *testing.B, ctx context.Context, method string, n int) {
	b.Helper()
	for {
		c.mu.Lock()
		got := c.unary[method]
		c.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-c.changed:
		case <-ctx.Done():
			b.Fatalf("waiting for %d calls of %s: %d so far", n, method, got)
		}
	}
}

// memDriver is a driver that runs nothing: it records Start and Stop and
// reports started units active (running). The agent is real; the driver is
// not what is measured.
type memDriver struct {
	mu      sync.Mutex
	units   map[string]driver.State
	changes chan string
}

func newMemDriver() *memDriver {
	return &memDriver{units: map[string]driver.State{}, changes: make(chan string, 1)}
}

func (d *memDriver) Start(_ context.Context, name string, _ *unit.File) error {
	d.mu.Lock()
	d.units[name] = driver.State{Active: "active", Sub: "running"}
	d.mu.Unlock()
	d.notify(name)
	return nil
}

func (d *memDriver) Stop(_ context.Context, name string) error {
	d.mu.Lock()
	delete(d.units, name)
	d.mu.Unlock()
	d.notify(name)
	return nil
}

func (d *memDriver) States() map[string]driver.State {
	d.mu.Lock()
	defer d.mu.Unlock()
	return maps.Clone(d.units)
}

func (d *memDriver) Changes() <-chan string { return d.changes }

// notify never blocks: one pending signal is enough, since the agent reads
// every state when it wakes.
func (d *memDriver) notify(name string) {
	select {
	case d.changes <- name:
	default:
	}
}
