package logship

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/corral-dev/corral/clusterd/logship/wire"
)

// StreamName is the stream of a machine's unit (or of "clusterd"):
// <machine-id>-<unit>, as the awslogs driver's awslogs-stream=%m-<unit>.
func StreamName(machineID, unit string) string { return machineID + "-" + unit }

// Units receives what the execdriver's loggers tee to its socket.
type Units struct {
	ln    *net.UnixListener
	mu    sync.Mutex // guards conns
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// ListenUnits serves the socket at path (see execdriver's ShipSocket) and
// adds each unit's lines to sh, as the stream StreamName(machineID, unit).
func ListenUnits(path, machineID string, sh *Shipper, log *slog.Logger) (*Units, error) {
	ln, err := wire.Listen(path)
	if err != nil {
		return nil, err
	}
	u := &Units{ln: ln, conns: map[net.Conn]bool{}}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return // closed
			}
			u.mu.Lock()
			u.conns[c] = true
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer func() {
					u.mu.Lock()
					delete(u.conns, c)
					u.mu.Unlock()
					c.Close()
				}()
				if err := readUnits(c, machineID, sh); err != nil {
					log.Warn("reading a unit logger's lines", "err", err)
				}
			}()
		}
	}()
	return u, nil
}

// readUnits adds the lines of one logger connection to sh.
func readUnits(c net.Conn, machineID string, sh *Shipper) error {
	rd := wire.NewReader(c)
	for {
		l, err := rd.Next()
		if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			return nil
		}
		if err != nil {
			return err
		}
		name := StreamName(machineID, l.Unit)
		sh.AddDropped(name, l.Dropped)
		sh.Add(name, l.Time, string(l.Text))
	}
}

// Close stops listening and waits for the connections' readers.
func (u *Units) Close() error {
	err := u.ln.Close()
	u.mu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
	return err
}

// LogHandler is a slog handler that ships records, in slog's text format,
// to stream: tee clusterd's own log into it with slog.NewMultiHandler.
// It never blocks the logger (Add does not).
func LogHandler(sh *Shipper, stream string) slog.Handler {
	return slog.NewTextHandler(streamWriter{sh, stream}, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{} // the event carries the time
			}
			return a
		},
	})
}

// streamWriter adds each write, one slog record, as a line.
type streamWriter struct {
	sh     *Shipper
	stream string
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.sh.Add(w.stream, time.Now(), string(bytes.TrimSuffix(p, []byte{'\n'})))
	return len(p), nil
}
