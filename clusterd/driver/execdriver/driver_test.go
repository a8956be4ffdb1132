package execdriver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/unit"
)

// failAfter bounds every wait in these tests. It is a guard that turns a
// hang into a failure, never a way to let something happen: the tests wait
// for events (state changes, lines in a FIFO or a journal).
const failAfter = 60 * time.Second

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		os.Exit(clusterdHelper(dir))
	}
	// Loggers are this binary; built with -race, it would otherwise wait a
	// second at exit for late race reports.
	if _, ok := os.LookupEnv("GORACE"); !ok {
		os.Setenv("GORACE", "atexit_sleep_ms=0")
	}
	os.Exit(m.Run())
}

// harness is one driver in a temporary directory.
type harness struct {
	t   *testing.T
	d   *Driver
	dir string // scratch space for the units' files
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	return openHarness(t, dir)
}

// openHarness opens a driver on dir/units.
func openHarness(t *testing.T, dir string) *harness {
	t.Helper()
	d, err := New(filepath.Join(dir, "units"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &harness{t: t, d: d, dir: dir}
}

// testLogger logs to the test's log, and not after the test ended.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop) // runs after the driver's Close: cleanups run last-in first-out
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	mu      sync.Mutex
	t       *testing.T
	stopped bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.t.Log(strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
}

func parseUnit(t *testing.T, name, src string) *unit.File {
	t.Helper()
	f, err := unit.Parse(name, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (h *harness) start(name, src string) *unit.File {
	h.t.Helper()
	f := parseUnit(h.t, name, src)
	if err := h.d.Start(context.Background(), name, f); err != nil {
		h.t.Fatalf("Start %s: %v", name, err)
	}
	return f
}

func (h *harness) stop(name string) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), failAfter)
	defer cancel()
	if err := h.d.Stop(ctx, name); err != nil {
		h.t.Fatalf("Stop %s: %v", name, err)
	}
}

// await waits, on the driver's change notifications, until cond holds for
// the unit's status.
func (h *harness) await(name, what string, cond func(Status) bool) Status {
	h.t.Helper()
	guard := time.NewTimer(failAfter)
	defer guard.Stop()
	for {
		st, ok := h.d.Status(name)
		if ok && cond(st) {
			return st
		}
		select {
		case <-h.d.Changes():
		case <-guard.C:
			h.t.Fatalf("%s never became %s; it is %+v", name, what, st)
		}
	}
}

func is(act, sub string) func(Status) bool {
	return func(st Status) bool { return st.State == driver.State{Active: act, Sub: sub} }
}

func (h *harness) awaitState(name, act, sub string) Status {
	h.t.Helper()
	return h.await(name, act+"/"+sub, is(act, sub))
}

// awaitEnd waits for a run to end: the state, with a result set (a unit
// that has not run yet is inactive/dead too, with no result).
func (h *harness) awaitEnd(name, act, sub, result string) Status {
	h.t.Helper()
	return h.await(name, fmt.Sprintf("%s/%s with result %s", act, sub, result), func(st Status) bool {
		return is(act, sub)(st) && st.Result == result
	})
}

// fifo is a named pipe between the test and its units. The test holds it
// open for reading and writing, so that neither side's open blocks and the
// test's reads never see end-of-file; reads have a deadline.
type fifo struct {
	t    *testing.T
	path string
	f    *os.File
	r    *bufio.Reader
}

func (h *harness) fifo(name string) *fifo {
	h.t.Helper()
	path := filepath.Join(h.dir, name)
	if err := syscall.Mkfifo(path, 0o666); err != nil {
		h.t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { f.Close() })
	return &fifo{t: h.t, path: path, f: f, r: bufio.NewReader(f)}
}

// line reads the next line a unit wrote.
func (p *fifo) line() string {
	p.t.Helper()
	p.f.SetReadDeadline(time.Now().Add(failAfter))
	l, err := p.r.ReadString('\n')
	if err != nil {
		p.t.Fatalf("reading %s: %v", p.path, err)
	}
	return strings.TrimSuffix(l, "\n")
}

// send gives a unit a line to read.
func (p *fifo) send(l string) {
	p.t.Helper()
	if _, err := p.f.WriteString(l + "\n"); err != nil {
		p.t.Fatal(err)
	}
}

// awaitJournal follows the unit's journal from its beginning until lines
// containing each of want, in order, have been seen; it returns what it
// read.
func (h *harness) awaitJournal(name string, want ...string) string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), failAfter)
	defer cancel()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := h.d.Journal(ctx, name, -1, true, pw)
		pw.Close()
		errc <- err
	}()
	var seen strings.Builder
	sc := bufio.NewScanner(pr)
	for len(want) > 0 && sc.Scan() {
		seen.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), want[0]) {
			want = want[1:]
		}
	}
	cancel()
	go io.Copy(io.Discard, pr) // let Journal finish its last write
	if err := <-errc; err != nil {
		h.t.Fatalf("Journal %s: %v", name, err)
	}
	if len(want) > 0 {
		h.t.Fatalf("journal of %s never showed %q; it has:\n%s", name, want, seen.String())
	}
	return seen.String()
}

