// Package systemddriver runs units under the machine's systemd, over D-Bus,
// as CoreOS fleet did. It implements driver.Driver and driver.Journal.
//
// A unit's file goes to /run/corral/units/<name> and is linked as
// /run/systemd/system/<name>, where systemd finds runtime units; the driver
// then reloads systemd and starts the unit, and waits for the start job's
// result. Being under /run, units vanish with a reboot, as fleet's did: the
// cluster decides again what runs where.
//
// Units are systemd's, not clusterd's: they keep running when clusterd
// stops, and a new driver takes over the units it finds in
// /run/corral/units without touching them. Starting a unit again with the
// same file is then a no-op, so the agent's reconciliation after a restart
// leaves them alone.
//
// The driver talks to the manager on its private socket
// (/run/systemd/private), which needs no D-Bus daemon and takes only root.
package systemddriver

import (
	"bytes"
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

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/internal/sdbus"
)

var (
	_ driver.Driver  = (*Driver)(nil)
	_ driver.Journal = (*Driver)(nil)
)

// ErrClosed is returned by Start and Stop after Close.
var ErrClosed = errors.New("systemddriver: driver is closed")

// Where unit files go, relative to the root. systemd reads runtime units
// from /run/systemd/system; the files themselves live in a directory of
// the driver's so that what it manages is exactly what is there.
const (
	unitsDir  = "run/corral/units"
	systemDir = "run/systemd/system"
)

// pollInterval is how often the driver reads its units' states to catch
// changes it missed: PropertiesChanged signals are dropped when go-systemd's
// buffer is full, and none come while the connection is down. Signals carry
// the changes; the poll is only a backstop, so it can be slow.
var pollInterval = 5 * time.Second

// Options configure New.
type Options struct {
	// Root is the root directory of the machine whose systemd runs the
	// units, "" for this one. The driver writes unit files under it and
	// reads the journal there; it is for reaching a systemd in another mount
	// namespace, such as a test's, through /proc/<pid>/root.
	Root string
	// Socket is the manager's private D-Bus socket, <Root>/run/systemd/private
	// if "". systemd refuses that socket to processes outside its PID
	// namespace (it cannot see their PIDs), so a driver outside needs a
	// proxy that runs inside, and its socket here.
	Socket string
	// Log gets the driver's messages; nil means slog.Default().
	Log *slog.Logger
}

// Driver runs units under systemd. Create it with New.
type Driver struct {
	// Env is every unit's base environment: it comes first in the unit's
	// [Service] section, so the unit's own Environment= overrides it. Set it
	// before starting units; changing it changes every unit's file, and so
	// restarts each at its next Start.
	Env map[string]string

	root   string
	socket string
	log    *slog.Logger
	locks  keyedLocks // serialises Start and Stop per unit

	// Every connection's subscriber feeds these, so that the watcher need
	// not follow reconnections.
	updates chan *sddbus.PropertiesUpdate
	busErrs chan error

	connMu sync.Mutex
	conn   *sddbus.Conn // nil after Close

	changes chan string   // Changes
	kick    chan struct{} // wakes the pump; capacity 1
	quit    chan struct{} // closed by Close
	done    sync.WaitGroup

	mu      sync.Mutex
	units   map[string]driver.State // the managed units and their states at the last poll
	pending map[string]struct{}     // names not yet sent on changes
}

// New connects to systemd and takes over the units an earlier driver left
// in <Root>/run/corral/units.
func New(opts Options) (*Driver, error) {
	root := opts.Root
	if root == "" {
		root = "/"
	}
	socket := opts.Socket
	if socket == "" {
		socket = filepath.Join(root, "run/systemd/private")
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	d := &Driver{
		root:    root,
		socket:  socket,
		log:     log.With("component", "systemddriver"),
		updates: make(chan *sddbus.PropertiesUpdate, 256),
		busErrs: make(chan error, 1),
		changes: make(chan string, 64),
		kick:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		units:   map[string]driver.State{},
		pending: map[string]struct{}{},
	}
	entries, err := os.ReadDir(d.path(unitsDir))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("systemddriver: %w", err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), ".") { // .name.tmp: a write cut short
			d.units[e.Name()] = driver.State{}
		}
	}
	if d.conn, err = d.dial(); err != nil {
		return nil, err
	}
	if len(d.units) > 0 {
		d.log.Info("took over units left by an earlier clusterd", "units", slices.Sorted(maps.Keys(d.units)))
	}
	d.done.Add(2)
	go d.watch()
	go d.pump()
	return d, nil
}

func (d *Driver) path(elem ...string) string {
	return filepath.Join(append([]string{d.root}, elem...)...)
}

// dial connects to the manager and subscribes to its units' changes.
func (d *Driver) dial() (*sddbus.Conn, error) {
	c, err := sddbus.NewConnection(func() (*dbus.Conn, error) { return sdbus.Dial(context.Background(), d.socket) })
	if err != nil {
		return nil, fmt.Errorf("systemddriver: connecting to systemd at %s: %w", d.socket, err)
	}
	c.SetPropertiesSubscriber(d.updates, d.busErrs)
	if err := c.Subscribe(); err != nil {
		c.Close()
		return nil, fmt.Errorf("systemddriver: subscribing to systemd's signals: %w", err)
	}
	return c, nil
}

