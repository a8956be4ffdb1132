package execdriver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/unit"
)

// helperEnv makes the test binary act as a clusterd that starts the units
// in the directory it names, says "ready" and waits to be killed.
const helperEnv = "CORRAL_EXECDRIVER_TEST_CLUSTERD"

func clusterdHelper(dir string) int {
	d, err := New(filepath.Join(dir, "units"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.service"))
	for _, p := range files {
		src, err := os.ReadFile(p)
		if err == nil {
			var f *unit.File
			if f, err = unit.Parse(filepath.Base(p), src); err == nil {
				err = d.Start(context.Background(), filepath.Base(p), f)
			}
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	guard := time.After(failAfter)
	for {
		ready := 0
		for _, st := range d.States() {
			if st.Active == active {
				ready++
			}
		}
		if ready == len(files) {
			break
		}
		select {
		case <-d.Changes():
		case <-guard:
			fmt.Fprintln(os.Stderr, "units never became active:", d.States())
			return 1
		}
	}
	fmt.Println("ready")
	select {} // until killed, as clusterd would be
}

// TestClusterdRestartReadoptsUnits kills a clusterd (a helper process with
// a driver) with SIGKILL and opens a new driver on its directory: the units
// must have kept running, and be supervised again.
func TestClusterdRestartReadoptsUnits(t *testing.T) {
	dir := t.TempDir()
	h := &harness{t: t, dir: dir}
	child := h.fifo("child")
	gate := h.fifo("gate")
	out := filepath.Join(dir, "oneshot")
	units := map[string]string{
		// Talks on its stdout whenever told to, so it would die of SIGPIPE
		// if its output still went to the dead clusterd.
		"keep.service": fmt.Sprintf(`[Service]
ExecStart=/bin/sh -c 'sleep 1000 & echo $! > %s; while read l < %s; do echo "got $l"; done'
`, child.path, gate.path),
		"crash.service": `[Service]
ExecStart=/bin/sleep 1000
Restart=always
RestartSec=10ms
`,
		"remain.service": fmt.Sprintf(`[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo start >> %[1]s'
ExecStop=/bin/sh -c 'echo stop >> %[1]s'
`, out),
	}
	for name, src := range units {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The first clusterd starts the units, then dies.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), helperEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("the first clusterd did not get its units running: %q, %v", line, err)
	}
	childPID, _ := strconv.Atoi(child.line())
	keepChild := h.procOf(childPID)
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	// The second one adopts them.
	h = openHarness(t, dir)
	keep := h.awaitState("keep.service", active, subRunning)
	if !keep.Adopted || keep.MainPID <= 0 {
		t.Fatalf("keep.service was not re-adopted: %+v", keep)
	}
	keepMain := h.procOf(keep.MainPID)
	if st, _ := h.d.Status("remain.service"); !st.Adopted || st.State.Sub != subExited {
		t.Errorf("remain.service: %+v, want adopted active/exited", st)
	}

	// The agent starts what is assigned, as after any restart: the same
	// content is a no-op, so nothing restarts.
	for name, src := range units {
		h.start(name, src)
	}
	if st, _ := h.d.Status("keep.service"); st.MainPID != keep.MainPID || !st.Adopted {
		t.Errorf("starting the same unit restarted it: %+v", st)
	}

	// The unit still runs and its output still reaches the journal.
	gate.send("hello")
	h.awaitJournal("keep.service", "got hello")

	// An adopted process is watched: when it dies, Restart= applies.
	crash := h.awaitState("crash.service", active, subRunning)
	syscall.Kill(crash.MainPID, syscall.SIGKILL)
	h.await("crash.service", "restarted", func(st Status) bool {
		return st.State.Sub == subRunning && st.Restarts == crash.Restarts+1 && st.MainPID != crash.MainPID && !st.Adopted
	})

	// Stopping an adopted unit kills its whole group.
	h.stop("keep.service")
	h.assertGone("adopted main process", keepMain)
	h.assertGone("child of the adopted main process", keepChild)

	// A oneshot that remained runs its ExecStop when stopped.
	h.stop("remain.service")
	if got := h.read("oneshot"); got != "start\nstop\n" {
		t.Errorf("remain.service wrote %q", got)
	}
}

// TestDetachLeavesUnitsForTheNextDriver hands units over within one
// process, and checks that what is not running is not resurrected.
func TestDetachLeavesUnitsForTheNextDriver(t *testing.T) {
	dir := t.TempDir()
	d, err := New(filepath.Join(dir, "units"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, d: d, dir: dir}
	h.start("svc.service", "[Service]\nExecStart=/bin/sleep 1000\n")
	h.start("fail.service", "[Service]\nExecStart=/bin/false\n")
	main := h.awaitState("svc.service", active, subRunning).MainPID
	h.awaitEnd("fail.service", failed, subFailed, resExitCode)
	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	if gone(h.procOf(main)) {
		t.Fatal("Detach stopped the unit")
	}

	h2 := openHarness(t, dir)
	st := h2.awaitState("svc.service", active, subRunning)
	if st.MainPID != main || !st.Adopted {
		t.Errorf("after Detach and New: %+v, want main %d adopted", st, main)
	}
	if st, _ := h2.d.Status("fail.service"); st.State.Active != failed || st.Result != resExitCode {
		t.Errorf("fail.service: %+v, want failed with exit-code", st)
	}
	states := h2.d.States()
	if len(states) != 2 {
		t.Errorf("States() = %v", states)
	}
	if !strings.HasPrefix(h2.d.statePath("svc.service"), filepath.Join(dir, "units")) {
		t.Error("run state is not in the driver's directory")
	}
}
