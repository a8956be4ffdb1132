package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"
)

// base is a valid cluster, for tests about the language around it.
const base = "cluster \"c\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 1 }\n"

// parseIn parses src as file.hcl in a new directory that holds files, which
// is also the working directory, so that var files and file functions can
// use names relative to either.
func parseIn(t *testing.T, src string, in Inputs, files map[string]string) (*Config, *Diagnostics) {
	t.Helper()
	dir := t.TempDir()
	t.Chdir(dir)
	for name, content := range files {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return Parse([]byte(src), "file.hcl", in)
}

func mustParseIn(t *testing.T, src string, in Inputs, files map[string]string) *Config {
	t.Helper()
	cfg, diags := parseIn(t, src, in, files)
	if diags != nil {
		t.Fatalf("Parse: unexpected diagnostics:\n%s", diags.Error())
	}
	return cfg
}

// The example: a variable sets a group's size, an output lists the
// machines.
func TestVariableInBlock(t *testing.T) {
	src := `variable "web_nodes" {
  type    = number
  default = 3
}
cluster "demo" { etcd_members = 3 }
provider "local" {}
node_group "web" {
  desired_capacity = var.web_nodes
  metadata         = { role = "web" }
}
output "machines" { value = cluster.machines }
`
	cfg := mustParseIn(t, src, Inputs{}, nil)
	if got := cfg.NodeGroups[0].DesiredCapacity; got != 3 {
		t.Errorf("desired_capacity = %d, want 3", got)
	}
	cfg = mustParseIn(t, src, Inputs{Vars: []string{"web_nodes=5"}}, nil)
	if got := cfg.NodeGroups[0].DesiredCapacity; got != 5 {
		t.Errorf("with -var web_nodes=5: desired_capacity = %d, want 5", got)
	}
	if len(cfg.Outputs) != 1 || cfg.Outputs[0].Name != "machines" {
		t.Errorf("Outputs = %+v", cfg.Outputs)
	}
}

// Later inputs win: default < environment < var files in order < -var in
// order.
func TestInputPrecedence(t *testing.T) {
	src := `variable "a" { default = "default" }
variable "b" { default = "default" }
variable "c" { default = "default" }
variable "d" { default = "default" }
variable "e" { default = "default" }
` + base
	files := map[string]string{
		"one.hcl":  "c = \"one\"\nd = \"one\"\ne = \"one\"\n",
		"two.json": `{"d": "two", "e": "two"}`,
	}
	in := Inputs{
		Env:      []string{"CORRAL_VAR_b=env", "CORRAL_VAR_c=env", "CORRAL_VAR_undeclared=ignored", "PATH=/bin", "CORRAL_VAR_e=env"},
		VarFiles: []string{"one.hcl", "two.json"},
		Vars:     []string{"e=first", "e=second"},
	}
	cfg := mustParseIn(t, src, in, files)
	want := map[string]string{"a": "default", "b": "env", "c": "one", "d": "two", "e": "second"}
	for _, v := range cfg.Variables {
		if got := v.Value.AsString(); got != want[v.Name] {
			t.Errorf("var.%s = %q, want %q", v.Name, got, want[v.Name])
		}
	}
}

// -var and environment text is the value of a string variable, or one
// without a type, and an HCL expression for any other type.
func TestInputParsing(t *testing.T) {
	src := `variable "s" { type = string }
variable "u" {}
variable "n" { type = number }
variable "b" { type = bool }
variable "l" { type = list(string) }
variable "m" { type = map(number) }
variable "o" {
  type = object({ host = string, port = optional(number, 22) })
}
variable "any" { type = any }
` + base
	in := Inputs{
		Vars: []string{`s=[1, 2]`, `u="quoted"`, `n=1.5`, `b=true`, `l=["x", "y"]`, `m={ a = 1 }`, `o={ host = "h" }`},
		Env:  []string{`CORRAL_VAR_any=[1, "two"]`},
	}
	cfg := mustParseIn(t, src, in, nil)
	want := map[string]cty.Value{
		"s":   cty.StringVal("[1, 2]"),
		"u":   cty.StringVal(`"quoted"`),
		"n":   cty.NumberFloatVal(1.5),
		"b":   cty.True,
		"l":   cty.ListVal([]cty.Value{cty.StringVal("x"), cty.StringVal("y")}),
		"m":   cty.MapVal(map[string]cty.Value{"a": cty.NumberIntVal(1)}),
		"o":   cty.ObjectVal(map[string]cty.Value{"host": cty.StringVal("h"), "port": cty.NumberIntVal(22)}),
		"any": cty.TupleVal([]cty.Value{cty.NumberIntVal(1), cty.StringVal("two")}),
	}
	for _, v := range cfg.Variables {
		if !v.Value.RawEquals(want[v.Name]) {
			t.Errorf("var.%s = %#v, want %#v", v.Name, v.Value, want[v.Name])
		}
	}
}

func TestVariableDeclaration(t *testing.T) {
	src := `variable "token" {
  type        = string
  description = "The API token."
  sensitive   = true
  default     = "s3cret"
}
` + base
	cfg := mustParseIn(t, src, Inputs{}, nil)
	got := cfg.Variables[0]
	got.DeclRange = hcl.Range{}
	want := Variable{Name: "token", Description: "The API token.", Type: cty.String, Sensitive: true, Value: cty.StringVal("s3cret")}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Variables[0] = %#v, want %#v", got, want)
	}
}

