package overlay_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/corral-dev/corral/clusterd/registry"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

type machine = registry.Machine

func hasMachine(ms []machine, name string) bool {
	return slices.ContainsFunc(ms, func(m machine) bool { return m.Name == name })
}

func netnsHandle(name string) (netns.NsHandle, error) { return netns.GetFromName(name) }

// waitFile waits for path to appear, by inotify on its directory: the
// overlay writes its files by rename, so IN_MOVED_TO or IN_CREATE says so.
func waitFile(t *testing.T, path string) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	defer f.Close()
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_CREATE|unix.IN_MOVED_TO); err != nil {
		t.Fatal(err)
	}
	f.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if _, err := f.Read(buf); err != nil {
			t.Fatalf("%s did not appear: %v", path, err)
		}
	}
}
