package unit

import (
	"testing"
)

func TestInstantiate(t *testing.T) {
	m := Machine{ID: "0123456789abcdef0123456789abcdef", Hostname: "core-1", BootID: "fedcba9876543210fedcba9876543210"}
	inst := Name{Prefix: "hello", Instance: "1", Type: "service", Templated: true}
	esc := Name{Prefix: `my\x2dapp`, Instance: `var-lib-data\x2d1`, Type: "service", Templated: true}
	tests := []struct {
		name    string
		value   string
		n       Name
		m       Machine
		want    string
		partial string // with the zero Machine
	}{
		{"instance", "hello-%i", inst, m, "hello-1", "hello-1"},
		{"full name", "%n", inst, m, "hello@1.service", "hello@1.service"},
		{"name without type", "%N", inst, m, "hello@1", "hello@1"},
		{"prefix", "%p@*", inst, m, "hello@*", "hello@*"},
		{"sidekick MachineOf", "hello@%i.service", inst, m, "hello@1.service", "hello@1.service"},
		{"escaped instance", "%i", esc, m, `var-lib-data\x2d1`, `var-lib-data\x2d1`},
		{"unescaped instance", "%I", esc, m, "var/lib/data-1", "var/lib/data-1"},
		{"unescaped prefix", "%P", esc, m, "my-app", "my-app"},
		{"escaped prefix", "%p", esc, m, `my\x2dapp`, `my\x2dapp`},
		{"UTF-8 escape", "%I", Name{Prefix: "x", Instance: `caf\xc3\xa9`, Templated: true}, m, "café", "café"},
		{"hostname", "%H", inst, m, "core-1", "%H"},
		{"machine id", "/m/%m", inst, m, "/m/" + m.ID, "/m/%m"},
		{"boot id", "%b", inst, m, m.BootID, "%b"},
		{"literal percent", "100%%", inst, m, "100%", "100%%"},
		{"percent before a specifier letter", "%%i", inst, m, "%i", "%%i"},
		{"three percents", "%%%i", inst, m, "%1", "%%1"},
		{"unknown specifier left", "%z %t %i", inst, m, "%z %t 1", "%z %t 1"},
		{"trailing percent", "50%", inst, m, "50%", "50%"},
		{"no specifiers", "/bin/true", inst, m, "/bin/true", "/bin/true"},
		{"plain unit", "%p.socket %i|", Name{Prefix: "foo", Type: "service"}, m, "foo.socket |", "foo.socket |"},
		{"template", "%n %i|", Name{Prefix: "hello", Type: "service", Templated: true}, m, "hello@.service |", "hello@.service |"},
		{"empty machine field left", "%H %m", inst, Machine{ID: m.ID}, "%H " + m.ID, "%H %m"},
		{"percent from unescaping doubled in partial form", "%I", Name{Prefix: "x", Instance: `\x25H`, Templated: true}, m, "%H", "%%H"},
		{"everything", "%n %N %p %P %i %I %H %m %b %%", inst, m,
			"hello@1.service hello@1 hello hello 1 1 core-1 " + m.ID + " " + m.BootID + " %",
			"hello@1.service hello@1 hello hello 1 1 %H %m %b %%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &File{Sections: []*Section{{Name: "Service", Options: []*Option{{Name: "ExecStart", Value: tt.value, Line: 7}}}}}
			got := Instantiate(f, tt.n, tt.m)
			if v := got.Value("Service", "ExecStart"); v != tt.want {
				t.Errorf("full: got %q, want %q", v, tt.want)
			}
			part := Instantiate(f, tt.n, Machine{})
			if v := part.Value("Service", "ExecStart"); v != tt.partial {
				t.Errorf("partial: got %q, want %q", v, tt.partial)
			}
			// The partial form expanded again gives what one full pass does.
			if v := Instantiate(part, tt.n, tt.m).Value("Service", "ExecStart"); v != tt.want {
				t.Errorf("partial then full: got %q, want %q", v, tt.want)
			}
			if f.Sections[0].Options[0].Value != tt.value {
				t.Error("Instantiate changed its input")
			}
			if got.Sections[0].Options[0].Line != 7 {
				t.Error("Instantiate lost the line number")
			}
		})
	}
}

func TestInstantiateEveryValue(t *testing.T) {
	f := mustParse(t, "[Unit]\nDescription=Hello %i\n[Service]\nExecStart=/bin/hello %i\n[X-Custom]\nKey%i=%i\n[X-Fleet]\nConflicts=%p@*\n")
	got := Instantiate(f, Name{Prefix: "hello", Instance: "7", Type: "service", Templated: true}, Machine{}).String()
	want := "[Unit]\nDescription=Hello 7\n\n[Service]\nExecStart=/bin/hello 7\n\n[X-Custom]\nKey%i=7\n\n[X-Fleet]\nConflicts=hello@*\n"
	if got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestSpecifierLeft(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"hello@1.service", ""},
		{"a-%H", "%H"},
		{"100%%", ""},
		{"%%H", ""},
		{"%%%m", "%m"},
		{"50%", ""},
	}
	for _, tt := range tests {
		got, ok := specifierLeft(tt.in)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("specifierLeft(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

// A partial expansion followed by a full one gives what one full pass
// gives, whatever the value and the instance.
func FuzzInstantiate(f *testing.F) {
	f.Add("%n %N %p %P %i %I %H %m %b %% %z", `a\x25i-b`)
	f.Add("%%%", "1")
	f.Fuzz(func(t *testing.T, value, instance string) {
		n, err := ParseName("x@" + instance + ".service")
		if err != nil {
			return
		}
		m := Machine{ID: "0123456789abcdef0123456789abcdef", Hostname: "h", BootID: "b"}
		file := &File{Sections: []*Section{{Name: "S", Options: []*Option{{Name: "V", Value: value}}}}}
		once := Instantiate(file, n, m).Value("S", "V")
		twice := Instantiate(Instantiate(file, n, Machine{}), n, m).Value("S", "V")
		if once != twice {
			t.Fatalf("value %q, instance %q: one pass %q, two passes %q", value, instance, once, twice)
		}
	})
}
