package execdriver

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/unit"
)

// systemd's service results (the Result property).
const (
	resSuccess    = "success"
	resExitCode   = "exit-code"
	resSignal     = "signal"
	resCoreDump   = "core-dump"
	resTimeout    = "timeout"
	resResources  = "resources"
	resStartLimit = "start-limit-hit"
	// resDetached is no result: the driver was detached, and the activation
	// must leave everything as it is.
	resDetached = "detached"
)

// entry is where an activation begins.
type entry int

const (
	entryStart    entry = iota // from the beginning (a Start, or a start a restart interrupted)
	entryRunning               // an adopted simple service: its main process runs (or ran)
	entryExited                // an adopted oneshot that remains after exit
	entryStopping              // an adopted unit that was stopping: finish the stop
)

// An activation runs a unit from a start until it is inactive or failed
// again, restarts included, in one goroutine. A unit has at most one
// activation doing anything at a time: a new one (Start with new content)
// first waits for the previous one to end.
type activation struct {
	d     *Driver
	u     *unitRun
	file  *unit.File
	spec  *spec
	hash  string
	entry entry
	prev  *activation // must end before this one begins

	stopCh chan struct{} // closed when a stop is requested
	done   chan struct{} // closed (under Driver.mu) when run returns

	// Guarded by Driver.mu.
	stopAsked  bool
	stopReason string
	remove     bool          // forget the unit once stopped
	groups     map[int]*proc // process groups that may still have members, by pgid
	main       *proc         // the main process of a simple service
	started    bool          // reached the running phase: ExecStop= runs on the way down
	ended      bool          // the run is over; only cleanup remains
	reset      bool          // a new Start: clear the previous run's result and restarts

	// Owned by the run goroutine.
	out    *logPipe
	starts []time.Time // for StartLimitBurst=
}

func newActivation(d *Driver, u *unitRun, f *unit.File, s *spec, hash string, e entry) *activation {
	return &activation{
		d: d, u: u, file: f, spec: s, hash: hash, entry: e,
		stopCh: make(chan struct{}),
		done:   make(chan struct{}),
		groups: map[int]*proc{},
	}
}

// requestStopLocked asks the activation to stop; remove asks it to forget
// the unit afterwards too.
func (a *activation) requestStopLocked(reason string, remove bool) {
	if remove {
		a.remove = true
	}
	if !a.stopAsked {
		a.stopAsked, a.stopReason = true, reason
		close(a.stopCh)
	}
}

// live reports (under Driver.mu) whether the activation runs or will, and
// has not been asked to stop.
func (a *activation) live() bool { return !a.stopAsked && !a.ended }

// removing reports (under Driver.mu) whether a Stop is forgetting the unit.
func (a *activation) removing() bool { return a.remove && !isDone(a.done) }

func (a *activation) stopRequested() bool {
	a.d.mu.Lock()
	defer a.d.mu.Unlock()
	return a.stopAsked
}

func (a *activation) detached() bool { return isDone(a.d.detach) }

// update changes the unit under the driver's lock, persists the run state
// and tells watchers. The run state is written under the lock, so that
// whatever States reports is what a driver that takes over after a crash
// would find; a unit changes state seldom enough for that to be cheap.
func (a *activation) update(f func(u *unitRun)) {
	d := a.d
	d.mu.Lock()
	defer d.mu.Unlock()
	before := a.u.state
	f(a.u)
	if a.u.state != before {
		a.u.since = time.Now()
	}
	if !a.detached() && !a.u.gone {
		d.persistLocked(a.u, a.recordLocked())
	}
	d.notifyLocked(a.u.name)
}

func (a *activation) set(act, sub string) {
	a.update(func(u *unitRun) { u.state = driver.State{Active: act, Sub: sub} })
}

// note writes a message of the driver's to the unit's journal, as systemd
// writes its own to a unit's journal, and to the driver's log.
func (a *activation) note(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if err := appendJournal(a.d.journalPath(a.u.name), a.u.name+": "+msg); err != nil {
		a.d.log.Warn("writing journal", "unit", a.u.name, "err", err)
	}
	a.d.log.Info(msg, "unit", a.u.name)
}