// identity of a process across pid reuse.
type procID struct {
	pid   int
	start uint64
}

func (h *harness) procOf(pid int) procID {
	h.t.Helper()
	st, err := readStat(pid)
	if err != nil {
		h.t.Fatalf("process %d: %v", pid, err)
	}
	return procID{pid, st.start}
}

// gone reports whether the process has ended. A zombie has: in a container
// whose init does not reap orphans, that is all that remains of it.
func gone(p procID) bool {
	st, err := readStat(p.pid)
	return err != nil || st.start != p.start || st.state == 'Z' || st.state == 'X'
}

func (h *harness) assertGone(what string, p procID) {
	h.t.Helper()
	if !gone(p) {
		h.t.Errorf("%s (pid %d) still runs", what, p.pid)
	}
}

func (h *harness) read(name string) string {
	h.t.Helper()
	b, err := os.ReadFile(filepath.Join(h.dir, name))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

func TestSimpleUnitRunsAndStopKillsItsGroup(t *testing.T) {
	h := newHarness(t)
	report := h.fifo("report")
	h.start("web.service", fmt.Sprintf(`[Service]
ExecStart=/bin/sh -c 'sleep 1000 & echo $! > %s; wait'
`, report.path))
	st := h.awaitState("web.service", active, subRunning)
	if st.MainPID <= 0 {
		t.Fatalf("MainPID = %d", st.MainPID)
	}
	main := h.procOf(st.MainPID)
	childPID, _ := strconv.Atoi(report.line())
	child := h.procOf(childPID)
	if cs, _ := readStat(childPID); cs.pgrp != st.MainPID {
		t.Errorf("the child is in group %d, want the unit's own group %d", cs.pgrp, st.MainPID)
	}
	if st.MainPID == os.Getpid() || main.pid == syscall.Getpgrp() {
		t.Fatal("the unit shares the driver's process group")
	}
	if got := h.d.States()["web.service"]; got != (driver.State{Active: active, Sub: subRunning}) {
		t.Errorf("States() = %+v", got)
	}

	h.stop("web.service")
	h.assertGone("main process", main)
	h.assertGone("child of the main process", child)
	if _, ok := h.d.States()["web.service"]; ok {
		t.Error("a stopped unit is still known; Stop should forget it")
	}
	// Stopping an unknown unit is a no-op.
	h.stop("web.service")
}

func TestExecStartPreFailureFailsTheUnit(t *testing.T) {
	h := newHarness(t)
	h.start("pre.service", fmt.Sprintf(`[Service]
ExecStartPre=/bin/sh -c 'exit 4'
ExecStart=/bin/sh -c 'touch %[1]s/started; exec sleep 1000'
ExecStopPost=/bin/sh -c 'echo "result=$SERVICE_RESULT" > %[1]s/stoppost'
`, h.dir))
	st := h.awaitEnd("pre.service", failed, subFailed, resExitCode)
	if st.ExitCode != "exited" || st.ExitStatus != 4 {
		t.Errorf("exit = %s/%d, want exited/4", st.ExitCode, st.ExitStatus)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "started")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ExecStart ran after a failed ExecStartPre (stat: %v)", err)
	}
	// ExecStopPost runs after failures too.
	if got := h.read("stoppost"); got != "result=exit-code\n" {
		t.Errorf("ExecStopPost wrote %q", got)
	}
}

