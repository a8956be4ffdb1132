package state

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// holdFlock takes the lock file's flock on a descriptor of its own, as a
// forked child of a run would, and returns its release.
func holdFlock(t *testing.T, path string) func() {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	return func() { f.Close() }
}

// deadPID is the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// A lock held for a live run is refused at once, naming the run.
func TestLockHeldByLiveRun(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	l, err := d.Lock("up")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	_, err = d.Lock("down")
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Lock = %v, want ErrLocked", err)
	}
	if want := "pid " + strconv.Itoa(os.Getpid()) + ", up since"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not name the holder (%q)", err, want)
	}
}

// A run killed while a child it forked had not exec'd yet leaves the flock
// with that child for a moment: the next run waits it out, and says the
// dead run's lock was abandoned.
func TestLockOfDeadRunHeldByItsChild(t *testing.T) {
	d := Dir{Path: t.TempDir()}
	path := filepath.Join(d.Path, "lock")
	record := "pid " + strconv.Itoa(deadPID(t)) + ", up since 10:31:02"
	if err := os.WriteFile(path, []byte(record+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	release := holdFlock(t, path)
	retries := 0
	orphanRetry = func() {
		if retries++; retries == 3 {
			release() // the child execs: its descriptor closes
		}
	}
	t.Cleanup(func() { orphanRetry = func() {} })
	l, err := d.Lock("up")
	if err != nil {
		t.Fatalf("Lock = %v, want it taken once the child let go", err)
	}
	defer l.Unlock()
	if retries != 3 {
		t.Errorf("Lock retried %d times, want 3 (taken when released)", retries)
	}
	if l.Abandoned != record {
		t.Errorf("Abandoned = %q, want %q", l.Abandoned, record)
	}
}

// A lock whose dead holder's descriptor never closes is reported, not
// waited on for ever.
func TestLockOfDeadRunNeverReleased(t *testing.T) {
	orphanWait = 200 * time.Millisecond
	t.Cleanup(func() { orphanWait = 10 * time.Second })
	d := Dir{Path: t.TempDir()}
	path := filepath.Join(d.Path, "lock")
	if err := os.WriteFile(path, []byte("pid "+strconv.Itoa(deadPID(t))+", up since 10:31:02\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	defer holdFlock(t, path)()
	if _, err := d.Lock("up"); !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock = %v, want ErrLocked after the wait", err)
	}
}