// run is the activation's goroutine.
func (a *activation) run() {
	defer a.finish()
	if a.prev != nil {
		select {
		case <-a.prev.done:
		case <-a.d.detach:
			return
		}
	}
	if a.stopRequested() && a.entry == entryStart {
		return // stopped before it began: the state is what the previous run left
	}
	if a.reset {
		a.update(func(u *unitRun) { u.result, u.restarts, u.exit = "", 0, exitStatus{} })
	}
	var res string
	switch a.entry {
	case entryRunning:
		if a.main.hasExited() {
			a.note("Adopted; its main process ended while no clusterd watched it")
		} else {
			a.note("Adopted main process %d, left running by an earlier clusterd", a.main.pid)
		}
		res = a.cycle(true)
	case entryExited:
		a.note("Adopted, active (exited), from an earlier clusterd")
		res = a.remainExited()
	case entryStopping:
		a.note("Finishing a stop that an earlier clusterd began")
		res = a.down(resSuccess)
	default:
		res = a.cycle(false)
	}
	for {
		if res == resDetached || a.detached() {
			return
		}
		if a.stopRequested() || a.entry == entryStopping {
			a.final(res)
			return
		}
		if !shouldRestart(a.spec.restart, res) {
			a.final(res)
			return
		}
		a.update(func(u *unitRun) {
			u.result = res
			u.state = driver.State{Active: activating, Sub: subAutoRestart}
		})
		a.note("Scheduled restart in %v (Restart=%s, result %s)", a.spec.restartSec, a.spec.restart, res)
		switch a.sleep(a.spec.restartSec) {
		case resDetached:
			return
		case "stopped":
			a.final(res)
			return
		}
		if a.startLimitHit() {
			a.note("Start request repeated too quickly (StartLimitBurst=%d in %v)", a.spec.startLimitBurst, a.spec.startLimitInterval)
			a.final(resStartLimit)
			return
		}
		a.update(func(u *unitRun) { u.restarts++ })
		res = a.cycle(false)
	}
}

// finish runs when the activation ends.
func (a *activation) finish() {
	d := a.d
	d.mu.Lock()
	a.ended = true // a Start from now on starts a new run
	d.mu.Unlock()
	if a.out != nil {
		a.out.close()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if a.u.inWait {
		a.u.inWait, a.u.waiting = false, nil
	}
	if a.remove && !a.detached() && a.u.act == a {
		d.forgetLocked(a.u)
	}
	// Closed under the lock: Stop decides under it whether to wait for
	// done or to forget the unit itself.
	close(a.done)
}

// final records how the run ended: inactive/dead on success, failed/failed
// otherwise, as systemd.
func (a *activation) final(res string) {
	if res == "" {
		res = resSuccess
	}
	a.update(func(u *unitRun) {
		u.result, u.mainPID = res, 0
		if res == resSuccess {
			u.state = driver.State{Active: inactive, Sub: subDead}
		} else {
			u.state = driver.State{Active: failed, Sub: subFailed}
		}
	})
	if res == resSuccess {
		a.note("Deactivated successfully")
	} else {
		a.note("Failed with result '%s'", res)
	}
}

// sleep waits d; it returns "" when done, "stopped" when a stop was
// requested, resDetached when the driver was detached.
func (a *activation) sleep(d time.Duration) string {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return ""
	case <-a.stopCh:
		return "stopped"
	case <-a.d.detach:
		return resDetached
	}
}

// startLimitHit applies StartLimitIntervalSec=/StartLimitBurst= to
// automatic restarts.
func (a *activation) startLimitHit() bool {
	s := a.spec
	if s.startLimitInterval <= 0 || s.startLimitBurst <= 0 {
		return false
	}
	cutoff := time.Now().Add(-s.startLimitInterval)
	a.starts = slices.DeleteFunc(a.starts, func(t time.Time) bool { return t.Before(cutoff) })
	return len(a.starts) >= s.startLimitBurst
}

// shouldRestart is systemd's table for Restart= (systemd.service(5)).
func shouldRestart(policy, res string) bool {
	switch policy {
	case "always":
		return true
	case "on-success":
		return res == resSuccess
	case "on-failure":
		return res != resSuccess
	case "on-abnormal":
		return res == resSignal || res == resCoreDump || res == resTimeout
	case "on-abort":
		return res == resSignal || res == resCoreDump
	}
	return false
}

