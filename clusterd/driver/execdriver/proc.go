package execdriver

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// A proc is one process the driver started or adopted, and the process
// group it leads. Every command runs in a new session (setsid), so its pid
// is also its process group id and session id; signalling -pid reaches the
// command and everything it forked that did not leave the group.
//
// A pid alone does not name a process: the kernel recycles pids. A proc is
// therefore identified by pid and start time (field 22 of /proc/<pid>/stat),
// which is what the run-state file records, and its exit is learnt from a
// pidfd, which refers to exactly one process and, unlike wait(2), works for
// processes that are not our children (units adopted after a restart).
type proc struct {
	pid   int
	start uint64    // start time in clock ticks since boot
	cmd   *exec.Cmd // nil for an adopted process, which we cannot wait(2) for

	exited chan struct{} // closed once the leader has exited (and, for a child, been reaped)
	status exitStatus    // valid once exited is closed

	mu    sync.Mutex
	pidfd *os.File // nil once the leader has exited
}

// exitStatus is how a process ended, in systemd's terms.
type exitStatus struct {
	Known  bool   `json:"known"`
	Code   string `json:"code,omitempty"`   // "exited", "killed" or "dumped", as systemd's $EXIT_CODE
	Status int    `json:"status,omitempty"` // exit status, or signal number when killed or dumped
}

// String renders the status as systemd logs it: "code=exited, status=1".
func (s exitStatus) String() string {
	if !s.Known {
		return "code=unknown (the process was adopted; its exit status cannot be read)"
	}
	if s.Code == "exited" {
		return fmt.Sprintf("code=exited, status=%d", s.Status)
	}
	return fmt.Sprintf("code=%s, status=%d/%s", s.Code, s.Status, signalName(syscall.Signal(s.Status)))
}

// statusValue is $EXIT_STATUS for ExecStop= and ExecStopPost=: a number, or
// a signal name.
func (s exitStatus) statusValue() string {
	switch {
	case !s.Known:
		return ""
	case s.Code == "exited":
		return strconv.Itoa(s.Status)
	default:
		return strings.TrimPrefix(signalName(syscall.Signal(s.Status)), "SIG")
	}
}

// fromWaitStatus converts a wait(2) status.
func fromWaitStatus(ws syscall.WaitStatus) exitStatus {
	switch {
	case ws.Exited():
		return exitStatus{Known: true, Code: "exited", Status: ws.ExitStatus()}
	case ws.Signaled() && ws.CoreDump():
		return exitStatus{Known: true, Code: "dumped", Status: int(ws.Signal())}
	case ws.Signaled():
		return exitStatus{Known: true, Code: "killed", Status: int(ws.Signal())}
	}
	return exitStatus{}
}

// startProc starts c, which must have SysProcAttr.Setsid set, and begins
// watching it.
func startProc(c *exec.Cmd) (*proc, error) {
	if err := c.Start(); err != nil {
		return nil, err
	}
	p := &proc{pid: c.Process.Pid, cmd: c, exited: make(chan struct{})}
	// The child is not reaped before we Wait, so its pid cannot be
	// recycled yet: reading its start time and opening a pidfd now is safe.
	if st, err := readStat(p.pid); err == nil {
		p.start = st.start
	}
	if f, err := openPidfd(p.pid); err == nil {
		p.pidfd = f
	}
	go p.watch()
	return p, nil
}

// adoptProc takes over a process that an earlier driver started. It
// returns a proc whose exited channel is already closed when the process
// is gone or the pid now belongs to another process (start time differs).
func adoptProc(pid int, start uint64) *proc {
	p := &proc{pid: pid, start: start, exited: make(chan struct{})}
	f, err := openPidfd(pid)
	if err != nil {
		close(p.exited) // no such process
		return p
	}
	// The pidfd is opened first and the start time checked second: if the
	// pid was recycled in between, the start time read afterwards differs.
	st, err := readStat(pid)
	if err != nil || st.start != start || st.state == 'Z' || st.state == 'X' {
		f.Close()
		if err == nil && st.start == start && st.state == 'Z' {
			p.status = st.exitStatus()
		}
		close(p.exited)
		return p
	}
	p.pidfd = f
	go p.watch()
	return p
}

// watch waits for the leader to exit and records how it ended.
func (p *proc) watch() {
	p.mu.Lock()
	f := p.pidfd
	p.mu.Unlock()
	if f != nil {
		waitPidfd(f)
	}
	if p.cmd != nil {
		// Our child: reap it, which also gives the exit status.
		p.cmd.Wait()
		if ps := p.cmd.ProcessState; ps != nil {
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
				p.status = fromWaitStatus(ws)
			}
		}
	} else if st, err := readStat(p.pid); err == nil && st.start == p.start && st.state == 'Z' {
		// Not our child, so wait(2) cannot tell us how it ended; but its
		// parent (init, usually) may not have reaped it yet, and a zombie's
		// stat still carries its exit code.
		p.status = st.exitStatus()
	}
	p.mu.Lock()
	if p.pidfd != nil {
		p.pidfd.Close()
		p.pidfd = nil
	}
	p.mu.Unlock()
	close(p.exited)
}

// hasExited reports whether the leader has exited.
func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// signal sends sig to the leader and to its process group.
//
// The leader is signalled through its pidfd, which cannot reach a recycled
// pid. The group is signalled with kill(-pgid) only while the group still
// is ours: either the leader is alive (same start time), or no process has
// the group's number as its pid, in which case any process left in the
// group is one of ours, because the kernel does not hand out a number that
// is still some live process's process group id.
func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	if p.pidfd != nil {
		unix.PidfdSendSignal(int(p.pidfd.Fd()), sig, nil, 0)
	} else if p.cmd != nil && !p.hasExited() {
		p.cmd.Process.Signal(sig)
	}
	p.mu.Unlock()
	if st, err := readStat(p.pid); err == nil && st.start != p.start {
		return // the number was recycled: not our group any more
	}
	syscall.Kill(-p.pid, sig)
}

