// Package systemdtest boots a throwaway, real systemd for tests of the code
// that drives systemd over D-Bus (the systemd unit driver).
//
// The instance runs as PID 1 of a new PID and mount namespace, in systemd's
// container mode, and the test reaches its files through /proc/<pid>/root
// (Root). Its manager refuses connections to its private socket
// (/run/systemd/private) from processes it cannot see, outside its PID
// namespace, so the instance runs systemd-socket-proxyd, which connects from
// inside, on another socket (Socket).
//
// The instance shares the host's filesystem, so it is fenced in: a systemd
// that booted the host's units would act on the host (tmpfiles wipes /tmp,
// sysusers edits /etc/passwd, sysctl sets the kernel's settings, journald
// flushes into /var/log/journal):
//
//   - it reads units only from its own /run (SYSTEMD_UNIT_PATH), where Boot
//     writes the few it needs: a target, journald, the bus proxy, and an
//     empty sysinit.target for services' default dependencies to find;
//     generators do not run (SYSTEMD_GENERATOR_PATH names an empty
//     directory);
//   - /run is a tmpfs of its own, / is remounted read-only in its mount
//     namespace (the mount, not the filesystem: the host keeps writing), and
//     its /dev/console is a log file rather than the host's console;
//   - journald keeps the journal in /run only (Storage=volatile);
//   - it gets a cgroup of its own in every hierarchy, a child of the test's,
//     so that two instances (or an instance and the host's systemd) do not
//     share system.slice. Those of a test that died without its cleanup (a
//     timeout's panic) are removed by the next Boot; the kernel kills the
//     instance itself when the test process dies.
//
// Boot needs root and Debian's systemd package; it fails the test, rather
// than skipping it, when either is missing, so that CI cannot pass by
// testing nothing.
package systemdtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/corral-dev/corral/internal/sdbus"
)

// Systemd is the binary Boot runs (Debian's systemd package).
const Systemd = "/lib/systemd/systemd"

// bootTimeout bounds Boot's wait for the manager to finish starting up; it
// takes well under a second, so hitting it means something is broken.
const bootTimeout = 30 * time.Second

// Instance is a running systemd.
type Instance struct {
	root    string
	console string // the file that gets systemd's console output
}

// Root is the instance's root directory as the test sees it,
// /proc/<pid>/root.
func (in *Instance) Root() string { return in.root }

// Socket is the path of a socket that leads to the manager's private bus,
// as /run/systemd/private would if the test ran inside the namespace.
func (in *Instance) Socket() string { return filepath.Join(in.root, "run/systemdtest/bus") }

// Console returns what systemd wrote to its console (its messages until
// journald ran, and anything journald could not take).
func (in *Instance) Console() string {
	b, _ := os.ReadFile(in.console)
	return string(b)
}

// journal returns the end of the instance's journal, systemd's messages
// included, for a failed test's log.
func (in *Instance) journal() string {
	out, err := exec.Command("journalctl", "--directory="+filepath.Join(in.root, "run/log/journal"),
		"--lines=200", "--no-pager", "--quiet").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(journalctl: %v)", out, err)
	}
	return string(out)
}

// Files Boot writes into the instance's /run. Paths are relative to /run.
var bootFiles = map[string]string{
	"systemdtest/units/systemdtest.target": `[Unit]
Description=systemdtest instance
Wants=systemd-journald.service systemdtest-bus.socket
`,
	// Services have Requires=sysinit.target by default; the host's would
	// pull in everything in sysinit.target.wants.
	"systemdtest/units/sysinit.target": `[Unit]
Description=System Initialization (empty in systemdtest)
`,
	// journald, without the /dev/log socket (its symlink would land in the
	// host's /dev) and without the host unit's sandboxing, which depends on
	// the kernel's features.
	"systemdtest/units/systemd-journald.socket": `[Unit]
Description=Journal Socket
DefaultDependencies=no
[Socket]
ListenDatagram=/run/systemd/journal/socket
ListenStream=/run/systemd/journal/stdout
PassCredentials=yes
PassSecurity=yes
ReceiveBuffer=8M
SocketMode=0666
Timestamping=us
`,
	"systemdtest/units/systemd-journald.service": `[Unit]
Description=Journal Service
DefaultDependencies=no
Requires=systemd-journald.socket
After=systemd-journald.socket
[Service]
Type=notify
ExecStart=/lib/systemd/systemd-journald
Sockets=systemd-journald.socket
Restart=always
RestartSec=0
RuntimeDirectory=systemd/journal
RuntimeDirectoryPreserve=yes
StandardOutput=null
FileDescriptorStoreMax=4224
`,
	// The manager refuses connections on its private socket from outside
	// its PID namespace: it cannot see their PIDs. A proxy inside relays.
	"systemdtest/units/systemdtest-bus.socket": `[Unit]
Description=systemdtest: the manager's private bus, for the test outside
DefaultDependencies=no
[Socket]
ListenStream=/run/systemdtest/bus
SocketMode=0600
`,
	"systemdtest/units/systemdtest-bus.service": `[Unit]
Description=systemdtest: proxy to the manager's private bus
DefaultDependencies=no
Requires=systemdtest-bus.socket
After=systemdtest-bus.socket
[Service]
ExecStart=/lib/systemd/systemd-socket-proxyd /run/systemd/private
`,
	"systemd/journald.conf.d/systemdtest.conf": `[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
`,
	"systemdtest/no-generators/.keep": "",
}

