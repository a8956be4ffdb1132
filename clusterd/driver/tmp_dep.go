package driver

import _ "github.com/coreos/go-systemd/v22/dbus"
