package unit

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	const ok = "[Unit]\nDescription=x\n\n[Service]\nExecStart=/bin/true\n"
	tests := []struct {
		name string
		unit string // name the unit is submitted as
		src  string
		want []string // error lines; nil for a valid unit
	}{
		{"plain service", "web.service", ok, nil},
		{"instance", "hello@1.service", ok + "[X-Fleet]\nConflicts=%p@*\nMachineOf=db@%i.service\n", nil},
		{"oneshot without ExecStart but with ExecStop", "setup.service", "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStop=/bin/cleanup\n", nil},
		{"oneshot with several ExecStart", "setup.service", "[Service]\nType=oneshot\nExecStart=/bin/a\nExecStart=/bin/b\n", nil},
		{"ExecStart reset then set", "web.service", "[Service]\nExecStart=/bin/a\nExecStart=\nExecStart=/bin/b\n", nil},
		{"two [Service] sections", "web.service", "[Service]\nType=simple\n[Unit]\nDescription=x\n[Service]\nExecStart=/bin/a\n", nil},
		{"socket needs no [Service]", "web.socket", "[Socket]\nListenStream=80\n", nil},
		{"timer", "backup.timer", "[Timer]\nOnCalendar=daily\n", nil},
		{"%H outside [X-Fleet] is fine", "web.service", "[Service]\nExecStart=/bin/echo %H %m %b\n", nil},
		{"%% in [X-Fleet] is fine", "web.service", ok + "[X-Fleet]\nMachineMetadata=load=100%%\n", nil},
		{"global", "mon.service", ok + "[X-Fleet]\nGlobal=true\nMachineMetadata=role=database\nConflicts=other*\n", nil},
		{"unknown sections and options are not our business", "web.service", ok + "[X-Other]\nAnything=goes\n[Unit]\nNotASystemdOption=1\n", nil},

		{"template", "hello@.service", ok, []string{"hello@.service: hello@.service is a template; start an instance such as hello@1.service"}},
		{
			"template with other problems too",
			"hello@.service",
			"[Service]\nExecStartPre=/bin/true\n[X-Fleet]\nBogus=1\n",
			[]string{
				"hello@.service: hello@.service is a template; start an instance such as hello@1.service",
				"hello@.service:1: [Service] has no ExecStart=; only Type=oneshot services can do without one",
				"hello@.service:4: unknown [X-Fleet] option Bogus; fleet knows Conflicts, MachineOf, MachineID, MachineMetadata, Global and Replaces",
			},
		},
		{"no [Service]", "web.service", "[Unit]\nDescription=x\n", []string{"web.service: no [Service] section; a .service unit needs one, with ExecStart= naming the command to run"}},
		{"no ExecStart", "web.service", "[Unit]\nDescription=x\n\n[Service]\nExecStartPre=/bin/true\nExecStop=/bin/true\n", []string{"web.service:4: [Service] has no ExecStart=; only Type=oneshot services can do without one"}},
		{"ExecStart reset to nothing", "web.service", "[Service]\nExecStart=/bin/a\nExecStart=\n", []string{"web.service:1: [Service] has no ExecStart=; only Type=oneshot services can do without one"}},
		{"two ExecStart", "web.service", "[Service]\nExecStart=/bin/a\nExecStart=/bin/b\n", []string{"web.service:3: a second ExecStart= (the first is on line 2); only Type=oneshot services can have several, so run the others with ExecStartPre= or ExecStartPost="}},
		{"oneshot with nothing", "setup.service", "[Service]\nType=oneshot\n", []string{"setup.service:1: [Service] has neither ExecStart= nor ExecStop=; a Type=oneshot service needs one of them"}},
		{"bad Type", "web.service", "[Service]\nType=daemon\nExecStart=/bin/a\n", []string{"web.service:2: Type=daemon is not a service type; use simple, exec, forking, oneshot, dbus, notify, notify-reload or idle"}},
		{"misspelt section", "web.service", "[service]\nExecStart=/bin/a\n", []string{
			"web.service: no [Service] section; a .service unit needs one, with ExecStart= naming the command to run",
			"web.service:1: [service] should be spelled [Service]; section names are case-sensitive, and systemd ignores sections it does not know",
		}},
		{"misspelt [X-Fleet]", "web.service", ok + "[X-FLEET]\nGlobal=true\n", []string{"web.service:6: [X-FLEET] should be spelled [X-Fleet]; section names are case-sensitive, and systemd ignores sections it does not know"}},
		{"bad [X-Fleet]", "web.service", ok + "[X-Fleet]\nGlobal=true\nMachineOf=db.service\n", []string{"web.service:8: Global=true can't be combined with MachineOf; a global unit runs on every machine (only MachineMetadata and Conflicts can narrow it)"}},
		{"%H in [X-Fleet]", "web.service", ok + "[X-Fleet]\nMachineOf=db-%H.service\n", []string{"web.service:7: %H in MachineOf: [X-Fleet] is read before the unit has a machine, so only %i %I %n %N %p %P can be used there"}},
		{"unknown specifier in [X-Fleet]", "web.service", ok + "[X-Fleet]\nConflicts=%z*\n", []string{"web.service:7: %z in Conflicts: [X-Fleet] is read before the unit has a machine, so only %i %I %n %N %p %P can be used there"}},
		{"MachineOf itself", "hello@1.service", ok + "[X-Fleet]\nMachineOf=%n\n", []string{"hello@1.service:7: MachineOf=hello@1.service names the unit itself"}},
		{"MachineOf itself without type", "hello@1.service", ok + "[X-Fleet]\nMachineOf=hello@%i\n", []string{"hello@1.service:7: MachineOf=hello@1 names the unit itself"}},
		{"Replaces itself", "web.service", ok + "[X-Fleet]\nReplaces=web\n", []string{"web.service:7: Replaces=web names the unit itself"}},
		{"MachineOf expands to a bad name", "hello@1.service", ok + "[X-Fleet]\nMachineOf=%i/x.service\n", []string{`hello@1.service:7: MachineOf: invalid unit name "1/x.service": '/' is not allowed; use letters, digits and ":_.-" (systemd-escape writes anything else)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := ParseName(tt.unit)
			if err != nil {
				t.Fatal(err)
			}
			f := mustParse(t, tt.src)
			filename := tt.unit
			err = Validate(filename, f, n)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate succeeded")
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("error:\ngot  %q\nwant %q", got, tt.want)
			}
			var ue *Error
			if !errors.As(err, &ue) || ue.File != filename {
				t.Errorf("error %#v does not name the file", err)
			}
		})
	}
}

func TestValidateFilenameDefault(t *testing.T) {
	err := Validate("", &File{}, Name{Prefix: "web", Type: "service"})
	if err == nil || !strings.HasPrefix(err.Error(), "web.service: ") {
		t.Errorf("got %v, want an error labelled with the unit's name", err)
	}
}

func TestValidateBadName(t *testing.T) {
	f := mustParse(t, "[Service]\nExecStart=/bin/true\n")
	for _, n := range []Name{
		{Prefix: "", Type: "service"},
		{Prefix: "a b", Type: "service"},
		{Prefix: "a@b", Type: "service"}, // would read back as an instance
		{Prefix: "web", Type: "target"},
		{Prefix: "web", Type: "bogus"},
	} {
		if err := Validate("x", f, n); err == nil {
			t.Errorf("Validate accepted the name %#v", n)
		}
	}
}

func TestValidateTemplate(t *testing.T) {
	tmpl := Name{Prefix: "hello", Type: "service", Templated: true}
	good := mustParse(t, "[Service]\nExecStart=/bin/hello %i\n[X-Fleet]\nConflicts=%p@*\nMachineOf=db@%i.service\n")
	if err := ValidateTemplate("hello@.service", good, tmpl); err != nil {
		t.Errorf("ValidateTemplate: %v", err)
	}
	bad := mustParse(t, "[Service]\nExecStart=/bin/hello %i\n[X-Fleet]\nMachineOf=%n\nMachineID=abc\n")
	want := []string{
		"hello@.service:4: MachineOf=hello@1.service names the unit itself",
		"hello@.service:5: MachineID abc has 3 digits; use the full 32-digit machine id (clusterctl list-machines -l), not a prefix",
	}
	if err := ValidateTemplate("hello@.service", bad, tmpl); err == nil {
		t.Error("ValidateTemplate accepted a bad template")
	} else if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("error:\ngot  %q\nwant %q", got, want)
	}
	err := ValidateTemplate("", good, Name{Prefix: "hello", Instance: "1", Type: "service", Templated: true})
	if err == nil || err.Error() != "hello@1.service: hello@1.service is not a template; templates are named like hello@.service" {
		t.Errorf("ValidateTemplate of an instance: %v", err)
	}
}
