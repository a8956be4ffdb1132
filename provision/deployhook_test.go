package provision

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDeployRefusesBeforeSending checks the errors `provision deploy`
// gives before it sends anything: they name the file and what to do.
func TestDeployRefusesBeforeSending(t *testing.T) {
	dir := t.TempDir()
	write := func(name, src string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	base := "cluster \"d\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 1 }\n"
	for _, tc := range []struct {
		name, src, body string
		show            bool
		want            string
	}{
		{"none.hcl", base, `{"a":1}`, false, "none.hcl has no deploy_hook block; add `deploy_hook {}` and run `provision up"},
		{"gen.hcl", base + "deploy_hook {}\n", `{"a":1}`, false, "the deploy hook has no secret yet: run `provision up"},
		{"gen.hcl", base + "deploy_hook {}\n", "", true, "the deploy hook has no secret yet"},
		{"set.hcl", base + "deploy_hook { secret = \"0123456789abcdef\" }\n", `image=v2`, false, `the deploy body "image=v2" is not JSON`},
		{"set.hcl", base + "deploy_hook { secret = \"0123456789abcdef\" }\n", `{"a":1}`, false, `cluster "d" has no nodes; run`},
	} {
		file := write(tc.name, tc.src)
		err := Deploy(context.Background(), DeployOptions{Options: Options{File: file}, Body: tc.body, ShowSecret: tc.show})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: got %v, want an error with %q", tc.name, tc.body, err, tc.want)
		}
	}
	// A secret set in the file is what --show-secret prints.
	var out strings.Builder
	file := write("set.hcl", base+"deploy_hook { secret = \"0123456789abcdef\" }\n")
	if err := Deploy(context.Background(), DeployOptions{Options: Options{File: file, Out: &out}, ShowSecret: true}); err != nil || out.String() != "0123456789abcdef\n" {
		t.Errorf("--show-secret: %q, %v", out.String(), err)
	}
}
