package daemon

import (
	"log/slog"

	"github.com/corral-dev/corral/clusterd/driver/execdriver"
	"github.com/corral-dev/corral/clusterd/logship"
)

// newShipper makes the node's log shipper and tees clusterd's own log into
// it, as the stream <machine-id>-clusterd. It ships nothing until the
// cluster's logs settings name a destination (see watchLogs).
func (n *Node) newShipper(machineID string) {
	n.ship = logship.New(nil, logship.Options{Log: n.cfg.Log})
	n.cfg.Log = slog.New(slog.NewMultiHandler(n.cfg.Log.Handler(),
		logship.LogHandler(n.ship, logship.StreamName(machineID, "clusterd"))))
	n.ship.SetLog(n.cfg.Log)
}

// listenUnits takes the exec driver's units' lines into the shipper. The
// systemd driver's units log to journald, which ships them itself (or not).
func (n *Node) listenUnits(machineID string) error {
	d, ok := n.driver.(*execdriver.Driver)
	if !ok {
		return nil
	}
	u, err := logship.ListenUnits(d.ShipSocketPath(), machineID, n.ship, n.cfg.Log)
	if err != nil {
		return err
	}
	n.shipUnits = u
	return nil
}

// LogShipper is the node's log shipper; its Dropped counters are for
// metrics.
func (n *Node) LogShipper() *logship.Shipper { return n.ship }

// closeShipping stops taking lines, then sends what is queued (for a few
// seconds at most).
func (n *Node) closeShipping() {
	if n.shipUnits != nil {
		n.shipUnits.Close()
	}
	if n.ship != nil {
		n.ship.Close()
	}
}
