package unit

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

// FleetSection is the name of fleet's section in a unit file.
const FleetSection = "X-Fleet"

// Fleet is a unit's [X-Fleet] section: where the scheduler may put it.
type Fleet struct {
	// Conflicts are globs of unit names (see Match) that must not share a
	// machine with this unit. Options may repeat and hold several
	// space-separated globs.
	Conflicts []string
	// MachineOf names units this one must run beside: it goes wherever
	// they are. Names are in full form ("hello@1" is "hello@1.service").
	MachineOf []string
	// MachineID pins the unit to one machine (a full 32-hex machine id, in
	// lower case).
	MachineID string
	// MachineMetadata restricts the unit to machines whose metadata has
	// every key, with one of the values listed for it: the same key given
	// twice means either value.
	MachineMetadata map[string][]string
	// Global runs the unit on every machine that MachineMetadata allows.
	Global bool
	// Replaces names units this one displaces from the machine it is put
	// on: they are rescheduled elsewhere.
	Replaces []string
}

// The [X-Fleet] keys, as written, mapped to what they mean. The X- and
// X-Condition spellings are fleet's pre-0.8 names, still accepted.
var fleetKeys = map[string]string{
	"Conflicts":                  "Conflicts",
	"X-Conflicts":                "Conflicts",
	"MachineOf":                  "MachineOf",
	"X-ConditionMachineOf":       "MachineOf",
	"MachineID":                  "MachineID",
	"X-ConditionMachineID":       "MachineID",
	"MachineMetadata":            "MachineMetadata",
	"X-ConditionMachineMetadata": "MachineMetadata",
	"Global":                     "Global",
	"Replaces":                   "Replaces",
}

// fleetValue is one value of an [X-Fleet] option, with where it came from.
type fleetValue struct {
	key   string // canonical key
	value string
	line  int
}

// Fleet reads the [X-Fleet] section (all of them, if it appears more than
// once). Values are taken as they are written: on a template's file, read
// Instantiate(f, n, Machine{}).Fleet() to get what instance n would ask
// for; values still holding a specifier are returned verbatim.
//
// Errors are *Error values without a file name ("line 9: ..."), joined
// when there are several: an unknown key; Global=true with anything but
// MachineMetadata and Conflicts; a MachineMetadata that is not key=value; a
// MachineID that is not a full machine id; a Global that is not a boolean;
// MachineOf or Replaces that is not a unit name; a malformed glob.
func (f *File) Fleet() (Fleet, error) {
	fl, _, errs := f.parseFleet()
	return fl, joinErrors(errs)
}