func TestDashPrefixIgnoresFailure(t *testing.T) {
	h := newHarness(t)
	h.start("dash.service", `[Service]
ExecStartPre=-/bin/false
ExecStartPre=-/nonexistent/binary
ExecStart=/bin/sleep 1000
`)
	h.awaitState("dash.service", active, subRunning)
}

func TestTimeoutStartSec(t *testing.T) {
	h := newHarness(t)
	h.start("slow.service", `[Service]
ExecStartPre=/bin/sleep 1000
ExecStart=/bin/sleep 1000
TimeoutStartSec=200ms
TimeoutStopSec=5s
`)
	h.awaitEnd("slow.service", failed, subFailed, resTimeout)
}

func TestOneshot(t *testing.T) {
	h := newHarness(t)
	gate := h.fifo("gate")
	out := filepath.Join(h.dir, "out")
	h.start("once.service", fmt.Sprintf(`[Service]
Type=oneshot
ExecStart=/bin/sh -c 'read l < %[1]s; echo one >> %[2]s'
ExecStart=/bin/sh -c 'echo two >> %[2]s'
ExecStop=/bin/sh -c 'echo stop >> %[2]s'
`, gate.path, out))
	// While its command runs, a oneshot is activating/start, and the
	// command is its main process.
	h.await("once.service", "activating/start with a main process", func(st Status) bool {
		return is(activating, subStart)(st) && st.MainPID > 0
	})
	gate.send("go")
	h.awaitEnd("once.service", inactive, subDead, resSuccess)
	// Both commands, in order; then, as systemd does once a oneshot has
	// run, ExecStop.
	if got := h.read("out"); got != "one\ntwo\nstop\n" {
		t.Errorf("the oneshot wrote %q", got)
	}
}

func TestOneshotRemainAfterExit(t *testing.T) {
	h := newHarness(t)
	out := filepath.Join(h.dir, "out")
	h.start("remain.service", fmt.Sprintf(`[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo start >> %[1]s'
ExecStop=/bin/sh -c 'echo stop >> %[1]s'
`, out))
	h.awaitState("remain.service", active, subExited)
	if got := h.read("out"); got != "start\n" {
		t.Errorf("before stop: %q", got)
	}
	// Starting it again while it remains is a no-op.
	h.start("remain.service", fmt.Sprintf(`[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo start >> %[1]s'
ExecStop=/bin/sh -c 'echo stop >> %[1]s'
`, out))
	h.stop("remain.service")
	if got := h.read("out"); got != "start\nstop\n" {
		t.Errorf("after stop: %q", got)
	}
}

func TestRestartOnFailure(t *testing.T) {
	h := newHarness(t)
	// Fails the first time, runs the second.
	h.start("flaky.service", fmt.Sprintf(`[Service]
ExecStart=/bin/sh -c 'if [ -e %[1]s/ran ]; then exec sleep 1000; fi; touch %[1]s/ran; exit 3'
Restart=on-failure
RestartSec=10ms
`, h.dir))
	st := h.await("flaky.service", "running after one restart", func(st Status) bool {
		return is(active, subRunning)(st) && st.Restarts == 1
	})
	if st.ExitCode != "exited" || st.ExitStatus != 3 {
		t.Errorf("the crash was recorded as %s/%d, want exited/3", st.ExitCode, st.ExitStatus)
	}
}

func TestRestartNo(t *testing.T) {
	h := newHarness(t)
	h.start("once.service", fmt.Sprintf(`[Service]
ExecStart=/bin/sh -c 'echo run >> %s/runs; exit 3'
Restart=no
`, h.dir))
	st := h.awaitEnd("once.service", failed, subFailed, resExitCode)
	if st.Restarts != 0 {
		t.Errorf("Restarts = %d", st.Restarts)
	}
	if got := h.read("runs"); got != "run\n" {
		t.Errorf("the unit ran %d times", strings.Count(got, "run"))
	}
}

func TestStartLimit(t *testing.T) {
	h := newHarness(t)
	h.start("loop.service", `[Service]
ExecStart=/bin/false
Restart=always
RestartSec=0
StartLimitBurst=3
StartLimitInterval=1h
`)
	st := h.awaitEnd("loop.service", failed, subFailed, resStartLimit)
	if st.Restarts != 2 {
		t.Errorf("Restarts = %d, want 2 (3 starts)", st.Restarts)
	}
}