func TestValidation(t *testing.T) {
	src := `variable "n" {
  type = number
  validation {
    condition     = var.n >= 1 && var.n <= 7
    error_message = "n must be between 1 and 7."
  }
  validation {
    condition     = floor(var.n) == var.n
    error_message = "n must be whole, got ${var.n}."
  }
}
` + base
	mustParseIn(t, src, Inputs{Vars: []string{"n=3"}}, nil)
	_, diags := parseIn(t, src, Inputs{Vars: []string{"n=9.5"}}, nil)
	if got := diags.Error(); got != "file.hcl:4,21: Invalid value for variable; n must be between 1 and 7.\n"+
		"file.hcl:8,21: Invalid value for variable; n must be whole, got 9.5." {
		t.Errorf("diagnostics:\n%s", got)
	}
}

func TestLocals(t *testing.T) {
	src := `variable "group" { default = "web" }
locals {
  # Defined before what it uses: order in the file does not matter.
  name = "${local.prefix}-${var.group}"
}
locals {
  prefix = "demo"
  size   = length(local.labels)
  labels = { role = var.group, tier = "front" }
}
cluster "c" {}
provider "local" {}
node_group "web" {
  desired_capacity = local.size
  metadata         = merge(local.labels, { name = local.name })
}
`
	cfg := mustParseIn(t, src, Inputs{}, nil)
	g := cfg.NodeGroups[0]
	if g.DesiredCapacity != 2 {
		t.Errorf("desired_capacity = %d, want 2", g.DesiredCapacity)
	}
	if want := map[string]string{"role": "web", "tier": "front", "name": "demo-web"}; !reflect.DeepEqual(g.Metadata, want) {
		t.Errorf("metadata = %v, want %v", g.Metadata, want)
	}
	if got := cfg.Locals["name"]; !got.RawEquals(cty.StringVal("demo-web")) {
		t.Errorf("local.name = %#v", got)
	}
}

