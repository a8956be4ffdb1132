package unit

import (
	"fmt"
	"slices"
	"strings"
)

// exampleInstance stands in for the instance when a template is checked:
// its values are checked as an instance would see them.
const exampleInstance = "1"

// Validate checks a unit about to be loaded or started under name n, so
// that mistakes are refused at the door instead of failing later on an
// agent. It checks that:
//
//   - n is a valid name and not a template ("hello@.service is a template;
//     start an instance such as hello@1.service");
//   - a .service unit has a [Service] section with one ExecStart= (several
//     or none only with Type=oneshot, which needs ExecStart= or ExecStop=),
//     and a Type= that systemd knows;
//   - well-known sections are spelled with systemd's case ([Service], not
//     [service], which systemd would ignore);
//   - [X-Fleet], as instance n would read it, is valid (see File.Fleet),
//     uses no specifier that needs the machine (%H %m %b: the scheduler
//     reads [X-Fleet] before there is one), and does not make the unit
//     MachineOf or Replaces itself.
//
// All problems are reported at once, as *Error values naming the file and
// line ("hello@.service:7: ..."), joined. filename labels the errors; ""
// means n's name.
func Validate(filename string, f *File, n Name) error {
	return validate(filename, f, n, false)
}

// ValidateTemplate checks a template about to be submitted, such as
// hello@.service, which is stored for its instances but never runs itself.
// It makes Validate's checks, on the file as an instance would see it.
func ValidateTemplate(filename string, f *File, n Name) error {
	if !n.IsTemplate() {
		if filename == "" {
			filename = n.String()
		}
		return &Error{File: filename, Msg: fmt.Sprintf("%s is not a template; templates are named like %s", n, Name{Prefix: n.Prefix, Type: n.Type, Templated: true})}
	}
	return validate(filename, f, n, true)
}

func validate(filename string, f *File, n Name, templateOK bool) error {
	if filename == "" {
		filename = n.String()
	}
	var errs []*Error
	fail := func(line int, format string, args ...any) {
		errs = append(errs, &Error{File: filename, Line: line, Msg: fmt.Sprintf(format, args...)})
	}

	// A Name built by hand may not survive its own String; one that does
	// not is not a name the cluster can use.
	canon := Name{Prefix: n.Prefix, Instance: n.Instance, Type: n.typ(), Templated: n.Templated || n.Instance != ""}
	if parsed, err := ParseName(n.String()); err != nil {
		fail(0, "%v", err)
		return joinErrors(errs)
	} else if parsed != canon {
		fail(0, "invalid unit name %s", n)
		return joinErrors(errs)
	}

	inst := canon
	if n.IsTemplate() {
		inst.Instance = exampleInstance
		if !templateOK {
			fail(0, "%s is a template; start an instance such as %s", n, inst)
		}
	}
	g := Instantiate(f, inst, Machine{})

	checkSectionNames(g, fail)
	if inst.Type == "service" {
		checkService(g, fail)
	}

	_, vals, ferrs := g.parseFleet()
	for _, e := range ferrs {
		e.File = filename
		errs = append(errs, e)
	}
	for _, v := range vals {
		if sp, ok := specifierLeft(v.value); ok {
			fail(v.line, "%s in %s: [X-Fleet] is read before the unit has a machine, so only %%i %%I %%n %%N %%p %%P can be used there", sp, v.key)
			continue
		}
		if v.key != "MachineOf" && v.key != "Replaces" {
			continue
		}
		if ref, err := ParseName(v.value); err == nil && ref == inst {
			fail(v.line, "%s=%s names the unit itself", v.key, v.value)
		}
	}

	slices.SortStableFunc(errs, func(a, b *Error) int { return a.Line - b.Line })
	return joinErrors(errs)
}

// knownSections are systemd's section names (and fleet's), whose case
// matters: systemd ignores "[service]" as an unknown section.
var knownSections = []string{
	"Unit", "Install", "Service", "Socket", "Timer", "Path", "Mount", "Automount", "Swap", FleetSection,
}

func checkSectionNames(f *File, fail func(int, string, ...any)) {
	for _, s := range f.Sections {
		for _, k := range knownSections {
			if s.Name != k && strings.EqualFold(s.Name, k) {
				fail(s.Line, "[%s] should be spelled [%s]; section names are case-sensitive, and systemd ignores sections it does not know", s.Name, k)
			}
		}
	}
}

// serviceTypes are the values systemd accepts for Type=.
var serviceTypes = map[string]bool{
	"simple": true, "exec": true, "forking": true, "oneshot": true,
	"dbus": true, "notify": true, "notify-reload": true, "idle": true,
}

// checkService applies systemd's rules for what a service must say about
// the process it runs (service_verify in systemd).
func checkService(f *File, fail func(int, string, ...any)) {
	var (
		first   *Section
		typ     *Option
		starts  []*Option
		hasStop bool
	)
	for _, s := range f.Sections {
		if s.Name != "Service" {
			continue
		}
		if first == nil {
			first = s
		}
		for _, o := range s.Options {
			switch o.Name {
			case "Type":
				typ = o
			case "ExecStart":
				if o.Value == "" {
					starts = nil // systemd's list reset
				} else {
					starts = append(starts, o)
				}
			case "ExecStop":
				hasStop = o.Value != ""
			}
		}
	}
	if first == nil {
		fail(0, "no [Service] section; a .service unit needs one, with ExecStart= naming the command to run")
		return
	}
	t := "simple"
	if typ != nil && typ.Value != "" {
		if !serviceTypes[typ.Value] {
			fail(typ.Line, "Type=%s is not a service type; use simple, exec, forking, oneshot, dbus, notify, notify-reload or idle", typ.Value)
			return
		}
		t = typ.Value
	}
	switch {
	case t == "oneshot":
		if len(starts) == 0 && !hasStop {
			fail(first.Line, "[Service] has neither ExecStart= nor ExecStop=; a Type=oneshot service needs one of them")
		}
	case len(starts) == 0:
		fail(first.Line, "[Service] has no ExecStart=; only Type=oneshot services can do without one")
	case len(starts) > 1:
		fail(starts[1].Line, "a second ExecStart= (the first is on line %d); only Type=oneshot services can have several, so run the others with ExecStartPre= or ExecStartPost=", starts[0].Line)
	}
}