// commandResult judges a command: only exit status 0 is success.
func commandResult(st exitStatus) string {
	switch {
	case !st.Known:
		return resExitCode
	case st.Code == "exited" && st.Status == 0:
		return resSuccess
	case st.Code == "exited":
		return resExitCode
	case st.Code == "dumped":
		return resCoreDump
	}
	return resSignal
}

// daemonResult judges a main process: as systemd, death by SIGHUP,
// SIGINT, SIGTERM or SIGPIPE is a clean exit for a daemon. An adopted
// process's status may be unknown; that counts as a failure, so that
// Restart=on-failure brings the service back.
func daemonResult(st exitStatus) string {
	if st.Known && st.Code == "killed" {
		switch syscall.Signal(st.Status) {
		case syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGPIPE:
			return resSuccess
		}
	}
	return commandResult(st)
}

// cycle is one start attempt, through to the end of the processes it
// started. adopted skips the start: the main process is already running.
func (a *activation) cycle(adopted bool) string {
	cycleDone := make(chan struct{})
	defer close(cycleDone)
	if !adopted {
		a.starts = append(a.starts, time.Now())
		a.update(func(u *unitRun) {
			u.state = driver.State{Active: activating, Sub: subStartPre}
			u.adopted = false // the processes from now on are this driver's
		})
		// Processes an earlier clusterd left behind mid-start go first.
		if res := a.killGroups(); res == resDetached {
			return res
		}
		if !a.waitDeps() {
			if a.detached() {
				return resDetached
			}
			return resSuccess
		}
	}
	a.watchBinds(cycleDone)
	if adopted {
		return a.runningPhase(a.main, nil, true)
	}

	var deadline <-chan time.Time
	if t := a.spec.startTimeout; t > 0 {
		timer := time.NewTimer(t)
		defer timer.Stop()
		deadline = timer.C
	}
	a.note("Starting %s", a.describe())
	for _, c := range a.spec.pre {
		if res, ok := a.startCommand(c, deadline, false); !ok {
			return a.down(res)
		}
	}
	if a.spec.oneshot {
		a.set(activating, subStart)
		for _, c := range a.spec.start {
			if res, ok := a.startCommand(c, deadline, true); !ok {
				return a.down(res)
			}
		}
		if res, ok := a.startPost(deadline); !ok {
			return a.down(res)
		}
		if a.spec.remain {
			return a.remainExited()
		}
		a.update(func(u *unitRun) { a.started = true })
		a.note("Finished %s", a.describe())
		return a.down(resSuccess)
	}

	main, res := a.spawnMain()
	if main == nil {
		return a.down(res)
	}
	return a.runningPhase(main, deadline, false)
}

// runningPhase runs ExecStartPost= (if any) and then waits for the main
// process of a simple service to exit or for a stop.
func (a *activation) runningPhase(main *proc, deadline <-chan time.Time, adopted bool) string {
	if !a.isStarted() {
		if res, ok := a.startPost(deadline); !ok {
			return a.down(res)
		}
	}
	a.update(func(u *unitRun) {
		a.started = true
		u.mainPID = main.pid
		u.state = driver.State{Active: active, Sub: subRunning}
	})
	if !adopted {
		a.note("Started %s", a.describe())
	}
	var res string
	select {
	case <-main.exited:
		res = daemonResult(main.status)
		a.update(func(u *unitRun) { u.exit, u.mainPID = main.status, 0 })
		a.note("Main process exited, %s", main.status)
	case <-a.stopCh:
		res = resSuccess
	case <-a.d.detach:
		return resDetached
	}
	return a.down(res)
}

// remainExited holds a oneshot with RemainAfterExit=yes active until it is
// stopped.
func (a *activation) remainExited() string {
	a.update(func(u *unitRun) {
		a.started = true
		u.state = driver.State{Active: active, Sub: subExited}
	})
	select {
	case <-a.stopCh:
		return a.down(resSuccess)
	case <-a.d.detach:
		return resDetached
	}
}

func (a *activation) describe() string {
	if a.spec.description != "" {
		return a.spec.description
	}
	return a.u.name
}

func (a *activation) isStarted() bool {
	a.d.mu.Lock()
	defer a.d.mu.Unlock()
	return a.started
}

