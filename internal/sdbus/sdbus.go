// Package sdbus connects to a systemd manager's private D-Bus socket. The
// systemd driver uses it on a node, and the tests' systemd instances
// through a socket of their own.
package sdbus

import (
	"context"
	"errors"
	"os"
	"strconv"
	"time"

	"github.com/godbus/dbus/v5"
)

// Dial connects to the manager's private socket, as go-systemd does but with
// a socket of the caller's choosing, and makes sure the manager reads what
// comes on the connection.
func Dial(ctx context.Context, socket string) (*dbus.Conn, error) {
	c, err := dbus.Dial("unix:path="+socket, dbus.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	// EXTERNAL with the uid as a number, as go-systemd does, so that no user
	// database lookup is needed. No Hello: there is no bus daemon on the
	// private socket.
	if err := c.Auth([]dbus.Auth{dbus.AuthExternal(strconv.Itoa(os.Getuid()))}); err != nil {
		c.Close()
		return nil, err
	}
	// systemd 252 leaves a message that arrives together with the end of
	// the authentication unread until more data comes: most first calls in
	// the tests, and go-systemd's first call (AddMatch) would hang until
	// the manager had other business. An unanswered Ping is followed by
	// another, which gets both read.
	obj := c.Object("org.freedesktop.systemd1", "/org/freedesktop/systemd1")
	for range 50 {
		pctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		err = obj.CallWithContext(pctx, "org.freedesktop.DBus.Peer.Ping", 0).Err
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			break
		}
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
