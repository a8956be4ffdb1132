// Package execdriver is clusterd's built-in unit supervisor, for hosts
// where systemd is not PID 1 (containers, CI, the local provider). It runs
// the [Service] of systemd unit files as processes of its own, with the
// semantics of the systemd options that CoreOS-style units use, and reports
// their states in systemd's vocabulary. It implements driver.Driver and
// driver.Journal.
//
// # What a unit does
//
// A start runs ExecStartPre= commands in order, then ExecStart=, then
// ExecStartPost=. For Type=simple (the default) the one ExecStart= process
// is the main process and the unit is active/running once it has started
// (activating/start-pre and activating/start-post before and after). For
// Type=oneshot every ExecStart= runs to completion, in order, as
// activating/start; the unit then becomes inactive/dead, or active/exited
// with RemainAfterExit=yes. A stop, or the main process's exit, runs
// ExecStop= (only if the unit had started), sends KillSignal= (SIGTERM)
// to everything the unit still runs and SIGKILL after TimeoutStopSec=
// (deactivating/stop, stop-sigterm, stop-sigkill), then ExecStopPost=
// (stop-post), which runs after failures too. $MAINPID, $SERVICE_RESULT,
// $EXIT_CODE and $EXIT_STATUS are set for the stop commands as systemd
// sets them. A run ends inactive/dead on success and failed/failed
// otherwise; Status reports systemd's Result (exit-code, signal, timeout,
// resources, start-limit-hit …).
//
// Restart= (no, always, on-success, on-failure, on-abnormal, on-abort)
// follows systemd's table, waiting RestartSec= (100ms by default) as
// activating/auto-restart; StartLimitIntervalSec=/StartLimitBurst= (10s and
// 5 by default) stop a crash loop with start-limit-hit. TimeoutStartSec=
// (90s, none for oneshot; 0 or infinity for none) bounds the start phase.
//
// Commands are split as systemd splits them (quotes, C escapes, ";"
// between commands), with no shell unless the unit runs one; the prefixes
// "-" (ignore failure), "@" (argv[0]), ":" (no expansion) and "+" are
// understood. $NAME as a word expands to the variable's words and ${NAME}
// to its value in place. The environment is systemd's clean one (PATH,
// and HOME/USER/LOGNAME with User=), then Environment=, then
// EnvironmentFile= (read before each command; a missing file fails the
// start with result resources unless the path starts with "-").
// WorkingDirectory= (default /), User= and Group= apply to every command.
//
// Every command runs in a new session, and so in a process group of its
// own: stopping a unit signals its groups, which reaches the children of
// its processes too (a process that leaves its group — a daemon that
// double-forks into a new session — escapes, as it would not escape
// systemd's cgroups).
//
// # Dependencies
//
// Requires=, BindsTo= and After= (and Before=) apply between the units of
// this driver. A unit whose Requires= or BindsTo= target the driver does
// not run waits, activating/start-pre, until the target is started; with
// After= also until the target is active. When a BindsTo= target stops or
// fails, the bound unit is stopped (and stays inactive until started
// again). Stop stops the units that Requires= or BindsTo= a unit before
// the unit, and Close stops dependents before their dependencies.
// Dependencies on units other than services (network-online.target) are
// taken as met: the driver has no such units.
//
// # Journal
//
// The output of every command, stdout and stderr, goes to <dir>/<unit>.log,
// each line prefixed with the time, together with the driver's own
// messages about the unit. The file is rotated to <unit>.log.1 at 16 MiB.
// Journal reads the last lines and follows.
//
// # Restarting clusterd
//
// Units survive clusterd and are re-adopted by the next driver on the same
// directory. A unit's processes are in their own sessions, so clusterd's
// exit, its terminal going away or a signal to its process group does not
// reach them. Their output goes through a logger process (this binary,
// re-executed) rather than a pipe to clusterd, so that they do not die of
// SIGPIPE when clusterd does. Every state change writes <dir>/<unit>.state:
// the unit file, the state, and each process group as pid and start time
// (from /proc/<pid>/stat) with the kernel's boot id. New reads these
// records: a running service whose main process is alive (same pid, same
// start time, same boot) is supervised again, watched through a pidfd
// (pidfd_open and poll, since wait(2) works only for one's children); a
// oneshot that remained after exit stays active/exited; a start that a
// restart cut short is cleaned up and run again from the beginning, once;
// a stop is finished. Starting the same unit file again is then a no-op,
// so the agent's reconciliation after the restart leaves adopted units
// alone. Close stops every unit (clusterd --stop-units); simply exiting, or
// calling Detach, leaves them running.
//
// An adopted process is not clusterd's child, so its exit status cannot be
// read, unless it is caught as a zombie; an unknown status counts as a
// failure, so that Restart=on-failure restarts the service.
//
// # Not supported
//
// Type=forking (the driver would lose the daemon) is refused;
// Type=notify and dbus run as simple, without waiting for readiness. Other
// [Service] options (KillMode=, sandboxing, resource limits) are ignored
// with a warning.
package execdriver