// startPost runs ExecStartPost=, as activating/start-post.
func (a *activation) startPost(deadline <-chan time.Time) (string, bool) {
	if len(a.spec.post) == 0 {
		return "", true
	}
	a.set(activating, subStartPost)
	for _, c := range a.spec.post {
		if res, ok := a.startCommand(c, deadline, false); !ok {
			return res, false
		}
	}
	return "", true
}

// spawnMain starts the main process of a simple service.
func (a *activation) spawnMain() (*proc, string) {
	c := a.spec.start[0]
	env, vars, err := a.environment(c, nil)
	if err != nil {
		a.note("Failed to set up the environment: %v", err)
		return nil, resResources
	}
	p, err := a.spawn(c, env, vars)
	if err != nil {
		a.note("Failed to execute %s: %v", c.raw, err)
		return nil, resExitCode
	}
	a.update(func(u *unitRun) {
		a.groups[p.pid] = p
		a.main = p
		u.mainPID = p.pid
	})
	return p, ""
}

// outcome is how waiting for a command ended.
type outcome int

const (
	ocExited    outcome = iota // the command exited; see its status
	ocStopped                  // a stop was requested
	ocTimeout                  // the deadline passed
	ocDetached                 // the driver was detached
	ocResources                // the environment could not be set up
	ocSpawn                    // the command could not be executed
)

// startCommand runs one command of the start phase and judges it; ok is
// false when the start must be abandoned with res.
func (a *activation) startCommand(c command, deadline <-chan time.Time, isMain bool) (res string, ok bool) {
	st, oc := a.runCommand(c, nil, deadline, true, isMain)
	switch oc {
	case ocExited:
		if r := commandResult(st); r != resSuccess {
			if c.ignore {
				a.note("Command %s failed (%s); ignored because of the '-' prefix", c.raw, st)
				return "", true
			}
			a.note("Command %s failed, %s", c.raw, st)
			a.update(func(u *unitRun) { u.exit = st })
			return r, false
		}
		return "", true
	case ocStopped:
		return resSuccess, false
	case ocTimeout:
		a.note("Start operation timed out (TimeoutStartSec=%v)", a.spec.startTimeout)
		return resTimeout, false
	case ocDetached:
		return resDetached, false
	case ocResources:
		return resResources, false
	default: // ocSpawn
		if c.ignore {
			return "", true
		}
		return resExitCode, false
	}
}

// runCommand runs c and waits for it. extra adds variables to its
// environment. A stop interrupts the wait only if interruptible (commands
// of the start phase); the command is then left to the stop's signals.
func (a *activation) runCommand(c command, extra map[string]string, deadline <-chan time.Time, interruptible, isMain bool) (exitStatus, outcome) {
	env, vars, err := a.environment(c, extra)
	if err != nil {
		a.note("Failed to set up the environment: %v", err)
		return exitStatus{}, ocResources
	}
	p, err := a.spawn(c, env, vars)
	if err != nil {
		a.note("Failed to execute %s: %v", c.raw, err)
		return exitStatus{}, ocSpawn
	}
	a.update(func(u *unitRun) {
		a.groups[p.pid] = p
		if isMain {
			u.mainPID = p.pid
		}
	})
	var stop <-chan struct{}
	if interruptible {
		stop = a.stopCh
	}
	select {
	case <-p.exited:
		a.dropIfEmpty(p)
		if isMain {
			a.update(func(u *unitRun) { u.mainPID = 0 })
		}
		return p.status, ocExited
	case <-stop:
		return exitStatus{}, ocStopped
	case <-deadline:
		return exitStatus{}, ocTimeout
	case <-a.d.detach:
		return exitStatus{}, ocDetached
	}
}

// dropIfEmpty forgets p's group once nothing is left in it. A command that
// leaves a background process behind keeps its group on the list, so that
// the stop reaches that process, as systemd's control group would.
func (a *activation) dropIfEmpty(p *proc) {
	if liveMembers([]*proc{p})[p.pid] > 0 {
		return
	}
	a.update(func(u *unitRun) {
		delete(a.groups, p.pid)
		if a.main == p {
			a.main = nil
		}
	})
}

