package unit

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// File is a parsed systemd unit file. Sections and options keep their order;
// unknown sections and options are kept intact (systemd and other tools read
// them); line numbers are kept for error messages.
//
// A section name may appear more than once, as systemd allows; lookups
// ([File.Values], [File.Value]) see the options of all of them in order.
type File struct {
	Sections []*Section
}

// Section is one [Name] block of a unit file.
type Section struct {
	Name    string
	Options []*Option
	Line    int // line of the [Name] header; 0 for sections not read from a file
}

// Option is one Key=Value line, after line continuations are joined and
// surrounding whitespace is trimmed. An empty Value is kept: to systemd it
// means "reset this list", which matters for options such as ExecStart.
type Option struct {
	Name, Value string
	Line        int // line the option starts on; 0 for options not read from a file
}

// Error is a problem at one place in a unit file. Parse, Validate and
// Fleet return errors of this type (several are joined with errors.Join);
// use errors.As to get the line.
type Error struct {
	File string // "" when the caller did not name the file (File.Fleet)
	Line int    // 0 when the problem concerns the file as a whole
	Msg  string
}

// Error formats e as compilers do: "hello@.service:12: msg", or
// "line 12: msg" when the file is not known.
func (e *Error) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return e.File + ": " + e.Msg
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	default:
		return e.Msg
	}
}

// maxErrors caps how many problems one error reports, so that feeding a
// binary or a wrong file gives a readable message rather than thousands of
// lines.
const maxErrors = 10

// joinErrors returns nil, the single error, or all of them joined (one per
// line), capped at maxErrors.
func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	n := min(len(errs), maxErrors)
	out := make([]error, 0, n+1)
	for _, e := range errs[:n] {
		out = append(out, e)
	}
	if len(errs) > n {
		out = append(out, &Error{File: errs[0].File, Msg: fmt.Sprintf("and %d more problems", len(errs)-n)})
	}
	if len(out) == 1 {
		return out[0]
	}
	return errors.Join(out...)
}

// Parse reads a unit file in systemd's syntax (systemd.syntax(7)):
//
//   - lines whose first non-blank character is '#' or ';' are comments;
//   - "[Name]" starts a section;
//   - "Key=Value" is an option, whitespace around key and value trimmed;
//   - a line ending in a backslash continues on the next line, the
//     backslash becoming a space; comment lines inside a continued line
//     are skipped, as systemd skips them. The backslash must be the last
//     character; one followed by blanks is reported, since systemd would
//     neither continue the line nor have a way to write the value back.
//
// Unlike systemd, which logs and ignores lines it cannot read, Parse
// reports them, because a unit that silently loses a line is worse than one
// that is refused at submit time. filename only labels errors, as in
// "hello@.service:12: expected Key=Value, got ...".
func Parse(filename string, src []byte) (*File, error) {
	src = bytes.TrimPrefix(src, []byte("\xef\xbb\xbf")) // a UTF-8 BOM, as systemd tolerates

	var (
		f    = &File{}
		errs []*Error
		cur  *Section
		// A logical line being assembled from continued physical lines.
		pending     strings.Builder
		pendingLine int // physical line where the logical one began; 0 if none
	)
	fail := func(line int, format string, args ...any) {
		errs = append(errs, &Error{File: filename, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	logical := func(line int, l string) {
		l = strings.Trim(l, whitespace)
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
			return
		case l[0] == '[':
			if l[len(l)-1] != ']' {
				fail(line, "expected [Section], got %s", quoteShort(l))
				return
			}
			name := l[1 : len(l)-1]
			if name == "" || strings.Trim(name, whitespace) != name || strings.ContainsAny(name, "[]") {
				fail(line, "bad section name %s", quoteShort(l))
				return
			}
			cur = &Section{Name: name, Line: line}
			f.Sections = append(f.Sections, cur)
			return
		}
		key, value, ok := strings.Cut(l, "=")
		key, value = strings.Trim(key, whitespace), strings.Trim(value, whitespace)
		switch {
		case !ok || key == "":
			fail(line, "expected Key=Value, got %s", quoteShort(l))
		case cur == nil:
			fail(line, "%s=%s comes before any [Section]; put it under [Unit], [Service] or [X-Fleet]", key, shorten(value))
		default:
			cur.Options = append(cur.Options, &Option{Name: key, Value: value, Line: line})
		}
	}

	lines := strings.Split(string(src), "\n")
	if len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1] // the final newline does not start a line
	}
	for i, raw := range lines {
		n := i + 1
		raw = strings.TrimSuffix(raw, "\r")
		if strings.IndexByte(raw, 0) >= 0 {
			fail(n, "contains a NUL byte; is this a unit file?")
			continue
		}
		if t := strings.TrimLeft(raw, whitespace); t != "" && (t[0] == '#' || t[0] == ';') {
			// A comment is dropped before continuations are looked at: one
			// inside a continued line is skipped, and one ending in a
			// backslash does not swallow the next line (systemd agrees).
			continue
		}
		if pendingLine == 0 {
			pendingLine = n
		}
		if t := strings.TrimRight(raw, whitespace); len(t) < len(raw) && trailingBackslashes(t)%2 == 1 {
			// systemd would not continue this line, and would keep a value
			// ending in a lone backslash, which no unit file can spell (Bytes
			// could not write it back). The blanks are almost certainly a
			// mistake: report it, and read on as the author meant.
			fail(n, "the line ends with a backslash followed by blanks; remove the blanks to continue the line")
			raw = t
		}
		if trailingBackslashes(raw)%2 == 1 {
			pending.WriteString(raw[:len(raw)-1])
			pending.WriteByte(' ')
			continue
		}
		pending.WriteString(raw)
		start := pendingLine
		l := pending.String()
		pending.Reset()
		pendingLine = 0
		logical(start, l)
	}
	if pendingLine > 0 {
		// The file ends inside a continued line; systemd reads what it has.
		logical(pendingLine, pending.String())
	}
	if err := joinErrors(errs); err != nil {
		return nil, err
	}
	return f, nil
}

