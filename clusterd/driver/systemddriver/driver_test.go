package systemddriver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/corral-dev/corral/internal/syncbuf"
	"github.com/corral-dev/corral/internal/systemdtest"
)

// wait bounds every wait for systemd to do something; it takes
// milliseconds, so hitting it means it will not happen.
const wait = 20 * time.Second

func TestMain(m *testing.M) {
	// The tests see state changes only through signals: a poll every few
	// seconds would hide a driver that misses them.
	pollInterval = time.Hour
	os.Exit(m.Run())
}

// boot starts a systemd and a driver on it, closed when the test ends.
func boot(t *testing.T) (*systemdtest.Instance, *Driver) {
	t.Helper()
	in := systemdtest.Boot(t)
	return in, newDriver(t, in)
}

func newDriver(t *testing.T, in *systemdtest.Instance) *Driver {
	t.Helper()
	d, err := New(Options{Root: in.Root(), Socket: in.Socket(), Log: slog.New(slog.NewTextHandler(t.Output(), nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func parse(t *testing.T, name, src string) *unit.File {
	t.Helper()
	f, err := unit.Parse(name, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func start(t *testing.T, d *Driver, name, src string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := d.Start(ctx, name, parse(t, name, src)); err != nil {
		t.Fatal(err)
	}
}

const hello = `[Unit]
Description=hello
[Service]
ExecStart=/bin/sh -c 'echo hello; exec sleep 1000'
`

// waitState waits, on Changes, until States reports want for name (or, if
// want is nil, no longer reports name).
func waitState(t *testing.T, d *Driver, name string, want *driver.State) {
	t.Helper()
	deadline := time.After(wait)
	for {
		got, ok := d.States()[name]
		if want == nil && !ok || want != nil && ok && got == *want {
			return
		}
		select {
		case <-d.Changes():
		case <-deadline:
			t.Fatalf("%s is %v (known %v), want %v", name, got, ok, want)
		}
	}
}

var (
	activeRunning = &driver.State{Active: "active", Sub: "running"}
	failedFailed  = &driver.State{Active: "failed", Sub: "failed"}
)

// waitJournal waits until the unit's journal holds want, reading it again
// as journald takes the unit's output asynchronously.
func waitJournal(t *testing.T, d *Driver, name, want string) string {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		var b bytes.Buffer
		if err := d.Journal(context.Background(), name, -1, false, &b); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(b.String(), want) || time.Now().After(deadline) {
			if !strings.Contains(b.String(), want) {
				t.Fatalf("journal of %s has no %q:\n%s", name, want, b.String())
			}
			return b.String()
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func mainPID(t *testing.T, in *systemdtest.Instance, name string) uint32 {
	t.Helper()
	p, err := in.Conn(t).GetServiceProperty(name, "MainPID")
	if err != nil {
		t.Fatal(err)
	}
	return p.Value.Value().(uint32)
}

// invocation is the unit's InvocationID, new at every start.
func invocation(t *testing.T, in *systemdtest.Instance, name string) string {
	t.Helper()
	p, err := in.Conn(t).GetUnitProperty(name, "InvocationID")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(p.Value.Value())
}

func TestStartJournalStop(t *testing.T) {
	in, d := boot(t)
	start(t, d, "hello.service", hello)
	// The first name on Changes is the new unit's.
	select {
	case name := <-d.Changes():
		if name != "hello.service" {
			t.Errorf("Changes named %s", name)
		}
	case <-time.After(wait):
		t.Fatal("no change after Start")
	}
	waitState(t, d, "hello.service", activeRunning)

	out := waitJournal(t, d, "hello.service", "hello")
	if strings.Contains(out, "Journal started") {
		t.Errorf("the journal of hello.service has other units' lines:\n%s", out)
	}
	var last bytes.Buffer
	if err := d.Journal(context.Background(), "hello.service", 1, false, &last); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(last.String(), "\n"); n != 1 {
		t.Errorf("Journal with lines=1 wrote %d lines:\n%s", n, last.String())
	}

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := d.Stop(ctx, "hello.service"); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, "hello.service", nil)
	for _, p := range []string{"run/corral/units/hello.service", "run/systemd/system/hello.service"} {
		if _, err := os.Lstat(filepath.Join(in.Root(), p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after Stop: %v", p, err)
		}
	}
	p, err := in.Conn(t).GetUnitProperty("hello.service", "LoadState")
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Value.Value(); got != "not-found" {
		t.Errorf("systemd still has hello.service after Stop: LoadState %v", got)
	}
	// Stopping it again, or a unit never started, does nothing.
	if err := d.Stop(ctx, "hello.service"); err != nil {
		t.Error(err)
	}
	if err := d.Stop(ctx, "never.service"); err != nil {
		t.Error(err)
	}
	// The journal outlives the unit.
	waitJournal(t, d, "hello.service", "hello")
}

func TestJournalFollow(t *testing.T) {
	in, d := boot(t)
	// The unit writes "later" once the test creates /run/go.
	start(t, d, "talk.service", `[Service]
ExecStart=/bin/sh -c 'echo early; while [ ! -e /run/go ]; do sleep 0.05; done; echo later; exec sleep 1000'
`)
	waitJournal(t, d, "talk.service", "early")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncbuf.Buffer
	done := make(chan error, 1)
	go func() { done <- d.Journal(ctx, "talk.service", 10, true, &out) }()
	waitFor(t, "the journal to show early", func() bool { return strings.Contains(out.String(), "early") })
	if err := os.WriteFile(filepath.Join(in.Root(), "run/go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the followed journal to show later", func() bool { return strings.Contains(out.String(), "later") })
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Journal ended with %v, want nil", err)
		}
	case <-time.After(wait):
		t.Fatal("Journal goes on after ctx ended")
	}
}

// waitFor polls cond, for what cannot be waited on otherwise.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFailingUnit(t *testing.T) {
	in, d := boot(t)
	start(t, d, "fail.service", "[Service]\nExecStart=/bin/false\n")
	waitState(t, d, "fail.service", failedFailed)

	// A oneshot's failure fails its start job.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	err := d.Start(ctx, "once.service", parse(t, "once.service", "[Service]\nType=oneshot\nExecStart=/bin/false\n"))
	if err == nil || !strings.Contains(err.Error(), "failed") {
		t.Errorf("Start of a failing oneshot: %v, want a failed job", err)
	}
	waitState(t, d, "once.service", failedFailed)

	// A unit that fails long after its start: only a signal tells.
	start(t, d, "later.service", `[Service]
ExecStart=/bin/sh -c 'while [ ! -e /run/fail ]; do sleep 0.05; done; exit 3'
`)
	waitState(t, d, "later.service", activeRunning)
	for len(d.Changes()) > 0 {
		<-d.Changes()
	}
	if err := os.WriteFile(filepath.Join(in.Root(), "run/fail"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, "later.service", failedFailed)

	// Starting a failed unit with the same file starts it again.
	before := invocation(t, in, "fail.service")
	start(t, d, "fail.service", "[Service]\nExecStart=/bin/false\n")
	if invocation(t, in, "fail.service") == before {
		t.Error("Start of a failed unit did not start it again")
	}
	waitState(t, d, "fail.service", failedFailed)

	if err := d.Stop(ctx, "fail.service"); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, "fail.service", nil)
}

func TestRestartOnNewContent(t *testing.T) {
	in, d := boot(t)
	start(t, d, "hello.service", hello)
	waitState(t, d, "hello.service", activeRunning)
	pid := mainPID(t, in, "hello.service")

	// The same content again: nothing happens.
	start(t, d, "hello.service", hello)
	if got := mainPID(t, in, "hello.service"); got != pid {
		t.Errorf("Start with the same content restarted the unit: MainPID %d → %d", pid, got)
	}

	start(t, d, "hello.service", strings.Replace(hello, "echo hello", "echo bonjour", 1))
	waitState(t, d, "hello.service", activeRunning)
	if got := mainPID(t, in, "hello.service"); got == pid || got == 0 {
		t.Errorf("Start with new content: MainPID %d → %d, want a new process", pid, got)
	}
	waitJournal(t, d, "hello.service", "bonjour")
}

func TestEnv(t *testing.T) {
	_, d := boot(t)
	odd := `two  spaces "quotes" 100% %n back\slash`
	d.Env = map[string]string{"BASE": "from-driver", "OVER": "from-driver", "ODD": odd}
	start(t, d, "env.service", `[Service]
Type=oneshot
RemainAfterExit=yes
Environment=OVER=from-unit
ExecStart=/usr/bin/env
`)
	out := waitJournal(t, d, "env.service", "OVER=")
	for _, want := range []string{"BASE=from-driver", "OVER=from-unit", "ODD=" + odd} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("the unit's environment has no %q:\n%s", want, out)
		}
	}
}

// The agent hands the driver units whose specifiers it has expanded: a '%'
// left in them is literal, and systemd must not expand it again.
func TestLiteralPercent(t *testing.T) {
	_, d := boot(t)
	start(t, d, "percent.service", `[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/echo 100% done, %n stays
`)
	out := waitJournal(t, d, "percent.service", "done")
	if !strings.Contains(out, "100% done, %n stays\n") {
		t.Errorf("the unit printed %q, want the '%%' signs as written", out)
	}
}

func TestTakeOver(t *testing.T) {
	in, d := boot(t)
	start(t, d, "hello.service", hello)
	waitState(t, d, "hello.service", activeRunning)
	pid := mainPID(t, in, "hello.service")
	d.Close()

	// A new driver (clusterd restarted) finds the unit running, and the
	// agent's Start of the same content leaves it be.
	d2 := newDriver(t, in)
	if got := d2.States()["hello.service"]; got != *activeRunning {
		t.Errorf("the new driver has hello.service %v, want %v", got, *activeRunning)
	}
	start(t, d2, "hello.service", hello)
	if got := mainPID(t, in, "hello.service"); got != pid {
		t.Errorf("taking over restarted the unit: MainPID %d → %d", pid, got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := d2.Stop(ctx, "hello.service"); err != nil {
		t.Fatal(err)
	}
	waitState(t, d2, "hello.service", nil)
}

func TestTemplateInstance(t *testing.T) {
	_, d := boot(t)
	name := "hello@1.service"
	// As the agent does: the template's content, instantiated.
	n, err := unit.ParseName(name)
	if err != nil {
		t.Fatal(err)
	}
	f := unit.Instantiate(parse(t, "hello@.service", "[Service]\nExecStart=/bin/sh -c 'echo instance %i; exec sleep 1000'\n"), n, unit.Machine{})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := d.Start(ctx, name, f); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, name, activeRunning)
	waitJournal(t, d, name, "instance 1")
}

// TestReexec checks that the driver reconnects when systemd re-executes
// itself, which closes every private connection.
func TestReexec(t *testing.T) {
	in, d := boot(t)
	start(t, d, "hello.service", hello)
	waitState(t, d, "hello.service", activeRunning)

	c, err := systemdtest.DialBus(context.Background(), in.Socket())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// No reply comes: systemd drops the connection as it re-executes.
	c.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1").Go("org.freedesktop.systemd1.Manager.Reexecute", dbus.FlagNoReplyExpected, nil)
	select {
	case <-c.Context().Done():
	case <-time.After(wait):
		t.Fatal("systemd did not re-execute")
	}

	// Starts fail until systemd is back; then they work, and so do signals.
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		err := d.Start(ctx, "after.service", parse(t, "after.service", hello))
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Start after daemon-reexec: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitState(t, d, "after.service", activeRunning)
	if got := d.States()["hello.service"]; got != *activeRunning {
		t.Errorf("hello.service is %v after daemon-reexec", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := d.Stop(ctx, "hello.service"); err != nil {
		t.Fatal(err)
	}
	waitState(t, d, "hello.service", nil)
}
