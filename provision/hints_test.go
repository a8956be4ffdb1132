package provision

import (
	"testing"

	"github.com/corral-dev/corral/provision/config"
)

// The hints up prints repeat the run's inputs, quoted for a shell.
func TestFileArgs(t *testing.T) {
	opts := Options{File: "my cluster.hcl", Inputs: config.Inputs{
		Vars:     []string{"n=3", `zones=["a", "b"]`, "msg=it's"},
		VarFiles: []string{"prod.hcl"},
		Env:      []string{"CORRAL_VAR_x=1"},
	}}
	want := `'my cluster.hcl' -var-file prod.hcl -var n=3 -var 'zones=["a", "b"]' -var 'msg=it'\''s'`
	if got := fileArgs(opts); got != want {
		t.Errorf("fileArgs =\n%s\nwant\n%s", got, want)
	}
	if got := fileArgs(Options{File: "examples/local.hcl"}); got != "examples/local.hcl" {
		t.Errorf("fileArgs = %s", got)
	}
}
