package execdriver

import (
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/corral-dev/corral/clusterd/logship/wire"
)

// ShipSocket is the name, in the driver's directory, of the socket that
// clusterd's log shipper reads units' lines from (clusterd/logship). Every
// line written to a journal is also offered there, without waiting: a
// shipper that lags or is absent costs the unit nothing.
const ShipSocket = "ship.sock"

// ShipSocketPath is the path of the driver's ShipSocket.
func (d *Driver) ShipSocketPath() string { return filepath.Join(d.dir, ShipSocket) }

// senders keeps one connection per socket in this process (the driver's
// own messages all go through one; a logger has just one).
var senders sync.Map // socket path → *wire.Sender

// teeFor returns the tee of the journal at path: its lines go to the
// shipper socket beside it, as the lines of the unit the journal is named
// after.
func teeFor(path string) func(time.Time, []byte) {
	sock := filepath.Join(filepath.Dir(path), ShipSocket)
	s, ok := senders.Load(sock)
	if !ok {
		s, _ = senders.LoadOrStore(sock, wire.NewSender(sock))
	}
	unit := strings.TrimSuffix(filepath.Base(path), ".log")
	return func(t time.Time, line []byte) {
		s.(*wire.Sender).Send(wire.Line{Unit: unit, Time: t, Text: line})
	}
}