func TestOutputs(t *testing.T) {
	src := `variable "token" {
  default   = "s3cret"
  sensitive = true
}
locals { port = 2379 }
` + base + `output "name" {
  description = "The cluster's name."
  value       = cluster.name
}
output "ips" { value = [for m in cluster.machines : m.ip] }
output "endpoints" { value = join(",", [for m in cluster.machines : "https://${m.ip}:${local.port}"]) }
output "web" { value = [for m in cluster.machines : m.name if lookup(m.metadata, "role", "") == "web"] }
output "token" {
  value     = var.token
  sensitive = true
}
`
	cfg := mustParseIn(t, src, Inputs{}, nil)
	if got := len(cfg.Outputs); got != 5 {
		t.Fatalf("%d outputs, want 5", got)
	}
	if o := cfg.Outputs[0]; o.Description != "The cluster's name." || o.Sensitive {
		t.Errorf("Outputs[0] = %+v", o)
	}
	if o := cfg.Outputs[4]; !o.Sensitive {
		t.Errorf("Outputs[4] = %+v, want sensitive", o)
	}
	cluster := ClusterValue("c", []Machine{
		{Name: "core-1", Group: "core", IP: "10.77.0.11", Metadata: map[string]string{"role": "web"}},
		{Name: "core-2", Group: "core", IP: "10.77.0.12"},
	})
	values, diags := cfg.EvalOutputs(cluster)
	if diags != nil {
		t.Fatal(diags.Error())
	}
	want := map[string]cty.Value{
		"name":      cty.StringVal("c"),
		"ips":       cty.TupleVal([]cty.Value{cty.StringVal("10.77.0.11"), cty.StringVal("10.77.0.12")}),
		"endpoints": cty.StringVal("https://10.77.0.11:2379,https://10.77.0.12:2379"),
		"web":       cty.TupleVal([]cty.Value{cty.StringVal("core-1")}),
		"token":     cty.StringVal("s3cret"), // unmarked: Sensitive says how to show it
	}
	if len(values) != len(want) {
		t.Errorf("EvalOutputs = %v", values)
	}
	for name, w := range want {
		if !values[name].RawEquals(w) {
			t.Errorf("output %s = %#v, want %#v", name, values[name], w)
		}
	}
	// By name, and an empty cluster.
	values, diags = cfg.EvalOutputs(ClusterValue("c", nil), "ips")
	if diags != nil || len(values) != 1 || values["ips"].LengthInt() != 0 {
		t.Errorf("EvalOutputs(empty, ips) = %v, %v", values, diags.Error())
	}
	_, diags = cfg.EvalOutputs(cluster, "nope")
	if !diags.HasErrors() || !strings.Contains(diags.Error(), `declares no output "nope"; it declares: name, ips, endpoints, web, token`) {
		t.Errorf("unknown output: %v", diags.Error())
	}
	// An error that shows only with the live cluster is reported then.
	cfg = mustParseIn(t, base+`output "first" { value = cluster.machines[0].ip }`+"\n", Inputs{}, nil)
	_, diags = cfg.EvalOutputs(ClusterValue("c", nil))
	if !diags.HasErrors() || !strings.HasPrefix(diags.Error(), "file.hcl:4,42: Invalid index") {
		t.Errorf("index into no machines: %v", diags.Error())
	}
}

// The diagnostics of a var file and of a -var value show their source, as
// those of the cluster file do.
func TestInputDiagnosticsShowSource(t *testing.T) {
	src := "variable \"n\" { type = number }\nvariable \"m\" { type = number }\n" + base
	_, diags := parseIn(t, src, Inputs{VarFiles: []string{"vars.hcl"}, Vars: []string{"m=[1"}},
		map[string]string{"vars.hcl": "# sizes\nn = \"three\"\n"})
	var b strings.Builder
	diags.WriteTo(&b)
	for _, want := range []string{
		"vars.hcl:2,5: Error: Invalid value for input variable",
		`   2: n = "three"`,
		"<value for var.m>:1,",
		"   1: [1",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, b.String())
		}
	}
}

// A sensitive value is not printed in a diagnostic's context, while an
// ordinary one is.
func TestSensitiveNotInDiagnostics(t *testing.T) {
	src := `variable "secret" {
  sensitive = true
  default   = "hunter2"
}
variable "plain" { default = "visible" }
cluster "c" {}
provider "local" {}
node_group "a" { desired_capacity = var.secret }
node_group "b" { desired_capacity = var.plain }
`
	_, diags := parseIn(t, src, Inputs{}, nil)
	var b strings.Builder
	diags.WriteTo(&b)
	if strings.Contains(b.String(), "hunter2") {
		t.Errorf("diagnostics show a sensitive value:\n%s", b.String())
	}
	if !strings.Contains(b.String(), `with var.plain as "visible"`) {
		t.Errorf("diagnostics do not show an ordinary value:\n%s", b.String())
	}
}

