package unit

import (
	"fmt"
	"path"
	"strings"
)

// Name is a unit name split into its parts: "hello@1.service" is
// {Prefix: "hello", Instance: "1", Type: "service", Templated: true};
// "web.service" is {Prefix: "web", Type: "service"}; the template
// "hello@.service" is {Prefix: "hello", Type: "service", Templated: true}.
type Name struct {
	Prefix   string
	Instance string // escaped form, as written in the name; "" for a template or a plain unit
	Type     string // service, socket, …; "" is taken as service
	// Templated is set when the name has an '@', that is for a template
	// and its instances. It is what tells "hello@.service" from
	// "hello.service", whose other fields are equal.
	Templated bool
}

// Types fleet schedules (fleet's SupportedUnitTypes).
var supportedTypes = map[string]bool{
	"service": true, "socket": true, "device": true, "mount": true,
	"automount": true, "timer": true, "path": true,
}

// systemd's other unit types. They are named here so that "foo.target" is
// refused with a reason, instead of quietly becoming "foo.target.service"
// as fleet made it.
var unsupportedTypes = map[string]bool{
	"target": true, "slice": true, "scope": true, "swap": true, "snapshot": true,
}

// maxNameLen is systemd's UNIT_NAME_MAX less the terminating NUL.
const maxNameLen = 255

// ParseName parses a unit name. A name without a known type suffix is a
// service, as fleetctl and systemctl take it: "hello@1" is
// "hello@1.service", and so is "hello@1.2" "hello@1.2.service".
//
// Names follow systemd's rules: a non-empty prefix and an instance made of
// letters, digits and ":_.-", plus '@' in the instance, and "\xNN" escapes
// as systemd-escape writes them. Escapes of control characters are refused:
// %I would put them in a unit file, which has no way to spell them.
func ParseName(s string) (Name, error) {
	if s == "" {
		return Name{}, fmt.Errorf("empty unit name")
	}
	base, typ := s, "service"
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		switch suffix := s[i+1:]; {
		case suffix == "":
			return Name{}, fmt.Errorf("invalid unit name %q: ends with '.'", s)
		case supportedTypes[suffix]:
			base, typ = s[:i], suffix
		case unsupportedTypes[suffix]:
			return Name{}, fmt.Errorf("invalid unit name %q: .%s units can't be scheduled; use service, socket, timer, path, mount, automount or device", s, suffix)
		}
	}
	if len(base)+1+len(typ) > maxNameLen {
		return Name{}, fmt.Errorf("invalid unit name %q: longer than %d characters", shorten(s), maxNameLen)
	}
	n := Name{Prefix: base, Type: typ}
	if i := strings.IndexByte(base, '@'); i >= 0 {
		n.Prefix, n.Instance, n.Templated = base[:i], base[i+1:], true
	}
	if n.Prefix == "" {
		return Name{}, fmt.Errorf("invalid unit name %q: nothing before the '@'", s)
	}
	if err := checkNameChars(n.Prefix, false); err != nil {
		return Name{}, fmt.Errorf("invalid unit name %q: %v", s, err)
	}
	if err := checkNameChars(n.Instance, true); err != nil {
		return Name{}, fmt.Errorf("invalid unit name %q: %v", s, err)
	}
	return n, nil
}

// checkNameChars checks s against systemd's unit name alphabet.
func checkNameChars(s string, instance bool) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == ':', c == '_', c == '.', c == '-':
		case c == '@' && instance:
		case c == '\\':
			b, ok := unhex(s[i:])
			if !ok {
				return fmt.Errorf(`'\' must start an escape such as \x2d (see systemd-escape)`)
			}
			if b < 0x20 || b == 0x7f {
				return fmt.Errorf(`escape %s is a control character`, s[i:i+4])
			}
			i += 3
		default:
			return fmt.Errorf("%q is not allowed; use letters, digits and \":_.-\" (systemd-escape writes anything else)", c)
		}
	}
	return nil
}

// unhex decodes a leading `\xNN`.
func unhex(s string) (byte, bool) {
	if len(s) < 4 || s[0] != '\\' || s[1] != 'x' {
		return 0, false
	}
	hi, ok1 := hexVal(s[2])
	lo, ok2 := hexVal(s[3])
	return hi<<4 | lo, ok1 && ok2
}

func hexVal(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unescape undoes systemd-escape, as systemd does for %I and %P: '-' is
// '/', and `\xNN` is the byte NN. (go-systemd's UnitNameUnescape mishandles
// bytes from 0x80 up, which UTF-8 names need.)
func unescape(s string) string {
	if !strings.ContainsAny(s, `-\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '-':
			b.WriteByte('/')
		case '\\':
			if v, ok := unhex(s[i:]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func (n Name) typ() string {
	if n.Type == "" {
		return "service"
	}
	return n.Type
}

// base is the name without its type suffix, what %N expands to.
func (n Name) base() string {
	if n.Templated || n.Instance != "" {
		return n.Prefix + "@" + n.Instance
	}
	return n.Prefix
}

// String returns the full name, such as "hello@1.service".
func (n Name) String() string { return n.base() + "." + n.typ() }

// IsTemplate reports whether n names a template, such as "hello@.service".
func (n Name) IsTemplate() bool { return n.Templated && n.Instance == "" }

// IsInstance reports whether n names an instance of a template, such as
// "hello@1.service".
func (n Name) IsInstance() bool { return n.Instance != "" }

// Template returns the template n is an instance of: "hello@1.service"
// gives "hello@.service". A template is returned as it is; so is a plain
// name, which has no template.
func (n Name) Template() Name {
	if !n.IsInstance() {
		return n
	}
	return Name{Prefix: n.Prefix, Type: n.Type, Templated: true}
}

// Match reports whether a unit name matches a Conflicts glob, with
// path.Match's syntax as fleet used. A glob or a name without a unit type
// means a service, as a name does: "hello@*.service" and "hello@*" both
// match "hello@1.service" and neither matches "hello@1.socket". A
// malformed glob matches nothing (Validate reports it).
func Match(glob, name string) bool {
	ok, err := path.Match(withType(glob), withType(name))
	return err == nil && ok
}

// withType appends ".service" to s unless it already ends in a unit type,
// or, for a glob, in something that may match one ("web.*").
func withType(s string) string {
	if i := strings.LastIndexByte(s, '.'); i >= 0 {
		suffix := s[i+1:]
		if supportedTypes[suffix] || unsupportedTypes[suffix] || strings.ContainsAny(suffix, `*?[\`) {
			return s
		}
	}
	return s + ".service"
}
