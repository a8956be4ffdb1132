// Package driver runs units on one machine. The agent tells a driver which
// units should run; the driver makes it so and reports their state in
// systemd's terms. Two drivers implement it: exec, a built-in supervisor
// for hosts without systemd as PID 1 (containers, CI, the local provider),
// and systemd, over D-Bus, for real nodes.
package driver

import (
	"context"
	"io"

	"github.com/corral-dev/corral/clusterd/unit"
)

// State is a unit's state as systemd reports it: ACTIVE is one of active,
// activating, deactivating, inactive, failed; SUB is the finer state
// (running, start-pre, exited, dead, failed, auto-restart …).
type State struct {
	Active string `json:"active"`
	Sub    string `json:"sub"`
}

// Driver starts and stops units on this machine.
type Driver interface {
	// Start loads the unit file (already instantiated and with specifiers
	// that need the machine resolved) and starts it. Starting a unit that
	// runs is a no-op; starting one with different content restarts it.
	Start(ctx context.Context, name string, u *unit.File) error
	// Stop stops the unit and forgets it. Stopping an unknown unit is a no-op.
	Stop(ctx context.Context, name string) error
	// States reports every unit the driver knows, running or not.
	States() map[string]State
	// Changes names units whose state changed; it never blocks the driver.
	Changes() <-chan string
}

// Journal is implemented by drivers that keep units' output themselves.
type Journal interface {
	// Journal returns the unit's last lines and, if follow, everything
	// written after them until ctx ends.
	Journal(ctx context.Context, name string, lines int, follow bool, w io.Writer) error
}
