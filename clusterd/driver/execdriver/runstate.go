package execdriver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/unit"
)

// recordVersion is the version of the run-state format; a driver ignores
// (and removes) records of versions it does not know.
const recordVersion = 1

// record is a unit's run state, <dir>/<unit>.state: enough for the next
// driver on the directory to pick the unit up where this one left it.
type record struct {
	Version int    `json:"version"`
	BootID  string `json:"boot_id"` // start times mean nothing across boots
	Name    string `json:"name"`
	Unit    string `json:"unit"` // the unit file, canonical form
	Hash    string `json:"hash"`

	Active   string `json:"active"`
	Sub      string `json:"sub"`
	Result   string `json:"result,omitempty"`
	Restarts int    `json:"restarts,omitempty"`
	Started  bool   `json:"started,omitempty"` // ExecStop= is due on the way down
	Remove   bool   `json:"remove,omitempty"`  // a Stop was under way

	Main   *procRecord  `json:"main,omitempty"`
	Groups []procRecord `json:"groups,omitempty"`
}

// procRecord names a process (and the group it leads) across pid reuse.
type procRecord struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // /proc/<pid>/stat starttime, clock ticks since boot
}

// recordLocked snapshots the activation's unit.
func (a *activation) recordLocked() *record {
	u := a.u
	r := &record{
		Version: recordVersion, BootID: a.d.boot, Name: u.name,
		Unit: string(a.file.Bytes()), Hash: a.hash,
		Active: u.state.Active, Sub: u.state.Sub, Result: u.result, Restarts: u.restarts,
		Started: a.started, Remove: a.remove,
	}
	if a.main != nil && !a.main.hasExited() {
		r.Main = &procRecord{PID: a.main.pid, Start: a.main.start}
	}
	for _, g := range a.groups {
		r.Groups = append(r.Groups, procRecord{PID: g.pid, Start: g.start})
	}
	slices.SortFunc(r.Groups, func(x, y procRecord) int { return x.PID - y.PID })
	return r
}

// persistLocked writes rec. The file is replaced by rename, so a reader
// (the next driver, after a crash) sees the old record or the new one,
// never half. It is not synced: the processes it describes do not outlive
// the machine.
func (d *Driver) persistLocked(u *unitRun, rec *record) {
	if err := writeRecord(d.statePath(u.name), rec); err != nil {
		d.log.Warn("writing run state; a restarted clusterd may not re-adopt this unit", "unit", u.name, "err", err)
	}
}

func writeRecord(path string, rec *record) error {
	b, err := json.MarshalIndent(rec, "", "\t")
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, append(b, '\n'), 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readRecord(path string) (*record, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("run-state version %d, want %d", r.Version, recordVersion)
	}
	return &r, nil
}

// adoptAll takes over the units an earlier driver on this directory left.
func (d *Driver) adoptAll() {
	paths, _ := filepath.Glob(filepath.Join(d.dir, "*.state"))
	var acts []*activation
	for _, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), ".state")
		rec, err := readRecord(p)
		if err == nil && rec.Name != name {
			err = fmt.Errorf("record names unit %q", rec.Name)
		}
		var a *activation
		if err == nil {
			a, err = d.adopt(rec)
		}
		if err != nil {
			d.log.Warn("cannot re-adopt unit; dropping its run state", "unit", name, "err", err)
			os.Remove(p)
		}
		if a != nil {
			acts = append(acts, a)
		}
	}
	// Only now, with every unit known, may activations look at each other
	// (dependencies).
	for _, a := range acts {
		go a.run()
	}
}

// adopt takes over one unit. What happens depends on where the earlier
// driver left it:
//
//   - active/running: its main process is watched again (if it died while
//     no one watched, that is handled as an exit: ExecStop=, ExecStopPost=
//     and Restart= apply);
//   - active/exited (a oneshot that remains): it stays so until stopped;
//   - activating (start-pre, start, start-post, auto-restart): a start was
//     cut short, and cannot be resumed midway: what it left running is
//     stopped and the unit starts again from the beginning, once;
//   - deactivating: the stop is finished (signals, ExecStopPost=);
//   - inactive or failed: nothing runs; the state is kept for the agent.
//
// Processes are recognised by pid and start time, and only within the boot
// that started them. adopt returns the unit's activation, to be run, if it
// has one.
func (d *Driver) adopt(rec *record) (*activation, error) {
	if err := checkName(rec.Name); err != nil {
		return nil, err
	}
	var groups []*proc
	var main *proc
	if rec.BootID != "" && rec.BootID == d.boot {
		for _, g := range rec.Groups {
			p := adoptProc(g.PID, g.Start)
			if p.hasExited() && liveMembers([]*proc{p})[p.pid] == 0 {
				if rec.Main != nil && rec.Main.PID == p.pid {
					main = p
				}
				continue
			}
			groups = append(groups, p)
			if rec.Main != nil && rec.Main.PID == p.pid {
				main = p
			}
		}
	}
	f, err := unit.Parse(rec.Name, []byte(rec.Unit))
	if err == nil && f.Hash() != rec.Hash {
		err = errors.New("the recorded unit file does not match its hash")
	}
	var s *spec
	if err == nil {
		s, err = parseSpec(f)
	}
	if err != nil {
		// What cannot be supervised must not be left running unsupervised.
		for _, g := range groups {
			g.signal(syscall.SIGKILL)
		}
		return nil, err
	}

	u := &unitRun{
		name: rec.Name, hash: rec.Hash,
		state:  driver.State{Active: rec.Active, Sub: rec.Sub},
		result: rec.Result, restarts: rec.Restarts, since: time.Now(),
	}
	var e entry
	switch {
	case rec.Active == active && rec.Sub == subRunning && !s.oneshot:
		e = entryRunning
		if main == nil {
			// Recorded as running, but the main process is gone.
			main = &proc{pid: -1, exited: make(chan struct{})}
			if rec.Main != nil {
				main.pid = rec.Main.PID
			}
			close(main.exited)
		}
		u.adopted, u.mainPID = true, max(main.pid, 0)
	case rec.Active == active && rec.Sub == subExited:
		e = entryExited
		u.adopted = true
	case rec.Active == deactivating:
		e = entryStopping
	case rec.Active == activating:
		e = entryStart
	default:
		// inactive or failed: nothing should run. Anything that does is a
		// leftover of a stop that a crash cut short.
		for _, g := range groups {
			g.signal(syscall.SIGKILL)
		}
		if rec.Remove {
			return nil, os.Remove(d.statePath(rec.Name))
		}
		d.units[rec.Name] = u
		return nil, nil
	}
	a := newActivation(d, u, f, s, rec.Hash, e)
	a.started = rec.Started && e != entryStopping
	if e == entryRunning {
		a.started = true
	}
	a.main = main
	for _, g := range groups {
		a.groups[g.pid] = g
	}
	u.act = a
	d.units[rec.Name] = u
	if rec.Remove {
		a.requestStopLocked("a Stop was under way when clusterd stopped", true)
	}
	d.log.Info("re-adopting unit", "unit", rec.Name, "state", rec.Active+"/"+rec.Sub, "processes", len(groups))
	return a, nil
}
