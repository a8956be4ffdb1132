package ssh

import (
	"fmt"
	"strings"
	"time"

	"github.com/corral-dev/corral/templates"
)

// Where the provider keeps its own files on a machine, beside what the
// boot description installs.
const (
	stateDir       = "/var/lib/corral"
	manifestPath   = stateDir + "/ssh-install"        // what Launch installed, for Terminate
	supervisorPath = stateDir + "/clusterd-supervise" // the fallback supervisor (no systemd)
	supervisorPID  = stateDir + "/clusterd-supervise.pid"
	clusterdPID    = stateDir + "/clusterd.pid"
	logPath        = stateDir + "/clusterd.log"
	// defaultBinary is where templates installs clusterd, for a manifest
	// written without a binary line.
	defaultBinary = "/opt/bin/clusterd"
	// defaultDataDir is clusterd's --data-dir default, for nodes whose
	// boot description leaves it unset.
	defaultDataDir = "/var/lib/clusterd"
	// clusterdUnit is the unit templates writes for clusterd.
	clusterdUnit = "clusterd.service"
	// ipVariable is the one variable clusterd's command line can refer to
	// (see templates.Service).
	ipVariable = "${CLUSTERD_IP}"
	// logRotateBytes is the size past which the supervisor's log is
	// moved to .1 when the supervisor starts.
	logRotateBytes = 16 << 20
)

// probeScript reports, one line each: whether PID 1 is systemd (as
// sd_booted(3) decides: /run/systemd/system exists), the machine's
// architecture, then for each path after the first "missing" or its mode,
// owner, group and SHA-512, then the manifest (the first argument) if any.
var probeScript = &script{name: "probe", text: `m=$1
shift
if [ -d /run/systemd/system ]; then echo systemd; else echo none; fi
uname -m
for f do
	if [ -f "$f" ]; then
		st=$(stat -c '%a %U %G' -- "$f") || exit
		sum=$(sha512sum <"$f") || exit
		echo "$st ${sum%% *}"
	else
		echo missing
	fi
done
if [ -f "$m" ]; then cat -- "$m"; fi
`}

// writeScript writes its stdin to the file $1 with mode $2 and owner $3
// ("" leaves root), after checking that what arrived has the SHA-512 $4: in
// a temporary file beside it, renamed over it, so that a reader sees the old
// file or the new one, never half of one.
var writeScript = &script{name: "write-file", text: `set -eu
p=$1 mode=$2 owner=$3 sum=$4
umask 022
mkdir -p -- "$(dirname -- "$p")"
t=$(mktemp -- "$p.corral-XXXXXX")
trap 'rm -f -- "$t"' EXIT
cat >"$t"
got=$(sha512sum <"$t")
got=${got%% *}
if [ "$got" != "$sum" ]; then
	echo "$p: what arrived has SHA-512 $got, what was sent $sum" >&2
	exit 1
fi
chmod -- "$mode" "$t"
if [ -n "$owner" ]; then chown -- "$owner" "$t"; fi
mv -f -- "$t" "$p"
`}

// aliveFunc prints the pid in the file $1 if that process is alive (not a
// zombie) and one of its arguments is $2, else "-": a pid file outlives its
// process, and the pid may have been reused since. It also sets bin to
// clusterd's binary as the manifest records it.
const aliveFunc = `alive() {
	pid=$(cat -- "$1" 2>/dev/null) || pid=
	case $pid in
	'' | *[!0-9]*) echo -; return ;;
	esac
	state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -c1)
	if [ -n "$state" ] && [ "$state" != Z ] && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$2"; then
		echo "$pid"
	else
		echo -
	fi
}
# clusterd's binary, as the manifest records it.
bin=$(sed -n 's/^binary //p' ` + manifestPath + ` 2>/dev/null) || bin=
bin=${bin:-` + defaultBinary + `}
`

// statusScript prints one line: "systemd", whether the provider installed
// anything here (its manifest exists), and clusterd.service's state; or
// "supervised", the same, and the pids of the supervisor and of clusterd
// ("-" for none).
var statusScript = &script{name: "status", text: aliveFunc + `installed=no
if [ -f ` + manifestPath + ` ]; then installed=yes; fi
if [ -d /run/systemd/system ]; then
	state=$(systemctl is-active ` + clusterdUnit + ` 2>/dev/null) || :
	echo "systemd $installed ${state:-unknown}"
else
	echo "supervised $installed $(alive ` + supervisorPID + ` ` + supervisorPath + `) $(alive ` + clusterdPID + ` "$bin")"
fi
`}