// TestLanguageErrors checks that each broken file gives exactly one
// diagnostic, with its summary, at its exact position.
func TestLanguageErrors(t *testing.T) {
	tests := []struct {
		name   string
		src    string
		in     Inputs
		files  map[string]string
		at     string // file:line,col of the subject
		want   string // the summary
		detail string // in the detail
	}{
		{name: "unknown attribute", src: "variable \"n\" {\n  kind = number\n}\n" + base,
			at: "file.hcl:2,3", want: "Unsupported argument", detail: `"kind"`},
		{name: "unknown block", src: base + "module \"m\" {}\n",
			at: "file.hcl:4,1", want: "Unsupported block type", detail: `"module"`},
		{name: "bad type", src: "variable \"n\" { type = strin }\n" + base,
			at: "file.hcl:1,23", want: "Invalid type specification", detail: `"strin"`},
		{name: "type error in a default", src: "variable \"n\" {\n  type    = number\n  default = \"three\"\n}\n" + base,
			at: "file.hcl:3,13", want: "Invalid default value for variable", detail: "a number is required"},
		{name: "type error in an object default", src: "variable \"o\" {\n  type    = object({ port = number })\n  default = { port = \"x\" }\n}\n" + base,
			at: "file.hcl:3,13", want: "Invalid default value for variable", detail: "port: a number is required"},
		{name: "reference in a default", src: "variable \"n\" { default = var.m }\n" + base,
			at: "file.hcl:1,26", want: "Variables not allowed"},
		{name: "invalid variable name", src: "variable \"1st\" {}\n" + base,
			at: "file.hcl:1,10", want: "Invalid variable name"},
		{name: "duplicate variable", src: "variable \"n\" { default = 1 }\nvariable \"n\" { default = 2 }\n" + base,
			at: "file.hcl:2,1", want: "Duplicate variable declaration", detail: "file.hcl:1,1"},
		{name: "required variable missing", src: "variable \"size\" { type = number }\n" + base,
			at: "file.hcl:1,1", want: "No value for required variable", detail: "CORRAL_VAR_size"},
		{name: "validation failure", src: "variable \"n\" {\n  default = 4\n  validation {\n    condition     = var.n % 2 == 1\n    error_message = \"n must be odd.\"\n  }\n}\n" + base,
			at: "file.hcl:4,21", want: "Invalid value for variable", detail: "n must be odd."},
		{name: "validation not bool", src: "variable \"n\" {\n  default = 4\n  validation {\n    condition     = var.n\n    error_message = \"x\"\n  }\n}\n" + base,
			at: "file.hcl:4,21", want: "Invalid validation condition", detail: "got a number"},
		{name: "validation refers to another variable", src: "variable \"m\" { default = 1 }\nvariable \"n\" {\n  default = 4\n  validation {\n    condition     = var.n > var.m\n    error_message = \"x\"\n  }\n}\n" + base,
			at: "file.hcl:5,29", want: "Invalid reference in variable validation", detail: "var.n"},
		{name: "validation without error_message", src: "variable \"n\" {\n  default = 4\n  validation {\n    condition = var.n > 1\n  }\n}\n" + base,
			at: "file.hcl:3,14", want: "Missing required argument", detail: `"error_message"`},
		{name: "-var for an undeclared variable", src: base, in: Inputs{Vars: []string{"nope=1"}},
			at: "<value for var.nope>:1,1", want: "Value for undeclared variable", detail: "A -var option sets var.nope"},
		{name: "-var with a bad value", src: "variable \"n\" { type = number }\n" + base, in: Inputs{Vars: []string{"n=three"}},
			at: "<value for var.n>:1,1", want: "Variables not allowed"},
		{name: "-var of the wrong type", src: "variable \"n\" { type = number }\n" + base, in: Inputs{Vars: []string{`n="three"`}},
			at: "<value for var.n>:1,1", want: "Invalid value for input variable", detail: "var.n declared at file.hcl:1,1: a number is required"},
		{name: "environment value of the wrong type", src: "variable \"l\" { type = list(string) }\n" + base, in: Inputs{Env: []string{`CORRAL_VAR_l={}`}},
			at: "<value for var.l>:1,1", want: "Invalid value for input variable", detail: "list of string required"},
		{name: "var file with a bad value", src: "variable \"n\" { type = number }\n" + base, in: Inputs{VarFiles: []string{"vars.hcl"}},
			files: map[string]string{"vars.hcl": "# the size\nn = \"three\"\n"},
			at:    "vars.hcl:2,5", want: "Invalid value for input variable", detail: "a number is required"},
		{name: "var file for an undeclared variable", src: base, in: Inputs{VarFiles: []string{"vars.hcl"}},
			files: map[string]string{"vars.hcl": "\nsize = 3\n"},
			at:    "vars.hcl:2,1", want: "Value for undeclared variable", detail: "The var file vars.hcl sets var.size"},
		{name: "var file syntax error", src: "variable \"n\" {}\n" + base, in: Inputs{VarFiles: []string{"vars.hcl"}},
			files: map[string]string{"vars.hcl": "n = \n"},
			at:    "vars.hcl:1,5", want: "Invalid expression"},
		{name: "json var file of the wrong type", src: "variable \"n\" { type = number }\n" + base, in: Inputs{VarFiles: []string{"vars.json"}},
			files: map[string]string{"vars.json": "{\n  \"n\": \"three\"\n}\n"},
			at:    "vars.json:2,8", want: "Invalid value for input variable"},
		{name: "reference to an undeclared local", src: "locals { a = 1 }\ncluster \"c\" { etcd_members = local.b }\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 1 }\n",
			at: "file.hcl:2,30", want: "Reference to undeclared local value", detail: `"b"`},
		{name: "reference to an undeclared local in a local", src: "locals {\n  a = 1\n  b = local.c + 1\n}\n" + base,
			at: "file.hcl:3,7", want: "Reference to undeclared local value", detail: `"c"`},
		{name: "reference to an undeclared variable", src: base + "node_group \"db\" { desired_capacity = var.db_nodes }\n",
			at: "file.hcl:4,38", want: "Reference to undeclared input variable", detail: `"db_nodes"`},
		{name: "bare var", src: base + "output \"all\" { value = var }\n",
			at: "file.hcl:4,24", want: "Invalid reference"},
		{name: "cycle between locals", src: "locals {\n  a = local.b\n  b = local.c\n}\nlocals {\n  c = \"${local.a}x\"\n  d = local.a\n}\n" + base,
			at: "file.hcl:2,3", want: "Cycle between local values", detail: "local.a → local.b → local.c → local.a"},
		{name: "local that refers to itself", src: "locals {\n  n = 1\n  a = local.a + 1\n}\n" + base,
			at: "file.hcl:3,3", want: "Cycle between local values", detail: "local.a → local.a"},
		{name: "duplicate local", src: "locals { a = 1 }\nlocals {\n  a = 2\n}\n" + base,
			at: "file.hcl:3,3", want: "Duplicate local value", detail: "file.hcl:1,10"},
		{name: "bad CIDR in cidrsubnet", src: "locals {\n  subnet = cidrsubnet(\"10.0.0.0/24\", 10, 1)\n}\n" + base,
			at: "file.hcl:2,12", want: "Error in function call", detail: "insufficient address space to extend prefix of 24 by 10"},
		{name: "unparsable CIDR", src: "locals {\n  subnet = cidrsubnet(\"10.0.0/24\", 8, 1)\n}\n" + base,
			at: "file.hcl:2,24", want: "Invalid function argument", detail: `invalid CIDR expression "10.0.0/24"`},
		{name: "subnet number too big", src: "locals {\n  subnet = cidrsubnet(\"10.0.0.0/16\", 8, 256)\n}\n" + base,
			at: "file.hcl:2,12", want: "Error in function call", detail: "prefix extension of 8 does not accommodate a subnet numbered 256"},
		{name: "host number too big", src: "locals {\n  host = cidrhost(\"10.0.0.0/30\", 4)\n}\n" + base,
			at: "file.hcl:2,10", want: "Error in function call", detail: "prefix of 30 does not accommodate a host numbered 4"},
		{name: "netmask of IPv6", src: "locals {\n  m = cidrnetmask(\"fd00::/64\")\n}\n" + base,
			at: "file.hcl:2,7", want: "Error in function call", detail: "IPv6 addresses cannot have a netmask"},
		{name: "missing file", src: "locals {\n  key = file(\"keys/id.pub\")\n}\n" + base,
			at: "file.hcl:2,15", want: "Invalid function argument", detail: "no file exists at"},
		{name: "template without a variable", src: "locals {\n  t = templatefile(\"t.tmpl\", { a = 1 })\n}\n" + base,
			files: map[string]string{"t.tmpl": "${a} ${b}\n"},
			at:    "file.hcl:2,30", want: "Invalid function argument", detail: `vars map does not contain key "b", referenced at t.tmpl:1,8-9`},
		{name: "template calls templatefile", src: "locals {\n  t = templatefile(\"t.tmpl\", {})\n}\n" + base,
			files: map[string]string{"t.tmpl": "${templatefile(\"t.tmpl\", {})}"},
			at:    "file.hcl:2,7", want: "Error in function call", detail: "There is no function named \"templatefile\""},
		{name: "unknown function", src: "locals {\n  a = uuid()\n}\n" + base,
			at: "file.hcl:2,7", want: "Call to unknown function", detail: `"uuid"`},
		{name: "function type error", src: "locals {\n  a = upper(1, 2)\n}\n" + base,
			at: "file.hcl:2,16", want: "Too many function arguments"},
		{name: "type error from a local", src: "locals { n = \"three\" }\ncluster \"c\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = local.n }\n",
			at: "file.hcl:4,40", want: "Incorrect attribute value type", detail: "desired_capacity"},
		{name: "cluster outside an output", src: "locals { ips = cluster.machines[*].ip }\n" + base,
			at: "file.hcl:1,16", want: "Reference to cluster outside an output", detail: "cluster.machines is known only after apply; use it in an output block."},
		{name: "cluster in a block", src: "cluster \"c\" {}\nprovider \"local\" {}\nnode_group \"core\" {\n  desired_capacity = length(cluster.machines)\n}\n",
			at: "file.hcl:4,29", want: "Reference to cluster outside an output"},
		{name: "output refers to a block", src: base + "output \"n\" { value = node_group.core }\n",
			at: "file.hcl:4,22", want: "Invalid reference in output", detail: `not to "node_group"`},
		{name: "output refers to no attribute of cluster", src: base + "output \"n\" { value = cluster.nodes }\n",
			at: "file.hcl:4,29", want: "Unsupported attribute", detail: `"nodes"`},
		{name: "output without a value", src: base + "output \"n\" {}\n",
			at: "file.hcl:4,12", want: "Missing required argument", detail: `"value"`},
		{name: "duplicate output", src: base + "output \"n\" { value = 1 }\noutput \"n\" { value = 2 }\n",
			at: "file.hcl:5,1", want: "Duplicate output", detail: "file.hcl:4,1"},
		{name: "sensitive output not marked", src: "variable \"t\" {\n  default   = \"x\"\n  sensitive = true\n}\n" + base + "output \"t\" { value = upper(var.t) }\n",
			at: "file.hcl:8,22", want: "Output refers to sensitive values"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, diags := parseIn(t, tt.src, tt.in, tt.files)
			if cfg != nil {
				t.Errorf("Parse returned a Config along with errors")
			}
			if diags == nil || len(diags.Diags) != 1 {
				t.Fatalf("want one diagnostic, got:\n%s", diags.Error())
			}
			d := diags.Diags[0]
			if d.Severity != hcl.DiagError || d.Subject == nil {
				t.Fatalf("want an error with a subject, got %s", diags.Error())
			}
			if got := position(*d.Subject); got != tt.at {
				t.Errorf("at %s, want %s: %s", got, tt.at, diags.Error())
			}
			if d.Summary != tt.want {
				t.Errorf("summary %q, want %q", d.Summary, tt.want)
			}
			if !strings.Contains(d.Detail, tt.detail) {
				t.Errorf("detail %q does not mention %q", d.Detail, tt.detail)
			}
		})
	}
}