// down takes the unit down after a run, whatever ended it: ExecStop= (if
// it had started), the kill of every remaining process (KillSignal=, then
// SIGKILL after TimeoutStopSec=), then ExecStopPost=. It returns the run's
// result, made worse if stopping failed.
func (a *activation) down(res string) string {
	if res == resDetached {
		return res
	}
	a.d.mu.Lock()
	started, main, why := a.started, a.main, a.stopReason
	a.d.mu.Unlock()
	if why != "" && res == resSuccess {
		a.note("Stopping %s: %s", a.describe(), why)
	}
	extra := map[string]string{"SERVICE_RESULT": res}
	if main != nil {
		if main.hasExited() {
			if main.status.Known {
				extra["EXIT_CODE"], extra["EXIT_STATUS"] = main.status.Code, main.status.statusValue()
			}
		} else {
			extra["MAINPID"] = strconv.Itoa(main.pid)
		}
	}
	if started {
		if len(a.spec.stop) > 0 {
			a.set(deactivating, subStop)
		}
		for _, c := range a.spec.stop {
			r := a.stopCommand(c, extra)
			if r == resDetached {
				return r
			}
			if r != resSuccess {
				if res == resSuccess {
					res = r
				}
				break // systemd skips the rest and goes on to the signals
			}
		}
	}
	switch r := a.killGroups(); r {
	case resDetached:
		return r
	case resTimeout:
		if res == resSuccess {
			res = r
		}
	}
	if main != nil && main.hasExited() && main.status.Known {
		extra["EXIT_CODE"], extra["EXIT_STATUS"] = main.status.Code, main.status.statusValue()
		delete(extra, "MAINPID")
	}
	extra["SERVICE_RESULT"] = res
	if len(a.spec.stopPost) > 0 {
		a.set(deactivating, subStopPost)
		for _, c := range a.spec.stopPost {
			r := a.stopCommand(c, extra)
			if r == resDetached {
				return r
			}
			if r != resSuccess && res == resSuccess {
				res = r
			}
		}
		// What ExecStopPost= left behind goes too.
		if r := a.killGroups(); r == resDetached {
			return r
		}
	}
	a.update(func(u *unitRun) {
		a.started, a.main = false, nil
		u.mainPID = 0
	})
	return res
}

// stopCommand runs one ExecStop= or ExecStopPost= command, each within
// TimeoutStopSec=, and judges it.
func (a *activation) stopCommand(c command, extra map[string]string) string {
	var deadline <-chan time.Time
	if t := a.spec.stopTimeout; t > 0 {
		timer := time.NewTimer(t)
		defer timer.Stop()
		deadline = timer.C
	}
	st, oc := a.runCommand(c, extra, deadline, false, false)
	switch oc {
	case ocDetached:
		return resDetached
	case ocTimeout:
		a.note("Command %s timed out (TimeoutStopSec=%v)", c.raw, a.spec.stopTimeout)
		return resTimeout
	case ocResources:
		return resResources
	case ocSpawn:
		if c.ignore {
			return resSuccess
		}
		return resExitCode
	}
	if r := commandResult(st); r != resSuccess && !c.ignore {
		a.note("Command %s failed, %s", c.raw, st)
		return r
	}
	return resSuccess
}

// killGroups ends every process the unit still has: KillSignal= (and
// SIGCONT, so that stopped processes see it) to each process group, then,
// if they are not all gone within TimeoutStopSec=, SIGKILL. It returns
// resTimeout if SIGKILL was needed.
func (a *activation) killGroups() string {
	a.d.mu.Lock()
	groups := slices.Collect(maps.Values(a.groups))
	a.d.mu.Unlock()
	counts := liveMembers(groups)
	groups = slices.DeleteFunc(groups, func(g *proc) bool { return counts[g.pid] == 0 })
	if len(groups) == 0 {
		a.forgetGroups()
		return ""
	}
	a.set(deactivating, subStopSigterm)
	for _, g := range groups {
		g.signal(a.spec.killSignal)
		g.signal(syscall.SIGCONT)
	}
	res := ""
	switch a.awaitGone(groups, a.spec.stopTimeout) {
	case resDetached:
		return resDetached
	case resTimeout:
		a.note("Processes did not exit within TimeoutStopSec=%v of %s; killing them", a.spec.stopTimeout, signalName(a.spec.killSignal))
		a.set(deactivating, subStopSigkill)
		for _, g := range groups {
			g.signal(syscall.SIGKILL)
		}
		// SIGKILL cannot be caught, but a process in uninterruptible sleep
		// takes its time to die; systemd gives up after one more timeout.
		switch a.awaitGone(groups, a.spec.stopTimeout) {
		case resDetached:
			return resDetached
		case resTimeout:
			a.note("Processes still around after SIGKILL; ignoring them")
		}
		res = resTimeout
	}
	a.forgetGroups()
	return res
}