// liveMembers counts, for every group in groups, the live processes in it,
// its leader included while it has not exited. Zombies are dead for this
// purpose: they hold no resources and ignore signals, and in a container
// whose init does not reap them they would otherwise keep a unit stopping
// for ever.
func liveMembers(groups []*proc) map[int]int {
	counts := make(map[int]int, len(groups))
	byPgid := make(map[int]*proc, len(groups))
	for _, g := range groups {
		byPgid[g.pid] = g
		if !g.hasExited() {
			// The leader may have moved to another group (a daemon that
			// calls setsid), so it is counted by itself.
			counts[g.pid]++
		}
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return counts
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		g := byPgid[pid]
		if g != nil && !g.hasExited() {
			continue // counted above
		}
		st, err := readStat(pid)
		if err != nil || st.state == 'Z' || st.state == 'X' {
			continue
		}
		g = byPgid[st.pgrp]
		if g == nil {
			continue
		}
		if pid == g.pid && st.start != g.start {
			continue // a recycled pid leading a group that is not ours
		}
		counts[g.pid]++
	}
	return counts
}

// procStat is the part of /proc/<pid>/stat the driver needs.
type procStat struct {
	state    byte
	pgrp     int
	start    uint64
	exitCode int // field 52 (Linux ≥ 3.5), a wait(2) status; meaningful for zombies
	hasExit  bool
}

func (s procStat) exitStatus() exitStatus {
	if !s.hasExit {
		return exitStatus{}
	}
	return fromWaitStatus(syscall.WaitStatus(s.exitCode))
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseStat(b)
}

// parseStat reads /proc/<pid>/stat. The command name (field 2) is in
// parentheses and may itself contain spaces and parentheses, so fields are
// counted from the last ')'.
func parseStat(b []byte) (procStat, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state), so field n is f[n-3].
	if len(f) < 20 || len(f[0]) != 1 {
		return procStat{}, errors.New("malformed /proc stat")
	}
	var s procStat
	s.state = f[0][0]
	var err error
	if s.pgrp, err = strconv.Atoi(f[2]); err != nil {
		return procStat{}, fmt.Errorf("malformed /proc stat: pgrp: %w", err)
	}
	if s.start, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("malformed /proc stat: starttime: %w", err)
	}
	if len(f) >= 50 {
		if c, err := strconv.Atoi(f[49]); err == nil {
			s.exitCode, s.hasExit = c, true
		}
	}
	return s, nil
}

// openPidfd opens a pidfd for pid, non-blocking so that it can be waited
// for in Go's netpoller rather than in a thread of its own.
func openPidfd(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "pidfd"), nil
}

// waitPidfd blocks until the process behind f exits: a pidfd becomes
// readable when its process terminates, whether or not it has been reaped.
func waitPidfd(f *os.File) {
	ready := func(fd uintptr, timeout int) bool {
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, timeout)
			if err == unix.EINTR {
				continue
			}
			return err != nil || n > 0
		}
	}
	if rc, err := f.SyscallConn(); err == nil {
		if rc.Read(func(fd uintptr) bool { return ready(fd, 0) }) == nil {
			return
		}
	}
	// The netpoller refused the descriptor: block a thread instead.
	ready(f.Fd(), -1)
}

// pidfdSupported reports whether the kernel has pidfd_open (Linux ≥ 5.3),
// without which adopted processes could not be watched.
func pidfdSupported() error {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		return fmt.Errorf("pidfd_open: %w (the exec driver needs Linux 5.3 or later)", err)
	}
	unix.Close(fd)
	return nil
}

// bootID identifies this boot of the kernel: start times are only
// comparable within one boot.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// signals maps names to numbers for KillSignal= and for messages.
var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGILL": syscall.SIGILL, "SIGTRAP": syscall.SIGTRAP, "SIGABRT": syscall.SIGABRT,
	"SIGBUS": syscall.SIGBUS, "SIGFPE": syscall.SIGFPE, "SIGKILL": syscall.SIGKILL,
	"SIGUSR1": syscall.SIGUSR1, "SIGSEGV": syscall.SIGSEGV, "SIGUSR2": syscall.SIGUSR2,
	"SIGPIPE": syscall.SIGPIPE, "SIGALRM": syscall.SIGALRM, "SIGTERM": syscall.SIGTERM,
	"SIGCHLD": syscall.SIGCHLD, "SIGCONT": syscall.SIGCONT, "SIGSTOP": syscall.SIGSTOP,
	"SIGTSTP": syscall.SIGTSTP, "SIGTTIN": syscall.SIGTTIN, "SIGTTOU": syscall.SIGTTOU,
	"SIGURG": syscall.SIGURG, "SIGXCPU": syscall.SIGXCPU, "SIGXFSZ": syscall.SIGXFSZ,
	"SIGVTALRM": syscall.SIGVTALRM, "SIGPROF": syscall.SIGPROF, "SIGWINCH": syscall.SIGWINCH,
	"SIGIO": syscall.SIGIO, "SIGPWR": syscall.SIGPWR, "SIGSYS": syscall.SIGSYS,
}

func signalName(s syscall.Signal) string {
	for name, n := range signals {
		if n == s {
			return name
		}
	}
	return strconv.Itoa(int(s))
}

// parseSignal reads "SIGTERM", "TERM" or "15".
func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig, ok := signals[name]; ok {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}
