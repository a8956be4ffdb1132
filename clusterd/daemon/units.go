package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/corral-dev/corral/clusterd/agent"
	"github.com/corral-dev/corral/clusterd/driver"
	"github.com/corral-dev/corral/clusterd/driver/execdriver"
	"github.com/corral-dev/corral/clusterd/driver/systemddriver"
	"github.com/corral-dev/corral/clusterd/scheduler"
	"github.com/corral-dev/corral/clusterd/unit"
)

// newDriver picks the unit driver: systemd (over D-Bus) when PID 1 is
// systemd, else exec, clusterd's own supervisor (containers, CI, the local
// provider). Both give units the same base environment.
func (n *Node) newDriver() (driver.Driver, error) {
	kind := n.cfg.Driver
	if kind == "" || kind == "auto" {
		kind = "exec"
		if systemdIsInit() {
			kind = "systemd"
		}
	}
	switch kind {
	case "exec":
		d, err := execdriver.New(filepath.Join(n.cfg.DataDir, "units"), n.cfg.Log)
		if err != nil {
			return nil, err
		}
		d.Env = unitEnv(n.cfg.DataDir)
		return d, nil
	case "systemd":
		d, err := systemddriver.New(systemddriver.Options{Log: n.cfg.Log})
		if err != nil {
			return nil, fmt.Errorf("%w (use --driver exec to run units under clusterd instead)", err)
		}
		d.Env = unitEnv(n.cfg.DataDir)
		return d, nil
	}
	return nil, fmt.Errorf("clusterd: unknown unit driver %q; use exec, systemd or auto", kind)
}

// unitEnvironment lets units call clusterctl (sidekicks announce services
// with `clusterctl set`): it links clusterctl to this binary in the data
// directory's bin/, which unitEnv puts first on the units' PATH.
func unitEnvironment(dataDir string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin := filepath.Join(dataDir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	link := filepath.Join(bin, "clusterctl")
	os.Remove(link)
	return os.Symlink(self, link)
}

// unitEnv is every unit's base environment: clusterctl on PATH, and
// CLUSTERD_DATA_DIR to tell it where this node's settings are.
func unitEnv(dataDir string) map[string]string {
	return map[string]string{
		"PATH":              filepath.Join(dataDir, "bin") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"CLUSTERD_DATA_DIR": dataDir,
	}
}

// systemdIsInit reports whether PID 1 is systemd (as sd_booted does).
func systemdIsInit() bool {
	_, err := os.Stat("/run/systemd/system")
	return err == nil
}

// runUnits runs this machine's agent and its candidacy for engine.
func (n *Node) runUnits(ctx context.Context) {
	m := unit.Machine{ID: n.Machine.ID, Hostname: n.Machine.Hostname}
	a := &agent.Agent{Client: n.Store.Client, Machine: m, Driver: n.driver, TTL: n.cfg.TTL, Log: n.cfg.Log}
	e := &scheduler.Engine{Client: n.Store.Client, MachineID: n.Machine.ID, TTL: n.cfg.TTL, Grace: n.cfg.Grace, Log: n.cfg.Log, Observer: n.metrics}
	go e.Run(ctx)
	a.Run(ctx)
}

// unitJournal serves a unit's journal: the last lines, then (follow) new
// ones as they are written, flushed line by line.
func (n *Node) unitJournal(w http.ResponseWriter, r *http.Request) {
	j, ok := n.driver.(driver.Journal)
	if !ok {
		http.Error(w, "this machine's driver keeps no journal", http.StatusNotImplemented)
		return
	}
	name := r.URL.Query().Get("unit")
	lines, _ := strconv.Atoi(r.URL.Query().Get("lines"))
	follow := r.URL.Query().Get("follow") == "true"
	if _, known := n.driver.States()[name]; !known {
		http.Error(w, fmt.Sprintf("unit %s is not on this machine", name), http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fw := flushWriter{w: w}
	if f, ok := w.(http.Flusher); ok {
		fw.f = f
	}
	if err := j.Journal(r.Context(), name, lines, follow, fw); err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(w, "\n(journal: %s)\n", strings.TrimSpace(err.Error()))
	}
}

type flushWriter struct {
	w http.ResponseWriter
	f http.Flusher
}

func (fw flushWriter) Write(p []byte) (int, error) {
	n, err := fw.w.Write(p)
	if fw.f != nil {
		fw.f.Flush()
	}
	return n, err
}
