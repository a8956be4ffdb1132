package netboot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/corral-dev/corral/internal/lines"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Main is the init: the corral binary run as /init, PID 1 of a network-
// booted machine. It never returns on a machine (PID 1 exiting panics the
// kernel); it returns 1 at once when it is not PID 1.
func Main() int {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: this is the network-boot init; it runs only as PID 1 (the initramfs's /init)")
		return 1
	}
	for {
		func() {
			defer func() {
				if p := recover(); p != nil {
					fmt.Fprintf(os.Stderr, "corral-init: panic: %v; starting over in 10s\n", p)
					time.Sleep(10 * time.Second)
				}
			}()
			run()
		}()
	}
}

// initEnv is the environment every process the init starts has.
var initEnv = []string{
	"PATH=/opt/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"TERM=linux",
}

type node struct {
	log    *consoleLog
	reaper *reaper
	report string
	lease  *lease
}

func run() {
	mountAll()
	console := openConsole()
	log := newConsoleLog(console, 60)
	for _, kv := range initEnv {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
	log.Printf("Corral network-boot init starting")
	n := &node{log: log, reaper: newReaper()}
	ctx := context.Background()

	if data, err := os.ReadFile(ModulesList); err == nil {
		if err := LoadModules(ReadModuleList(string(data)), log.Printf); err != nil {
			log.Printf("%v", err)
		}
	} else {
		log.Printf("no module list: %v", err)
	}

	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		n.fatal(ctx, fmt.Errorf("reading /proc/cmdline: %w", err))
	}
	params := ParseCmdline(string(cmdline))
	n.report = params[ParamReport]
	configURL := params[ParamConfig]
	if configURL == "" {
		n.fatal(ctx, fmt.Errorf("no %s= on the kernel command line", ParamConfig))
	}

	l, err := bringUpNetwork(ctx, log.Printf)
	if err != nil {
		n.fatal(ctx, fmt.Errorf("network: %w", err))
	}
	n.lease = l
	go renew(ctx, l, log.Printf)

	backoff := 2 * time.Second
	for {
		err := n.boot(ctx, configURL)
		n.fail(ctx, err)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(backoff*2, time.Minute)
	}
}

// fail logs err on the console and reports it with the console's last
// lines.
func (n *node) fail(ctx context.Context, err error) {
	n.log.Printf("error: %v", err)
	st := Status{Status: "error", Error: err.Error(), Log: n.log.Tail()}
	if rerr := Report(ctx, n.report, st); rerr != nil {
		n.log.Printf("reporting the error: %v", rerr)
	}
}

// fatal is an error the init can't get past: reported (when it can be),
// and again every minute, forever.
func (n *node) fatal(ctx context.Context, err error) {
	for {
		n.fail(ctx, fmt.Errorf("fatal: %w", err))
		time.Sleep(time.Minute)
	}
}

// boot fetches and applies the config, then runs clusterd; it returns only
// on an error.
func (n *node) boot(ctx context.Context, configURL string) error {
	var data []byte
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		var err error
		data, err = HTTPFetch(ctx, configURL)
		if err == nil {
			break
		}
		err = fmt.Errorf("fetching the config, attempt %d: %w", attempt, err)
		if attempt%5 == 0 {
			n.fail(ctx, err)
		} else {
			n.log.Printf("%v; retrying in %s", err, backoff)
		}
		time.Sleep(backoff)
		backoff = min(backoff*2, 30*time.Second)
	}
	n.log.Printf("fetched the config (%d bytes)", len(data))
	cfg, err := ParseConfig(data)
	if err != nil {
		return err
	}
	if err := ApplyConfig(ctx, "/", cfg, HTTPFetch, n.log.Printf); err != nil {
		return err
	}
	if h, err := os.ReadFile("/etc/hostname"); err == nil {
		if name := strings.TrimSpace(string(h)); name != "" {
			if err := unix.Sethostname([]byte(name)); err != nil {
				n.log.Printf("setting the host name: %v", err)
			} else {
				n.log.Printf("host name %s", name)
			}
		}
	}
	unitData, err := os.ReadFile(filepath.Join(UnitDir, ClusterdUnit))
	if err != nil {
		return fmt.Errorf("the config has no %s: %w", ClusterdUnit, err)
	}
	svc, err := ParseService(bytes.NewReader(unitData))
	if err != nil {
		return fmt.Errorf("%s: %w", ClusterdUnit, err)
	}
	return n.supervise(ctx, svc)
}

// quickExit is how soon an exit counts as a failure to start.
const quickExit = 15 * time.Second

