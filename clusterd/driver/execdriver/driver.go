package execdriver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/unit"
)

var (
	_ driver.Driver  = (*Driver)(nil)
	_ driver.Journal = (*Driver)(nil)
)

// ErrClosed is returned by Start after Close or Detach.
var ErrClosed = errors.New("execdriver: driver is closed")

// systemd's states, as the driver uses them.
const (
	active       = "active"
	activating   = "activating"
	deactivating = "deactivating"
	inactive     = "inactive"
	failed       = "failed"

	subRunning     = "running"
	subExited      = "exited"
	subDead        = "dead"
	subFailed      = "failed"
	subStartPre    = "start-pre"
	subStart       = "start"
	subStartPost   = "start-post"
	subAutoRestart = "auto-restart"
	subStop        = "stop"
	subStopSigterm = "stop-sigterm"
	subStopSigkill = "stop-sigkill"
	subStopPost    = "stop-post"
)

// Driver supervises units as processes of this machine. Create it with New.
type Driver struct {
	// Env is set for every unit before its own Environment= (as systemd's
	// DefaultEnvironment=); set it before starting units. A PATH here
	// replaces the default PATH.
	Env map[string]string

	dir  string
	log  *slog.Logger
	boot string
	lock *os.File // flock on dir/lock: one driver per directory

	changes chan string   // Changes
	kick    chan struct{} // wakes the pump; capacity 1
	quit    chan struct{} // closed by Close and Detach: the pump stops
	detach  chan struct{} // closed by Detach: activations leave their processes be
	opMu    keyedMutex    // serialises Start and Stop per unit

	mu      sync.Mutex
	units   map[string]*unitRun
	pending map[string]struct{} // names not yet sent on changes
	changed chan struct{}       // closed and replaced on every state change
	closed  bool
}

// unitRun is one unit the driver knows.
type unitRun struct {
	name string

	// Guarded by Driver.mu.
	act      *activation // the newest activation; nil if none ever ran in this driver
	hash     string
	state    driver.State
	result   string
	mainPID  int
	exit     exitStatus
	restarts int
	since    time.Time
	waiting  []string
	inWait   bool // waiting for dependencies
	adopted  bool
	gone     bool // forgotten: its run state must not be written again
}

// Status is what the driver knows about a unit, beyond its State; clusterctl
// status shows it, and tests wait on it.
type Status struct {
	driver.State
	// Result is systemd's result of the last run: success, exit-code,
	// signal, core-dump, timeout, resources or start-limit-hit.
	Result string
	// MainPID is the main process (or the running command of a oneshot), or 0.
	MainPID int
	// ExitCode and ExitStatus describe how the last main process or failed
	// command ended: "exited" and a status, or "killed"/"dumped" and a
	// signal number. ExitCode is "" when unknown.
	ExitCode   string
	ExitStatus int
	// Restarts counts automatic restarts (systemd's NRestarts).
	Restarts int
	// Hash is the hash of the unit file the driver runs.
	Hash string
	// Adopted is set when the unit's processes were started by an earlier
	// driver on the same directory (before clusterd restarted).
	Adopted bool
	// WaitingFor lists the units a start waits for (Requires=, BindsTo=,
	// After=).
	WaitingFor []string
	// Since is when the state last changed.
	Since time.Time
}

// New returns a driver that keeps journals (<dir>/<unit>.log) and run state
// (<dir>/<unit>.state) in dir, creating it if need be. If an earlier driver
// used dir (clusterd restarted), New re-adopts the units it left running;
// see the package documentation. Only one driver may use a directory at a
// time. log may be nil.
func New(dir string, log *slog.Logger) (*Driver, error) {
	if log == nil {
		log = slog.Default()
	}
	if err := pidfdSupported(); err != nil {
		return nil, fmt.Errorf("execdriver: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("execdriver: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("execdriver: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("execdriver: %s is in use by another driver (is another clusterd running?): %w", dir, err)
	}
	d := &Driver{
		dir:     dir,
		log:     log.With("component", "execdriver"),
		boot:    bootID(),
		lock:    lock,
		changes: make(chan string, 64),
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		detach:  make(chan struct{}),
		units:   map[string]*unitRun{},
		pending: map[string]struct{}{},
		changed: make(chan struct{}),
	}
	d.adoptAll()
	go d.pump()
	return d, nil
}

// checkName refuses names that are not plain file names: the name becomes
// part of paths in the driver's directory.
func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("execdriver: bad unit name %q", name)
	}
	return nil
}

