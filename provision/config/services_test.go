package config

import (
	"reflect"
	"strings"
	"testing"

	"github.com/corral-dev/corral/clusterd/unit"
	"github.com/hashicorp/hcl/v2"
)

const (
	svcBase = "cluster \"c\" {}\nprovider \"local\" {}\nnode_group \"core\" { desired_capacity = 3 }\n"
	// helloUnit is a template with a comment, which its canonical form drops.
	helloUnit = "# hello\n[Unit]\nDescription=Hello %i\n\n[Service]\nExecStart=/bin/sleep 1000\n"
	plainUnit = "[Service]\nExecStart=/bin/sleep 1000\n"
)

func canonical(t *testing.T, src string) string {
	t.Helper()
	f, err := unit.Parse("x.service", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return f.String()
}

func TestServices(t *testing.T) {
	src := svcBase + `service "hello@.service" {
  source    = "units/hello@.service"
  instances = 3
}
service "announce.service" {
  source = "units/announce.service"
  state  = "loaded"
}
service "inline.service" {
  content = <<-EOT
    [Service]
    ExecStart=/bin/sleep 1000
  EOT
}
service "none@.service" {
  content   = file("units/hello@.service")
  instances = 0
}
`
	cfg := mustParseIn(t, src, Inputs{}, map[string]string{
		"units/hello@.service":   helloUnit,
		"units/announce.service": plainUnit,
	})
	hello, plain := canonical(t, helloUnit), canonical(t, plainUnit)
	if strings.Contains(hello, "#") {
		t.Fatalf("canonical content keeps the comment: %q", hello)
	}
	var got []Service
	for _, s := range cfg.Services {
		if s.DeclRange.Filename != "file.hcl" || s.DeclRange.Start.Line == 0 {
			t.Errorf("%s: DeclRange %v", s.Name, s.DeclRange)
		}
		s.DeclRange = hcl.Range{}
		got = append(got, s)
	}
	want := []Service{
		{Name: "hello@.service", Content: hello, Instances: 3, State: "launched"},
		{Name: "announce.service", Content: plain, Instances: 1, State: "loaded"},
		{Name: "inline.service", Content: plain, Instances: 1, State: "launched"},
		{Name: "none@.service", Content: hello, Instances: 0, State: "launched"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Services =\n%#v\nwant\n%#v", got, want)
	}
	var names []string
	for _, u := range cfg.Units() {
		names = append(names, u.Name+"="+u.State)
		if u.Content != map[bool]string{true: hello, false: plain}[strings.Contains(u.Name, "@")] {
			t.Errorf("%s: content %q", u.Name, u.Content)
		}
	}
	wantNames := []string{"hello@1.service=launched", "hello@2.service=launched", "hello@3.service=launched",
		"announce.service=loaded", "inline.service=launched"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("Units = %v, want %v", names, wantNames)
	}
}

// Each bad service block gives one diagnostic, at the attribute or label
// that is wrong.
func TestServiceErrors(t *testing.T) {
	files := map[string]string{
		"units/hello@.service": helloUnit,
		"units/plain.service":  plainUnit,
		"units/bad.service":    "[Service]\nExecStart=/bin/true\n[X-Fleet]\nMachineOff=x.service\n",
	}
	tests := []struct {
		name       string
		block      string
		line, col  int // of the subject, in the block (line 1 is its header)
		summary    string
		detailPart string
	}{
		{"missing source file", "service \"web.service\" {\n  source = \"units/nope.service\"\n}",
			2, 12, "Unit file not found", `no file exists at "`},
		{"both source and content", "service \"web.service\" {\n  source  = \"units/plain.service\"\n  content = \"x\"\n}",
			3, 3, "Conflicting service source", "sets both source (at file.hcl:5,3) and content"},
		{"neither source nor content", "service \"web.service\" {\n}",
			1, 1, "Missing service source", `source = "units/web.service"`},
		{"instances on a plain unit", "service \"plain.service\" {\n  source    = \"units/plain.service\"\n  instances = 3\n}",
			3, 15, "Invalid instances", "plain.service is not a template, so it runs once; instances is only for templates such as plain@.service"},
		{"negative instances", "service \"hello@.service\" {\n  source    = \"units/hello@.service\"\n  instances = -1\n}",
			3, 15, "Invalid instances", "instances must be 0 or more, got -1"},
		{"invalid unit content", "service \"bad.service\" {\n  source = \"units/bad.service\"\n}",
			2, 12, "Invalid unit file", "units/bad.service:4: "},
		{"invalid inline content", "service \"x.service\" {\n  content = \"[Unit]\\nDescription=x\\n\"\n}",
			2, 13, "Invalid unit file", "x.service: "},
		{"bad state", "service \"x.service\" {\n  content = \"[Service]\\nExecStart=/bin/true %i\\n\"\n  state = \"inactive\"\n}",
			3, 11, "Invalid state", `state must be "launched" or "loaded", got "inactive"`},
		{"duplicate", "service \"plain.service\" {\n  source = \"units/plain.service\"\n}\nservice \"plain.service\" {\n  source = \"units/nope\"\n}",
			4, 1, "Duplicate service \"plain.service\"", "already defined at file.hcl:4,1"},
		{"instance as a name", "service \"hello@1.service\" {\n  source = \"units/hello@.service\"\n}",
			1, 9, "Invalid service name", "declare its template hello@.service with instances = N"},
		{"short name", "service \"hello\" {\n  source = \"units/plain.service\"\n}",
			1, 9, "Invalid service name", `such as "hello.service"`},
		{"unknown argument", "service \"plain.service\" {\n  source = \"units/plain.service\"\n  replicas = 2\n}",
			3, 3, "Unsupported argument", "replicas"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, diags := parseIn(t, svcBase+tt.block+"\n", Inputs{}, files)
			if diags == nil || len(diags.Diags) != 1 {
				t.Fatalf("want one diagnostic, got:\n%s", diags.Error())
			}
			d := diags.Diags[0]
			baseLines := strings.Count(svcBase, "\n")
			if d.Subject == nil || d.Subject.Filename != "file.hcl" ||
				d.Subject.Start.Line != baseLines+tt.line || d.Subject.Start.Column != tt.col {
				t.Errorf("subject = %v, want file.hcl:%d,%d", d.Subject, baseLines+tt.line, tt.col)
			}
			if d.Summary != tt.summary || !strings.Contains(d.Detail, tt.detailPart) {
				t.Errorf("diagnostic %q: %q; want %q with %q", d.Summary, d.Detail, tt.summary, tt.detailPart)
			}
		})
	}
}
