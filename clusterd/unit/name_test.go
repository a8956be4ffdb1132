package unit

import (
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	tests := []struct {
		in       string
		want     Name
		str      string
		template bool
		instance bool
		tmpl     string // Template().String()
	}{
		{"hello@1.service", Name{"hello", "1", "service", true}, "hello@1.service", false, true, "hello@.service"},
		{"web.service", Name{"web", "", "service", false}, "web.service", false, false, "web.service"},
		{"hello@.service", Name{"hello", "", "service", true}, "hello@.service", true, false, "hello@.service"},
		{"hello@1", Name{"hello", "1", "service", true}, "hello@1.service", false, true, "hello@.service"},
		{"hello@", Name{"hello", "", "service", true}, "hello@.service", true, false, "hello@.service"},
		{"web", Name{"web", "", "service", false}, "web.service", false, false, "web.service"},
		{"app.v2", Name{"app.v2", "", "service", false}, "app.v2.service", false, false, "app.v2.service"},
		{"hello@1.2", Name{"hello", "1.2", "service", true}, "hello@1.2.service", false, true, "hello@.service"},
		{"db.socket", Name{"db", "", "socket", false}, "db.socket", false, false, "db.socket"},
		{"backup@daily.timer", Name{"backup", "daily", "timer", true}, "backup@daily.timer", false, true, "backup@.timer"},
		{"a@b@c.service", Name{"a", "b@c", "service", true}, "a@b@c.service", false, true, "a@.service"},
		{`mnt@var-lib\x2dx.service`, Name{"mnt", `var-lib\x2dx`, "service", true}, `mnt@var-lib\x2dx.service`, false, true, "mnt@.service"},
		{`x@caf\xc3\xa9.path`, Name{"x", `caf\xc3\xa9`, "path", true}, `x@caf\xc3\xa9.path`, false, true, "x@.path"},
		{"a:b_c-d.mount", Name{"a:b_c-d", "", "mount", false}, "a:b_c-d.mount", false, false, "a:b_c-d.mount"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, err := ParseName(tt.in)
			if err != nil {
				t.Fatalf("ParseName: %v", err)
			}
			if n != tt.want {
				t.Errorf("got %#v, want %#v", n, tt.want)
			}
			if n.String() != tt.str {
				t.Errorf("String() = %q, want %q", n.String(), tt.str)
			}
			if n.IsTemplate() != tt.template || n.IsInstance() != tt.instance {
				t.Errorf("IsTemplate, IsInstance = %v, %v; want %v, %v", n.IsTemplate(), n.IsInstance(), tt.template, tt.instance)
			}
			if got := n.Template().String(); got != tt.tmpl {
				t.Errorf("Template() = %q, want %q", got, tt.tmpl)
			}
			// The canonical form parses to the same name.
			if again, err := ParseName(n.String()); err != nil || again != n {
				t.Errorf("ParseName(%q) = %#v, %v", n.String(), again, err)
			}
		})
	}
}

func TestParseNameErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // a part of the message
	}{
		{"", "empty unit name"},
		{"@1.service", "nothing before the '@'"},
		{"@.service", "nothing before the '@'"},
		{".service", "invalid unit name"},
		{"hello.", "ends with '.'"},
		{"hello world.service", `' ' is not allowed`},
		{"a/b.service", `'/' is not allowed`},
		{"hello@%i.service", `'%' is not allowed`},
		{"he@llo@1.servic e", `' ' is not allowed`},
		{"pre@fix@1", ""}, // valid: '@' is allowed in the instance
		{"a@b.service\n", `'\n' is not allowed`},
		{"multi-user.target", ".target units can't be scheduled"},
		{"user.slice", ".slice units can't be scheduled"},
		{`bad\y.service`, `must start an escape`},
		{`bad\x2.service`, `must start an escape`},
		{`bad\x0a.service`, `control character`},
		{`bad\x7f.service`, `control character`},
		{strings.Repeat("a", 248) + ".service", "longer than 255"},
		{strings.Repeat("a", 247) + ".service", ""},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 30 {
			name = name[:30]
		}
		t.Run(name, func(t *testing.T) {
			n, err := ParseName(tt.in)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ParseName(%q) = %#v, want an error", tt.in, n)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestNameByHand(t *testing.T) {
	// A Name written as a literal, without Templated or Type, still means
	// what it says.
	n := Name{Prefix: "hello", Instance: "1"}
	if n.String() != "hello@1.service" || !n.IsInstance() || n.Template().String() != "hello@.service" {
		t.Errorf("%#v: String %q, IsInstance %v, Template %q", n, n, n.IsInstance(), n.Template())
	}
	if (Name{Prefix: "web"}).String() != "web.service" {
		t.Error("zero Type is not service")
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		glob, name string
		want       bool
	}{
		{"hello@*.service", "hello@1.service", true},
		{"hello@*", "hello@1.service", true},
		{"hello@*", "hello@1", true},
		{"hello@*", "hello@.service", true}, // path.Match: '*' matches the empty instance
		{"hello@*", "hello@1.socket", false},
		{"hello@*.service", "hello@1.socket", false},
		{"hello@*", "hello-sidekick@1.service", false},
		{"hello*", "hello-sidekick@1.service", true},
		{"hello@?.service", "hello@12.service", false},
		{"hello@[12].service", "hello@2.service", true},
		{"web.service", "web.service", true},
		{"web", "web.service", true},
		{"web", "web.socket", false},
		{"web.*", "web.socket", true},
		{"web.*", "web.service", true},
		{"*", "anything.service", true},
		{"*", "anything.socket", false},
		{"*.*", "anything.socket", true},
		{"ceph-mon*", "ceph-mon.service", true}, // the book's Conflicts=%p*
		{"ceph-mon*", "ceph-mon@a.service", true},
		{"monitor*", "monitor.timer", false},
		{"[", "x.service", false}, // malformed: matches nothing
		{"hello@*.service", "other@1.service", false},
	}
	for _, tt := range tests {
		if got := Match(tt.glob, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.glob, tt.name, got, tt.want)
		}
	}
}