func TestEnvironment(t *testing.T) {
	h := newHarness(t)
	if err := os.WriteFile(filepath.Join(h.dir, "env"), []byte("# settings\nFROMFILE=\"from file\"\nOVERRIDDEN=file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h.start("env.service", fmt.Sprintf(`[Service]
Type=oneshot
Environment="GREETING=hello world" PLAIN=p
Environment=OVERRIDDEN=unit
EnvironmentFile=%[1]s/env
EnvironmentFile=-%[1]s/missing.env
ExecStart=/bin/sh -c 'for a; do echo "[$a]"; done > %[1]s/args; echo "$GREETING|$PLAIN|$FROMFILE|$OVERRIDDEN" > %[1]s/vars' sh $GREETING ${GREETING} $$PLAIN
`, h.dir))
	h.awaitEnd("env.service", inactive, subDead, resSuccess)
	if got, want := h.read("args"), "[hello]\n[world]\n[hello world]\n[$PLAIN]\n"; got != want {
		t.Errorf("arguments:\n%s\nwant\n%s", got, want)
	}
	// EnvironmentFile= overrides Environment=.
	if got, want := h.read("vars"), "hello world|p|from file|file\n"; got != want {
		t.Errorf("variables: %q, want %q", got, want)
	}
}

func TestMissingEnvironmentFileFailsTheStart(t *testing.T) {
	h := newHarness(t)
	h.start("noenv.service", fmt.Sprintf(`[Service]
EnvironmentFile=%s/missing.env
ExecStart=/bin/sleep 1000
`, h.dir))
	h.awaitEnd("noenv.service", failed, subFailed, resResources)
	h.awaitJournal("noenv.service", "missing.env: no such file")
}

func TestWorkingDirectory(t *testing.T) {
	h := newHarness(t)
	wd := filepath.Join(h.dir, "wd")
	if err := os.Mkdir(wd, 0o755); err != nil {
		t.Fatal(err)
	}
	h.start("wd.service", fmt.Sprintf(`[Service]
Type=oneshot
WorkingDirectory=%s
ExecStart=/bin/sh -c 'pwd > %s/pwd'
`, wd, h.dir))
	h.awaitEnd("wd.service", inactive, subDead, resSuccess)
	if got := h.read("pwd"); got != wd+"\n" {
		t.Errorf("ran in %q, want %q", got, wd)
	}

	h.start("nowd.service", fmt.Sprintf(`[Service]
Type=oneshot
WorkingDirectory=%s/missing
ExecStart=/bin/true
`, h.dir))
	h.awaitEnd("nowd.service", failed, subFailed, resExitCode)

	h.start("optwd.service", fmt.Sprintf(`[Service]
Type=oneshot
WorkingDirectory=-%s/missing
ExecStart=/bin/sh -c 'pwd > %s/optpwd'
`, h.dir, h.dir))
	h.awaitEnd("optwd.service", inactive, subDead, resSuccess)
	if got := h.read("optpwd"); got != "/\n" {
		t.Errorf("with a missing optional WorkingDirectory, ran in %q, want /", got)
	}
}

func TestUser(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to change user")
	}
	h := newHarness(t)
	h.start("user.service", `[Service]
Type=oneshot
User=nobody
ExecStart=/bin/sh -c 'echo "uid=$(id -u) user=$USER home=$HOME"'
`)
	h.awaitEnd("user.service", inactive, subDead, resSuccess)
	h.awaitJournal("user.service", "uid=65534 user=nobody home=/nonexistent")
}

func TestBindsTo(t *testing.T) {
	h := newHarness(t)
	web := `[Unit]
BindsTo=db.service
After=db.service
[Service]
ExecStart=/bin/sleep 1000
`
	db := `[Service]
ExecStart=/bin/sleep 1000
`
	// Started first, web waits for db.
	h.start("web.service", web)
	h.await("web.service", "waiting for db", func(st Status) bool {
		return is(activating, subStartPre)(st) && slices.Equal(st.WaitingFor, []string{"db.service"})
	})
	h.start("db.service", db)
	h.awaitState("web.service", active, subRunning)

	// db fails: web is stopped.
	dbMain := h.awaitState("db.service", active, subRunning).MainPID
	syscall.Kill(dbMain, syscall.SIGKILL)
	h.awaitEnd("db.service", failed, subFailed, resSignal)
	h.awaitEnd("web.service", inactive, subDead, resSuccess)

	// Started again, then db is stopped: web stops first.
	h.start("db.service", db)
	h.start("web.service", web)
	h.awaitState("web.service", active, subRunning)
	webMain := h.procOf(h.awaitState("web.service", active, subRunning).MainPID)
	h.stop("db.service")
	if st, _ := h.d.Status("web.service"); st.State != (driver.State{Active: inactive, Sub: subDead}) {
		t.Errorf("after its BindsTo target stopped, web is %+v", st.State)
	}
	h.assertGone("web's main process", webMain)
}

func TestRequiresWaitsForTheTarget(t *testing.T) {
	h := newHarness(t)
	// Requires without After: web starts as soon as db is started, not
	// active; db's ExecStartPre holds it activating.
	gate := h.fifo("gate")
	h.start("web.service", `[Unit]
Requires=db.service network-online.target
[Service]
ExecStart=/bin/sleep 1000
`)
	h.await("web.service", "waiting for db", func(st Status) bool { return slices.Equal(st.WaitingFor, []string{"db.service"}) })
	h.start("db.service", fmt.Sprintf(`[Service]
ExecStartPre=/bin/sh -c 'read l < %s'
ExecStart=/bin/sleep 1000
`, gate.path))
	h.awaitState("web.service", active, subRunning)
	if st, _ := h.d.Status("db.service"); st.Active != activating {
		t.Errorf("db is %+v, want still activating", st.State)
	}
	gate.send("go")
	h.awaitState("db.service", active, subRunning)
}

func TestJournal(t *testing.T) {
	h := newHarness(t)
	gate := h.fifo("gate")
	h.start("talk.service", fmt.Sprintf(`[Service]
ExecStart=/bin/sh -c 'echo first; echo second >&2; read l < %s; echo "after $l"; exec sleep 1000'
`, gate.path))

	// Follow: the lines so far, then, as they are written, new ones.
	ctx, cancel := context.WithTimeout(context.Background(), failAfter)
	defer cancel()
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := h.d.Journal(ctx, "talk.service", -1, true, pw)
		pw.Close()
		errc <- err
	}()
	sc := bufio.NewScanner(pr)
	var lines []string
	next := func(want string) {
		t.Helper()
		for sc.Scan() {
			lines = append(lines, sc.Text())
			if strings.HasSuffix(sc.Text(), " "+want) {
				return
			}
		}
		t.Fatalf("the journal never showed %q; it had:\n%s", want, strings.Join(lines, "\n"))
	}
	next("first")
	next("second") // stderr too
	gate.send("go")
	next("after go")
	cancel()
	go io.Copy(io.Discard, pr)
	if err := <-errc; err != nil {
		t.Fatalf("Journal: %v", err)
	}
	stamp := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d) `)
	for _, l := range lines {
		if !stamp.MatchString(l) {
			t.Errorf("line without a timestamp: %q", l)
		}
	}

	// Not following: the last lines, then return.
	var b strings.Builder
	if err := h.d.Journal(context.Background(), "talk.service", -1, false, &b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), " first\n") || !strings.Contains(b.String(), " after go\n") {
		t.Errorf("the whole journal lacks lines:\n%s", b.String())
	}
	b.Reset()
	if err := h.d.Journal(context.Background(), "talk.service", 1, false, &b); err != nil {
		t.Fatal(err)
	}
	if strings.Count(b.String(), "\n") != 1 {
		t.Errorf("Journal(lines=1) = %q", b.String())
	}
	if err := h.d.Journal(context.Background(), "never.service", 10, false, io.Discard); err == nil {
		t.Error("Journal of a unit that never ran succeeded")
	}
}