// bus returns the connection to the manager, dialling again if it was
// lost: systemd closes its private connections when it re-executes itself
// (daemon-reexec, as a package upgrade does).
func (d *Driver) bus() (*sddbus.Conn, error) {
	d.connMu.Lock()
	defer d.connMu.Unlock()
	if d.conn == nil {
		return nil, ErrClosed
	}
	if d.conn.Connected() {
		return d.conn, nil
	}
	c, err := d.dial()
	if err != nil {
		return nil, err
	}
	d.conn.Close()
	d.conn = c
	d.log.Info("reconnected to systemd")
	// Whatever happened while no signal could come is news.
	d.mu.Lock()
	for name := range d.units {
		d.notifyLocked(name)
	}
	d.mu.Unlock()
	return c, nil
}

// checkName refuses names that are not plain file names: the name becomes
// part of paths.
func checkName(name string) error {
	if name == "" || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") {
		return fmt.Errorf("systemddriver: bad unit name %q", name)
	}
	return nil
}

// Start installs the unit file f as name and starts it, waiting for the
// start job's result. If the unit already runs this content, Start does
// nothing; if it runs other content, Start replaces the file and restarts
// the unit; if it is inactive or failed, Start starts it again.
//
// A start job that does not end in "done" (a oneshot that failed, a
// dependency that failed) is an error; the unit stays known, failed.
func (d *Driver) Start(ctx context.Context, name string, f *unit.File) error {
	if err := checkName(name); err != nil {
		return err
	}
	content := withEnv(literalPercent(f), d.Env).Bytes()
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	c, err := d.bus()
	if err != nil {
		return err
	}
	changed, err := d.install(name, content)
	if err != nil {
		return fmt.Errorf("systemddriver: installing %s: %w", name, err)
	}
	d.track(name)
	if !changed {
		props, err := c.GetUnitPropertiesContext(ctx, name)
		if err != nil {
			return fmt.Errorf("systemddriver: %s: %w", name, err)
		}
		switch {
		case props["NeedDaemonReload"] == true:
			changed = true // written, but systemd runs an older file
		case running(props["ActiveState"]):
			return nil
		}
	}
	if !changed {
		return d.job(ctx, c, "start", name, c.StartUnitContext)
	}
	if err := c.ReloadContext(ctx); err != nil {
		return fmt.Errorf("systemddriver: daemon-reload: %w", err)
	}
	// Restart is a start for a unit that is not running.
	return d.job(ctx, c, "restart", name, c.RestartUnitContext)
}

// running reports whether an ActiveState is that of a unit that runs or is
// on its way.
func running(state any) bool {
	switch state {
	case "active", "activating", "reloading":
		return true
	}
	return false
}

// install writes the unit file and links it where systemd looks, each
// replaced atomically; it reports whether either changed.
func (d *Driver) install(name string, content []byte) (bool, error) {
	file := d.path(unitsDir, name)
	changed := false
	if old, err := os.ReadFile(file); err != nil || !bytes.Equal(old, content) {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return false, err
		}
		tmp := d.path(unitsDir, "."+name+".tmp")
		if err := os.WriteFile(tmp, content, 0o644); err != nil {
			return false, err
		}
		if err := os.Rename(tmp, file); err != nil {
			return false, err
		}
		changed = true
	}
	// The link's target is the file as systemd sees it, under its own root.
	target := "/" + unitsDir + "/" + name
	link := d.path(systemDir, name)
	if cur, err := os.Readlink(link); err != nil || cur != target {
		if err := os.MkdirAll(filepath.Dir(link), 0o755); err != nil {
			return false, err
		}
		tmp := d.path(systemDir, "."+name+".tmp")
		os.Remove(tmp)
		if err := os.Symlink(target, tmp); err != nil {
			return false, err
		}
		if err := os.Rename(tmp, link); err != nil {
			return false, err
		}
		changed = true
	}
	return changed, nil
}

// job runs a start, restart or stop job and waits for its result.
func (d *Driver) job(ctx context.Context, c *sddbus.Conn, what, name string,
	call func(context.Context, string, string, chan<- string) (int, error)) error {
	// Buffered: go-systemd delivers results with a blocking send, which
	// would hold up every other job's result if this wait gave up first.
	result := make(chan string, 1)
	if _, err := call(ctx, name, "replace", result); err != nil {
		return fmt.Errorf("systemddriver: %s %s: %w", what, name, err)
	}
	// The result comes as a signal; if the connection drops, it never will.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case r := <-result:
			if r != "done" {
				return fmt.Errorf("systemddriver: %s %s: job %s (see its journal)", what, name, r)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			if !c.Connected() {
				return fmt.Errorf("systemddriver: %s %s: lost the connection to systemd", what, name)
			}
		}
	}
}