// forgetGroups drops every process group: they are empty, or as empty as
// SIGKILL could make them.
func (a *activation) forgetGroups() {
	a.update(func(u *unitRun) { clear(a.groups) })
}

// awaitGone waits up to timeout (0: for ever) for every process of groups
// to be gone. The leaders' exits are events (pidfds); whether anything is
// left in a group after its leader has no event short of cgroups, so that
// is polled, quickly at first and then every 100ms.
func (a *activation) awaitGone(groups []*proc, timeout time.Duration) string {
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	for _, g := range groups {
		select {
		case <-g.exited:
		case <-deadline:
			return resTimeout
		case <-a.d.detach:
			return resDetached
		}
	}
	wait := time.Millisecond
	for {
		left := 0
		for _, n := range liveMembers(groups) {
			left += n
		}
		if left == 0 {
			return ""
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-deadline:
			t.Stop()
			return resTimeout
		case <-a.d.detach:
			t.Stop()
			return resDetached
		}
		wait = min(2*wait, 100*time.Millisecond)
	}
}

// waitDeps waits until nothing blocks the start (Requires=, BindsTo=,
// After=). It returns false if a stop came first or the driver was detached.
func (a *activation) waitDeps() bool {
	d := a.d
	noted := ""
	for {
		d.mu.Lock()
		b := d.blockersLocked(a)
		wasWaiting := a.u.inWait
		a.u.inWait, a.u.waiting = len(b) > 0, b
		if wasWaiting != a.u.inWait {
			// Others break ordering cycles by looking at who waits.
			d.notifyLocked(a.u.name)
		}
		ch := d.changed
		d.mu.Unlock()
		if len(b) == 0 {
			return true
		}
		if msg := strings.Join(b, " "); msg != noted {
			a.note("Waiting for %s", msg)
			noted = msg
		}
		select {
		case <-ch:
		case <-a.stopCh:
			return false
		case <-d.detach:
			return false
		}
	}
}

// watchBinds stops the unit when a BindsTo= target stops or fails, until
// done is closed.
func (a *activation) watchBinds(done <-chan struct{}) {
	if !slices.ContainsFunc(a.spec.bindsTo, isService) {
		return
	}
	d := a.d
	go func() {
		for {
			d.mu.Lock()
			t := d.bindBrokenLocked(a.spec)
			if t != "" {
				a.requestStopLocked(fmt.Sprintf("%s, to which it is bound (BindsTo=), stopped", t), false)
			}
			ch := d.changed
			d.mu.Unlock()
			if t != "" {
				return
			}
			select {
			case <-ch:
			case <-done:
				return
			case <-d.detach:
				return
			}
		}
	}()
}

// environment builds a command's environment as systemd does: a clean
// one, not clusterd's, with PATH; HOME, USER and LOGNAME for User=;
// Environment=; then EnvironmentFile= (read now, so that an ExecStartPre=
// can write it for ExecStart=); then extra. It returns it as a list for
// exec and as a map for expansion.
func (a *activation) environment(c command, extra map[string]string) ([]string, map[string]string, error) {
	vars := map[string]string{"PATH": defaultPath}
	for k, v := range a.d.Env {
		vars[k] = v
	}
	if id, err := a.identity(c); err != nil {
		return nil, nil, err
	} else if id.name != "" {
		vars["HOME"], vars["USER"], vars["LOGNAME"] = id.home, id.name, id.name
	}
	for _, kv := range a.spec.env {
		vars[kv[0]] = kv[1]
	}
	for _, ef := range a.spec.envFiles {
		paths := []string{ef.path}
		if strings.ContainsAny(ef.path, "*?[") {
			paths, _ = filepath.Glob(ef.path)
		}
		if len(paths) == 0 && !ef.optional {
			return nil, nil, fmt.Errorf("EnvironmentFile=%s: no such file", ef.path)
		}
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if errors.Is(err, fs.ErrNotExist) && ef.optional {
				continue
			}
			if err != nil {
				return nil, nil, fmt.Errorf("EnvironmentFile=%s: %w", ef.path, err)
			}
			kvs, err := parseEnvFile(string(b))
			if err != nil {
				// systemd skips what it cannot read, and so do we, but says so.
				a.note("EnvironmentFile=%s: %v", p, err)
			}
			for _, kv := range kvs {
				vars[kv[0]] = kv[1]
			}
		}
	}
	maps.Copy(vars, extra)
	env := make([]string, 0, len(vars))
	for _, k := range slices.Sorted(maps.Keys(vars)) {
		env = append(env, k+"="+vars[k])
	}
	return env, vars, nil
}