func TestBadVarOption(t *testing.T) {
	_, diags := parseIn(t, base, Inputs{Vars: []string{"size"}}, nil)
	if got, want := diags.Error(), `Invalid -var option; The -var option "size" is not a variable name and a value separated by an equals sign, like -var 'name=value'.`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	_, diags = parseIn(t, base, Inputs{VarFiles: []string{"nope.hcl"}}, nil)
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "nope.hcl") {
		t.Errorf("missing var file: %v", diags.Error())
	}
}

// Independent mistakes in variables, locals, outputs and blocks are all
// reported in one pass, in file order within each part of the language.
func TestLanguageErrorsAtOnce(t *testing.T) {
	src := `variable "n" {
  type    = number
  default = "three"
}
locals {
  subnet = cidrsubnet("10.0.0.0/24", 10, 1)
}
cluster "c" {}
provider "local" {}
node_group "core" { desired_capacity = local.nope }
`
	_, diags := parseIn(t, src, Inputs{}, nil)
	var got []string
	for _, d := range diags.Diags {
		got = append(got, position(*d.Subject)+" "+d.Summary)
	}
	want := []string{
		"file.hcl:3,13 Invalid default value for variable",
		"file.hcl:6,12 Error in function call",
		"file.hcl:10,40 Reference to undeclared local value",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("diagnostics:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// A variable or local whose value failed is reported once, not again in
// everything that uses it.
func TestNoFollowOnErrors(t *testing.T) {
	src := `variable "n" { type = number }
locals {
  double = var.n * 2
  label  = "n=${local.double}"
}
cluster "c" {}
provider "local" {}
node_group "core" {
  desired_capacity = local.double
  metadata         = { label = local.label }
}
output "n" { value = local.double + length(cluster.machines) }
`
	_, diags := parseIn(t, src, Inputs{}, nil)
	if len(diags.Diags) != 1 || diags.Diags[0].Summary != "No value for required variable" {
		t.Errorf("diagnostics:\n%s", diags.Error())
	}
	src = "locals {\n  a = local.b\n  b = local.a\n  c = local.a\n}\ncluster \"c\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = local.c }\n"
	_, diags = parseIn(t, src, Inputs{}, nil)
	if len(diags.Diags) != 1 || diags.Diags[0].Summary != "Cycle between local values" {
		t.Errorf("diagnostics:\n%s", diags.Error())
	}
}

func TestExampleVars(t *testing.T) {
	const path = "../../examples/vars.hcl"
	cfg, diags := Load(path, Inputs{})
	if diags != nil {
		t.Fatalf("Load: unexpected diagnostics:\n%s", diags.Error())
	}
	if got := len(cfg.Nodes()); got != 3 || cfg.Cluster.EtcdMembers != 3 {
		t.Errorf("%d nodes, %d etcd members; want 3 and 3", got, cfg.Cluster.EtcdMembers)
	}
	if got := cfg.Provider.Local.CIDR.String(); got != "10.78.0.0/24" {
		t.Errorf("provider cidr = %s", got)
	}
	if got := cfg.Network.CIDR.String(); got != "10.78.128.0/17" {
		t.Errorf("network cidr = %s", got)
	}
	if got := cfg.NodeGroups[1].Metadata; !reflect.DeepEqual(got, map[string]string{"env": "demo", "role": "db"}) {
		t.Errorf("db metadata = %v", got)
	}
	cfg, diags = Load(path, Inputs{Vars: []string{"web_nodes=1"}})
	if diags != nil || cfg.Cluster.EtcdMembers != 1 {
		t.Errorf("web_nodes=1: %v, %v", cfg, diags.Error())
	}
	_, diags = Load(path, Inputs{Vars: []string{"web_nodes=25"}})
	if !diags.HasErrors() || !strings.Contains(diags.Error(), "web_nodes must be between 1 and 20.") {
		t.Errorf("web_nodes=25: %v", diags.Error())
	}
	values, diags := cfg.EvalOutputs(ClusterValue("demo", []Machine{
		{Name: "web-1", Group: "web", IP: "10.78.0.11", Metadata: map[string]string{"role": "web"}},
		{Name: "db-1", Group: "db", IP: "10.78.0.12", Metadata: map[string]string{"role": "db"}},
	}))
	if diags != nil {
		t.Fatal(diags.Error())
	}
	if got := values["hosts"].AsString(); got != "10.78.0.11      web-1\n10.78.0.12      db-1\n" {
		t.Errorf("hosts = %q", got)
	}
}