// Stop stops the unit, waiting for the stop job, and forgets it: its file
// and link go, and systemd forgets it too (a failed unit's state is reset).
// Stopping a unit the driver does not manage does nothing.
func (d *Driver) Stop(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	unlock, err := d.locks.lock(ctx, name)
	if err != nil {
		return err
	}
	defer unlock()
	d.mu.Lock()
	_, known := d.units[name]
	d.mu.Unlock()
	if !known {
		return nil
	}
	c, err := d.bus()
	if err != nil {
		return err
	}
	if err := d.job(ctx, c, "stop", name, c.StopUnitContext); err != nil && !isNoSuchUnit(err) {
		return err
	}
	for _, p := range []string{d.path(systemDir, name), d.path(unitsDir, name)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("systemddriver: %w", err)
		}
	}
	d.mu.Lock()
	delete(d.units, name)
	d.notifyLocked(name)
	d.mu.Unlock()
	if err := c.ReloadContext(ctx); err != nil {
		return fmt.Errorf("systemddriver: daemon-reload: %w", err)
	}
	// A failed unit stays loaded, failed, until its state is reset.
	if err := c.ResetFailedUnitContext(ctx, name); err != nil && !isNoSuchUnit(err) {
		d.log.Warn("resetting a stopped unit", "unit", name, "err", err)
	}
	return nil
}

// isNoSuchUnit reports systemd's error for a unit that is not loaded.
func isNoSuchUnit(err error) bool {
	var e dbus.Error
	return errors.As(err, &e) && e.Name == "org.freedesktop.systemd1.NoSuchUnit"
}

// track adds name to the managed units.
func (d *Driver) track(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.units[name]; !ok {
		d.units[name] = driver.State{}
		d.notifyLocked(name)
	}
}

// States reports the state of every unit the driver manages, as systemd
// has it now. If systemd cannot be asked, it reports the states last polled.
func (d *Driver) States() map[string]driver.State {
	states, err := d.read()
	if err != nil {
		d.log.Warn("reading unit states", "err", err)
		d.mu.Lock()
		defer d.mu.Unlock()
		return maps.Clone(d.units)
	}
	return states
}

// read asks systemd for the managed units' states.
func (d *Driver) read() (map[string]driver.State, error) {
	d.mu.Lock()
	names := slices.Collect(maps.Keys(d.units))
	d.mu.Unlock()
	out := make(map[string]driver.State, len(names))
	if len(names) == 0 {
		return out, nil
	}
	c, err := d.bus()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := c.ListUnitsByNamesContext(ctx, names)
	if err != nil {
		return nil, err
	}
	for _, u := range list {
		out[u.Name] = driver.State{Active: u.ActiveState, Sub: u.SubState}
	}
	return out, nil
}

// poll reads the states and notifies the units whose state differs from the
// last poll's. States does not record what it reads, so that a caller other
// than Changes' receiver cannot swallow a change.
func (d *Driver) poll() {
	states, err := d.read()
	if err != nil {
		d.log.Warn("reading unit states", "err", err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, st := range states {
		if old, ok := d.units[name]; ok && old != st {
			d.units[name] = st
			d.notifyLocked(name)
		}
	}
}

// Changes delivers the names of units whose state changed, including units
// that Stop forgot. Changes are coalesced: a unit that changes several
// times before its name is received is named once, and the receiver reads
// its state with States. The driver never waits for a receiver. The channel
// is never closed.
func (d *Driver) Changes() <-chan string { return d.changes }

func (d *Driver) notifyLocked(name string) {
	d.pending[name] = struct{}{}
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// pump moves pending names to the changes channel, so that a slow receiver
// delays only itself.
func (d *Driver) pump() {
	defer d.done.Done()
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
			delete(d.pending, name)
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

// watch turns systemd's signals into changes, and reads the states every
// poll interval to catch what the signals missed.
func (d *Driver) watch() {
	defer d.done.Done()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case u := <-d.updates:
			d.mu.Lock()
			if _, ok := d.units[u.UnitName]; ok {
				d.notifyLocked(u.UnitName)
			}
			d.mu.Unlock()
		case <-d.busErrs:
			// go-systemd's buffer was full: some change went unreported.
			d.poll()
		case <-tick.C:
			d.poll()
		case <-d.quit:
			return
		}
	}
}

// Close disconnects from systemd. The units keep running: they are
// systemd's, and the next driver on this root takes them over.
func (d *Driver) Close() error {
	d.connMu.Lock()
	if d.conn == nil {
		d.connMu.Unlock()
		return nil
	}
	d.conn.Close()
	d.conn = nil
	d.connMu.Unlock()
	close(d.quit)
	d.done.Wait()
	return nil
}

// keyedLocks is a mutex per key whose Lock gives up when ctx ends.
type keyedLocks struct {
	mu    sync.Mutex
	locks map[string]chan struct{}
}

func (k *keyedLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]chan struct{}{}
	}
	l := k.locks[key]
	if l == nil {
		l = make(chan struct{}, 1)
		k.locks[key] = l
	}
	k.mu.Unlock()
	select {
	case l <- struct{}{}:
		return func() { <-l }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