// startScript starts the supervisor in a session of its own, detached from
// this ssh session (its output goes to the log, so the session can end),
// after moving a log grown too big aside.
var startScript = &script{name: "start-supervisor", text: fmt.Sprintf(`set -e
mkdir -p -- %[1]s
if [ -f %[2]s ] && [ "$(stat -c %%s -- %[2]s)" -gt %[4]d ]; then mv -f -- %[2]s %[2]s.1; fi
setsid /bin/sh %[3]s </dev/null >>%[2]s 2>&1 &
`, stateDir, logPath, supervisorPath, logRotateBytes)}

// stopScript stops the supervisor, which stops clusterd first (or clusterd
// alone, should the supervisor be gone): SIGTERM, SIGKILL after $1 seconds.
var stopScript = &script{name: "stop-supervisor", text: aliveFunc + `grace=$1
sup=$(alive ` + supervisorPID + ` ` + supervisorPath + `)
cd=$(alive ` + clusterdPID + ` "$bin")
if [ "$sup" != - ]; then
	kill -TERM "$sup" 2>/dev/null || :
elif [ "$cd" != - ]; then
	kill -TERM "$cd" 2>/dev/null || :
fi
running() {
	[ "$1" != - ] || return 1
	state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)
	[ -n "$state" ] && [ "$state" != Z ]
}
n=0
while running "$sup" || running "$cd"; do
	n=$((n + 1))
	if [ "$n" -eq $((grace * 10)) ]; then
		for p in $sup $cd; do [ "$p" = - ] || kill -KILL "$p" 2>/dev/null || :; done
	fi
	if [ "$n" -gt $((grace * 10 + 100)) ]; then
		echo "clusterd (pid $cd) or its supervisor (pid $sup) still running 10s after SIGKILL" >&2
		exit 1
	fi
	sleep 0.1
done
rm -f -- ` + supervisorPID + ` ` + clusterdPID + `
`}

// stopUnitsScript stops the processes of the units clusterd's exec driver
// ran, which outlive clusterd by design: every process of this machine
// (this mount namespace) whose environment has CLUSTERD_DATA_DIR=$1, as
// the driver gives every unit. SIGTERM, SIGKILL after $2 seconds.
var stopUnitsScript = &script{name: "stop-unit-processes", text: `dd=$1 grace=$2
units() {
	for d in /proc/[0-9]*; do
		[ "$d/ns/mnt" -ef /proc/$$/ns/mnt ] || continue
		grep -qzxF -- "CLUSTERD_DATA_DIR=$dd" "$d/environ" 2>/dev/null || continue
		state=$(sed 's/.*) //' "$d/stat" 2>/dev/null | cut -c1)
		[ -n "$state" ] && [ "$state" != Z ] || continue
		echo "${d#/proc/}"
	done
}
pids=$(units)
if [ -z "$pids" ]; then exit 0; fi
kill -TERM $pids 2>/dev/null || :
n=0
while pids=$(units) && [ -n "$pids" ]; do
	n=$((n + 1))
	if [ "$n" -ge $((grace * 10)) ]; then kill -KILL $pids 2>/dev/null || :; fi
	if [ "$n" -gt $((grace * 10 + 100)) ]; then
		echo "unit processes still running 10s after SIGKILL: $pids" >&2
		exit 1
	fi
	sleep 0.1
done
`}

// disableScript stops and disables the units named after $1 (the unit
// directory) whose files are there.
var disableScript = &script{name: "disable-units", text: `dir=$1
shift
for u do
	if [ -f "$dir/$u" ]; then systemctl disable --now -- "$u"; fi
done
`}

// removeScript removes the data directory $1 and the files after it, then
// the directories named corral that held them, if empty. A data directory
// that is a mount point (a disk of its own) is emptied instead.
var removeScript = &script{name: "remove", text: `set -e
dd=$1
shift
if mountpoint -q -- "$dd" 2>/dev/null; then
	find "$dd" -mindepth 1 -delete
else
	rm -rf -- "$dd"
fi
for f do
	rm -f -- "$f"
	d=$(dirname -- "$f")
	case $d in */corral) rmdir -- "$d" 2>/dev/null || : ;; esac
done
`}

