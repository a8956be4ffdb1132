package netboot

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReaper runs the reaper as a child subreaper, which is what PID 1 is:
// it must hand back the exit status of what it started and reap the
// orphans that are reparented to it.
func TestReaper(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	r := newReaper()
	defer r.stop() // it would reap the other tests' children

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	// The shell leaves a sleep behind, orphaned, and exits with 3.
	_, done, err := r.start([]string{"/bin/sh", "-c", "sleep 0.3 & echo $!; exit 3"}, &os.ProcAttr{Files: []*os.File{nil, pw, os.Stderr}})
	pw.Close()
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ws := <-done:
		if ws.ExitStatus() != 3 {
			t.Errorf("exit status %d, want 3", ws.ExitStatus())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no exit status")
	}
	// The orphan ends and must be reaped, not left a zombie.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(orphan) + "/stat")
		if err != nil {
			break // gone: reaped
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d not reaped: %s", orphan, st)
		}
		time.Sleep(20 * time.Millisecond) // polling /proc: there is no event for it
	}
}