// bootScript runs as PID 1 of the new namespaces and becomes systemd. $1 is
// the directory to copy into /run; the other arguments are the cgroup.procs
// files of the instance's cgroups ("0" moves the writer).
const bootScript = `set -e
mount --make-rprivate /
mount -t proc proc /proc
mount -t tmpfs -o mode=0755 tmpfs /run
cp -R "$1"/. /run/
mount --bind /proc/self/fd/2 /dev/console
shift
for procs; do echo 0 > "$procs"; done
mount -o remount,bind,ro /
exec ` + Systemd + ` --system --unit=systemdtest.target --log-target=journal
`

// Boot starts a systemd and waits until it has started up (SystemState
// running). The test's cleanup kills it, and with it everything it runs:
// SIGKILL to the namespace's PID 1 kills the namespace.
func Boot(t testing.TB) *Instance {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("systemdtest: booting systemd needs root (namespaces, mounts, cgroups); run the tests as root")
	}
	if _, err := os.Stat(Systemd); err != nil {
		t.Fatalf("systemdtest: %v: install Debian's systemd package (apt-get install systemd)", err)
	}
	dir := t.TempDir()
	stage := filepath.Join(dir, "run")
	for name, content := range bootFiles {
		p := filepath.Join(stage, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cgroups, err := makeCgroups(fmt.Sprintf("%s%d-%d", cgroupPrefix, os.Getpid(), time.Now().UnixNano()))
	t.Cleanup(func() { removeCgroups(t, cgroups) })
	if err != nil {
		t.Fatalf("systemdtest: %v", err)
	}
	console, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()

	args := []string{"-c", bootScript, "sh", stage}
	for _, cg := range cgroups {
		args = append(args, filepath.Join(cg, "cgroup.procs"))
	}
	cmd := exec.Command("/bin/sh", args...)
	cmd.Env = []string{
		"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
		"container=corral", // systemd's container mode: no hardware, no console of its own
		"SYSTEMD_UNIT_PATH=/run/systemd/system:/run/systemdtest/units",
		"SYSTEMD_GENERATOR_PATH=/run/systemdtest/no-generators",
		"SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/systemdtest/no-generators",
	}
	cmd.Stdout, cmd.Stderr = console, console
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS,
		Setsid:     true,
		// Should the test binary die without cleaning up, the kernel kills
		// the instance.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("systemdtest: starting systemd: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	in := &Instance{root: fmt.Sprintf("/proc/%d/root", cmd.Process.Pid), console: console.Name()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("systemdtest: the instance's journal:\n%s", in.journal())
		}
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("systemdtest: the instance's console:\n%s", in.Console())
		}
	})
	if err := in.waitRunning(exited); err != nil {
		t.Fatalf("systemdtest: %v\nconsole:\n%s", err, in.Console())
	}
	return in
}

// waitRunning polls the manager until its startup is over. Polling is the
// only way: the socket appears, and the state changes, with no event the
// test can wait on from outside the namespace.
func (in *Instance) waitRunning(exited <-chan struct{}) error {
	deadline := time.Now().Add(bootTimeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("systemd exited while starting up")
		case <-time.After(20 * time.Millisecond):
		}
		c, err := Dial(context.Background(), in.Socket())
		if err != nil {
			last = err
			continue
		}
		p, err := c.SystemStateContext(context.Background())
		c.Close()
		if err != nil {
			last = err
			continue
		}
		switch state, _ := p.Value.Value().(string); state {
		case "running":
			return nil
		case "degraded", "maintenance", "stopping":
			return fmt.Errorf("systemd started up %s: a unit of the instance failed", state)
		default:
			last = fmt.Errorf("system state %s", state)
		}
	}
	return fmt.Errorf("systemd not running after %v: %v", bootTimeout, last)
}