// supervise runs the service as systemd would with Restart=always.
func (n *node) supervise(ctx context.Context, svc *Service) error {
	if svc.LimitNOFILE > 0 {
		lim := &unix.Rlimit{Cur: svc.LimitNOFILE, Max: svc.LimitNOFILE}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, lim); err != nil {
			n.log.Printf("LimitNOFILE=%d: %v", svc.LimitNOFILE, err)
		}
	}
	restart := max(svc.RestartSec, time.Second)
	booted, joined := false, false
	events := make(chan string, 4)
	for {
		started := time.Now()
		exited, err := n.start(svc, events)
		if err != nil {
			n.fail(ctx, fmt.Errorf("starting clusterd: %w", err))
			time.Sleep(restart)
			continue
		}
		if !booted {
			booted = true
			n.log.Printf("clusterd started")
			go Report(ctx, n.report, Status{Status: "booted"})
		}
	wait:
		for {
			select {
			case ev := <-events:
				if ev == "joined" && !joined {
					joined = true
					go Report(ctx, n.report, Status{Status: "joined"})
				}
			case ws := <-exited:
				ran := time.Since(started).Round(time.Millisecond)
				msg := fmt.Sprintf("clusterd %s after %s", describe(ws), ran)
				if ran < quickExit {
					n.fail(ctx, errors.New(msg))
				} else {
					n.log.Printf("%s; restarting in %s", msg, restart)
				}
				break wait
			}
		}
		time.Sleep(restart)
	}
}

// start runs the ExecStartPre steps and starts ExecStart, with its output
// on the console.
func (n *node) start(svc *Service, events chan<- string) (<-chan unix.WaitStatus, error) {
	env := map[string]string{}
	parseEnv(strings.Join(svc.Environment, "\n"), env)
	if err := ReadEnvironment("/", svc.EnvironmentFiles, env); err != nil {
		return nil, err
	}
	for _, pre := range svc.ExecStartPre {
		if out, target, ok := DetectIPStep(pre); ok {
			ip := n.lease.addr.Addr().String()
			if target != "" {
				if src := sourceFor(target); src != "" {
					ip = src
				}
			}
			if err := WriteIPEnv("/", out, ip); err != nil {
				return nil, err
			}
			n.log.Printf("clusterd's address: %s", ip)
		} else {
			argv, ignore := Expand(pre, env)
			_, done, err := n.spawn(argv, env, nil)
			if err == nil {
				if ws := <-done; ws.ExitStatus() != 0 || ws.Signaled() {
					err = fmt.Errorf("%s", describe(ws))
				}
			}
			if err != nil && !ignore {
				return nil, fmt.Errorf("ExecStartPre %q: %w", argv, err)
			}
		}
		// systemd reads the environment files again for the next command.
		env = map[string]string{}
		parseEnv(strings.Join(svc.Environment, "\n"), env)
		if err := ReadEnvironment("/", svc.EnvironmentFiles, env); err != nil {
			return nil, err
		}
	}
	argv, _ := Expand(svc.ExecStart, env)
	n.log.Printf("starting %s", strings.Join(argv, " "))
	_, done, err := n.spawn(argv, env, events)
	return done, err
}

// spawn starts argv with the environment, its output going to the console
// line by line.
func (n *node) spawn(argv []string, env map[string]string, events chan<- string) (int, <-chan unix.WaitStatus, error) {
	if len(argv) == 0 {
		return 0, nil, errors.New("empty command")
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return 0, nil, err
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		null = nil
	}
	environ := append([]string(nil), initEnv...)
	for k, v := range env {
		environ = append(environ, k+"="+v)
	}
	pid, done, err := n.reaper.start(argv, &os.ProcAttr{
		Dir: "/", Env: environ, Files: []*os.File{null, pw, pw},
		Sys: &syscall.SysProcAttr{Setsid: true},
	})
	pw.Close()
	if null != nil {
		null.Close()
	}
	if err != nil {
		pr.Close()
		return 0, nil, err
	}
	lw := &lines.Writer{Line: func(s string) {
		n.log.line(s)
		if events != nil && (strings.Contains(s, "registering machine")) {
			select {
			case events <- "joined":
			default:
			}
		}
	}}
	go func() {
		io.Copy(lw, pr)
		pr.Close()
	}()
	return pid, done, nil
}

func describe(ws unix.WaitStatus) string {
	if ws.Signaled() {
		return "was killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exited with status %d", ws.ExitStatus())
}

// mountAll mounts the API file systems. Errors are printed, not fatal: an
// already mounted one is fine.
func mountAll() {
	for _, m := range []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=620,ptmxmode=000"},
		{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	} {
		if err := os.MkdirAll(m.dst, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "corral-init: mkdir %s: %v\n", m.dst, err)
			continue
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			fmt.Fprintf(os.Stderr, "corral-init: mounting %s on %s: %v\n", m.fstype, m.dst, err)
		}
	}
	os.Symlink("/proc/self/fd", "/dev/fd")
	os.MkdirAll("/run/corral", 0o755)
	os.MkdirAll("/var/lib", 0o755)
}

// openConsole makes /dev/console the init's stdin, stdout and stderr.
func openConsole() io.Writer {
	f, err := os.OpenFile("/dev/console", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return os.Stderr
	}
	for fd := 0; fd <= 2; fd++ {
		unix.Dup3(int(f.Fd()), fd, 0)
	}
	return os.Stdout
}