// ident is whom a command runs as.
type ident struct {
	name string // "" when User= is not set: the driver's own user
	home string
	cred *syscall.Credential
}

// identity resolves User= and Group= (names or numbers) for c, at each
// command, so that a user created by an ExecStartPre= can be used after it.
func (a *activation) identity(c command) (ident, error) {
	s := a.spec
	if c.root || s.user == "" && s.group == "" {
		home := "/"
		if cu, err := user.Current(); err == nil {
			home = cu.HomeDir
		}
		return ident{home: home}, nil
	}
	id := ident{cred: &syscall.Credential{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}}
	if s.user != "" {
		u, err := user.Lookup(s.user)
		if err != nil {
			if _, nerr := strconv.Atoi(s.user); nerr == nil {
				u, err = user.LookupId(s.user)
			}
		}
		if err != nil {
			return ident{}, fmt.Errorf("User=%s: %w", s.user, err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		id.name, id.home = u.Username, u.HomeDir
		id.cred.Uid, id.cred.Gid = uint32(uid), uint32(gid)
		if gids, err := u.GroupIds(); err == nil {
			for _, g := range gids {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					id.cred.Groups = append(id.cred.Groups, uint32(n))
				}
			}
		}
	}
	if s.group != "" {
		g, err := user.LookupGroup(s.group)
		if err != nil {
			if _, nerr := strconv.Atoi(s.group); nerr == nil {
				g, err = user.LookupGroupId(s.group)
			}
		}
		if err != nil {
			return ident{}, fmt.Errorf("Group=%s: %w", s.group, err)
		}
		gid, _ := strconv.ParseUint(g.Gid, 10, 32)
		id.cred.Gid = uint32(gid)
	}
	if os.Getuid() != 0 {
		// Only root may set supplementary groups; anyone may keep theirs.
		id.cred.Groups, id.cred.NoSetGroups = nil, true
	}
	return id, nil
}

// spawn starts c in a session and process group of its own, with the
// unit's output, working directory and identity.
func (a *activation) spawn(c command, env []string, vars map[string]string) (*proc, error) {
	argv := slices.Clone(c.argv)
	if !c.noEnv {
		argv = append(argv[:1:1], expandArgs(argv[1:], vars)...)
	}
	path := c.path
	if !strings.Contains(path, "/") {
		var err error
		if path, err = lookPath(path, vars["PATH"]); err != nil {
			return nil, err
		}
	}
	id, err := a.identity(c)
	if err != nil {
		return nil, err
	}
	dir := "/"
	if wd := a.spec.workDir; wd.path != "" {
		dir = wd.path
		if dir == "~" {
			dir = id.home
		}
		if wd.optional {
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				dir = "/"
			}
		}
	}
	if a.out == nil {
		if a.out, err = startLogger(a.d.journalPath(a.u.name)); err != nil {
			return nil, fmt.Errorf("starting the journal logger: %w", err)
		}
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   argv,
		Env:    env,
		Dir:    dir,
		Stdout: a.out.w,
		Stderr: a.out.w,
		// Setsid makes the command the leader of a new session and process
		// group: the unit can be killed as a group, and it does not share
		// clusterd's, so it survives clusterd's exit and its terminal.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Credential: id.cred},
	}
	return startProc(cmd)
}

// lookPath finds a command in the unit's PATH, not clusterd's.
func lookPath(name, path string) (string, error) {
	for _, dir := range filepath.SplitList(path) {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH=%s", name, path)
}