// Conn returns a D-Bus connection to the instance's manager, closed when
// the test ends.
func (in *Instance) Conn(t testing.TB) *sddbus.Conn {
	t.Helper()
	c, err := Dial(context.Background(), in.Socket())
	if err != nil {
		t.Fatalf("systemdtest: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// Dial connects go-systemd to a systemd manager's private bus at socket.
func Dial(ctx context.Context, socket string) (*sddbus.Conn, error) {
	return sddbus.NewConnection(func() (*dbus.Conn, error) { return DialBus(ctx, socket) })
}

// DialBus connects to a systemd manager's private bus at socket, as root.
func DialBus(ctx context.Context, socket string) (*dbus.Conn, error) { return sdbus.Dial(ctx, socket) }

// makeCgroups makes a cgroup called name under this process's cgroup in
// every cgroup hierarchy mounted here and returns their directories (those
// it made before an error too, for the cleanup).
func makeCgroups(name string) ([]string, error) {
	mounts, err := cgroupMounts()
	if err != nil {
		return nil, err
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(string(own)), "\n") {
		// hierarchy-id:controllers:path; controllers is "" for cgroup v2.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		m, ok := findMount(mounts, parts[1])
		if !ok {
			continue // a hierarchy not mounted here: systemd cannot use it either
		}
		rel, ok := strings.CutPrefix(parts[2], m.root)
		if !ok {
			continue
		}
		parent := filepath.Join(m.dir, rel)
		removeStale(parent)
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return dirs, err
		}
		dirs = append(dirs, dir)
		// A new v1 cpuset has no CPUs nor memory nodes, and takes no process
		// until it has some.
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
				if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
					return dirs, err
				}
			}
		}
	}
	return dirs, nil
}

type cgroupMount struct {
	dir, root string
	opts      []string // super options: the v1 controllers; nil for v2
}

// cgroupMounts lists the cgroup file systems mounted here.
func cgroupMounts() ([]cgroupMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent dev root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 3 {
			continue
		}
		switch qf[0] {
		case "cgroup":
			out = append(out, cgroupMount{dir: pf[4], root: pf[3], opts: strings.Split(qf[2], ",")})
		case "cgroup2":
			out = append(out, cgroupMount{dir: pf[4], root: pf[3]})
		}
	}
	return out, s.Err()
}

// findMount finds the mount of the hierarchy with the given controllers
// ("" for v2, "cpu", "net_cls,net_prio", "name=systemd" …).
func findMount(mounts []cgroupMount, controllers string) (cgroupMount, bool) {
	for _, m := range mounts {
		if controllers == "" && m.opts == nil {
			return m, true
		}
		if controllers == "" || m.opts == nil {
			continue
		}
		all := true
		for _, c := range strings.Split(controllers, ",") {
			all = all && slices.Contains(m.opts, c)
		}
		if all {
			return m, true
		}
	}
	return cgroupMount{}, false
}

// cgroupPrefix starts the names of the instances' cgroups, followed by the
// test process's PID.
const cgroupPrefix = "systemdtest-"

// removeCgroups removes the instance's cgroups and those systemd made in
// them. The killed processes may take a moment to leave them, so it
// retries for a while.
func removeCgroups(t testing.TB, dirs []string) {
	deadline := time.Now().Add(10 * time.Second)
	for _, dir := range dirs {
		for {
			err := removeTree(dir)
			if err == nil || time.Now().After(deadline) {
				if err != nil {
					t.Errorf("systemdtest: removing cgroup %s: %v", dir, err)
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// removeStale removes the cgroups that tests which died (a timeout's panic
// runs no cleanup) left in parent.
func removeStale(parent string) {
	entries, _ := os.ReadDir(parent)
	for _, e := range entries {
		pid, _, ok := strings.Cut(strings.TrimPrefix(e.Name(), cgroupPrefix), "-")
		if !e.IsDir() || !strings.HasPrefix(e.Name(), cgroupPrefix) || !ok {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); errors.Is(err, os.ErrNotExist) {
			removeTree(filepath.Join(parent, e.Name()))
		}
	}
}

// removeTree removes a cgroup and the cgroups in it, deepest first.
func removeTree(top string) error {
	var dirs []string
	filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var err error
	for _, d := range slices.Backward(dirs) {
		if e := syscall.Rmdir(d); e != nil && !errors.Is(e, syscall.ENOENT) {
			err = e
		}
	}
	return err
}