func (d *Driver) journalPath(name string) string { return filepath.Join(d.dir, name+".log") }
func (d *Driver) statePath(name string) string   { return filepath.Join(d.dir, name+".state") }

// Start starts the unit f under name, or does nothing if it already runs
// that content. A unit that runs other content is stopped and started
// again with f; a unit that is inactive or failed is started again.
//
// Start returns once the unit is on its way: a unit waits (activating) for
// the units it Requires= or BindsTo= to be started, so a caller starting
// several units cannot depend on the order it starts them in. Mistakes in
// the unit file are returned; failures at run time (a missing
// EnvironmentFile=, a command that fails) show as state failed, with the
// details in Status and the journal.
func (d *Driver) Start(ctx context.Context, name string, f *unit.File) error {
	if err := checkName(name); err != nil {
		return err
	}
	s, err := parseSpec(f)
	if err != nil {
		return fmt.Errorf("execdriver: unit %s: %w", name, err)
	}
	f = f.Clone() // the caller may change its copy
	hash := f.Hash()

	unlock, err := d.opMu.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	for {
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			return ErrClosed
		}
		u := d.units[name]
		if u != nil && u.act != nil && u.act.removing() {
			// An interrupted Stop is still forgetting the unit: let it finish,
			// then start afresh.
			done := u.act.done
			d.mu.Unlock()
			select {
			case <-done:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if u != nil && u.act != nil && u.act.live() && u.hash == hash {
			d.mu.Unlock()
			return nil
		}
		if u == nil {
			u = &unitRun{name: name, state: driver.State{Active: inactive, Sub: subDead}}
			d.units[name] = u
		}
		for _, w := range s.warnings {
			d.log.Warn(w, "unit", name)
		}
		prev := u.act
		if prev != nil && prev.live() {
			prev.requestStopLocked(fmt.Sprintf("its unit file changed (%.7s → %.7s)", u.hash, hash), false)
		}
		a := newActivation(d, u, f, s, hash, entryStart)
		a.prev, a.reset = prev, true
		u.act, u.hash, u.adopted = a, hash, false
		d.mu.Unlock()
		go a.run()
		return nil
	}
}

// Stop stops the unit and forgets it; its journal stays. Units that
// Requires= or BindsTo= it are stopped first (they stay known, inactive).
// Stop waits for the unit to stop, which may take TimeoutStopSec= (and
// SIGKILL) per step; if ctx ends first, Stop returns ctx's error and the
// unit goes on stopping. Stopping an unknown unit does nothing.
func (d *Driver) Stop(ctx context.Context, name string) error {
	unlock, err := d.opMu.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	d.mu.Lock()
	u := d.units[name]
	if u == nil {
		d.mu.Unlock()
		return nil
	}
	deps := d.dependentsLocked(name)
	var waits []<-chan struct{}
	for _, dep := range deps {
		if a := d.units[dep].act; a != nil && a.live() {
			a.requestStopLocked(fmt.Sprintf("%s, which it requires, is stopping", name), false)
			waits = append(waits, a.done)
		}
	}
	d.mu.Unlock()
	// Dependents first: systemd stops in the reverse of the start order.
	for _, w := range waits {
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	d.mu.Lock()
	a := u.act
	if a == nil || isDone(a.done) {
		d.forgetLocked(u)
		d.mu.Unlock()
		return nil
	}
	a.requestStopLocked("it was asked to stop", true)
	d.mu.Unlock()
	select {
	case <-a.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// forgetLocked drops u: no more state, no run-state file.
func (d *Driver) forgetLocked(u *unitRun) {
	if d.units[u.name] != u {
		return
	}
	delete(d.units, u.name)
	d.notifyLocked(u.name)
	u.gone = true
	if err := os.Remove(d.statePath(u.name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		d.log.Warn("removing run state", "unit", u.name, "err", err)
	}
}

// States reports every unit the driver knows.
func (d *Driver) States() map[string]driver.State {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make(map[string]driver.State, len(d.units))
	for name, u := range d.units {
		out[name] = u.state
	}
	return out
}

// Status reports what the driver knows of one unit.
func (d *Driver) Status(name string) (Status, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	u := d.units[name]
	if u == nil {
		return Status{}, false
	}
	return Status{
		State:      u.state,
		Result:     u.result,
		MainPID:    u.mainPID,
		ExitCode:   u.exit.Code,
		ExitStatus: u.exit.Status,
		Restarts:   u.restarts,
		Hash:       u.hash,
		Adopted:    u.adopted,
		WaitingFor: slices.Clone(u.waiting),
		Since:      u.since,
	}, true
}

// Changes delivers the names of units whose state changed. Changes are
// coalesced: a unit that changes several times before its name is received
// is named once, and the receiver reads its state with States or Status.
// The driver never waits for a receiver. The channel is never closed.
func (d *Driver) Changes() <-chan string { return d.changes }

// notifyLocked records that name changed: for Changes, and for activations
// waiting on other units' states.
func (d *Driver) notifyLocked(name string) {
	d.pending[name] = struct{}{}
	select {
	case d.kick <- struct{}{}:
	default:
	}
	close(d.changed)
	d.changed = make(chan struct{})
}

// pump moves pending names to the changes channel, so that a slow receiver
// delays only itself.
func (d *Driver) pump() {
	for {
		select {
		case <-d.kick:
		case <-d.quit:
			return
		}
		for {
			d.mu.Lock()
			var name string
			for name = range d.pending {
				break
			}
			if name != "" {
				delete(d.pending, name)
			}
			d.mu.Unlock()
			if name == "" {
				break
			}
			select {
			case d.changes <- name:
			case <-d.quit:
				return
			}
		}
	}
}

// Close stops every unit, dependents before what they depend on, and
// releases the directory. It is for clusterd's shutdown with --stop-units;
// to leave the units running across a restart, use Detach (or just exit).
func (d *Driver) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()

	for {
		d.mu.Lock()
		layer := d.stopLayerLocked()
		var waits []*activation
		for _, u := range layer {
			if a := u.act; a != nil && !isDone(a.done) {
				a.requestStopLocked("the driver is closing", true)
				waits = append(waits, a)
			} else {
				d.forgetLocked(u)
			}
		}
		d.mu.Unlock()
		if len(layer) == 0 {
			break
		}
		for _, a := range waits {
			<-a.done
		}
	}
	close(d.quit)
	return d.lock.Close()
}

// Detach stops supervising without stopping anything: processes keep
// running, and their run state stays on disk for the next driver on the
// same directory to adopt. clusterd need not call it (exiting, even being
// killed, leaves the same state behind); it exists so that a process can
// hand its units over without exiting, as the tests do.
func (d *Driver) Detach() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.detach)
	var acts []*activation
	for _, u := range d.units {
		if u.act != nil {
			acts = append(acts, u.act)
		}
	}
	d.mu.Unlock()
	for _, a := range acts {
		<-a.done
	}
	close(d.quit)
	return d.lock.Close()
}

// stopLayerLocked returns the known units that no other known unit depends
// on: those are stopped first. A dependency cycle yields everything left.
func (d *Driver) stopLayerLocked() []*unitRun {
	var layer []*unitRun
	for name, u := range d.units {
		needed := false
		for other, o := range d.units {
			if other != name && d.dependsLocked(o, name) {
				needed = true
				break
			}
		}
		if !needed {
			layer = append(layer, u)
		}
	}
	if len(layer) == 0 {
		layer = slices.Collect(maps.Values(d.units))
	}
	return layer
}

// spec returns the spec the unit runs (or last ran), or nil.
func (u *unitRun) spec() *spec {
	if u.act == nil {
		return nil
	}
	return u.act.spec
}

// dependsLocked reports whether u is ordered after, or needs, the unit
// called name.
func (d *Driver) dependsLocked(u *unitRun, name string) bool {
	s := u.spec()
	if s == nil {
		return false
	}
	if slices.Contains(s.requires, name) || slices.Contains(s.bindsTo, name) || slices.Contains(s.after, name) {
		return true
	}
	if t := d.units[name]; t != nil {
		if ts := t.spec(); ts != nil && slices.Contains(ts.before, u.name) {
			return true
		}
	}
	return false
}

// dependentsLocked returns the units that Requires= or BindsTo= name,
// directly or through others: a Stop of name stops them all first.
func (d *Driver) dependentsLocked(name string) []string {
	seen := map[string]bool{name: true}
	var out []string
	queue := []string{name}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		for n, u := range d.units {
			s := u.spec()
			if seen[n] || s == nil {
				continue
			}
			if slices.Contains(s.requires, t) || slices.Contains(s.bindsTo, t) {
				seen[n] = true
				out = append(out, n)
				queue = append(queue, n)
			}
		}
	}
	return out
}

// running reports whether a dependency target counts as started: active,
// or on its way (but not merely waiting to be restarted).
func running(st driver.State) bool {
	return st.Active == active || st.Active == activating && st.Sub != subAutoRestart
}

// blockersLocked lists what keeps the activation a from starting:
// Requires= and BindsTo= targets that are not started by this driver, and
// After= targets (or units with Before= a) that are still starting.
// Ordering cycles are broken as systemd breaks them, by ignoring the
// ordering of a unit that itself waits for a.
func (d *Driver) blockersLocked(a *activation) []string {
	var out []string
	for _, t := range d.rawBlockersLocked(a.u.name, a.spec) {
		if d.waitsForLocked(t, a.u.name, map[string]bool{}) {
			// t waits for a: ignore the ordering, keep the requirement.
			if tu := d.units[t]; tu != nil && running(tu.state) {
				continue
			}
		}
		out = append(out, t)
	}
	return out
}

// rawBlockersLocked is blockersLocked without cycle breaking.
func (d *Driver) rawBlockersLocked(name string, s *spec) []string {
	var out []string
	need := func(t string) bool { return slices.Contains(s.requires, t) || slices.Contains(s.bindsTo, t) }
	candidates := slices.Concat(s.requires, s.bindsTo, s.after)
	for n, u := range d.units {
		if us := u.spec(); us != nil && slices.Contains(us.before, name) {
			candidates = append(candidates, n)
		}
	}
	for _, t := range candidates {
		if !isService(t) || t == name || slices.Contains(out, t) {
			continue
		}
		tu := d.units[t]
		ordered := slices.Contains(s.after, t)
		if tu != nil {
			if ts := tu.spec(); ts != nil && slices.Contains(ts.before, name) {
				ordered = true
			}
		}
		switch {
		case need(t) && (tu == nil || !running(tu.state)):
			out = append(out, t)
		case ordered && tu != nil && tu.state.Active == activating && tu.state.Sub != subAutoRestart:
			out = append(out, t)
		}
	}
	return out
}

// waitsForLocked reports whether the unit from, while waiting for its
// dependencies, waits (directly or not) for the unit to.
func (d *Driver) waitsForLocked(from, to string, seen map[string]bool) bool {
	if seen[from] {
		return false
	}
	seen[from] = true
	u := d.units[from]
	if u == nil || !u.inWait || u.spec() == nil {
		return false
	}
	for _, t := range d.rawBlockersLocked(from, u.spec()) {
		if t == to || d.waitsForLocked(t, to, seen) {
			return true
		}
	}
	return false
}

// bindBrokenLocked returns a BindsTo= target that is no longer running, or "".
func (d *Driver) bindBrokenLocked(s *spec) string {
	for _, t := range s.bindsTo {
		if !isService(t) {
			continue
		}
		if tu := d.units[t]; tu == nil || !running(tu.state) {
			return t
		}
	}
	return ""
}

func isDone(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// keyedMutex is a mutex per key, held while waiting is bounded by a context.
type keyedMutex struct {
	mu sync.Mutex
	m  map[string]chan struct{}
}

func (k *keyedMutex) lock(ctx context.Context, key string) (func(), error) {
	for {
		k.mu.Lock()
		if k.m == nil {
			k.m = map[string]chan struct{}{}
		}
		ch, held := k.m[key]
		if !held {
			ch = make(chan struct{})
			k.m[key] = ch
			k.mu.Unlock()
			return func() {
				k.mu.Lock()
				delete(k.m, key)
				k.mu.Unlock()
				close(ch)
			}, nil
		}
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