func (f *File) parseFleet() (Fleet, []fleetValue, []*Error) {
	var (
		fl     Fleet
		vals   []fleetValue
		errs   []*Error
		idLine int
	)
	fail := func(line int, format string, args ...any) {
		errs = append(errs, &Error{Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	for _, s := range f.Sections {
		if s.Name != FleetSection {
			continue
		}
		for _, o := range s.Options {
			key, ok := fleetKeys[o.Name]
			if !ok {
				fail(o.Line, "%s", unknownFleetKey(o.Name))
				continue
			}
			words, ok := splitValues(o.Value)
			if !ok {
				fail(o.Line, "%s=%s: unterminated quote", o.Name, shorten(o.Value))
				continue
			}
			switch key {
			case "Global", "MachineID":
				if len(words) != 1 {
					fail(o.Line, "%s= takes one value, got %d", o.Name, len(words))
					continue
				}
			}
			for _, w := range words {
				if w == "" {
					continue // an empty quoted word asks for nothing
				}
				vals = append(vals, fleetValue{key: key, value: w, line: o.Line})
				switch key {
				case "Conflicts":
					if _, err := path.Match(w, ""); err != nil {
						fail(o.Line, "Conflicts glob %q is malformed: %v", w, err)
						continue
					}
					fl.Conflicts = appendNew(fl.Conflicts, w)
				case "MachineOf", "Replaces":
					name, err := unitRef(w)
					if err != nil {
						fail(o.Line, "%s: %v", o.Name, err)
						continue
					}
					if key == "MachineOf" {
						fl.MachineOf = appendNew(fl.MachineOf, name)
					} else {
						fl.Replaces = appendNew(fl.Replaces, name)
					}
				case "MachineMetadata":
					k, v, ok := strings.Cut(w, "=")
					if !ok || k == "" || v == "" || strings.Contains(v, "=") {
						fail(o.Line, "MachineMetadata %q: expected key=value, such as role=database", w)
						continue
					}
					if fl.MachineMetadata == nil {
						fl.MachineMetadata = make(map[string][]string)
					}
					fl.MachineMetadata[k] = appendNew(fl.MachineMetadata[k], v)
				case "MachineID":
					id, err := machineID(w)
					if err != nil {
						fail(o.Line, "%v", err)
						continue
					}
					if fl.MachineID != "" && fl.MachineID != id {
						fail(o.Line, "MachineID %s contradicts MachineID %s on line %d; a unit can be pinned to one machine", id, fl.MachineID, idLine)
						continue
					}
					fl.MachineID, idLine = id, o.Line
				case "Global":
					b, ok := parseBool(w)
					if !ok {
						fail(o.Line, "Global=%s: expected true or false", w)
						continue
					}
					fl.Global = b // the last one wins, as for any systemd setting
				}
			}
		}
	}
	if fl.Global {
		// A global unit runs on every machine that MachineMetadata allows;
		// pinning it to a machine or to another unit contradicts that.
		reported := make(map[fleetValue]bool)
		for _, v := range vals {
			switch v.key {
			case "MachineOf", "MachineID", "Replaces":
				if k := (fleetValue{key: v.key, line: v.line}); !reported[k] {
					reported[k] = true
				} else {
					continue // one complaint per line, however many words it has
				}
				fail(v.line, "Global=true can't be combined with %s; a global unit runs on every machine (only MachineMetadata and Conflicts can narrow it)", v.key)
			}
		}
		slices.SortStableFunc(errs, func(a, b *Error) int { return a.Line - b.Line })
	}
	return fl, vals, errs
}

// unknownFleetKey explains an unknown [X-Fleet] key, suggesting the right
// spelling when the case is all that is wrong.
func unknownFleetKey(key string) string {
	if key == "X-ConditionMachineBootID" {
		// fleet accepted it as a machine id, which could never match; refuse
		// it rather than leave the unit unschedulable for ever.
		return "X-ConditionMachineBootID is no longer supported; pin the unit with MachineID=<machine id>"
	}
	for k := range fleetKeys {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf("unknown [X-Fleet] option %s; did you mean %s?", key, k)
		}
	}
	return fmt.Sprintf("unknown [X-Fleet] option %s; fleet knows Conflicts, MachineOf, MachineID, MachineMetadata, Global and Replaces", key)
}

// unitRef checks a MachineOf or Replaces value and returns the full name.
// A value still holding a specifier is returned as it is: it is only known
// once instantiated, and Validate checks it then.
func unitRef(s string) (string, error) {
	if strings.IndexByte(s, '%') >= 0 {
		return s, nil
	}
	n, err := ParseName(s)
	if err != nil {
		return "", err
	}
	if n.IsTemplate() {
		return "", fmt.Errorf("%s is a template, which never runs; name an instance, such as %s", n, Name{Prefix: n.Prefix, Instance: "%i", Type: n.Type})
	}
	return n.String(), nil
}

// machineID checks a MachineID value: the full 32-hex id, which it returns
// in lower case, the form /etc/machine-id and the registry use.
func machineID(s string) (string, error) {
	id := strings.ToLower(s)
	if len(id) == 36 && strings.Count(id, "-") == 4 {
		return "", fmt.Errorf("MachineID %s: write the machine id without dashes, as in /etc/machine-id", s)
	}
	for i := 0; i < len(id); i++ {
		if _, ok := hexVal(id[i]); !ok {
			return "", fmt.Errorf("MachineID %q: a machine id is 32 hexadecimal digits", s)
		}
	}
	if len(id) != 32 {
		return "", fmt.Errorf("MachineID %s has %d digits; use the full 32-digit machine id (clusterctl list-machines -l), not a prefix", s, len(id))
	}
	return id, nil
}

// parseBool parses a boolean as systemd does (parse_boolean).
func parseBool(s string) (value, ok bool) {
	switch strings.ToLower(s) {
	case "1", "yes", "y", "true", "t", "on":
		return true, true
	case "0", "no", "n", "false", "f", "off":
		return false, true
	}
	return false, false
}

// splitValues splits an [X-Fleet] value into words at blanks, a
// double-quoted stretch being part of one word, quotes removed:
// `"region=us east" disk=ssd` is ["region=us east", "disk=ssd"]. fleet
// split only fully quoted lines; splitting plain ones too lets
// "Conflicts=a@* b@*" mean what it says (unit names hold no blanks).
// ok is false for an unterminated quote.
func splitValues(s string) (words []string, ok bool) {
	var (
		b      strings.Builder
		quoted bool
		inWord bool
	)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			quoted, inWord = !quoted, true
		case !quoted && (c == ' ' || c == '\t'):
			if inWord {
				words = append(words, b.String())
				b.Reset()
				inWord = false
			}
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, b.String())
	}
	return words, !quoted
}

// appendNew appends v unless list has it already: repeating a constraint
// changes nothing, and the scheduler should not have to care.
func appendNew(list []string, v string) []string {
	if slices.Contains(list, v) {
		return list
	}
	return append(list, v)
}