// whitespace is systemd's WHITESPACE, what it trims from lines, keys and
// values. Trimming exactly that (not Unicode's spaces, as strings.TrimSpace
// does) keeps values as systemd reads them, and keeps the check for a
// trailing backslash in step with the trimming.
const whitespace = " \t\n\r"

// trailingBackslashes counts the backslashes that end s. An odd count means
// the line continues; an even one ends in escaped backslashes.
func trailingBackslashes(s string) int {
	n := 0
	for n < len(s) && s[len(s)-1-n] == '\\' {
		n++
	}
	return n
}

// quoteShort quotes s for an error message, shortened so that one long
// ExecStart does not drown the message.
func quoteShort(s string) string { return fmt.Sprintf("%q", shorten(s)) }

func shorten(s string) string {
	const max = 60
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}

// Values returns the values of every option called option in every section
// called section, in file order. Options can repeat (ExecStartPre,
// Conflicts); an empty value, systemd's list reset, is returned as "".
func (f *File) Values(section, option string) []string {
	var out []string
	for _, s := range f.Sections {
		if s.Name != section {
			continue
		}
		for _, o := range s.Options {
			if o.Name == option {
				out = append(out, o.Value)
			}
		}
	}
	return out
}

// Value returns the last value of option in section, or "" if it is not
// set. The last one wins, as it does for systemd's single-valued options.
func (f *File) Value(section, option string) string {
	v := f.Values(section, option)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// Bytes returns the canonical form of f: no comments, no blank lines
// inside a section, "Key=Value" with no spaces around '=', one blank line
// between sections, a final newline. Parse(Bytes()) yields f again, line
// numbers aside, for any f that Parse returned and for its instances. The
// exception is a value that no unit file can spell: one holding a newline,
// or ending in an odd number of backslashes, which only a value set by hand
// or a %I unescaping to a final '\' (instance "...\x5c") can produce.
func (f *File) Bytes() []byte {
	var b bytes.Buffer
	for i, s := range f.Sections {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("[" + s.Name + "]\n")
		for _, o := range s.Options {
			b.WriteString(o.Name + "=" + o.Value + "\n")
		}
	}
	return b.Bytes()
}

// String returns Bytes as a string.
func (f *File) String() string { return string(f.Bytes()) }

// Hash returns the hex SHA-1 of Bytes, fleet's unit hash. Because it hashes
// the canonical form, editing comments or layout does not change a unit's
// identity, and so does not make the cluster restart it.
func (f *File) Hash() string {
	sum := sha1.Sum(f.Bytes())
	return hex.EncodeToString(sum[:])
}

// Clone returns a deep copy of f, so that a caller can change options
// without touching a file that others share (the scheduler's cache, say).
func (f *File) Clone() *File {
	if f == nil {
		return nil
	}
	out := &File{Sections: make([]*Section, len(f.Sections))}
	for i, s := range f.Sections {
		c := &Section{Name: s.Name, Line: s.Line, Options: make([]*Option, len(s.Options))}
		for j, o := range s.Options {
			oc := *o
			c.Options[j] = &oc
		}
		out.Sections[i] = c
	}
	return out
}
