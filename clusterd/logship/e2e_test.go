package logship_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/corral-dev/corral/clusterd/logship"
	"github.com/corral-dev/corral/internal/clustertest"
)

// TestClusterShipsToFiles runs a real local cluster with a logs block
// naming a file sink: a unit started with clusterctl has its lines in the
// sink's file on the node (and still in its journal), clusterd's own log
// has a file too, and a changed logs block moves shipping on the running
// node, without a restart.
func TestClusterShipsToFiles(t *testing.T) {
	c := clustertest.Prepare(t, clustertest.Options{Nodes: 1})
	sinkDir := filepath.Join(t.TempDir(), "corral-logs")
	c.Edit(`node_group "core" {`, "logs {\n  destination = \"file:"+sinkDir+"\"\n}\nnode_group \"core\" {")
	c.Up()
	if !strings.Contains(c.Output(), "logs: units' output and clusterd's log ship to file:"+sinkDir) {
		t.Errorf("provision up did not say where logs go:\n%s", c.Output())
	}
	node := c.Nodes()[0].Name
	raw, err := os.ReadFile(filepath.Join(c.Dir().NodeDir(node), "machine-id"))
	if err != nil {
		t.Fatal(err)
	}
	id := strings.TrimSpace(string(raw))

	unitFile := filepath.Join(t.TempDir(), "hello.service")
	if err := os.WriteFile(unitFile, []byte("[Service]\nExecStart=/bin/sh -c 'echo hello from the cluster; exec sleep 100000'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := c.Ctl("start", "--no-block", unitFile); code != 0 {
		t.Fatalf("clusterctl start: %s%s", out, errOut)
	}
	contains := func(path, s string) func() bool {
		return func() bool {
			b, _ := os.ReadFile(path)
			return strings.Contains(string(b), s)
		}
	}
	sink, err := logship.NewFileSink(sinkDir)
	if err != nil {
		t.Fatal(err)
	}
	unitLog := sink.Path(logship.StreamName(id, "hello.service"))
	waitFor(t, "the unit's line in "+unitLog, contains(unitLog, " hello from the cluster\n"))
	clusterdLog := sink.Path(logship.StreamName(id, "clusterd"))
	waitFor(t, "clusterd's own log in "+clusterdLog, contains(clusterdLog, "msg=\"shipping logs\" to=file:"+sinkDir))
	// The journal on the node is still there for clusterctl journal.
	if out, errOut, code := c.Ctl("journal", "hello.service"); code != 0 || !strings.Contains(out, "hello from the cluster") {
		t.Errorf("clusterctl journal: exit %d, %s%s", code, out, errOut)
	}

	// Move the sink: the running clusterd follows the setting in etcd.
	moved := filepath.Join(t.TempDir(), "moved")
	c.Edit("file:"+sinkDir, "file:"+moved)
	c.Up()
	movedLog := filepath.Join(moved, filepath.Base(clusterdLog))
	waitFor(t, "clusterd's log in the moved sink "+movedLog, contains(movedLog, "msg=\"shipping logs\" to=file:"+moved))
}
