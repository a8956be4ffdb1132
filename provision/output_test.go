package provision_test

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/corral-dev/corral/provision"
	"github.com/corral-dev/corral/provision/state"
)

// outputFile is a cluster file with variables, a local and outputs.
const outputFile = `variable "web_nodes" {
  type    = number
  default = 1
}
variable "token" {
  default   = "s3cret"
  sensitive = true
}
locals { port = 2379 }
cluster "out" { etcd_members = 1 }
provider "local" {}
node_group "web" {
  desired_capacity = var.web_nodes
  metadata         = { role = "web" }
}
output "name" { value = cluster.name }
output "machines" { value = cluster.machines }
output "endpoints" { value = [for m in cluster.machines : "https://${m.ip}:${local.port}"] }
output "size" { value = var.web_nodes }
output "token" {
  value     = var.token
  sensitive = true
}
`

// withState writes outputFile and a state with two nodes, as up would
// leave them, without running anything: outputs need only the state.
func withState(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "out.hcl")
	if err := os.WriteFile(file, []byte(outputFile), 0o600); err != nil {
		t.Fatal(err)
	}
	st := &state.State{Cluster: "out", Provider: "local", Nodes: []state.Node{
		{Name: "web-1", Group: "web", Index: 1, IP: netip.MustParseAddr("10.77.0.11"), Role: state.Member},
		{Name: "web-2", Group: "web", Index: 2, IP: netip.MustParseAddr("10.77.0.12"), Role: state.Client},
	}}
	if err := state.For(file, "out").Save(st); err != nil {
		t.Fatal(err)
	}
	return file
}

// run runs the provision command line in-process, as main does, with the
// single-dash rewrite.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	cmd := provision.Command()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(provision.TerraformArgs(args))
	err := cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestOutputCommand(t *testing.T) {
	file := withState(t)
	out, _, err := run(t, "output", file)
	if err != nil {
		t.Fatal(err)
	}
	want := `name = "out"
machines = [
  {
    group    = "web"
    ip       = "10.77.0.11"
    metadata = {
      role = "web"
    }
    name     = "web-1"
  },
  {
    group    = "web"
    ip       = "10.77.0.12"
    metadata = {
      role = "web"
    }
    name     = "web-2"
  },
]
endpoints = [
  "https://10.77.0.11:2379",
  "https://10.77.0.12:2379",
]
size = 1
token = (sensitive)
`
	if out != want {
		t.Errorf("output:\n%s\nwant\n%s", out, want)
	}

	// One output by name: a string as it is, anything else as JSON, and a
	// sensitive one shown because it was asked for.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"output", file, "name"}, "out\n"},
		{[]string{"output", file, "token"}, "s3cret\n"},
		{[]string{"output", file, "endpoints"}, `["https://10.77.0.11:2379","https://10.77.0.12:2379"]` + "\n"},
		{[]string{"output", "-o", "json", file, "name"}, `"out"` + "\n"},
		// Inputs, in every spelling, reach the outputs.
		{[]string{"output", "--var", "web_nodes=2", file, "size"}, "2\n"},
		{[]string{"output", "-var", "web_nodes=3", file, "size"}, "3\n"},
		{[]string{"output", "-var=web_nodes=4", file, "size"}, "4\n"},
	} {
		out, errOut, err := run(t, tc.args...)
		if err != nil || out != tc.want {
			t.Errorf("%v: %q, %v (stderr %q); want %q", tc.args, out, err, errOut, tc.want)
		}
	}

	vars := filepath.Join(t.TempDir(), "vars.hcl")
	if err := os.WriteFile(vars, []byte("web_nodes = 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, _, err := run(t, "output", "-var-file", vars, file, "size"); err != nil || out != "5\n" {
		t.Errorf("-var-file: %q, %v", out, err)
	}
	t.Setenv("CORRAL_VAR_web_nodes", "6")
	if out, _, err := run(t, "output", file, "size"); err != nil || out != "6\n" {
		t.Errorf("CORRAL_VAR_web_nodes: %q, %v", out, err)
	}
	if out, _, err := run(t, "output", "--var-file="+vars, file, "size"); err != nil || out != "5\n" {
		t.Errorf("-var-file over the environment: %q, %v", out, err)
	}
}

func TestOutputJSON(t *testing.T) {
	file := withState(t)
	out, _, err := run(t, "output", "--output", "json", file)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	want := map[string]any{
		"name": "out",
		"machines": []any{
			map[string]any{"name": "web-1", "group": "web", "ip": "10.77.0.11", "metadata": map[string]any{"role": "web"}},
			map[string]any{"name": "web-2", "group": "web", "ip": "10.77.0.12", "metadata": map[string]any{"role": "web"}},
		},
		"endpoints": []any{"https://10.77.0.11:2379", "https://10.77.0.12:2379"},
		"size":      1.0,
		"token":     "(sensitive)",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("JSON:\n%v\nwant\n%v", got, want)
	}
}

func TestOutputErrors(t *testing.T) {
	file := withState(t)
	if _, _, err := run(t, "output", file, "nope"); err == nil ||
		err.Error() != file+` has no output "nope"; it has: name, machines, endpoints, size, token` {
		t.Errorf("unknown output: %v", err)
	}
	_, errOut, err := run(t, "output", "-var", "web_nodes=many", file)
	if err != provision.ErrInvalidConfig || strings.Count(errOut, "Error: ") != 1 ||
		!strings.Contains(errOut, "<value for var.web_nodes>:1,1: Error: Variables not allowed") {
		t.Errorf("bad -var: %v\n%s", err, errOut)
	}
	// Before up, there are no machines: an output that needs one fails
	// with a diagnostic at its expression.
	dir := t.TempDir()
	bare := filepath.Join(dir, "bare.hcl")
	src := "cluster \"bare\" {}\nprovider \"local\" {}\nnode_group \"web\" { desired_capacity = 1 }\noutput \"first\" { value = cluster.machines[0].ip }\n"
	if err := os.WriteFile(bare, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, err = run(t, "output", bare)
	if err != provision.ErrInvalidConfig || !strings.Contains(errOut, "bare.hcl:4,42: Error: Invalid index") ||
		!strings.Contains(errOut, `cluster "bare" has no nodes`) {
		t.Errorf("output before up: %v\n%s", err, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, ".corral")); !os.IsNotExist(err) {
		t.Errorf("output created the state directory")
	}
}

func TestTerraformArgs(t *testing.T) {
	got := provision.TerraformArgs([]string{"up", "-var", "a=1", "-var=b=2", "-var-file", "f", "-var-file=g", "--var", "c=3", "-v", "--", "-var"})
	want := []string{"up", "--var", "a=1", "--var=b=2", "--var-file", "f", "--var-file=g", "--var", "c=3", "-v", "--", "-var"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TerraformArgs =\n%q\nwant\n%q", got, want)
	}
}