func TestTimeoutStopSecKillsWhatIgnoresSIGTERM(t *testing.T) {
	h := newHarness(t)
	report := h.fifo("report")
	// The shell waits with the wait builtin, which a trapped signal
	// interrupts, so that the trap runs at once even if the SIGTERM lands
	// while a sleep is being forked (and that sleep misses it).
	h.start("stubborn.service", fmt.Sprintf(`[Service]
ExecStart=/bin/sh -c 'trap "echo got TERM" TERM; echo ready > %s; while :; do sleep 1 & wait $!; done'
TimeoutStopSec=300ms
`, report.path))
	main := h.procOf(h.awaitState("stubborn.service", active, subRunning).MainPID)
	report.line() // the trap is set
	h.stop("stubborn.service")
	h.assertGone("main process", main)
	h.awaitJournal("stubborn.service", "got TERM", "did not exit within TimeoutStopSec=300ms of SIGTERM")
}

func TestStartSameIsNoopChangedRestarts(t *testing.T) {
	h := newHarness(t)
	src := "[Service]\nExecStart=/bin/sleep 1000\nEnvironment=V=1\n"
	h.start("app.service", src)
	first := h.awaitState("app.service", active, subRunning)

	h.start("app.service", src)
	if st, _ := h.d.Status("app.service"); st.MainPID != first.MainPID || st.State != first.State {
		t.Errorf("starting the same unit again changed it: %+v → %+v", first, st)
	}

	old := h.procOf(first.MainPID)
	f := h.start("app.service", strings.Replace(src, "V=1", "V=2", 1))
	st := h.await("app.service", "running the new content", func(st Status) bool {
		return is(active, subRunning)(st) && st.Hash == f.Hash() && st.MainPID != first.MainPID
	})
	h.assertGone("the old main process", old)
	if st.Restarts != 0 {
		t.Errorf("Restarts = %d", st.Restarts)
	}
}

