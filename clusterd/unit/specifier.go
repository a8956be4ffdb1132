package unit

import "strings"

// Machine is what specifiers need to know of the machine a unit runs on.
type Machine struct {
	ID       string // %m, the 32-hex machine id
	Hostname string // %H
	BootID   string // %b
}

// Instantiate returns a copy of f, the file of n's template (or of n itself
// for a plain unit), with systemd specifiers expanded in every option
// value:
//
//	%i  instance, escaped as in the name       %I  instance, unescaped (systemd-escape --unescape)
//	%p  prefix                                 %P  prefix, unescaped
//	%n  full name ("hello@1.service")          %N  name without type ("hello@1")
//	%H  m.Hostname   %m  m.ID   %b  m.BootID   %%  a literal '%'
//
// Other specifiers are left as they are.
//
// With the zero Machine, Instantiate expands only what the name decides
// and keeps %H, %m, %b and %% as written (and doubles any '%' that it
// writes), so that its result is still systemd source: the scheduler reads
// [X-Fleet] from it before it knows the machine, and it can be expanded
// again with a Machine, or handed to systemd, which expands the rest,
// without a literal "%%H" turning into a hostname on the second pass. With
// a non-zero Machine everything is expanded; %H, %m or %b whose field is
// empty are left as they are, since an empty value is a lack of knowledge,
// not a hostname.
func Instantiate(f *File, n Name, m Machine) *File {
	out := f.Clone()
	full := m != Machine{}
	for _, s := range out.Sections {
		for _, o := range s.Options {
			o.Value = expand(o.Value, n, m, full)
		}
	}
	return out
}

// expand replaces the specifiers in s; see Instantiate.
func expand(s string, n Name, m Machine, full bool) string {
	if strings.IndexByte(s, '%') < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		c := s[i]
		var v string
		ok := true
		switch c {
		case 'i':
			v = n.Instance
		case 'I':
			v = unescape(n.Instance)
		case 'p':
			v = n.Prefix
		case 'P':
			v = unescape(n.Prefix)
		case 'n':
			v = n.String()
		case 'N':
			v = n.base()
		case 'H':
			v, ok = m.Hostname, full && m.Hostname != ""
		case 'm':
			v, ok = m.ID, full && m.ID != ""
		case 'b':
			v, ok = m.BootID, full && m.BootID != ""
		case '%':
			v = "%" // doubled again below when expanding partially
		default:
			ok = false
		}
		if !ok {
			b.WriteByte('%')
			b.WriteByte(c)
			continue
		}
		if !full {
			// Keep the result one that a second pass reads the same way: a
			// literal '%' stays "%%", and so does one that an unescaped %I
			// brings in (from \x25).
			v = strings.ReplaceAll(v, "%", "%%")
		}
		b.WriteString(v)
	}
	return b.String()
}

// specifierLeft returns the first specifier left in s after a partial
// expansion ("%H", "%z"), ignoring the "%%" that stand for '%'.
func specifierLeft(s string) (string, bool) {
	for i := 0; i+1 < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		if s[i+1] == '%' {
			i++
			continue
		}
		return s[i : i+2], true
	}
	return "", false
}