// joinedScript lists the cluster's machines as the node itself sees them,
// with the clusterctl that clusterd links into its data directory ($1)
// and the settings it leaves there.
var joinedScript = &script{name: "list-machines", text: `CLUSTERD_DATA_DIR=$1 exec "$1/bin/clusterctl" list-machines -o json
`}

// supervisor is the script that runs clusterd on a machine whose PID 1 is
// not systemd, doing what clusterd.service does under systemd: read the
// environment files and run the ExecStartPre commands before each start,
// start clusterd again RestartSec after it ends, whatever the reason, and
// raise the open-file limit. It is a fallback, for containers and
// minimal machines: unlike systemd it does not start at boot and does not
// put clusterd in a cgroup, and it does not survive its own death; Launch
// starts it again when it finds clusterd not running. SIGTERM stops
// clusterd, then the supervisor.
func supervisor(node string, s templates.Service) string {
	var b strings.Builder
	fmt.Fprintf(&b, "#!/bin/sh\n# Written by Corral's ssh provider for node %s: runs clusterd as clusterd.service\n", node)
	b.WriteString("# would, on a machine whose PID 1 is not systemd. SIGTERM stops it.\n")
	fmt.Fprintf(&b, "echo $$ >%s\n", supervisorPID)
	b.WriteString("child= stop=\n")
	b.WriteString(`trap 'stop=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM INT HUP` + "\n")
	// Where the hard limit is lower and can't be raised (a container), as
	// much as it allows.
	fmt.Fprintf(&b, "if ! ulimit -n %d 2>/dev/null; then\n\thard=$(ulimit -Hn)\n\tulimit -n \"$hard\" 2>/dev/null || :\n", s.LimitNOFILE)
	fmt.Fprintf(&b, "\techo \"clusterd-supervise: the open-file limit can't be raised to %d; it is $(ulimit -n)\" >&2\nfi\n", s.LimitNOFILE)
	// systemd reads the environment files afresh before each command.
	b.WriteString("load_env() {\n\tset -a\n")
	for _, f := range s.EnvironmentFiles {
		if opt, ok := strings.CutPrefix(f, "-"); ok {
			fmt.Fprintf(&b, "\tif [ -r %s ]; then . %s; fi\n", quote(opt), quote(opt))
		} else {
			fmt.Fprintf(&b, "\t. %s\n", quote(f))
		}
	}
	b.WriteString("\tset +a\n}\n")
	b.WriteString("while [ -z \"$stop\" ]; do\n\t(\n")
	for _, pre := range s.ExecStartPre {
		fmt.Fprintf(&b, "\t\tload_env\n\t\t%s || exit\n", shellCommand(pre))
	}
	fmt.Fprintf(&b, "\t\tload_env\n\t\texec %s\n", shellCommand(s.ExecStart))
	b.WriteString("\t) &\n")
	b.WriteString("\tchild=$!\n")
	fmt.Fprintf(&b, "\techo \"$child\" >%s\n", clusterdPID)
	// A trapped signal interrupts wait: wait again until clusterd is gone.
	b.WriteString("\tstatus=0\n\twhile kill -0 \"$child\" 2>/dev/null; do wait \"$child\"; status=$?; done\n")
	fmt.Fprintf(&b, "\tchild=\n\trm -f %s\n", clusterdPID)
	b.WriteString("\tif [ -n \"$stop\" ]; then break; fi\n")
	secs := max(int(s.RestartSec/time.Second), 1)
	fmt.Fprintf(&b, "\techo \"clusterd-supervise: clusterd ended (status $status); starting it again in %ds\" >&2\n", secs)
	// The pause is interruptible: SIGTERM kills the sleep too.
	fmt.Fprintf(&b, "\tsleep %d &\n\tchild=$!\n\twait \"$child\"\n\tchild=\ndone\n", secs)
	fmt.Fprintf(&b, "rm -f %s\n", supervisorPID)
	return b.String()
}

// shellCommand writes a command's words for sh, each quoted, except that
// ${CLUSTERD_IP} is left for sh to expand, as systemd expands it.
func shellCommand(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		parts := strings.Split(w, ipVariable)
		var q []string
		for _, p := range parts {
			if p == "" {
				q = append(q, "")
				continue
			}
			q = append(q, quote(p))
		}
		out[i] = strings.Join(q, `"`+ipVariable+`"`)
		if out[i] == "" {
			out[i] = "''"
		}
	}
	return strings.Join(out, " ")
}
