package execdriver

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/corral-dev/corral/clusterd/unit"
)

// Defaults, as systemd's (systemd-system.conf(5), systemd.service(5)).
const (
	defaultRestartSec         = 100 * time.Millisecond
	defaultTimeout            = 90 * time.Second
	defaultStartLimitInterval = 10 * time.Second
	defaultStartLimitBurst    = 5
	// defaultPath is systemd's PATH for system services.
	defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// spec is what the driver reads from a unit file.
type spec struct {
	description string
	oneshot     bool
	remain      bool // RemainAfterExit=

	pre, start, post, stop, stopPost []command

	restart            string
	restartSec         time.Duration
	startTimeout       time.Duration // 0: none
	stopTimeout        time.Duration // 0: none
	startLimitInterval time.Duration // 0: no limit
	startLimitBurst    int
	killSignal         syscall.Signal

	env      [][2]string // Environment=, in order
	envFiles []optPath   // EnvironmentFile=
	workDir  optPath     // WorkingDirectory=; "" is /
	user     string
	group    string

	requires, bindsTo, after, before []string

	warnings []string // options read but not honoured
}

// optPath is a path that may carry systemd's "-" prefix: missing is fine.
type optPath struct {
	path     string
	optional bool
}

func newOptPath(v string) optPath {
	if p, ok := strings.CutPrefix(v, "-"); ok {
		return optPath{path: p, optional: true}
	}
	return optPath{path: v}
}

// serviceOptions are the [Service] options the exec driver honours; others
// are reported as warnings when a unit is started.
var serviceOptions = map[string]bool{
	"Type": true, "RemainAfterExit": true,
	"ExecStartPre": true, "ExecStart": true, "ExecStartPost": true, "ExecStop": true, "ExecStopPost": true,
	"Restart": true, "RestartSec": true,
	"TimeoutSec": true, "TimeoutStartSec": true, "TimeoutStopSec": true,
	"StartLimitInterval": true, "StartLimitBurst": true,
	"Environment": true, "EnvironmentFile": true, "WorkingDirectory": true,
	"User": true, "Group": true, "KillSignal": true,
}

// parseSpec reads f. Errors are the unit's mistakes, reported by Start so
// that the agent can publish them; several are joined.
func parseSpec(f *unit.File) (*spec, error) {
	s := &spec{
		restart:            "no",
		restartSec:         defaultRestartSec,
		stopTimeout:        defaultTimeout,
		startLimitInterval: defaultStartLimitInterval,
		startLimitBurst:    defaultStartLimitBurst,
		killSignal:         syscall.SIGTERM,
		description:        f.Value("Unit", "Description"),
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	switch t := f.Value("Service", "Type"); t {
	case "", "simple", "exec", "idle":
	case "oneshot":
		s.oneshot = true
	case "notify", "notify-reload", "dbus":
		// The service runs; only its readiness signal is not awaited.
		s.warnings = append(s.warnings, fmt.Sprintf("Type=%s is run as Type=simple: the exec driver does not wait for readiness notifications", t))
	case "forking":
		fail("Type=forking is not supported by the exec driver (it cannot follow a daemon that forks away); run the daemon in the foreground with Type=simple")
	default:
		fail("Type=%s: unknown service type", t)
	}
	var err error
	if v := f.Value("Service", "RemainAfterExit"); v != "" {
		if s.remain, err = parseBool(v); err != nil {
			fail("RemainAfterExit=%s: %v", v, err)
		}
	}

	execs := func(option string) []command {
		var out []command
		for _, v := range f.Values("Service", option) {
			if v == "" {
				out = nil // an empty assignment resets the list
				continue
			}
			cs, err := parseCommands(v)
			if err != nil {
				fail("%s=%s: %v", option, v, err)
				continue
			}
			out = append(out, cs...)
		}
		return out
	}
	s.pre, s.start, s.post = execs("ExecStartPre"), execs("ExecStart"), execs("ExecStartPost")
	s.stop, s.stopPost = execs("ExecStop"), execs("ExecStopPost")
	switch {
	case s.oneshot && len(s.start) == 0 && !(s.remain && len(s.stop) > 0):
		fail("Type=oneshot needs an ExecStart= (or RemainAfterExit=yes and an ExecStop=)")
	case !s.oneshot && len(s.start) != 1:
		fail("ExecStart= must name exactly one command unless Type=oneshot; it names %d", len(s.start))
	}

	switch r := f.Value("Service", "Restart"); r {
	case "":
	case "no", "always", "on-success", "on-failure", "on-abnormal", "on-abort", "on-watchdog":
		s.restart = r
	default:
		fail("Restart=%s: expected no, always, on-success, on-failure, on-abnormal, on-abort or on-watchdog", r)
	}
	if s.oneshot && (s.restart == "always" || s.restart == "on-success") {
		fail("Restart=%s is not allowed for Type=oneshot (systemd refuses it too); use on-failure", s.restart)
	}
	duration := func(section, option string, into *time.Duration) {
		if v := f.Value(section, option); v != "" {
			d, err := parseTimespan(v)
			if err != nil {
				fail("%s=%s: %v", option, v, err)
				return
			}
			*into = d
		}
	}
	duration("Service", "RestartSec", &s.restartSec)
	if !s.oneshot {
		// A oneshot's start may take as long as it takes, unless told.
		s.startTimeout = defaultTimeout
	}
	duration("Service", "TimeoutSec", &s.startTimeout)
	duration("Service", "TimeoutSec", &s.stopTimeout)
	duration("Service", "TimeoutStartSec", &s.startTimeout)
	duration("Service", "TimeoutStopSec", &s.stopTimeout)
	duration("Service", "StartLimitInterval", &s.startLimitInterval)
	duration("Unit", "StartLimitIntervalSec", &s.startLimitInterval)
	for _, o := range [][2]string{{"Service", "StartLimitBurst"}, {"Unit", "StartLimitBurst"}} {
		if v := f.Value(o[0], o[1]); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				fail("StartLimitBurst=%s: expected a count", v)
				continue
			}
			s.startLimitBurst = n
		}
	}
	if v := f.Value("Service", "KillSignal"); v != "" {
		if s.killSignal, err = parseSignal(v); err != nil {
			fail("KillSignal=%s: %v", v, err)
		}
	}

	if s.env, err = parseEnvironment(f.Values("Service", "Environment")); err != nil {
		fail("%v", err)
	}
	for _, v := range f.Values("Service", "EnvironmentFile") {
		if v == "" {
			s.envFiles = nil
			continue
		}
		p := newOptPath(v)
		if !strings.HasPrefix(p.path, "/") {
			fail("EnvironmentFile=%s: the path must be absolute", v)
			continue
		}
		s.envFiles = append(s.envFiles, p)
	}
	if v := f.Value("Service", "WorkingDirectory"); v != "" {
		s.workDir = newOptPath(v)
		if p := s.workDir.path; p != "~" && !strings.HasPrefix(p, "/") {
			fail("WorkingDirectory=%s: the path must be absolute, or ~", v)
		}
	}
	s.user, s.group = f.Value("Service", "User"), f.Value("Service", "Group")

	list := func(option string) []string {
		var out []string
		for _, v := range f.Values("Unit", option) {
			if v == "" {
				out = nil
				continue
			}
			for _, name := range strings.Fields(v) {
				if !slices.Contains(out, name) {
					out = append(out, name)
				}
			}
		}
		return out
	}
	s.requires, s.bindsTo = list("Requires"), list("BindsTo")
	s.after, s.before = list("After"), list("Before")

	for _, sec := range f.Sections {
		if sec.Name != "Service" {
			continue
		}
		for _, o := range sec.Options {
			if !serviceOptions[o.Name] {
				s.warnings = append(s.warnings, fmt.Sprintf("[Service] %s= is not supported by the exec driver and is ignored", o.Name))
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return s, nil
}

// parseBool reads systemd's booleans.
func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "yes", "y", "true", "t", "on":
		return true, nil
	case "0", "no", "n", "false", "f", "off":
		return false, nil
	}
	return false, errors.New("expected yes or no")
}

// isService reports whether a dependency names a service, the only kind of
// unit the exec driver runs. Dependencies on targets, mounts, sockets and
// devices (network-online.target, say) cannot be met or missed by it, so
// they are taken as met.
func isService(name string) bool { return strings.HasSuffix(name, ".service") }
