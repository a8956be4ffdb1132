package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/internal/clustertest"
)

// The binary is each of its three programs by name and by subcommand.
func TestDispatch(t *testing.T) {
	bin := clustertest.Binary(t)
	dir := t.TempDir()
	for _, name := range []string{"clusterd", "clusterctl"} {
		if err := os.Symlink(bin, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		argv []string
		want string
	}{
		{[]string{bin, "--help"}, "provision turns one HCL file"},
		{[]string{filepath.Join(dir, "clusterd"), "--help"}, "clusterd runs on every machine"},
		{[]string{filepath.Join(dir, "clusterctl"), "--help"}, "clusterctl talks to a Corral cluster"},
		{[]string{bin, "clusterd", "--help"}, "clusterd runs on every machine"},
		{[]string{bin, "ctl", "--help"}, "clusterctl talks to a Corral cluster"},
	}
	for _, tc := range cases {
		out, err := exec.Command(tc.argv[0], tc.argv[1:]...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: %v\n%s", tc.argv, err, out)
		}
	}
}