func TestBadUnitIsRefused(t *testing.T) {
	h := newHarness(t)
	err := h.d.Start(context.Background(), "bad.service", parseUnit(t, "bad.service", "[Service]\nType=forking\nExecStart=/bin/true\n"))
	if err == nil || !strings.Contains(err.Error(), "forking") {
		t.Errorf("Start of a Type=forking unit: %v", err)
	}
	if err := h.d.Start(context.Background(), "../escape", parseUnit(t, "x", "[Service]\nExecStart=/bin/true\n")); err == nil {
		t.Error("Start accepted a name with a slash")
	}
}

func TestCloseStopsEverything(t *testing.T) {
	dir := t.TempDir()
	d, err := New(filepath.Join(dir, "units"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, d: d, dir: dir}
	h.start("a.service", "[Service]\nExecStart=/bin/sleep 1000\n")
	h.start("b.service", "[Unit]\nBindsTo=a.service\nAfter=a.service\n[Service]\nExecStart=/bin/sleep 1000\n")
	a := h.procOf(h.awaitState("a.service", active, subRunning).MainPID)
	b := h.procOf(h.awaitState("b.service", active, subRunning).MainPID)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	h.assertGone("a", a)
	h.assertGone("b", b)
	if err := d.Start(context.Background(), "c.service", parseUnit(t, "c.service", "[Service]\nExecStart=/bin/true\n")); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: %v", err)
	}
	if states, _ := filepath.Glob(filepath.Join(dir, "units", "*.state")); len(states) != 0 {
		t.Errorf("run state left after Close: %q", states)
	}
	// The directory is free for the next driver.
	d2, err := New(filepath.Join(dir, "units"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	d2.Close()
}

func TestOneDriverPerDirectory(t *testing.T) {
	h := newHarness(t)
	if _, err := New(filepath.Join(h.dir, "units"), testLogger(t)); err == nil {
		t.Error("a second driver opened a directory in use")
	}
}

func TestStartPostAndStopCommands(t *testing.T) {
	h := newHarness(t)
	gate := h.fifo("gate")
	out := filepath.Join(h.dir, "out")
	h.start("post.service", fmt.Sprintf(`[Service]
ExecStart=/bin/sleep 1000
ExecStartPost=/bin/sh -c 'read l < %[1]s'
ExecStop=/bin/sh -c 'echo "stop $MAINPID" >> %[2]s'
ExecStopPost=/bin/sh -c 'echo "post $SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" >> %[2]s'
`, gate.path, out))
	// The main process runs while ExecStartPost does.
	st := h.await("post.service", "activating/start-post", func(st Status) bool {
		return is(activating, subStartPost)(st) && st.MainPID > 0
	})
	gate.send("go")
	h.awaitState("post.service", active, subRunning)
	h.stop("post.service")
	want := fmt.Sprintf("stop %d\npost success killed TERM\n", st.MainPID)
	if got := h.read("out"); got != want {
		t.Errorf("stop commands wrote %q, want %q", got, want)
	}
}

func TestStopDuringAutoRestart(t *testing.T) {
	h := newHarness(t)
	h.start("crashy.service", "[Service]\nExecStart=/bin/false\nRestart=always\nRestartSec=1h\n")
	h.awaitState("crashy.service", activating, subAutoRestart)
	h.stop("crashy.service")
	if _, ok := h.d.Status("crashy.service"); ok {
		t.Error("the unit is still known after Stop")
	}
}

// TestAdoptionOfInterruptedRuns gives a new driver the run state a crashed
// one would leave in the middle of a start and of a stop.
func TestAdoptionOfInterruptedRuns(t *testing.T) {
	dir := t.TempDir()
	units := filepath.Join(dir, "units")
	if err := os.MkdirAll(units, 0o750); err != nil {
		t.Fatal(err)
	}
	// leftover starts a process the way the driver does, as if a crashed
	// driver had started it.
	leftover := func() (*exec.Cmd, procID) {
		c := exec.Command("/bin/sleep", "1000")
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		st, err := readStat(c.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		return c, procID{c.Process.Pid, st.start}
	}
	write := func(name, src, act, sub, boot string, groups ...procID) {
		f := parseUnit(t, name, src)
		rec := &record{Version: recordVersion, BootID: boot, Name: name, Unit: string(f.Bytes()), Hash: f.Hash(), Active: act, Sub: sub}
		for _, g := range groups {
			rec.Groups = append(rec.Groups, procRecord{PID: g.pid, Start: g.start})
		}
		if err := writeRecord(filepath.Join(units, name+".state"), rec); err != nil {
			t.Fatal(err)
		}
	}
	boot := bootID()

	// Cut short in ExecStartPre: what it left is killed, and the unit
	// starts again from the beginning.
	_, pre := leftover()
	write("starting.service", "[Service]\nExecStartPre=/bin/true\nExecStart=/bin/sleep 1000\n", activating, subStartPre, boot, pre)
	// Cut short while stopping: the stop is finished, ExecStopPost included.
	_, stopping := leftover()
	write("stopping.service", fmt.Sprintf("[Service]\nExecStart=/bin/sleep 1000\nExecStopPost=/bin/touch %s/stoppost\n", dir), deactivating, subStopSigterm, boot, stopping)
	// A recorded pid whose start time differs is another process now: it
	// must be left alone.
	_, reused := leftover()
	write("reused.service", "[Service]\nExecStart=/bin/sleep 1000\n", activating, subStartPre, boot, procID{reused.pid, reused.start + 1})
	// So is a process recorded in another boot.
	_, otherBoot := leftover()
	write("rebooted.service", "[Service]\nExecStart=/bin/sleep 1000\nRestart=always\nRestartSec=0\n", active, subRunning, "another-boot", otherBoot)

	h := openHarness(t, dir)
	st := h.awaitState("starting.service", active, subRunning)
	if st.Adopted || st.MainPID == pre.pid {
		t.Errorf("starting.service: %+v, want a fresh start", st)
	}
	h.assertGone("the leftover of an interrupted start", pre)

	h.awaitEnd("stopping.service", inactive, subDead, resSuccess)
	h.assertGone("the leftover of an interrupted stop", stopping)
	if _, err := os.Stat(filepath.Join(dir, "stoppost")); err != nil {
		t.Errorf("ExecStopPost did not run: %v", err)
	}

	h.awaitState("reused.service", active, subRunning)
	if gone(reused) {
		t.Error("a process that merely reused a recorded pid was killed")
	}
	// After a reboot nothing of the unit runs; Restart=always starts it.
	st = h.await("rebooted.service", "restarted", func(st Status) bool { return is(active, subRunning)(st) && st.Restarts == 1 })
	if gone(otherBoot) || st.MainPID == otherBoot.pid {
		t.Error("a process recorded in another boot was taken for the unit's")
	}
}
